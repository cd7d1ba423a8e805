"""The search tools (glob, grep): each one's schema, run and preview together.

Walks go through `ConfinedDir.walk_files` (paths.py: confined, no symlinked directories, the skipped
directories, a file budget); hits are listed code first, capped at `LIST_CAP` with a count of the rest.
An empty grep goes on to say where the pattern does match (`_elsewhere`).  Matching rules are in
docs/tools.md.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from continualcode.tools.base import Tool, ToolError, function_schema, quote
from continualcode.tools.files import is_binary
from continualcode.tools.kinds import listing_rank
from continualcode.tools.paths import WALK_BUDGET, WalkBudget, missing

if TYPE_CHECKING:
    from continualcode.tools.workspace import Workspace

LIST_CAP = 200  # glob results / grep hits shown
HIT_CAP = 300  # chars of one line shown by grep
GREP_MAX_FILE = 5 * 2**20
IS_A_FILE = " is a file of the project: read it to see its lines"  # an empty grep for a file's path (rails read it)
NO_MATCHES = "no matches for "  # how an empty grep opens its result (context.py, rails read it)
FOUND_ELSEWHERE = " it matches:\n"  # how an empty grep goes on to the hits of a wider search (rails read it)


# -------------------------------------------------------------------------------------------------- glob


def glob(ws: Workspace, pattern: str, path: str) -> tuple[bool, str]:
    pat = _compile_glob(pattern)
    base = ws.resolve(path)
    if not base.is_dir():
        raise ToolError(f"{ws.rel(base)} is not a directory")
    hits: list[str] = []
    note = ""
    try:
        for rel, below, _ in ws.walk_files(base, lambda parts: _glob_match(pat, parts, prefix=True)):
            if _glob_match(pat, below):
                hits.append(rel)
    except WalkBudget:
        note = f"\n[stopped after {WALK_BUDGET} files; narrow the path]"
    if not hits:
        return True, f"no files match {quote(pattern)} in {ws.rel(base)}{note}"
    hits.sort()
    more = f"\n… and {len(hits) - LIST_CAP} more" if len(hits) > LIST_CAP else ""
    return True, "\n".join(hits[:LIST_CAP]) + more + note


def preview_glob(ws: Workspace, pattern: str, path: str) -> str:
    return f"glob {quote(pattern)} in {ws.rel(ws.resolve(path))}"


GLOB = Tool(
    function_schema(
        "glob",
        "List files matching a glob pattern, e.g. **/*.py.",
        {
            "pattern": {"type": "string"},
            "path": {"type": "string", "default": ".", "description": "Directory to search."},
        },
        ["pattern"],
    ),
    glob,
    preview_glob,
)


@functools.lru_cache(maxsize=256)
def _compile_glob(pattern: str) -> tuple[str, ...]:
    if pattern.startswith("/"):
        raise ToolError(f"pattern {quote(pattern)} must be relative (put the directory in path)")
    parts = tuple(p for p in pattern.split("/") if p not in ("", "."))
    if ".." in parts:
        raise ToolError(f"pattern {quote(pattern)} must not contain '..'")
    if not parts:
        raise ToolError("pattern is empty")
    return parts


def _glob_match(pat: tuple[str, ...], parts: tuple[str, ...], *, prefix: bool = False) -> bool:
    """Does `parts` match `pat` ('**' = any number of dirs; a trailing '**' also matches files)?
    With prefix=True: could some path below directory `parts` match?"""

    @functools.cache
    def go(i: int, j: int) -> bool:
        if i == len(pat):
            return j == len(parts)
        if j == len(parts):
            return prefix or (all(p == "**" for p in pat[i:]) and j > 0)
        if pat[i] == "**":
            return go(i + 1, j) or go(i, j + 1)
        return fnmatch.fnmatchcase(parts[j], pat[i]) and go(i + 1, j + 1)

    return go(0, 0)


# -------------------------------------------------------------------------------------------------- grep


def grep(ws: Workspace, pattern: str, path: str, include: str | None) -> tuple[bool, str]:
    """Lines matching `pattern` under `path` (files matching `include`); a pattern that is not a valid regex
    is searched as plain text, said in a note.  An empty search says where it would have found something
    (`_elsewhere`)."""
    plain_note = ""
    try:
        regex = re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as e:  # the 1.5B model grepped `re.sub(r"_id$` for code
        regex = re.compile(re.escape(pattern))  # it had seen: what it means is that text
        plain_note = f"\n[not a valid regex ({e}): searched as plain text]"
    base = ws.resolve(path)
    if not base.exists():
        raise missing(ws, base)
    files, note = _grep_files(ws, base, include)
    note += plain_note
    hits, total, skipped = _search(regex, files, single=not base.is_dir())
    if skipped:
        note += f"\n[skipped {skipped} files over {GREP_MAX_FILE // 2**20} MiB]"
    if not hits:
        return True, f"{NO_MATCHES}{quote(pattern)} in {ws.rel(base)}{note}" + _elsewhere(
            ws, pattern, regex, narrowed=base != ws.root or include is not None) + _is_a_file(ws, pattern)
    more = f"\n… and {total - LIST_CAP} more matches" if total > LIST_CAP else ""
    return True, "\n".join(hits) + more + note + _its_definition(ws, pattern, hits)


ELSEWHERE_CAP = 10  # hits shown from the widened search after an empty one
GREP_HIT = re.compile(r"^([\w./-]+):(\d+): (.*)$", re.M)  # a line as `_search` shows a hit: (file, line, text)


def _elsewhere(ws: Workspace, pattern: str, regex: re.Pattern[str], *, narrowed: bool) -> str:
    """After an empty search: the hits of the first of these wider searches that finds any, said as such —
    for a dotted name (`Job.until`, `Job\\.until()`), the definition of its last name; the same pattern in
    the whole project (every file); the pattern as plain text; with either quote character where it has one.
    The 0.5B model grepped one wrong file (or a file as `include`), or a call's text full of regex
    characters, and repeated the empty search until its turns ran out; the 1.5B model grepped
    `pluralize\\('sheep'\\)` where the code says `pluralize("sheep")`, and `Job.until` for a method written
    `def until` (`bench tasks`).  The definition comes first: grepping `xmltodict.unparse` in the Python
    files, the 1.5B model was shown its use in PKG-INFO's docs, then read and rewrote PKG-INFO."""
    tries: list[tuple[str, str]] = []
    if name := _dotted_name(pattern):  # first: its text may be only in the docs
        tries.append((_DEFINITION.format(name=name), f"the definition of {quote(name)}, in the whole project"))
    if narrowed:
        tries.append((pattern, "in the whole project"))
    plain = re.escape(pattern).replace("\\ ", " ")
    if plain != pattern:
        tries.append((plain, "as plain text, in the whole project"))
    if "'" in pattern or '"' in pattern:
        tries += [(re.sub("[\"']", "[\"']", p), "with either quote, in the whole project")
                  for p in dict.fromkeys((pattern, plain))]  # one search when the pattern is plain text already
    files = _grep_files(ws, ws.root, None)[0] if tries else []
    for rx, where in tries:
        try:
            compiled = regex if rx == pattern else re.compile(rx)
        except re.error:
            continue
        hits, total, _ = _search(compiled, files, single=False, cap=ELSEWHERE_CAP)
        if hits:
            more = f"\n… and {total - ELSEWHERE_CAP} more" if total > ELSEWHERE_CAP else ""
            return f"\n{where}{FOUND_ELSEWHERE}" + "\n".join(hits) + more
    return ""


# Job.until, pkg.mod.f(), a call chain: schedule.every(2).hours (the 1.5B model grepped that, found nowhere)
_DOTTED = re.compile(r"^\s*(?:[A-Za-z_]\w*(?:\([^()]*\))?\.)+([A-Za-z_]\w*)\s*(?:\([^()]*\))?\s*$")
_DEFINITION = r"^\s*(?:async\s+)?(?:def|class)\s+{name}\b"  # a Python def or class line of that name
DEFINED_AT = "\nits definition ({name}), in the whole project:\n"  # how a dotted name's search goes on


def _dotted_name(pattern: str) -> str | None:
    """The last name of a dotted pattern (`Job.until`, `xmltodict\\.unparse(`), or None."""
    return m.group(1) if (m := _DOTTED.match(pattern.replace("\\", ""))) else None


def _its_definition(ws: Workspace, pattern: str, hits: list[str]) -> str:
    """After a search of a dotted name that found only its uses: where its last name is defined, from the whole
    project, as an IDE's "go to definition" would add.  Grepping `xmltodict.unparse`, the 1.5B model was shown
    its uses in the docs (PKG-INFO, README.md), answered from those, and repeated the search four times; the
    `def unparse` line it needed was in none of the hits (`bench tasks`, dev split)."""
    if not (name := _dotted_name(pattern)):
        return ""
    definition = re.compile(_DEFINITION.format(name=name))
    if any(definition.search(m.group(3) if (m := GREP_HIT.match(h)) else h) for h in hits):
        return ""
    found, total, _ = _search(definition, _grep_files(ws, ws.root, None)[0], single=False, cap=ELSEWHERE_CAP)
    more = f"\n… and {total - ELSEWHERE_CAP} more" if total > ELSEWHERE_CAP else ""
    return DEFINED_AT.format(name=quote(name)) + "\n".join(found) + more if found else ""


def _is_a_file(ws: Workspace, pattern: str) -> str:
    """After an empty search for a pattern that is a file's path: a note saying so.  With "search with grep
    first" in its rules, the 0.5B model grepped for `slugify/__version__.py` (the file the task named) and
    repeated the empty search instead of reading it."""
    try:
        path = ws.resolve(pattern.strip())
        is_file = path.is_file()
    except (ToolError, OSError, ValueError):
        return ""
    return f"\n({ws.rel(path)}{IS_A_FILE})" if is_file else ""


def _grep_files(ws: Workspace, base: Path, include: str | None) -> tuple[list[tuple[str, Path]], str]:
    """The files a grep of `base` reads (relative name, real path), and a note if the walk stopped: the code
    first, then tests and set-up scripts, then the rest (`kinds.listing_rank`), each by name; grepping
    `xmltodict.unparse`, the 1.5B model was shown its uses in PKG-INFO and README.md and went on to edit
    README.md (`bench tasks`, dev split).  An `include` that matches no file is dropped, said in the note:
    the 0.5B model passed file paths (its worked example's, or `pkg/py.typed`) and `.*` as include, and
    spent its next turns on the error (`bench tasks`)."""
    note = ""
    if base.is_dir():
        files: list[tuple[str, Path]] = []
        try:
            for rel, below, real in ws.walk_files(base):
                if include is None or _include_match(include, below):
                    files.append((rel, real))
        except WalkBudget:
            note = f"\n[stopped after {WALK_BUDGET} files; narrow the path]"
        if include is not None and not files and not note:
            files, note = _grep_files(ws, base, None)
            return files, note + (f"\n[no file in {ws.rel(base)} matches include {quote(include)} (a file-name glob "
                                  "such as *.py): every file was searched]")
        files.sort(key=lambda f: (listing_rank(f[0]), f[0]))
    elif stat.S_ISREG(base.stat().st_mode):
        files = [(ws.rel(base), base)]
    else:
        raise ToolError(f"{ws.rel(base)} is not a regular file")
    return files, note


def _search(regex: re.Pattern[str], files: list[tuple[str, Path]], *, single: bool,
            cap: int = LIST_CAP) -> tuple[list[str], int, int]:
    """The first `cap` hits as `path:line: text`, the number of hits, the files skipped as too large.
    A binary file is skipped, or refused when it is the one file asked for (`single`)."""
    hits: list[str] = []
    total, skipped = 0, 0
    for rel, real in files:
        try:
            if real.stat().st_size > GREP_MAX_FILE:
                skipped += 1
                continue
            data = real.read_bytes()
        except OSError:
            continue
        if is_binary(data):
            if single:
                raise ToolError(f"{rel} is a binary file")
            continue
        for n, line in enumerate(data.decode("utf-8", "replace").split("\n"), start=1):
            line = line.removesuffix("\r")  # a CRLF line ends before its \r: `$` matches there
            if regex.search(line):
                total += 1
                if len(hits) < cap:
                    text = line
                    text = text[:HIT_CAP] + "…" if len(text) > HIT_CAP else text
                    hits.append(f"{rel}:{n}: {text}")
    return hits, total, skipped


def preview_grep(ws: Workspace, pattern: str, path: str, include: str | None) -> str:
    text = f"grep {quote(pattern)} in {ws.rel(ws.resolve(path))}"
    return text + (f" (files {quote(include)})" if include else "")


GREP = Tool(
    function_schema(
        "grep",
        "Search files for a Python regex. Returns path:line: text.",
        {
            "pattern": {"type": "string"},
            "path": {"type": "string", "default": ".", "description": "File or directory."},
            "include": {"type": "string", "description": "Only files matching this glob, e.g. *.py."},
        },
        ["pattern"],
    ),
    grep,
    preview_grep,
)


def _include_match(include: str, below: tuple[str, ...]) -> bool:
    if "/" in include:
        return _glob_match(_compile_glob(include), below)
    return fnmatch.fnmatchcase(below[-1], include)
