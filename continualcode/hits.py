"""Which grep hit a read should show: the rails send a repeated search to the read of its best hit.

Pure functions over a search's output (`tools/search.py`'s lines, with its wider search or the nearest
definitions after an empty one).  Why each preference, from the 1.5B model's transcripts: docs/agent.md.
"""

from __future__ import annotations

import re

from continualcode.retrieve import NEAREST_HEAD
from continualcode.tools.kinds import is_secondary
from continualcode.tools.search import FOUND_ELSEWHERE, GREP_HIT, NO_MATCHES
from continualcode.tools.syntax import DEF_LINE

_HIT = GREP_HIT  # a line as grep shows it: (file, line, text)


def best_hit(text: str, definitions: bool = False, task: str = "") -> tuple[str, int] | None:
    """(file, line) of the grep hit a read should show, or None without hits: a Python file's before any
    other, then a file's that is code, not a test's, set-up script's or doc's (`kinds.is_secondary`), then a
    definition's (`def`, `class`), then one in a file whose name the task says (`Version.parse(...)
    .bump_minor()`: `version.py`'s `def bump_minor`, not `_deprecated.py`'s, a user trial on semver); the
    first of equals.  With `definitions`, only a Python file's hit on a definition counts."""
    hits = [(m.group(1), int(m.group(2)), m.group(3)) for m in _HIT.finditer(text)]
    if definitions:
        hits = [h for h in hits if h[0].endswith(".py") and DEF_LINE.match(h[2])]
    if not hits:
        return None
    best = min(hits, key=lambda h: (not h[0].endswith(".py"), is_secondary(h[0]), not DEF_LINE.match(h[2]),
                                    not _named_in(h[0], task)))
    return best[0], best[1]


def _named_in(rel: str, task: str) -> bool:
    """Whether the task says the file's name (its stem without leading underscores, 3+ characters) as a word,
    in any case: "Version.parse" names version.py."""
    stem = rel.rsplit("/", 1)[-1].rsplit(".", 1)[0].lstrip("_")
    return len(stem) >= 3 and re.search(rf"(?<![A-Za-z0-9_]){re.escape(stem)}(?![A-Za-z0-9_])", task, re.I) is not None


def wider_hit(output: str) -> tuple[str, int] | None:
    """(file, line) of the best hit (`best_hit`) an empty grep's wider search shows, or None.  Repeated,
    such a search becomes the read of that place: the 1.5B model repeated `Job.until`
    in schedule/__init__.py nine times, and the 0.5B model an empty grep 25-33 times (`bench tasks`)."""
    return best_hit(wider) if output.startswith(NO_MATCHES) and (wider := widened(output)) else None


def widened(output: str) -> str:
    """The hits an empty search went on to show: of a wider search (`search._elsewhere`), or the definitions
    nearest to it and the task (`context.near_miss`); "" when it showed none."""
    return next((output.split(mark, 1)[1] for mark in (FOUND_ELSEWHERE, NEAREST_HEAD) if mark in output), "")
