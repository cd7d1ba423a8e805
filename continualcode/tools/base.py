"""The vocabulary every tool module shares: what a tool is (`Tool`), returns (`ToolResult`) and
raises (`ToolError`), and how text is shaped for the model (`quote`, `cap_text`).

Nothing here touches the disk or knows a tool by name; the other tool modules build on it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


class ToolError(Exception):
    """A refusal/failure whose message is shown to the model as the tool result."""


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    output: str  # already capped


@dataclass(frozen=True)
class Tool:
    """One tool, whole: the schema the model sees, what it does, what the user sees before it runs.

    `run(ws, **args)` returns (ok, output) or raises ToolError / OSError; `preview(ws, **args)` returns
    the text shown for approval, without touching the disk. Both get the arguments `validate_args`
    checked against `schema`, defaults filled in.
    """

    schema: dict[str, Any]  # OpenAI function format
    run: Callable[..., tuple[bool, str]]
    preview: Callable[..., str]

    @property
    def name(self) -> str:
        return self.schema["function"]["name"]

    @property
    def parameters(self) -> dict[str, Any]:
        return self.schema["function"]["parameters"]


def function_schema(
    name: str, description: str, properties: dict[str, dict[str, Any]], required: list[str]
) -> dict[str, Any]:
    """A tool's schema in the OpenAI function format (no arguments beyond `properties`)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": required,
                "additionalProperties": False,
            },
        },
    }


PATH_ARG = {"type": "string", "description": "Path relative to the workspace root."}


def type_name(value: Any) -> str:
    """A value's type as JSON calls it, for error messages."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), type(value).__name__)


def quote(text: str, limit: int = 120) -> str:
    """Quote a user-supplied string for an error message, shortened; in double quotes when it holds a single
    quote and no double one (a line `'-4.0 KiB'` was shown as `''-4.0 KiB''`, for a model to copy exactly)."""
    if len(text) > limit:
        text = text[: limit // 2] + "…" + text[-limit // 2 :]
    mark = '"' if "'" in text and '"' not in text else "'"
    return mark + text.replace("\n", "\\n").replace("\x00", "\\x00") + mark


def cap_text(text: str, cap: int) -> str:
    """Keep head and tail of `text` so the result has at most `cap` characters."""
    if len(text) <= cap:
        return text
    longest_marker = f"\n[… {len(text)} chars elided …]\n"
    keep = max(cap - len(longest_marker), 0)
    head = keep // 2
    return text[:head] + f"\n[… {len(text) - keep} chars elided …]\n" + text[len(text) - (keep - head) :]


def clean(text: str) -> str:
    """Make text safe to encode as UTF-8 (undecodable filename bytes become \\xNN escapes)."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def one_line(text: str) -> str:
    return " ".join(text.split()) or "failed"
