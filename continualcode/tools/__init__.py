"""The agent's tools (read, write, edit_lines, replace, glob, grep, bash), confined to one workspace.

The boundary: the agent calls `Workspace.run(name, args)` (and `preview` before asking the user) and
gets a `ToolResult`; it knows nothing else of the tools. The model sees `tool_schemas(edit_tool)`: six
of them, `edit_lines` or `replace` or both as its edit tool (`DEFAULT_SCHEMAS`: `edit_lines`). The promises:
- `run` and `preview` never raise: every failure is `ToolResult(ok=False, output="error: <one line>")`.
- File tools are confined: every path is resolved (symlinks followed) and refused outside the root,
  under /proc, with a NUL byte or over-long. bash runs once approved, in the root, without the
  agent's secrets, inside a bubblewrap sandbox where one works (`sandbox.py`: writes only in the
  workspace and a private /tmp, no network, no view of the agent's processes); unconfined otherwise.
- Writes are atomic (`fsio.atomic_write`): a kill -9 leaves the old file or the new one.
- Every output is capped at `result_cap` characters, head and tail kept.
- A bash command runs in its own process group; on timeout and after it ends, the group and the
  processes that left it (found by a marker variable) are killed.

Layout: base.py (Tool, ToolResult, ToolError, text helpers), paths.py (confinement, the walk),
files.py, replace.py, search.py and bash.py (the tools: schema, run, preview each), table.py (name -> Tool,
validate_args), workspace.py (Workspace). The full specification, edge cases and limitations: docs/tools.md.
"""

from continualcode.fsio import TEMP_PREFIX
from continualcode.tools.base import Tool, ToolError, ToolResult, cap_text
from continualcode.tools.table import (
    DEFAULT_SCHEMAS,
    EDIT_TOOLS,
    TOOL_NAMES,
    TOOL_SCHEMAS,
    TOOLS,
    tool_schemas,
    validate_args,
)
from continualcode.tools.workspace import DEFAULT_BASH_TIMEOUT, DEFAULT_RESULT_CAP, Workspace

__all__ = [
    "DEFAULT_BASH_TIMEOUT",
    "DEFAULT_RESULT_CAP",
    "DEFAULT_SCHEMAS",
    "EDIT_TOOLS",
    "TEMP_PREFIX",
    "TOOLS",
    "TOOL_NAMES",
    "TOOL_SCHEMAS",
    "Tool",
    "ToolError",
    "ToolResult",
    "Workspace",
    "cap_text",
    "tool_schemas",
    "validate_args",
]
