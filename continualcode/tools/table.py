"""The one table of tools, name -> Tool, and the argument check every call passes first.

`TOOL_NAMES` and `TOOL_SCHEMAS` (in this order) are read off the table, so a tool is added or removed in
one place: its module defines the `Tool`, this table lists it.  The model is shown the tools of
`tool_schemas(edit_tool)`: every tool but the edit tool not chosen (`DEFAULT_SCHEMAS`: `edit_lines`).
`validate_args` checks a call's arguments against the tool's schema (types, bounds, unknown and
missing keys) and fills in the defaults; its errors are `ToolError`s worded for the model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from continualcode.tools.base import Tool, ToolError, quote, type_name
from continualcode.tools.bash import BASH
from continualcode.tools.files import EDIT_LINES, READ, WRITE
from continualcode.tools.replace import REPLACE
from continualcode.tools.search import GLOB, GREP

TOOLS: dict[str, Tool] = {t.name: t for t in (READ, WRITE, EDIT_LINES, REPLACE, GLOB, GREP, BASH)}
TOOL_NAMES: tuple[str, ...] = tuple(TOOLS)
TOOL_SCHEMAS: list[dict] = [t.schema for t in TOOLS.values()]
EDIT_TOOLS = {"lines": ("edit_lines",), "replace": ("replace",), "both": ("edit_lines", "replace")}


def tool_schemas(edit_tool: str = "lines") -> list[dict]:
    """The schemas the model is shown when its edit tools are `EDIT_TOOLS[edit_tool]`."""
    hidden = {"edit_lines", "replace"} - set(EDIT_TOOLS[edit_tool])
    return [t.schema for t in TOOLS.values() if t.name not in hidden]


DEFAULT_SCHEMAS: list[dict] = tool_schemas()


def validate_args(name: str, args: Any) -> dict[str, Any]:
    """Check `args` against the tool's schema and return them with defaults filled in."""
    if not isinstance(name, str) or name not in TOOLS:
        raise ToolError(f"unknown tool {quote(str(name))}; available tools: {', '.join(TOOL_NAMES)}")
    if not isinstance(args, Mapping):
        raise ToolError(f"arguments of {name} must be a JSON object, got {type(args).__name__}")
    params = TOOLS[name].parameters
    props: dict[str, dict[str, Any]] = params["properties"]
    for key in args:
        if key not in props:
            raise ToolError(f"unexpected argument {quote(str(key))} for {name} (allowed: {', '.join(props)})")
    out: dict[str, Any] = {}
    for key, spec in props.items():
        value = args.get(key)
        if value is None:
            if key in params["required"]:
                raise ToolError(f"missing required argument {quote(key)} for {name}")
            out[key] = spec.get("default")
            continue
        if spec["type"] == "boolean":
            if not isinstance(value, bool):
                raise ToolError(f"argument {quote(key)} of {name} must be true or false, got {type_name(value)}")
        elif spec["type"] == "integer":
            if isinstance(value, bool) or not isinstance(value, int):
                raise ToolError(f"argument {quote(key)} of {name} must be an integer, got {type_name(value)}")
            if "minimum" in spec and value < spec["minimum"]:
                raise ToolError(f"argument {quote(key)} of {name} must be >= {spec['minimum']}, got {value}")
            if "maximum" in spec and value > spec["maximum"]:
                raise ToolError(f"argument {quote(key)} of {name} must be <= {spec['maximum']}, got {value}")
        elif not isinstance(value, str):
            raise ToolError(f"argument {quote(key)} of {name} must be a string, got {type_name(value)}")
        out[key] = value
    return out
