"""Where a read should start, and what the reads of a task have shown: the rails' memory of reads.

Why (each from `continualcode bench tasks` transcripts of the 1.5B model, docs/agent.md):
- a read meant for a grep hit (the rails put one in place of a repeated search) starts at the first line of
  the function, class or statement that holds the hit, when that is at most `read_back` lines up, else
  HIT_CONTEXT lines above it: sent five lines above `'sheep',`, the model never saw `UNCOUNTABLES`;
- `read_back` is the read's window reckoned in lines (`read_cap` / READ_LINE_CHARS), so that a read that
  starts above a hit still shows it;
- a read from the top of a long file whose one definition the task's shown code (`retrieve.py`) or the
  last search named further down starts at that definition instead (`instead_of`): the model read modules
  from line 1 right after a grep had named `def ordinalize` at line 236, and its window ended near line 80;
- the read the rails put in place of a change to a file the model has not seen starts where that change
  would go (`before_change`: the line a `replace` quotes, an `edit_lines`' first line), else at the located
  definition: the 1.5B model proposed such a change in each of the 8 dev change tasks (as its first call in
  4), and the read from line 1 put in its place ended near line 80, far above the `ordinalize(1)` (line
  243) its replace quoted;
- what reads showed since the last change is kept (`shown`), so that a redirect is not made to lines the
  conversation already holds; and which of them ran through the file's end (`whole`), so that a read starting
  inside one (it can show nothing new) is a repeat: asked to add a function at the end of a 691-line module, the
  1.5B model read lines 650, 651 and 691 on after a read had shown 649 to the end (a user trial on tomli; 45 of
  the 1,358 reads in the committed task transcripts started so).

Pure bookkeeping over calls and tool output, with the workspace reached only through `file_key`, `start` and
`find`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from continualcode.records import ToolCall
from continualcode.retrieve import BLOCK_HEAD
from continualcode.tools import validate_args
from continualcode.tools.files import MORE_LINES, READ_LINE
from continualcode.tools.search import GREP_HIT
from continualcode.tools.syntax import DEF_LINE

FileKey = Callable[[ToolCall], str]  # the resolved path a call's `path` names ("" when unusable)
Start = Callable[[str, int], int | None]  # the first line of the function or statement holding a file's line
Find = Callable[[str, str], int | None]  # the line of a file where a text first occurs

HIT_CONTEXT = 5  # lines above a grep hit that its read shows
READ_BACK = 150  # lines above a grep hit that its read may start, at the function or statement holding it
READ_LINE_CHARS = 50  # characters of a numbered line a read's window is reckoned in (`workspace_rails.py`)
MIN_QUOTE = 4  # characters of a replace's first line that are enough to find where it goes
READ_NUMBER = READ_LINE  # a line as read shows it: (its number)


@dataclass
class Reads:
    """One session's reads: what they showed since the last change, and where a task's reads should start."""

    file_key: FileKey
    start: Start = lambda _path, _line: None
    read_back: int = READ_BACK  # at most this many lines above a hit (so that the read's window still shows it)
    find: Find = lambda _path, _text: None
    shown: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # file -> lines reads showed since a change
    whole: dict[str, list[tuple[int, int]]] = field(default_factory=dict)  # those of them that ran to the file's end
    hit_lines: dict[str, int] = field(default_factory=dict)  # a read meant for a grep hit -> the hit's line
    # file -> the line of the definition this task's shown code, or its latest search, found in it (one per file)
    located: dict[str, int] = field(default_factory=dict)

    def new_task(self, code: str = "") -> None:
        """Forget the last task's reads; note where the code shown before this task starts, file by file (the
        first chunk shown of a file)."""
        self.shown, self.whole, self.hit_lines, self.located = {}, {}, {}, {}
        for m in reversed(list(BLOCK_HEAD.finditer(code))):
            if key := self._key(m.group(1)):
                self.located[key] = int(m.group(2))

    def changed(self) -> None:
        """A call that may have changed files ran: what reads showed may be stale."""
        self.shown.clear()
        self.whole.clear()

    def read(self, call: ToolCall, output: str) -> None:
        """A read that worked: note the lines it showed, and whether they ran to the file's end (no `read`
        note of more lines to continue with)."""
        if (lines := [int(n) for n in READ_NUMBER.findall(output)]) and (key := self.file_key(call)):
            self.shown.setdefault(key, []).append((min(lines), max(lines)))
            if MORE_LINES.search(output) is None:
                self.whole.setdefault(key, []).append((min(lines), max(lines)))

    def holds(self, read: ToolCall) -> bool:
        """Whether a read since the last change showed all that `read` would: its first line lies in lines shown
        through the file's end, or past that end (a user trial on tenacity: offset 117 of a 103-line file, after a
        read of lines 79-103, was put to the user, whose approval could only get the tool's error)."""
        first = int(read.arguments.get("offset") or 1)
        return any(a <= first for a, _ in self.whole.get(self.file_key(read) or "", []))

    def searched(self, output: str) -> None:
        """A search that found something: note the definition it found in each Python file where it found
        exactly one (`located`)."""
        found: dict[str, list[int]] = {}
        for m in GREP_HIT.finditer(output):
            if m.group(1).endswith(".py") and DEF_LINE.match(m.group(3)):
                found.setdefault(m.group(1), []).append(int(m.group(2)))
        for path, lines in found.items():
            if len(lines) == 1 and (key := self._key(path)):
                self.located[key] = lines[0]

    def at(self, path: str, line: int) -> ToolCall:
        """The read that shows a file's line (a grep hit): from the first line of the function, class or
        statement that holds it (`start`), when that is at most `read_back` lines up, else from HIT_CONTEXT
        lines above it."""
        start, near = self.start(path, line), max(1, line - HIT_CONTEXT)
        offset = min(start, near) if start is not None and line - start <= self.read_back else near
        read = ToolCall("read", validate_args("read", {"path": path, "offset": offset}))
        self.hit_lines[read.to_text()] = line
        return read

    def shows(self, read: ToolCall) -> bool:
        """Whether a read since the last change showed the line a redirected read is for (its hit, or its
        first line): that read again would repeat what the conversation holds."""
        line = self.hit_lines.get(read.to_text(), int(read.arguments.get("offset") or 1))
        return any(a <= line <= b for a, b in self.shown.get(self.file_key(read) or "", []))

    def instead_of(self, read: ToolCall) -> ToolCall | None:
        """The read of the definition `located` in a file, in place of a read from its top whose window would
        not reach it (more than `read_back` lines down); None for a read that starts further down, a file with
        no such definition, or one whose definition a read since the last change showed."""
        line = self.located.get(self.file_key(read))
        if line is None or line <= self.read_back or int(read.arguments.get("offset") or 1) > 1:
            return None
        at = self.at(str(read.arguments["path"]), line)
        return None if self.shows(at) else at

    def before_change(self, change: ToolCall, read: ToolCall) -> ToolCall:
        """The read to make before a change to a file the model has not seen (`read`: of the whole file): from
        where the change would go (the first line a `replace` quotes, when it is in the file and at least
        MIN_QUOTE characters; an `edit_lines`' first line), when that is past the read's window; else `instead_of`
        the read, or the read itself."""
        path, line = str(read.arguments["path"]), None
        if change.name == "replace" and len(quoted := _first_line(change.arguments.get("old_string"))) >= MIN_QUOTE:
            line = self.find(path, quoted)
        elif change.name == "edit_lines" and isinstance(start := change.arguments.get("start_line"), int):
            line = start
        if line is not None and line > self.read_back:
            return self.at(path, line)
        return self.instead_of(read) or read

    def _key(self, path: str) -> str:
        return self.file_key(ToolCall("read", {"path": path}))


def _first_line(text: object) -> str:
    """The first line of a text that is not blank, stripped ("" for none, or for what is not a text)."""
    return next((ln.strip() for ln in text.split("\n") if ln.strip()), "") if isinstance(text, str) else ""
