"""A tool call written as text instead of made: telling it from an answer, and recovering the call.

A small model that should call a tool often writes the call into its text reply: a fenced JSON
block, a `{"name": ..., "arguments": ...}` object in prose, a `<tool_call>` tag inside text, a tool
written as a function call (`read("x.py")`), or a plan that says which of our tools to use and then
shows the command.  Such a reply is never shown as the answer: the session takes the call when it
can be recovered with valid arguments (`call_in_text`), else re-asks (`looks_like_call`).

What the models write is looser than JSON, and the detector follows it (every form below was a text
answer in a committed task-benchmark transcript that the strict detector let through):
- keys without quotes and typographic quotes: `{call: "edit_lines", arguments: {path: ...}}`,
  `{“name”: “grep”, …}`;
- the tool under another key: `call`, `tool`, `function`, `run`, `action`;
- "you can use the `grep` function … ```bash grep -n … ```": one of our tools named as the thing to
  use, followed by a fenced block — a plan narrated instead of made.
Detection is a heuristic over the text only; recovery parses strictly after normalising quotes and
keys, and the recovered call is validated like any other (a wrong guess is shown for approval, never run
unseen).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from continualcode.records import ToolCall, loads_call_json
from continualcode.tools import DEFAULT_SCHEMAS, TOOL_NAMES, ToolError, validate_args

_TOOLS = "|".join(TOOL_NAMES)
NAME_KEYS: tuple[str, ...] = ("name", "call", "tool", "function", "run", "action")
_Q = "[\"']?"  # a key with or without its quotes

# a tool written as a function call in prose: read("x.py", offset=1) — a plan, not an answer (a method,
# `word.replace("_", "-")`, is code in an answer)
_CODE_CALL_RE = re.compile(rf"(?<![.\w])({_TOOLS})\(\s*[\"']")
_FENCE_RE = re.compile(r"```[a-zA-Z]*\s*(\{.*?\})\s*```", re.S)
_NAME_KEY_RE = re.compile(rf"{_Q}\bname\b{_Q}\s*:\s*[\"']")
_ARGS_KEY_RE = re.compile(rf"{_Q}\b(arguments|parameters|args)\b{_Q}\s*:")
_TOOL_VALUE_RE = re.compile(rf"{_Q}\b({'|'.join(NAME_KEYS)})\b{_Q}\s*:\s*[\"']({_TOOLS})\b")
_NARRATED_RE = re.compile(
    rf"\b(use|using|call|calling|run|running)\s+(the\s+)?`({_TOOLS})`\s+(function|tool|command)\b", re.I)
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2018": "'", "\u2019": "'"})


def looks_like_call(text: str) -> bool:
    """Whether a text reply is really a tool call written as text (the forms in the module docstring)."""
    text = text.translate(_QUOTES)
    if "<tool_call>" in text or "</tool_call>" in text or _CODE_CALL_RE.search(text):
        return True
    if _TOOL_VALUE_RE.search(text) or (_NAME_KEY_RE.search(text) and _ARGS_KEY_RE.search(text)):
        return True
    narrated = _NARRATED_RE.search(text)
    return bool(narrated and "```" in text[narrated.end():])


def call_in_text(text: str, tools: Sequence[dict[str, Any]] = DEFAULT_SCHEMAS) -> ToolCall | None:
    """The tool call a text reply spells out instead of making (a fenced or bare object, keys quoted or
    not, naming a known tool with valid arguments), or None.  `tools` says which names count (the
    renderer may offer a subset); arguments are checked against the tool table, whose schemas those are."""
    text = text.translate(_QUOTES)
    known = {t["function"]["name"] for t in tools}
    for candidate in [*_FENCE_RE.findall(text), *_bare_objects(text)]:
        obj = _loads(candidate)
        if not isinstance(obj, dict):
            continue
        name = next((obj[k] for k in NAME_KEYS if isinstance(obj.get(k), str)), None)
        args = obj.get("arguments", obj.get("parameters", obj.get("args", {})))
        if name not in known:
            continue
        if isinstance(args, str):
            args = _loads(args)
        try:
            return ToolCall(name, validate_args(name, args if isinstance(args, dict) else None))
        except ToolError:
            continue
    return None


def _loads(candidate: str) -> Any:
    """JSON, or JSON whose object keys lack their quotes; None when neither parses."""
    for text in (candidate, quote_keys(candidate)):
        try:
            return loads_call_json(text)
        except (json.JSONDecodeError, RecursionError):
            continue
    return None


def quote_keys(text: str) -> str:
    """`{path: "a", n: 1}` → `{"path": "a", "n": 1}`: quote bare identifiers used as object keys,
    leaving everything inside double-quoted strings as it is."""
    out: list[str] = []
    i, in_string, last = 0, False, ""  # last: the last character outside strings that is not a space
    while i < len(text):
        ch = text[i]
        if in_string:
            out.append(ch)
            if ch == "\\" and i + 1 < len(text):
                out.append(text[i + 1])
                i += 1
            elif ch == '"':
                in_string, last = False, '"'
            i += 1
            continue
        if ch == '"':
            in_string = True
        elif last in "{," and (m := re.match(r"[A-Za-z_]\w*(?=\s*:)", text[i:])):
            out.append(f'"{m.group()}"')
            i, last = i + m.end(), '"'
            continue
        if not ch.isspace():
            last = ch
        out.append(ch)
        i += 1
    return "".join(out)


def _bare_objects(text: str) -> list[str]:
    """Balanced {...} substrings of `text` (outermost only; strings are not tracked: a heuristic)."""
    out, depth, start = [], 0, -1
    for i, ch in enumerate(text):
        if ch == "{":
            if depth == 0:
                start = i
            depth += 1
        elif ch == "}" and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(text[start : i + 1])
    return out
