"""`Workspace`: a confined directory, the tools' settings, and the two calls the agent makes.

`run(name, args)` executes one call and never raises: unknown tools, bad arguments, refusals
(`ToolError`), OS errors and any other exception come back as `ToolResult(ok=False, output="error:
<one line>")`, because whatever happens is shown to the model as the tool result. `preview(name,
args)` is the text the user approves, with the same promise (and the same refusals: an argument
that is not valid text is refused by both). Both look the tool up in the table (table.py);
confinement is `ConfinedDir` (paths.py); every output is capped at `result_cap`. `sandbox` says
whether bash runs inside bubblewrap (sandbox.py): on, off, or auto (where it works).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from continualcode.tools.addition import placed, unwrap_html
from continualcode.tools.base import ToolError, ToolResult, cap_text, clean, one_line, quote
from continualcode.tools.files import cuts_most, plan_edit, read_text_for_edit
from continualcode.tools.paths import ConfinedDir
from continualcode.tools.replace import EMBEDDED, NO_RENAME, in_text_only, inside_words, plan_replace
from continualcode.tools.sandbox import (
    Sandbox,
    SandboxUnavailable,
    foreign_owner,
    say_once,
    say_unavailable_once,
    unavailable,
)
from continualcode.tools.syntax import (
    docstrings_only,
    enclosing_start,
    escape_string_breaks,
    indent_candidates,
    redefined,
    reindent,
    syntax_error,
)
from continualcode.tools.table import TOOLS, validate_args

DEFAULT_RESULT_CAP = 12000  # characters of one tool result shown to the model
DEFAULT_BASH_TIMEOUT = 60  # seconds a bash call may run when the model gives no timeout
STATEMENT_FILE_BYTES = 2 * 2**20  # a Python file read to find what holds a grep hit (larger: the hit alone)


class Workspace(ConfinedDir):
    """A directory the tools are confined to, and the settings they run with."""

    def __init__(
        self,
        root: Path,
        *,
        result_cap: int = DEFAULT_RESULT_CAP,
        bash_timeout: int = DEFAULT_BASH_TIMEOUT,
        pass_secrets: bool = False,
        sandbox: str = "off",
        sandbox_network: bool = False,
        read_outline: bool = False,
        read_cap: int = 0,
    ) -> None:
        super().__init__(root)
        if result_cap < 500:
            raise ValueError("result_cap must be at least 500")
        if sandbox not in ("auto", "on", "off"):
            raise ValueError(f"sandbox must be auto, on or off, not {sandbox!r}")
        self.result_cap = result_cap
        self.read_cap = min(read_cap, result_cap) if read_cap > 0 else result_cap  # characters one read shows
        self.bash_timeout = bash_timeout
        self.pass_secrets = pass_secrets
        self.read_outline = read_outline  # a read from the top of a long .py file ends with its definitions
        self.sandbox: Sandbox | None = None  # None: bash runs unconfined
        if sandbox != "off":
            why = unavailable()
            if why is None:
                self.sandbox = Sandbox(self.root, network=sandbox_network)
                if (owned := foreign_owner(self.root)) is not None:
                    say_once(owned)
            elif sandbox == "on":
                raise SandboxUnavailable(f"sandbox=on, but {why}")
            else:
                say_unavailable_once(why)

    def run(self, name: str, args: Mapping[str, Any]) -> ToolResult:
        """Execute one tool call. Never raises."""
        try:
            kwargs = validate_args(name, args)  # first: it is what refuses an unknown name
            _refuse_invalid_text(name, kwargs)
            ok, output = TOOLS[name].run(self, **kwargs)
        except Exception as e:  # the model must always get an answer
            ok, output = False, f"error: {one_line(self._explain(e))}"
        return ToolResult(ok, cap_text(clean(output), self.result_cap))

    def preview(self, name: str, args: Mapping[str, Any]) -> str:
        """What the user sees before approving the call; computed without changing the disk. Never raises."""
        try:
            kwargs = validate_args(name, args)
            _refuse_invalid_text(name, kwargs)
            text = TOOLS[name].preview(self, **kwargs)
        except Exception as e:
            text = f"error: {one_line(self._explain(e))}"
        return cap_text(clean(text), self.result_cap)

    def breaks_syntax(self, name: str, args: Mapping[str, Any]) -> str | None:
        """For a write, edit_lines or replace that would leave a Python file that parses now unable to parse: why
        ("line N: message"); None otherwise, also for a call the tool would refuse.  Never raises."""
        planned = self._planned(name, args)
        return None if planned is None else _breaks(*planned)

    def cuts_file(self, name: str, args: Mapping[str, Any]) -> str | None:
        """For a write that would leave an existing file of 20 lines or more with less than half of them:
        "REL from N lines to M"; None otherwise, also for a call the tool would refuse.  Never raises."""
        planned = self._planned(name, args) if name == "write" else None
        return None if planned is None else _cuts(*planned)

    def warns(self, name: str, args: Mapping[str, Any]) -> bool:
        """Whether the preview of a write, edit_lines or replace carries a warning: it would break a Python file
        that parses (`breaks_syntax`), leave a file with less than half its lines (`cuts_file`), or define a
        function or class a second time in one scope (`syntax.redefined`).  The change is planned once.  Never
        raises."""
        planned = self._planned(name, args)
        if planned is None:
            return False
        return _breaks(*planned) is not None or (name == "write" and _cuts(*planned) is not None) \
            or redefined(planned[1], planned[2], planned[0]) is not None

    def reindented(self, name: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """An edit_lines that would break a Python file that parses, shifted to the first indentation
        (`syntax.indent_candidates`) at which the file parses; None when it does not break the file or
        no indentation mends it.  The file is read once; each candidate is planned on that text.
        Never raises (a call the tool would refuse has no plan)."""
        planned = self._planned(name, args) if name == "edit_lines" else None
        if planned is None:
            return None
        if _breaks(*planned) is None:
            return None
        rel, old, _ = planned
        kwargs = validate_args(name, args)  # valid: it was planned
        start, end, content = kwargs["start_line"], kwargs["end_line"], kwargs["content"]
        for indent in indent_candidates(old.splitlines(), start, end):
            shifted = reindent(content, indent)
            if shifted != content and syntax_error(plan_edit(old, start, end, shifted, rel=rel)[0], rel) is None:
                return {**kwargs, "content": shifted}
        return None

    def restrung(self, name: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """A write, edit_lines or replace that would break a Python file that parses, with each line break
        inside a one-line string literal of its new text written as `\\n` (`syntax.escape_string_breaks`),
        when the file then parses; None otherwise.  Never raises."""
        planned = self._planned(name, args)
        if planned is None or _breaks(*planned) is None:
            return None
        kwargs = validate_args(name, args)  # valid: it was planned
        key = "new_string" if name == "replace" else "content"
        mended = {**kwargs, key: escape_string_breaks(kwargs[key])}
        if mended[key] == kwargs[key]:
            return None
        replanned = self._planned(name, mended)
        return mended if replanned is not None and syntax_error(replanned[2], replanned[0]) is None else None

    def changes_nothing(self, name: str, args: Mapping[str, Any]) -> bool:
        """Whether a write, edit_lines or replace would leave its (existing) file as it is: a `replace` of a
        text by itself, an edit or write of the lines the file has.  Never raises."""
        try:
            kwargs = validate_args(name, args)
            if name == "replace":
                return bool(kwargs["old_string"].strip()) and kwargs["old_string"] == kwargs["new_string"]
            planned = self._planned(name, kwargs)
            return planned is not None and planned[1] == planned[2] and self.resolve(kwargs["path"]).is_file()
        except Exception:
            return False

    def touches_only_docstrings(self, name: str, args: Mapping[str, Any]) -> bool:
        """Whether a write, edit_lines or replace would change a Python file's docstrings and nothing else of
        its code (`syntax.docstrings_only`); a file that is new or empty has no code to keep.  Never raises."""
        planned = self._planned(name, args)
        return planned is not None and bool(planned[1].strip()) and docstrings_only(planned[1], planned[2], planned[0])

    def embedded_replace_all(self, name: str, args: Mapping[str, Any]) -> str | None:
        """Why a `replace` with replace_all is refused for a model: its old text also occurs inside longer words
        of the file (`EMBEDDED`, `replace.inside_words`), or it is a name that a Python file has only in strings
        and comments (`NO_RENAME`, `replace.in_text_only`); None for any other call, or a whole-word rename.
        Never raises."""
        try:
            kwargs = validate_args(name, args)
            if name != "replace" or not kwargs["replace_all"]:
                return None
            path = self.resolve(kwargs["path"])
            text, old = path.read_text(encoding="utf-8", errors="replace"), kwargs["old_string"]
            inside = inside_words(text, old)
            if not inside and in_text_only(text, old, path.name):
                return NO_RENAME.format(old=quote(old[:40]), rel=self.rel(path))
        except Exception:
            return None
        return EMBEDDED.format(old=quote(old[:40]), where=f"line {inside[0][0]}: "
                               f"{quote(inside[0][1][:60])}") if inside else None

    def line_of(self, path: str, text: str) -> int | None:
        """The line of a file where `text` first occurs; None when it does not, or the file cannot be read.
        Never raises."""
        try:
            content = self.resolve(path).read_text(encoding="utf-8", errors="replace")
        except Exception:
            return None
        at = content.find(text) if text else -1
        return None if at < 0 else content.count("\n", 0, at) + 1

    def statement_start(self, path: str, line: int) -> int | None:
        """The first line of the function, class or top-level statement of a Python file that holds `line`
        (`syntax.enclosing_start`); None for other files and ones that cannot be read or parsed.  Never
        raises."""
        try:
            target = self.resolve(path)
            if not target.name.endswith(".py") or target.stat().st_size > STATEMENT_FILE_BYTES:
                return None
            return enclosing_start(target.read_text(encoding="utf-8", errors="replace"), line)
        except Exception:
            return None

    def placed_write(self, name: str, args: Mapping[str, Any]) -> dict[str, Any] | None:
        """For a write that would leave a Python file that parses with less than half its lines, holding one
        definition alone (`addition.placed`; a web page's code wrapping undone): the `edit_lines` arguments
        that put it where it belongs, if the file then parses; None otherwise.  Never raises."""
        planned = self._planned(name, args) if name == "write" else None
        if planned is None or cuts_most(planned[1], planned[2]) is None or syntax_error(planned[1], planned[0]):
            return None
        rel, old, new = planned
        where = placed(old, unwrap_html(new)) if rel.endswith(".py") else None
        if where is None or syntax_error(plan_edit(old, *where, rel=rel)[0], rel) is not None:
            return None
        return {"path": args["path"], "start_line": where[0], "end_line": where[1], "content": where[2]}

    def _planned(self, name: str, args: Mapping[str, Any]) -> tuple[str, str, str] | None:
        """(relative path, text now, text after) of a write, edit_lines or replace; None for other calls and
        for calls the tool would refuse."""
        if name not in ("write", "edit_lines", "replace"):
            return None
        try:
            kwargs = validate_args(name, args)
            target = self.resolve(kwargs["path"])
            rel = self.rel(target)
            old = read_text_for_edit(target, rel, must_exist=name != "write")
            if name == "write":
                return rel, old, kwargs["content"]
            if name == "replace":
                return rel, old, plan_replace(old, kwargs["old_string"], kwargs["new_string"], rel=rel,
                                              replace_all=kwargs["replace_all"])[0]
            return rel, old, plan_edit(old, kwargs["start_line"], kwargs["end_line"], kwargs["content"], rel=rel)[0]
        except Exception:
            return None

    def _explain(self, e: Exception) -> str:
        if isinstance(e, ToolError):
            return str(e)
        if isinstance(e, OSError):
            return self.os_message(e)
        return f"{type(e).__name__}: {e}"


def _refuse_invalid_text(name: str, kwargs: Mapping[str, Any]) -> None:
    """A string argument holding a lone surrogate (not text: no file or command can hold it) is refused
    with one line; the surrogates \\udc80-\\udcff stand for a file name's non-UTF-8 bytes and pass."""
    for key, value in kwargs.items():
        if not isinstance(value, str):
            continue
        try:
            value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError as e:
            raise ToolError(f"argument {key!r} of {name} holds a lone surrogate (\\u{ord(value[e.start]):04x} at "
                            f"position {e.start}), which is not valid text") from None


def _breaks(rel: str, old: str, new: str) -> str | None:
    """Why `new` does not parse as Python when `old` does ("line N: message"); else None."""
    return None if syntax_error(old, rel) is not None else syntax_error(new, rel)


def _cuts(rel: str, old: str, new: str) -> str | None:
    """"REL from N lines to M" when `new` keeps less than half of the 20 or more lines of `old`; else None."""
    cut = cuts_most(old, new)
    return f"{rel} from {cut[0]} lines to {cut[1]}" if cut else None
