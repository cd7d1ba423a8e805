"""The `replace` tool: change a file by quoting the text to change (`old_string`) and its replacement.

Why: `edit_lines` asks the model for line numbers, and small models get them wrong on real files (the
1.5B model bumped `SCHEDULE_VERSION = "1.2.2"` at line 5 of setup.py by rewriting line 21, three times;
docs/tools.md).  Claude Code (Edit), Codex CLI (apply_patch) and aider (SEARCH/REPLACE) all anchor an edit
on the text itself; this is that tool.  Which edit tools the model is shown is a setting (`edit_tool`).

The rules, pure text in, text out (`plan_replace`), shared by the run and the preview so the diff the
user approves is the change made:
- `old_string` must occur exactly once; none or several is refused, the refusal saying where to look
  (the closest line, or the lines of each occurrence).  `replace_all` changes every occurrence (a rename:
  the 1.5B model's first try at renaming `_irregular` was a replace of that name alone).
- Read's number column (`%6d<TAB>`) copied into `old_string` (on every line) is dropped, and from
  `new_string` when every line of it has one too.
- A file with CRLF line ends gets its strings' LF ends as CRLF.
- When the text occurs once only with other indentation or trailing spaces on its lines, those lines are
  replaced, and `new_string` is shifted by the difference in indentation of the first line (said in the
  result): the model copies code at the wrong depth more often than it copies the wrong code.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator
from typing import TYPE_CHECKING

from continualcode.tools.base import PATH_ARG, Tool, ToolError, function_schema, quote
from continualcode.tools.files import (
    _encode,
    _write_file,
    changed_region,
    preview_change,
    read_text_for_edit,
    split_lines,
)
from continualcode.tools.syntax import INDENT, name_lines

if TYPE_CHECKING:
    from continualcode.tools.workspace import Workspace

_NUMBER = re.compile(r"^ *\d+\t")
SHOW_PLACES = 5  # occurrences listed when old_string is not unique
AMBIGUOUS = "old_string occurs "  # how a refusal for a text found more than once begins (`rails` reads it)
NOT_IN_FILE = "old_string is not in "  # how a refusal for a text not found begins (`context.symptom_note` reads it)
INSIDE_WORDS = " of them inside longer words"  # how a refusal says some occurrences are parts of other names
EMBEDDED = ("replace_all would also change {old} inside longer words ({where}): change only the place the task "
            "is about, with enough of its line that it occurs once")
IN_TEXT_ONLY = " none of them a name in the code (each is in a string or a comment)"  # how a refusal says so
NO_RENAME = ("replace_all renames a name, and {old} is no name in the code of {rel} (it occurs only in strings "
             "and comments): change only the place the task is about, with enough of its line that it occurs once")
CLOSE_LINES = 20_000  # a refusal names the closest line in files up to this long (difflib: slow beyond)


def plan_replace(text: str, old_string: str, new_string: str, *, rel: str,
                 replace_all: bool = False) -> tuple[str, str, int, int]:
    """(the file's new text, a one-line summary, first line changed, lines it now spans) for replacing the
    one occurrence of `old_string` in `text` (every one with `replace_all`); `ToolError` saying where to
    look otherwise."""
    if not old_string.strip():
        raise ToolError("old_string is empty: copy the lines to change from the file (to add lines, "
                        "copy the line they go after and repeat it in new_string)")
    old_string, new_string = _unnumbered(old_string, new_string)
    if old_string == new_string:
        raise ToolError("old_string and new_string are the same: nothing would change")
    if "\n" in text and text.split("\n", 1)[0].endswith("\r"):  # the file's line end, read off its first line
        old_string, new_string = _crlf(old_string), _crlf(new_string)
    count = text.count(old_string)
    if count > 1:
        lines = _lines_of(text, old_string)
        shown = ", ".join(map(str, lines[:SHOW_PLACES])) + (", …" if len(lines) > SHOW_PLACES else "")
        if replace_all:
            new = text.replace(old_string, new_string)
            return (new, f"replaced {count} occurrences in {rel} (at lines {shown}; now {len(split_lines(new))} "
                    "lines)", lines[0], max(len(split_lines(new_string)), 1))
        if inside := inside_words(text, old_string):  # replace_all would change other names: not offered
            raise ToolError(f"{AMBIGUOUS}{count} times in {rel} (at lines {shown}), {len(inside)}{INSIDE_WORDS} "
                            f"(line {inside[0][0]}: {quote(inside[0][1][:80])}): include more of the line to "
                            "change so that it occurs once")
        if in_text_only(text, old_string, rel):  # replace_all would be no rename: not offered
            raise ToolError(f"{AMBIGUOUS}{count} times in {rel} (at lines {shown}),{IN_TEXT_ONLY}: include more "
                            "of the line to change so that it occurs once")
        raise ToolError(f"{AMBIGUOUS}{count} times in {rel} (at lines {shown}): include more of the "
                        "lines around the one to change so that it occurs once, or set replace_all to "
                        "change every one")
    note = ""
    if count == 1:
        at = text.index(old_string)
    else:
        found, note = _loose_match(text, old_string), " (matched ignoring indentation and trailing spaces)"
        if found is None and (requoted := _requoted(old_string)) is not None and text.count(requoted) == 1:
            # the 1.5B model quoted `__version__ = '0.14.2'` where the file has "0.14.2", seven times (dev split)
            found, note = (text.index(requoted), requoted, ("", "")), " (matched with the file's quotes)"
            new_string = new_string.translate(_SWAP_QUOTES)
        if found is None:
            raise ToolError(_not_found(text, old_string, rel))
        at, old_string, shift = found
        new_string = _shift(new_string, shift)
    new = text[:at] + new_string + text[at + len(old_string):]
    first = text.count("\n", 0, at) + 1
    removed = old_string.count("\n") + (0 if old_string.endswith("\n") else 1)
    added = len(split_lines(new_string)) if new_string else 0
    span = f"line {first}" if removed == 1 else f"lines {first}-{first + removed - 1}"
    summary = (f"replaced {span} of {rel} with {added} line{'s' if added != 1 else ''}{note} "
               f"(now {len(split_lines(new))} lines)")
    return new, summary, first, max(added, 1)


def _unnumbered(old_string: str, new_string: str) -> tuple[str, str]:
    """The strings without read's number column when every line of `old_string` carries one (and of
    `new_string` too, for that one)."""
    def strip(s: str) -> str | None:
        lines = s.split("\n")
        body = [ln for ln in lines if ln]
        if not body or not all(_NUMBER.match(ln) for ln in body):
            return None
        return "\n".join(_NUMBER.sub("", ln, count=1) for ln in lines)

    old = strip(old_string)
    if old is None:
        return old_string, new_string
    new = strip(new_string)
    return old, new if new is not None else new_string


def _crlf(s: str) -> str:
    return re.sub(r"(?<!\r)\n", "\r\n", s)


def _occurrences(text: str, needle: str) -> Iterator[int]:
    """The offsets of `needle` in `text`, each after the one before it ends (as `str.count` counts them)."""
    at = text.find(needle)
    while at != -1:
        yield at
        at = text.find(needle, at + max(len(needle), 1))


def _line_at(text: str, at: int) -> int:
    return text.count("\n", 0, at) + 1


def _lines_of(text: str, needle: str) -> list[int]:
    return [_line_at(text, at) for at in _occurrences(text, needle)]


def inside_words(text: str, needle: str) -> list[tuple[int, str]]:
    """(line, its text) of each occurrence of `needle` that is part of a longer word: a letter, digit or `_`
    right before it when it starts with one, or right after it when it ends with one (`nd` in `and`, `1` in
    `10`; `_irregular` in `_irregular(` is whole).  The 1.5B model, told that "nd" occurs 30 times, set
    replace_all (dev split), and "1" -> "2" changed 182 places of a module (a user trial)."""
    if not needle:
        return []
    head, tail, lines = _wordish(needle[0]), _wordish(needle[-1]), text.split("\n")
    out = []
    for at in _occurrences(text, needle):
        end = at + len(needle)
        if (head and at > 0 and _wordish(text[at - 1])) or (tail and end < len(text) and _wordish(text[end])):
            n = _line_at(text, at)
            out.append((n, lines[n - 1].strip()))
    return out


def in_text_only(text: str, needle: str, rel: str) -> bool:
    """Whether `needle`, a name, occurs in a Python file only inside strings and comments: replacing every
    occurrence would be no rename (`syntax.name_lines`); False for other text and other files."""
    return needle.isidentifier() and name_lines(text, needle, rel) == []


def _wordish(ch: str) -> bool:
    return ch.isalnum() or ch == "_"


_SWAP_QUOTES = str.maketrans({"'": '"', '"': "'"})


def _requoted(old_string: str) -> str | None:
    """`old_string` with its string quotes swapped (' for " or the other way), when it holds one kind only;
    None otherwise.  Found once so, the replace goes on with `new_string`'s quotes swapped too, in the file's
    style."""
    return old_string.translate(_SWAP_QUOTES) if ("'" in old_string) != ('"' in old_string) else None


def _norm(line: str) -> str:
    return line.rstrip("\r\n").strip()


def _loose_match(text: str, old_string: str) -> tuple[int, str, tuple[str, str]] | None:
    """(offset, the file's text that matched, (indentation in old_string, indentation in the file)) where
    `old_string`'s lines equal a run of whole lines of the file but for their leading and trailing
    whitespace, when exactly one run does; None otherwise."""
    want = [_norm(ln) for ln in old_string.split("\n")]
    while want and not want[-1]:
        want.pop()
    while want and not want[0]:
        want.pop(0)
    if not want:
        return None
    lines = split_lines(text)
    have = [_norm(ln) for ln in lines]
    hits = [i for i in range(len(lines) - len(want) + 1) if have[i] == want[0] and have[i:i + len(want)] == want]
    if len(hits) != 1:
        return None
    i = hits[0]
    at = sum(len(ln) for ln in lines[:i])
    matched = "".join(lines[i:i + len(want)])
    if not old_string.endswith("\n") and matched.endswith("\n"):
        matched = matched[:-2] if matched.endswith("\r\n") else matched[:-1]
    first_old = next(ln for ln in old_string.split("\n") if ln.strip())
    indent_old = INDENT.match(first_old).group()  # type: ignore[union-attr]
    indent_file = INDENT.match(lines[i]).group()  # type: ignore[union-attr]
    return at, matched, (indent_old, indent_file)


def _shift(s: str, shift: tuple[str, str]) -> str:
    """`s` with each line's leading `shift[0]` made `shift[1]`; a line that does not start with `shift[0]`
    gains or loses as many whitespace characters as the two differ by."""
    was, now = shift
    if was == now:
        return s
    delta = len(now) - len(was)
    pad = (now[-1] if now else " ") * max(delta, 0)
    out = []
    for ln in s.split("\n"):
        if not ln.strip():
            out.append(ln)
        elif ln.startswith(was):
            out.append(now + ln[len(was):])
        elif delta > 0:
            out.append(pad + ln)
        else:
            lead = len(INDENT.match(ln).group())  # type: ignore[union-attr]
            out.append(ln[min(lead, -delta):])
    return "\n".join(out)


def _not_found(text: str, old_string: str, rel: str) -> str:
    first = next((ln.strip() for ln in old_string.split("\n") if ln.strip()), "")
    have = [_norm(ln) for ln in split_lines(text)]
    close = difflib.get_close_matches(first, have, n=1, cutoff=0.6) if first and len(have) <= CLOSE_LINES else []
    if close:
        n = have.index(close[0]) + 1
        return (f"{NOT_IN_FILE}{rel}; its first line is closest to line {n}: {quote(close[0][:200])} "
                "(read the lines and copy them exactly, without the line numbers)")
    return f"{NOT_IN_FILE}{rel} (read the lines to change and copy them exactly, without the line numbers)"


def replace(ws: Workspace, path: str, old_string: str, new_string: str, replace_all: bool) -> tuple[bool, str]:
    target = ws.resolve(path)
    rel = ws.rel(target)
    old = read_text_for_edit(target, rel, must_exist=True)
    new, summary, first, span = plan_replace(old, old_string, new_string, rel=rel, replace_all=replace_all)
    _write_file(target, _encode(new))
    return True, changed_region(old, new, rel, summary, first, span)


def preview_replace(ws: Workspace, path: str, old_string: str, new_string: str, replace_all: bool) -> str:
    return preview_change(ws, path, lambda old, rel: plan_replace(old, old_string, new_string, rel=rel,
                                                                  replace_all=replace_all)[0])


REPLACE = Tool(
    function_schema(
        "replace",
        "Replace old_string, copied exactly from the file (without read's line numbers) and occurring once "
        "in it, with new_string.",
        {
            "path": PATH_ARG,
            "old_string": {"type": "string", "description": "The exact text to change, as the file has it."},
            "new_string": {"type": "string", "description": "The text to put in its place."},
            "replace_all": {"type": "boolean", "default": False,
                            "description": "Change every occurrence (a rename), not just one."},
        },
        ["path", "old_string", "new_string"],
    ),
    replace,
    preview_replace,
)
