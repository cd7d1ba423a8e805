"""A session's rails wired to its workspace: the judgements of a call that need the files.

`rails.Rails` is bookkeeping over calls and results; what it asks of the files (which file a call names,
whether a change breaks, cuts or leaves its file, how to mend it, where a read should start, whether a
retry edits a denied change: `amend.py`) comes from here, as hooks over one `Workspace`.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

from continualcode.amend import amended
from continualcode.rails import Rails
from continualcode.reads import READ_BACK, READ_LINE_CHARS, Reads
from continualcode.records import ToolCall
from continualcode.tools import Workspace


def workspace_rails(workspace: Workspace, on: bool) -> Rails:
    """A session's rails, judging changes against the workspace's files; a grep hit's read starts at most
    `read_cap` / READ_LINE_CHARS lines above it (a numbered line reckoned longer than most), so that the
    read's window still reaches the hit."""
    key = partial(_file_key, workspace)
    return Rails(key, on=on, mend=partial(_mend, workspace),
                 breaks=lambda call: workspace.breaks_syntax(call.name, call.arguments),
                 cuts=lambda call: workspace.cuts_file(call.name, call.arguments),
                 idle=lambda call: workspace.changes_nothing(call.name, call.arguments),
                 embedded=lambda call: workspace.embedded_replace_all(call.name, call.arguments),
                 docs_only=lambda call: workspace.touches_only_docstrings(call.name, call.arguments),
                 amend=partial(_amend, workspace),
                 reads=Reads(key, start=workspace.statement_start, find=workspace.line_of,
                             read_back=min(READ_BACK, workspace.read_cap // READ_LINE_CHARS)))


def _file_key(workspace: Workspace, call: ToolCall) -> str:
    """The resolved path a call names (rails: which file it reads or changes); "" when unusable."""
    try:
        return str(workspace.resolve(str(call.arguments.get("path", ""))))
    except Exception:  # an unusable path: the tool itself will refuse it with a clear line
        return ""


def _mend(workspace: Workspace, call: ToolCall) -> ToolCall | None:
    """An edit_lines re-indented, a write of one definition over its module placed, or a change whose line
    break inside a string literal is written as `\\n`, so that the file still parses and keeps its lines;
    None when none applies."""
    if call.name == "write" and (placed := workspace.placed_write(call.name, call.arguments)) is not None:
        return ToolCall("edit_lines", placed)
    fixed = (workspace.reindented(call.name, call.arguments) if call.name == "edit_lines" else None) \
        or workspace.restrung(call.name, call.arguments)
    return None if fixed is None else ToolCall(call.name, fixed)


def _amend(workspace: Workspace, call: ToolCall, denied: Sequence[ToolCall]) -> ToolCall | None:
    """`amend.amended` over the workspace's files (a file that is missing or unreadable holds nothing)."""
    return amended(call, denied,
                   holds=lambda c, text: workspace.line_of(str(c.arguments.get("path", "")), text) is not None,
                   same=lambda a, b: _file_key(workspace, a) == _file_key(workspace, b) != "")
