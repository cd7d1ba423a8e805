"""The lines a correction names, quoted beside it (the retry and the teacher see them; the memory does not).

Why: in four user trials in a row (the last on pytimeparse; tasks ANALYSIS), a correction
that described a change in words ("SECS on line 43 uses \\d+ which does not match 1.5; change it to [\\d.]+")
was taken literally at the first retry (a `replace` of the name `SECS` by `[\\d.]+` in six places), while one
that gave the line's content was followed, backslashes and all.  The 1.5B model does not look up what "line 43"
or `SECS` is, even with that line read a few turns before; so the denial carries those lines, as the project
holds them now, in the form a search shows them (`path:43: SECS = r'...'`).

What is quoted (`quoted` is pure: the correction and the candidate files' texts in, lines out):
1. `line N`, `lines N-M` (`to`, `through`, `and`, a comma): those lines of the candidate file long enough to have
   them whose line fits the correction best (shares its words and numbers, lies in a definition it names:
   `_fit`), the most likely first among equals.  The candidates are the files the correction names, then the
   denied call's file, then the files the task's calls touched, newest first (`candidates`).
2. Names that read as code (backticked; or with `_`, upper case after the first letter, or a call's `(`) that a
   candidate file defines at a line's start (`def`, `class`, or an assignment): that line, the first of each,
   and for a function or class the first lines of its body, its docstring left out (`BODY_LINES` in all); the
   files a line number was found in are searched first.  Not a name the correction
   says to leave alone ("leave X alone", "don't touch X", "the bug is not in X": `_SPARED`), nor a name inside
   a near-copy (3).  A method named with its class (`Cache.__setitem__`) is looked up in that class first.
3. Lines the correction gives a near-copy of (`copies`): "the line should lowercase the text: bool: lambda v:
   unicode(v).lower()," means the file's `bool: lambda v: unicode(v),`; that line is quoted (where it is, as it is
   now), and the names inside the copy are not looked up.  Before, `unicode(` read as a name the user pointed at,
   its definition `unicode = str` (line 9) was quoted, and the retry replaced `unicode` by `str` (a user trial on
   toml; the line to change was never shown).
Not a line the correction already holds, nor a blank one; at most `MAX_LINES` in all, each cut to `LINE_CHARS`.
"""

from __future__ import annotations

import keyword
import re
from collections.abc import Iterable, Sequence
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from continualcode.context import source_text
from continualcode.records import ToolCall
from continualcode.tools.base import ToolError

MAX_LINES = 8
BODY_LINES = 6  # a named function's or class's lines quoted: its definition line and the first of its body
LINE_CHARS = 200
MAX_FILES = 6
MIN_COPY = 12  # characters in a near-copy's longest run: a shorter one is too likely by chance (`return x`)
MIN_RUN = 4  # characters: shorter runs of a line found in a correction are chance
COPY_SHARE = 0.8  # of a line's text that a near-copy holds
RELATIVE = 0.7  # of the best near-copy's characters that another one needs
MAX_COPIES = 3
HEAD = "\nWhat it names, as the files hold it now:\n"

_LINES = re.compile(r"\blines?\s+(\d{1,6})(?:\s*(-|–|to|through|and|,)\s*(\d{1,6}))?", re.IGNORECASE)
_QUALIFIED = re.compile(r"\b([A-Za-z_]\w*)\.([A-Za-z_]\w*)")  # `Owner.name`: a method named with its class
_TICKED = re.compile(r"`([^`\n]{1,80})`")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_PATH = re.compile(r"[\w./-]+\.[A-Za-z0-9]{1,8}\b")
# what comes right before a name the correction says to leave alone: quoting it sent the model back to it (user
# trials: "don't touch clear_screen; add the new function at the end" on colorama, "leave _func_ends_with alone;
# the bug is in _func_abs" on jmespath, each retry changed the function it was told to leave)
_SPARED = re.compile(r"(?:\bleave|\b(?:don'?t|do\s+not|never)\s+(?:touch|change|edit|modify)"
                     r"|\b(?:is\s*n[o']t|not)\s+in)"
                     r"\s+(?:the\s+)?(?:(?:function|method|class|variable|constant)\s+)?`?$", re.IGNORECASE)


def _codelike(word: str, after: str) -> bool:
    """Whether a bare word of prose reads as a name in code: `snake_case`, `UPPER`, `camelCase`, `__dunder__`
    ("negation is done by the __neg__ method", a user trial on isodate), or `name(`."""
    return "_" in word.strip("_") or any(c.isupper() for c in word[1:]) or after.startswith("(") or (
        word.startswith("__") and word.endswith("__") and bool(word.strip("_")))


def names(correction: str, copied: Sequence[tuple[int, int]] = ()) -> list[str]:
    """The names in `correction` that read as code, in order (backticked ones first), once each; keywords, the
    names it says to leave alone (`_SPARED`) and those inside a `copied` span (a near-copy of a file's line: start,
    end offsets in `correction`) left out."""
    found: list[tuple[int, str]] = []
    for m in _TICKED.finditer(correction):
        found += [(m.start(), w) for w in _NAME.findall(m.group(1))]
    plain = _TICKED.sub(lambda m: " " * len(m.group()), correction)  # the same offsets as `correction`
    for m in _NAME.finditer(plain):
        if _codelike(m.group(), plain[m.end():m.end() + 1]):
            found.append((m.start(), m.group()))
    spared = {w for at, w in found if _SPARED.search(correction[max(0, at - 60):at])
              or any(a <= at < b for a, b in copied)}
    words = [w for _, w in found]
    return [w for i, w in enumerate(words) if w not in words[:i] and w not in spared and not keyword.iskeyword(w)
            and len(w) > 1]


def line_numbers(correction: str) -> list[int]:
    """The line numbers `correction` names (`line 43`, `lines 10-12`, `lines 7 and 9`), in order, once each; a
    range is capped at `MAX_LINES` lines (a backwards one is empty)."""
    out: list[int] = []
    for m in _LINES.finditer(correction):
        first, joint, last = int(m.group(1)), (m.group(2) or "").lower(), int(m.group(3) or 0)
        span = (first,) if not joint else (first, last) if joint in ("and", ",") else range(
            first, min(last, first + MAX_LINES - 1) + 1)
        out += [n for n in span if n > 0 and n not in out]
    return out


def _definition(name: str) -> re.Pattern[str]:
    n = re.escape(name)
    return re.compile(rf"^\s*(?:(?:async\s+)?def\s+{n}\b|class\s+{n}\b|{n}\s*(?::[^=\n]*)?=(?!=))")


def _block(lines: Sequence[str], i: int) -> range:
    """The indices of the `def` or `class` on line `i` and of its whole block (blank lines inside; not trailing
    ones); line `i` alone for anything else."""
    head = lines[i]
    if not re.match(r"\s*(?:async\s+def|def|class)\s", head):
        return range(i, i + 1)
    depth, end = len(head) - len(head.lstrip()), i + 1
    while end < len(lines) and (not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > depth):
        end += 1
    while end - 1 > i and not lines[end - 1].strip():
        end -= 1
    return range(i, end)


def _body(lines: Sequence[str], i: int) -> list[int]:
    """The indices of line `i` and, for a `def` or `class`, of the first lines of its body after it, its docstring
    left out, at most `BODY_LINES` in all.  The definition line alone told the model only where the name is, and the
    1.5B model changed that line (it renamed `_func_ends_with` when told the bug was in it, a user trial on
    jmespath); a docstring's lines tell it nothing of the code (semver's `bump_patch`: six lines of docstring)."""
    out, doc = [i], ""
    for k in _block(lines, i)[1:]:
        text = lines[k].strip()
        if doc:  # inside a docstring: up to its closing quotes
            doc = "" if doc in text else doc
        elif len(out) == 1 and re.match(r"[rRbBuU]?(\"\"\"|\'\'\')", text):  # the body opens with a docstring
            quote = text.lstrip("rRbBuU")[:3]
            doc = "" if quote in text.lstrip("rRbBuU")[3:] else quote
        elif len(out) < BODY_LINES:
            out.append(k)
    return out


def _fit(said: set[str], lines: Sequence[str], n: int, defined: Sequence[re.Pattern[str]]) -> int:
    """How well line `n` of a file fits the correction that names it (`said`: its `_words`): the words and
    numbers the two share, and one more when it lies inside a definition the correction names.  The best fit is
    quoted, the most likely file first among equals: "bump_patch adds 2 to the patch number on line 306", said
    of `version.py` while the model was changing `_deprecated.py`, had quoted line 306 of `_deprecated.py`
    (`:rtype: str`) and the retry edited it (the named-lines probe, semver)."""
    return len(_words(lines[n - 1]) & said) + _within(lines, n, defined)


def _words(text: str) -> set[str]:
    """The numbers and the longer words of `text`, lower case, names split at `_` and case changes."""
    return {w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", text) if w.isdigit() or len(w) > 3}


def _within(lines: Sequence[str], n: int, defined: Sequence[re.Pattern[str]]) -> bool:
    """Whether line `n` (1-based) lies in the block of a definition of one of the `defined` names."""
    return any(n - 1 in _block(lines, i) for i, line in enumerate(lines) if any(d.match(line) for d in defined))


def copies(correction: str, texts: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, int, int, int]]:
    """(path, line number, start, end) for each line of the candidate files (`texts`: path, lines) that the
    correction holds a near-copy of, at start..end in `correction`: runs of `MIN_RUN` characters or more, in order,
    at most twice the line's length apart end to end, hold `COPY_SHARE` of its text (leading and trailing spaces
    left out); the longest run has `MIN_COPY` characters and two names (`def parse_timezone(` is not copied by a
    correction that names `parse_timezone(`).  Most copied first; only those that copy at least `RELATIVE` as many
    characters as the best (`for job in self.jobs[:]:` is not the line meant by a copy of `return [job for job in
    self.jobs if tag in job.tags]`), at most `MAX_COPIES`.  A line the correction holds whole counts too (`quoted`
    leaves it out of the note)."""
    said = _words(correction)
    found: list[tuple[int, str, int, int, int]] = []  # (characters copied, path, line number, start, end)
    for path, lines in texts:
        for n, line in enumerate(lines, start=1):
            text = line.strip()
            if len(text) < MIN_COPY or len(_words(text) & said) < 2:
                continue
            match = SequenceMatcher(None, text, correction, autojunk=False)
            top = match.find_longest_match(0, len(text), 0, len(correction))
            if top.size < MIN_COPY or len(_NAME.findall(text[top.a:top.a + top.size])) < 2:
                continue
            runs = [r for r in match.get_matching_blocks() if r.size >= MIN_RUN]
            copied = sum(r.size for r in runs)
            start, end = runs[0].b, runs[-1].b + runs[-1].size
            if copied >= COPY_SHARE * len(text) and end - start <= 2 * len(text):
                found.append((copied, path, n, start, end))
    found.sort(key=lambda f: -f[0])  # stable: file order among equals
    best = found[0][0] if found else 0
    return [(path, n, a, b) for size, path, n, a, b in found[:MAX_COPIES] if size >= RELATIVE * best]


def quoted(correction: str, files: Sequence[tuple[str, str]]) -> list[tuple[str, int, str]]:
    """(path, line number, line) for each line the correction names, in the candidate `files` ((path, text),
    the most likely first); see the module docstring."""
    texts = [(path, text.splitlines()) for path, text in files]
    copied = copies(correction, texts)
    named = names(correction, [(a, b) for _, _, a, b in copied])
    defined = [_definition(name) for name in named]
    said = _words(correction)
    picked: list[tuple[str, int, str]] = []
    for n in line_numbers(correction):
        hit = max(((p, lines) for p, lines in texts if n <= len(lines)), default=None,
                  key=lambda f: _fit(said, f[1], n, defined))
        if hit is not None:
            picked.append((hit[0], n, hit[1][n - 1]))
    lines_of = dict(texts)
    picked += [(path, n, lines_of[path][n - 1]) for path, n, _, _ in copied]
    lined = {path for path, _, _ in picked}  # a name is looked up first in the files its line numbers were found in
    texts = [f for f in texts if f[0] in lined] + [f for f in texts if f[0] not in lined]
    owners = {m.group(2): m.group(1) for m in _QUALIFIED.finditer(correction)}
    for name, pattern in zip(named, defined, strict=True):
        hit = _find(texts, pattern, owners.get(name))
        if hit is not None:
            path, lines, i = hit
            picked += [(path, k + 1, lines[k]) for k in _body(lines, i)]
    given = " ".join(correction.split())
    out: list[tuple[str, int, str]] = []
    for path, n, line in picked:
        if line.strip() and " ".join(line.split()) not in given and (path, n) not in [(p, k) for p, k, _ in out]:
            out.append((path, n, line.rstrip()[:LINE_CHARS]))
    return out[:MAX_LINES]


def _find(texts: Sequence[tuple[str, Sequence[str]]], pattern: re.Pattern[str],
          owner: str | None) -> tuple[str, Sequence[str], int] | None:
    """The first definition `pattern` matches (path, lines, index): inside `class owner` when the correction
    qualifies the name (`Cache.__setitem__`: every class of cachetools defines one) and that class has it, else
    the first in the files."""
    if owner is not None:
        head = re.compile(rf"^\s*class\s+{re.escape(owner)}\b")
        for path, lines in texts:
            for i, line in enumerate(lines):
                if head.match(line) and (k := next((k for k in _block(lines, i) if pattern.match(lines[k])),
                                                   None)) is not None:
                    return path, lines, k
    return next(((p, lines, i) for p, lines in texts for i, line in enumerate(lines) if pattern.match(line)), None)


def note(lines: Iterable[tuple[str, int, str]]) -> str:
    """The quoted lines as the denial shows them ("" for none)."""
    body = "\n".join(f"{path}:{n}: {line}" for path, n, line in lines)
    return HEAD + body if body else ""


def candidates(correction: str, calls: Iterable[ToolCall]) -> list[str]:
    """The paths whose lines a correction may name, the most likely first: the paths the correction itself
    names, then each call's `path` argument (the denied call first, then the task's calls, newest first, as the
    caller orders them)."""
    paths = _PATH.findall(correction)
    for call in calls:
        if isinstance(path := call.arguments.get("path"), str):
            paths.append(path)
    return [p for i, p in enumerate(paths) if p not in paths[:i]]


def named_lines(workspace: Any, correction: str, calls: Iterable[ToolCall]) -> str:
    """The note of the lines `correction` names in the workspace's files (`candidates` of `calls`, the denied
    call first); "" when it names none, or when none of those files can be read."""
    files: list[tuple[str, str]] = []
    for path in candidates(correction, calls):
        try:
            real: Path = workspace.resolve(path)
        except ToolError:  # a path the workspace refuses: nothing to quote from it
            continue
        if real.is_file() and (text := source_text(real)) is not None:  # None: too big, or gone
            files.append((workspace.rel(real), text))
        if len(files) >= MAX_FILES:
            break
    return note(quoted(correction, files)) if files else ""
