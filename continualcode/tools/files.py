"""The file tools (read, write, edit_lines): each one's schema, run and preview together.

Every path goes through `ConfinedDir.resolve` first (paths.py); the tools then touch only the resolved
path. Writes go through `fsio.atomic_write` (the old file or the new one survives a kill -9, never a
mix; the mode is kept), after removing temp files orphaned in that directory by dead writers. Output
limits (lines, hits, bytes per line) are here; the overall cap is applied by `Workspace.run`.
What the previews show is in docs/tools.md; the search tools (glob, grep) are in search.py.
"""

from __future__ import annotations

import difflib
import re
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from continualcode.fsio import atomic_write, remove_orphans
from continualcode.outline import LEGEND, definitions, render
from continualcode.tools.base import PATH_ARG, Tool, ToolError, function_schema, quote
from continualcode.tools.paths import missing
from continualcode.tools.syntax import redefinition_note, syntax_error, syntax_note

if TYPE_CHECKING:
    from continualcode.tools.workspace import Workspace

BINARY_SNIFF = 8192  # a NUL byte in this many leading bytes means binary
LINE_CAP = 2000  # bytes of one line shown by read
EDIT_MAX_FILE = 50 * 2**20
BOM = "\ufeff"
MIN_READ_LINES = 40  # a read shows at least this many lines: the 0.5B model paged through files 10 lines a turn
# A read from the top of a Python file it cannot show whole ends with the file's classes and functions
# (`outline.py`), in this many characters at most (and a third of the result's budget): asked which function
# converts CamelCase to snake_case, the 0.5B model read the first 40 lines of a 426-line file (its regex
# tables) and answered from them; the map names `underscore` and its docstring's first line.
READ_OUTLINE_CHARS = 1500
OUTLINE_MAX_FILE = 2 * 2**20
OUTLINE_HEAD = "Classes and functions in {rel} " + LEGEND + "\n"


# -------------------------------------------------------------------------------------------------- read


READ_LINE = re.compile(r"^\s*(\d+)\t", re.M)  # a line as `read` shows it: (its number)
# the note that ends a window stopping before the file's end: (how many lines follow)
MORE_LINES = re.compile(r"(\d+) more lines; use offset=\d+ to continue\]$", re.M)


def read(ws: Workspace, path: str, offset: int, limit: int) -> tuple[bool, str]:
    limit = max(limit, MIN_READ_LINES)
    target = ws.resolve(path)
    rel = ws.rel(target)
    if target.is_dir():
        raise ToolError(f"{rel} is a directory (use glob to list its files)")
    if not target.exists():
        raise missing(ws, target)
    if not stat.S_ISREG(target.stat().st_mode):
        raise ToolError(f"{rel} is not a regular file")
    budget = ws.read_cap - 200
    with open(target, "rb") as f:
        if is_binary(f.read(BINARY_SNIFF)):
            raise ToolError(f"{rel} is a binary file (NUL byte in its first 8 KiB); not shown")
        f.seek(0)
        shown: list[str] = []
        size, n = 0, 0
        for n, (raw, cut) in enumerate(_iter_lines(f), start=1):
            if n < offset:
                continue
            text = raw.decode("utf-8", "replace").rstrip("\r")
            line = f"{n:6}\t{text}"
            if cut:
                line += f" … [line cut: {cut} more bytes]"
            if len(shown) == limit or (shown and size + len(line) + 1 > budget):
                rest = 1 + _count_rest(f)
                why = "" if len(shown) == limit else "output cap reached; "
                outline = _outline(target, rel, min(READ_OUTLINE_CHARS, budget // 3)) \
                    if ws.read_outline and offset <= 1 and target.suffix == ".py" else ""
                while len(shown) > 1 and size + len(outline) > budget:  # the map's room comes from the lines
                    size -= len(shown.pop()) + 1
                    n, rest = n - 1, rest + 1
                shown.append(f"[{why}{rest} more lines; use offset={n} to continue]")
                return True, "\n".join(shown) + outline
            shown.append(line)
            size += len(line) + 1
    if not shown:
        if n == 0 and offset == 1:
            return True, f"({rel} is empty)"
        raise ToolError(f"offset {offset} is past the end: {rel} has {n} lines")
    return True, "\n".join(shown)


def _outline(target: Path, rel: str, budget: int) -> str:
    """The file's definitions map as `read` appends it ("" for a file without definitions, or too big)."""
    if target.stat().st_size > OUTLINE_MAX_FILE:
        return ""
    head = OUTLINE_HEAD.format(rel=rel)
    text = render([(rel, definitions(target.read_text(errors="replace")))], budget - len(head) - 1)
    return "\n" + head + text.split("\n", 1)[1] if "\n" in text else ""


def preview_read(ws: Workspace, path: str, offset: int, limit: int) -> str:
    """The lines the read will show, as the output cap cuts them, of how many: "read x.py (lines 64-113 of 691)".
    The window asked for overstated it (a user trial on tomli: "lines 64-463" for a read that showed 64-113 under
    the 4,000-character cap).  A read the tool would refuse (a missing file, an offset past the end) says why, and
    is still asked about: you may edit its path."""
    rel = ws.rel(ws.resolve(path))
    try:
        shown = read(ws, path, offset, limit)[1]
    except ToolError as e:
        return f"read {rel}: {e}"
    numbers = [int(n) for n in READ_LINE.findall(shown)]
    if not numbers:
        return f"read {rel} (empty)"
    more = MORE_LINES.search(shown)
    total = numbers[-1] + (int(more.group(1)) if more else 0)
    return f"read {rel} (lines {numbers[0]}-{numbers[-1]} of {total})"


READ = Tool(
    function_schema(
        "read",
        "Read a text file. Returns numbered lines.",
        {
            "path": PATH_ARG,
            "offset": {"type": "integer", "minimum": 1, "default": 1, "description": "First line (1-based)."},
            "limit": {"type": "integer", "minimum": 1, "default": 400, "description": "Max lines."},
        },
        ["path"],
    ),
    read,
    preview_read,
)


# ------------------------------------------------------------------------------------------------- write


def write(ws: Workspace, path: str, content: str) -> tuple[bool, str]:
    target = ws.resolve(path)
    rel = ws.rel(target)
    if target.is_dir():
        raise ToolError(f"{rel} is a directory")
    if path.endswith("/"):
        raise ToolError(f"path {quote(path)} ends with '/'; give a file name")
    existed = target.exists()
    if existed and not stat.S_ISREG(target.stat().st_mode):  # a FIFO, socket or device: the preview refuses too
        raise ToolError(f"{rel} is not a regular file")
    old_text = read_text_for_edit(target, rel) if existed else ""
    before = syntax_error(old_text, rel) if existed else None
    _write_file(target, _encode(content))
    n = len(split_lines(content))
    shrunk = f"\nwarning: {rel} went from {cut[0]} lines to {cut[1]}" if (cut := cuts_most(old_text, content)) else ""
    return True, f"wrote {n} line{'s' * (n != 1)} to {rel}" + ("" if existed else " (new file)") + \
        syntax_note(before, syntax_error(content, rel)) + redefinition_note(old_text, content, rel) + shrunk


def cuts_most(old: str, new: str) -> tuple[int, int] | None:
    """(lines before, lines after) when a write leaves a file of 20 lines or more with less than half of them
    (a small model's write of the one function it means to add, over the whole module); None otherwise."""
    was, now = len(split_lines(old)), len(split_lines(new))
    return (was, now) if was >= 20 and now < was // 2 else None


def preview_write(ws: Workspace, path: str, content: str) -> str:
    target = ws.resolve(path)
    rel = ws.rel(target)
    if target.is_file() and is_binary(_head(target)):
        size, n = target.stat().st_size, len(split_lines(content))
        return f"overwrite binary file {rel} ({size} bytes) with {n} lines"
    old = read_text_for_edit(target, rel)
    cut = cuts_most(old, content)
    shrunk = f"\nwarning: {rel} would go from {cut[0]} lines to {cut[1]}" if cut else ""
    return _diff(old, content, rel) + syntax_note(syntax_error(old, rel) if old else None, syntax_error(content, rel)) \
        + redefinition_note(old, content, rel) + shrunk


WRITE = Tool(
    function_schema(
        "write",
        "Create or overwrite a file with content.",
        {"path": PATH_ARG, "content": {"type": "string", "description": "The whole new file."}},
        ["path", "content"],
    ),
    write,
    preview_write,
)


# -------------------------------------------------------------------------------------------- edit_lines


def edit_lines(ws: Workspace, path: str, start_line: int, end_line: int, content: str) -> tuple[bool, str]:
    target = ws.resolve(path)
    rel = ws.rel(target)
    old = read_text_for_edit(target, rel, must_exist=True)
    new, summary = plan_edit(old, start_line, end_line, content, rel=rel)
    _write_file(target, _encode(new))
    return True, changed_region(old, new, rel, summary, start_line, len(split_lines(content)))


def changed_region(old: str, new: str, rel: str, summary: str, first: int, added: int) -> str:
    """An edit's result: its summary, the syntax warning if it broke the file, and the `added` lines from
    `first` on with two lines of context, numbered as read shows them."""
    summary += syntax_note(syntax_error(old, rel), syntax_error(new, rel)) + redefinition_note(old, new, rel)
    lines = split_lines(new)
    lo = max(1, first - 2)
    hi = min(len(lines), first + max(added, 1) + 1)
    context = _numbered(lines[lo - 1 : hi], lo) if lines else "(file is now empty)"
    return f"{summary}\n{context}"


def preview_edit_lines(ws: Workspace, path: str, start_line: int, end_line: int, content: str) -> str:
    return preview_change(ws, path, lambda old, rel: plan_edit(old, start_line, end_line, content, rel=rel)[0])


def preview_change(ws: Workspace, path: str, plan: Callable[[str, str], str]) -> str:
    """The diff an edit of an existing file would make (`plan(text now, rel) -> text after`), with the
    syntax warning if it would break the file, and the warning if it would define a name twice."""
    target = ws.resolve(path)
    rel = ws.rel(target)
    old = read_text_for_edit(target, rel, must_exist=True)
    new = plan(old, rel)
    return _diff(old, new, rel) + syntax_note(syntax_error(old, rel), syntax_error(new, rel)) + \
        redefinition_note(old, new, rel)


EDIT_LINES = Tool(
    function_schema(
        "edit_lines",
        "Replace lines start_line..end_line (1-based, inclusive) with content. "
        'end_line=start_line-1 inserts before start_line; content="" deletes.',
        {
            "path": PATH_ARG,
            "start_line": {"type": "integer", "minimum": 1},
            "end_line": {"type": "integer", "minimum": 0},
            "content": {"type": "string", "description": "The new lines."},
        },
        ["path", "start_line", "end_line", "content"],
    ),
    edit_lines,
    preview_edit_lines,
)


def plan_edit(old: str, start: int, end: int, content: str, *, rel: str) -> tuple[str, str]:
    """The file's new text after replacing lines start..end with content, and a one-line summary."""
    lines = split_lines(old)
    n = len(lines)
    append_hint = f"(use start_line={n + 1}, end_line={n} to append)"
    if start > n + 1:
        raise ToolError(f"start_line {start} is past the end: {rel} has {n} lines {append_hint}")
    if end > n:
        raise ToolError(f"end_line {end} is past the end: {rel} has {n} lines {append_hint}")
    if end < start - 1:
        raise ToolError(
            f"end_line {end} is before start_line {start} "
            f"(use end_line={start - 1} to insert before line {start}; {rel} has {n} lines)"
        )
    eol = "\r\n" if lines and lines[0].endswith("\r\n") else "\n"
    # a UTF-8 byte order mark belongs to the file, not to line 1: it stays when line 1 is replaced
    bom = BOM if lines and lines[0].startswith(BOM) else ""
    if bom:
        lines[0] = lines[0][len(BOM) :]
    new_lines = split_lines(content.removeprefix(BOM) if bom else content)
    if eol == "\r\n":
        new_lines = [
            ln.removesuffix("\r\n").removesuffix("\n") + eol if ln.endswith("\n") else ln
            for ln in new_lines
        ]
    # content's last line gets a newline before following lines, and when the file ended with one
    ends_open = new_lines and not new_lines[-1].endswith("\n")
    if ends_open and (end < n or not lines or lines[-1].endswith("\n")):
        new_lines[-1] += eol
    result = lines[: start - 1] + new_lines + lines[end:]
    for i in range(len(result) - 1):  # never merge two lines (a file without a final newline)
        if not result[i].endswith("\n"):
            result[i] += eol
    k, now = len(new_lines), len(result)
    lines_word = f"{k} line{'s' * (k != 1)}"
    if not new_lines:
        what = f"deleted lines {start}-{end} of {rel}" if end >= start else f"no change to {rel}"
    elif end < start:
        where = "appended" if start == n + 1 else f"inserted before line {start} of"
        what = f"{where} {rel}: {lines_word}"
    else:
        what = f"replaced lines {start}-{end} of {rel} with {lines_word}"
    return bom + "".join(result), f"{what} (now {now} line{'s' * (now != 1)})"


# ---------------------------------------------------------------------------------------- file plumbing


def _write_file(target: Path, data: bytes) -> None:
    remove_orphans(target.parent)  # temp files of writers killed mid-write (their pid is dead)
    atomic_write(target, data, keep_mode=True)


def read_text_for_edit(target: Path, rel: str, *, must_exist: bool = False) -> str:
    if not target.exists():
        if must_exist:
            raise ToolError(f"{rel} does not exist (use write to create it)")
        return ""
    if target.is_dir():
        raise ToolError(f"{rel} is a directory")
    st = target.stat()
    if not stat.S_ISREG(st.st_mode):
        raise ToolError(f"{rel} is not a regular file")
    if st.st_size > EDIT_MAX_FILE:
        raise ToolError(f"{rel} is too large to edit ({st.st_size} bytes)")
    data = target.read_bytes()
    if is_binary(data):
        raise ToolError(f"{rel} is a binary file")
    return data.decode("utf-8", "surrogateescape")  # bytes outside the edit survive unchanged


def _encode(content: str) -> bytes:
    try:
        return content.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ToolError("content is not valid Unicode text (lone surrogate)") from None


def split_lines(text: str) -> list[str]:
    """Split on "\\n" only (never on \\r, \\f, \\u2028 ...), keeping line ends: the numbering read shows."""
    if not text:
        return []
    parts = text.split("\n")
    lines = [p + "\n" for p in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _numbered(lines: list[str], first: int) -> str:
    stripped = (line.rstrip("\n").rstrip("\r") for line in lines)
    return "\n".join(f"{first + i:6}\t{line}" for i, line in enumerate(stripped))


def _diff(old: str, new: str, rel: str) -> str:
    if old == new:
        return f"(no changes to {rel})"
    out = []
    for line in difflib.unified_diff(split_lines(old), split_lines(new), f"a/{rel}", f"b/{rel}"):
        out.append(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n")
    return "".join(out).rstrip("\n")


def is_binary(head: bytes) -> bool:
    return b"\x00" in head[:BINARY_SNIFF]


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(BINARY_SNIFF)


def _iter_lines(f: BinaryIO) -> Iterator[tuple[bytes, int]]:
    """Lines of a binary file split on b"\\n": (first LINE_CAP bytes without the newline, bytes cut)."""
    while raw := f.readline(LINE_CAP + 1):
        if raw.endswith(b"\n"):
            yield raw[:-1], 0
            continue
        cut = 0
        if len(raw) > LINE_CAP:  # a long line: skip the rest of it
            cut = len(raw) - LINE_CAP
            raw = raw[:LINE_CAP]
            while more := f.readline(2**20):
                if more.endswith(b"\n"):
                    cut += len(more) - 1
                    break
                cut += len(more)
        yield raw, cut


def _count_rest(f: BinaryIO) -> int:
    """Number of lines from the current position to the end of the file."""
    count, last = 0, b"\n"
    while chunk := f.read(2**20):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")
