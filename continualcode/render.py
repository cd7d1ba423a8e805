"""Messages + tools ⇄ token ids, and tool-call parsing, in the model's own chat template.

Two styles, one call format:
- native: the template takes `tools=` (Qwen2.5 / Qwen3 and other Hermes-style templates that
  document `<tool_call>` blocks); tool results go back as role "tool".
- fallback: templates without tool support (the embedded SmolLM2): the tool list and the call
  format are written into the system prompt, followed by one worked example exchange (a probe
  found the 135M model emits no usable call zero-shot, and follows one example); tool results go
  back as user turns.
In both, a call is `<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>` and the
decoding grammar (`constrain.py`) guarantees it.  Assistant turns are rendered from their raw
sampled text, so the tokens the student produced are the tokens the teacher scores.

`parse` never raises: it returns a call, a text answer, or an error message meant to be sent back
to the model as a retry prompt.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from continualcode.backends.base import stop_token_ids
from continualcode.constrain import GrammarConstraint, build_constraint
from continualcode.context import KEEP_RESULTS, compact
from continualcode.intent import asks_for_change
from continualcode.outline import LEGEND
from continualcode.records import CALL_CLOSE, CALL_OPEN, NOTES, TASK, Message, Role, ToolCall, loads_call_json
from continualcode.tools import DEFAULT_SCHEMAS, ToolError, validate_args

SYSTEM_PROMPT = (
    "You are a coding agent working inside the user's project directory. "
    "Each reply is exactly one tool call, or, when the task is done, a short plain-text answer for the user "
    "that states the result itself. "
    "Look before you act: find code with grep or glob, then read the lines you need (offset and limit) "
    "rather than whole large files. EDIT_HINT Never claim a change you have not made. "
    "Never describe or print a tool call in words: make it. "
    "Follow the user's corrections exactly."
)
# How to change a file, for the edit tools the model is shown (`Renderer` fills `EDIT_HINT` in).
EDIT_HINTS = {
    frozenset({"edit_lines"}): "To change a file, read the lines first, then replace them with edit_lines; "
                               "use write only for new files.",
    frozenset({"replace"}): "To change a file, read the lines first, then change them with replace "
                            "(old_string copied exactly from the file); use write only for new files.",
    frozenset({"edit_lines", "replace"}): "To change a file, read the lines first, then change them with "
                                          "replace (old_string copied exactly from the file) or edit_lines; "
                                          "use write only for new files.",
}


def edit_hint(system_prompt: str, tools: Sequence[dict[str, Any]]) -> str:
    """`system_prompt` with its `EDIT_HINT` placeholder saying how to change a file with the edit tools
    among `tools` (removed when there is none)."""
    names = frozenset(t["function"]["name"] for t in tools) & {"edit_lines", "replace"}
    return system_prompt.replace("EDIT_HINT ", EDIT_HINTS[names] + " " if names else "")


@dataclass(frozen=True)
class Parsed:
    """Exactly one of call / text / error is set."""

    call: ToolCall | None = None
    text: str | None = None
    error: str | None = None


_CALL_RE = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)


def parse(text: str, tools: Sequence[dict[str, Any]] = DEFAULT_SCHEMAS) -> Parsed:
    """Parse one assistant turn; never raises."""
    try:
        return _parse(text, tools)
    except Exception as e:  # a parser must not kill a turn, whatever the input
        return Parsed(error=f"could not parse the reply ({type(e).__name__})")


def _parse(text: str, tools: Sequence[dict[str, Any]]) -> Parsed:
    blocks = _CALL_RE.findall(text)
    if not blocks:
        if "<tool_call>" in text:
            return Parsed(error="the tool call is not closed with </tool_call>")
        stripped = text.strip()
        if not stripped:
            return Parsed(error="empty reply: make one tool call or answer in text")
        return Parsed(text=stripped)
    if len(blocks) > 1:
        return Parsed(error=f"{len(blocks)} tool calls in one reply: make exactly one call per turn")
    try:
        obj = loads_call_json(blocks[0])
    except json.JSONDecodeError as e:
        return Parsed(error=f"the tool call is not valid JSON ({e.msg} at char {e.pos})")
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return Parsed(error='the tool call must be {"name": TOOL, "arguments": {...}}')
    known = [t["function"]["name"] for t in tools]
    if obj["name"] not in known:
        return Parsed(error=f"unknown tool {obj['name'][:40]!r}: use one of {', '.join(known)}")
    args = obj.get("arguments", {})
    if isinstance(args, str):  # some templates emit arguments as a JSON string
        try:
            args = loads_call_json(args)
        except json.JSONDecodeError:
            return Parsed(error="the arguments are not a JSON object")
    try:
        args = validate_args(obj["name"], args)
    except ToolError as e:
        return Parsed(error=str(e))
    return Parsed(call=ToolCall(obj["name"], args))


_PLACEHOLDER_VALUES = frozenset({"string", "str", "path", "file", "filename", "pattern", "regex", "...", "text"})
_PLACEHOLDER_RE = re.compile(r"^(/?path/to(/|$)|<[^<>]{1,40}>$|your[_-]?(file|path|pattern))", re.I)


# A file's text in a change: any value may be real ("str", "<root>"), but a line that stands in for the
# file's own lines is not: the 1.5B model wrote `<original content>` and `<original content of
# inflection.py>` as a write's first line, over a 426-line module (`bench tasks`, dev and test splits).
TEXT_ARGS = frozenset({"content", "old_string", "new_string"})
STAND_IN_ARGS = frozenset({"content", "new_string"})  # old_string quotes the file: a line there is the file's
_STAND_IN_RE = re.compile(
    r"^(<\s*(the\s+)?(original|existing|rest|previous|remaining|unchanged)\s[^<>=]{1,60}>"
    r"|(#|//)\s*\.{3}.{0,40}\b(rest|existing|original|unchanged|remaining|previous)\b.{0,40}$)", re.I)


def placeholder_argument(call: ToolCall) -> str | None:
    """The name of an argument whose value is a schema word or a template placeholder ("string",
    "path/to/file", "<path>"), or of a file text argument with a line standing in for the file's own lines
    ("<original content>", "# ... rest of the code ..."); None otherwise.  A small model fills a forced call
    with such values when it does not know what to do; such a call is asked again, never run."""
    for key, value in call.arguments.items():
        if not isinstance(value, str):
            continue
        if key in TEXT_ARGS:
            if key in STAND_IN_ARGS and any(_STAND_IN_RE.match(line.strip()) for line in value.splitlines()):
                return key
        elif value.strip().lower() in _PLACEHOLDER_VALUES or _PLACEHOLDER_RE.match(value.strip()):
            return key
    return None


def _tool_lines(tools: Sequence[dict[str, Any]]) -> str:
    lines = []
    for t in tools:
        fn = t["function"]
        props = fn["parameters"].get("properties", {})
        req = set(fn["parameters"].get("required", []))
        sig = ", ".join(p if p in req else f"{p}?" for p in props)
        lines.append(f"- {fn['name']}({sig}): {fn['description']}")
    return "\n".join(lines)


FALLBACK_EXAMPLE: tuple[tuple[Role, str], ...] = (
    ("user", "What is in hello.py?"),
    ("assistant", ToolCall("read", {"path": "hello.py"}).to_text()),
    ("user", "Tool result (read):\n     1\tprint('hello')"),
    ("assistant", "hello.py prints 'hello'."),
)


# One worked exchange for native tool templates too: the first message as a session's first task
# arrives (the project's files, its map of definitions, the question), a read of just the lines the
# map points to, then an answer that states the result and names the function and file.  Qwen2.5-
# Coder otherwise filled calls with "string" and "path/to/file" or answered with how one could find
# the result.  The listing sits in the example's user turn as it does in the real one (the renderer
# puts the session's overview there): with the listing in the system prompt instead, the 0.5B model's
# first call named a real file in 11 of the 16 dev tasks and copied the example's `app/` path in
# others; in the user turn, 16 of 16 (`bench/results/tasks/FIRST-CALL.md`).  Shown only until the
# session's first tool result: with it in view after a read, the model answered "greet(name) in
# inflection/__init__.py returns the greeting" about a package that has no greet.
NATIVE_EXAMPLE: tuple[tuple[Role, str], ...] = (
    ("user", "Files in the project (the workspace root is '.'):\nREADME.md\napp/hello.py\n\n"
             f"Classes and functions {LEGEND}\napp/hello.py\n"
             "  3: def greet(name) \u2014 The greeting for a name.\n\nWhat does greet() return?"),
    ("assistant", ToolCall("read", {"path": "app/hello.py", "offset": 3, "limit": 20}).to_text()),
    ("tool", '     3\tdef greet(name):\n     4\t    """The greeting for a name."""\n'
             '     5\t    return f"Hello, {name}!"'),
    ("assistant", 'greet(name) in app/hello.py (line 3) returns the greeting "Hello, <name>!".'),
)


# The same question answered by a search first: `grep` for the definition over the whole project, then the read
# at its line.  The listing has a test and a docs file beside the code, and no map of definitions (the real
# first turn has none either: `repo_map=0`).  On the dev split's first calls (`bench/results/tasks/first-call/
# example/`) the 1.5B model opened 15 of 16 tasks on the package's module or a search of the whole project
# with it, 8 with NATIVE_EXAMPLE (7 up / 0 down, p = 0.016: it grepped `docs/conf.py` or a test file for the
# function asked about); the 0.5B model 15 of 16 against 13 (2 up / 0 down).
GREP_EXAMPLE: tuple[tuple[Role, str], ...] = (
    ("user", "Files in the project (the workspace root is '.'):\napp/hello.py\ntests/test_hello.py\ndocs/conf.py\n"
             "README.md\n\nWhat does greet() return?"),
    ("assistant", ToolCall("grep", {"pattern": "def greet", "path": "."}).to_text()),
    ("tool", "app/hello.py:3: def greet(name):"),
    NATIVE_EXAMPLE[1],
    NATIVE_EXAMPLE[2],
    NATIVE_EXAMPLE[3],
)
def change_example(tool_names: Sequence[str]) -> tuple[tuple[Role, str], ...]:
    """The worked exchange for a task that asks for a change (config `change_example`): a bug reported by its
    symptom, the definition found by a search, read at its line, the line changed with the change tool the
    model is shown (`replace`, else `edit_lines`), the tests run, a one-line report.  With the question
    examples alone, which end at an answer, the 1.5B model "fixed" the symptom: it put the task's wrong
    output (`'13rd'`, `<flag>false</flag>`, `schedule.every(2).hours`) in a `replace` as the text to change,
    in 7 of the 8 fix-and-test tasks of both halves' transcripts (the eighth asked for a new test; one
    "fixed" `docs/conf.py`).  Unlike them it stays in view for the whole task: the steps it shows come after
    the first tool result, and a constant prefix keeps the prompt cache.  It runs the whole suite: shown
    `pytest tests/test_hello.py`, the model ran `tests/test_inflection.py` in a project whose tests sit at
    its root, then wrote that file anew with a `test_greet`."""
    fixed = '    return f"Hello, {name}!"'
    if "replace" in tool_names:
        change = ToolCall("replace", {"path": "app/hello.py", "old_string": '    return f"Hello, {name}"',
                                      "new_string": fixed})
    else:
        change = ToolCall("edit_lines", {"path": "app/hello.py", "start_line": 5, "end_line": 5, "content": fixed})
    return (
        ("user", "Files in the project (the workspace root is '.'):\napp/hello.py\ntests/test_hello.py\ndocs/conf.py\n"
                 "README.md\n\ngreet('Ann') returns 'Hello, Ann' without the '!' at the end. Fix it and run the "
                 "tests."),
        GREP_EXAMPLE[1],
        GREP_EXAMPLE[2],
        NATIVE_EXAMPLE[1],
        ("tool", '     3\tdef greet(name):\n     4\t    """The greeting for a name."""\n'
                 '     5\t    return f"Hello, {name}"'),
        ("assistant", change.to_text()),
        ("tool", f"replaced line 5 of app/hello.py with 1 line (now 5 lines)\n     3\tdef greet(name):\n"
                 f'     4\t    """The greeting for a name."""\n     5\t{fixed}'),
        ("assistant", ToolCall("bash", {"command": "python -m pytest -q"}).to_text()),
        ("tool", ".                                                                        [100%]\n"
                 "1 passed in 0.01s\n[exit code 0]"),
        ("assistant", "Fixed greet(name) in app/hello.py (line 5): the greeting left out the \"!\"; it now ends "
                      "with it, and the tests pass."),
    )


# config `worked_example` (`build.worked_example` resolves `auto`)
EXAMPLES: dict[str, tuple[tuple[Role, str], ...]] = {"read": NATIVE_EXAMPLE, "grep": GREP_EXAMPLE}


# The files the worked examples name: a call that names one the project does not have copied it from the
# example (`rails.py`; the 0.5B model ran `bash app/hello.py` for "run greet.py" and grepped with
# include `app/hello.py` at a session's first call).
EXAMPLE_FILES = frozenset({"app/hello.py", "hello.py", "tests/test_hello.py", "test_hello.py", "docs/conf.py"})


class Renderer:
    """Turns a conversation into prompt ids for one tokenizer; builds the matching constraint."""

    def __init__(
        self,
        tokenizer: Any,
        *,
        tools: Sequence[dict[str, Any]] = DEFAULT_SCHEMAS,
        style: Literal["auto", "native", "fallback"] = "auto",
        system_prompt: str = SYSTEM_PROMPT,
        vocab_size: int | None = None,
        keep_results: int = KEEP_RESULTS,
        task_notes: str = "",
        example: str = "read",
        change: bool = False,
    ) -> None:
        self.tok = tokenizer
        self.tools = list(tools)
        template = getattr(tokenizer, "chat_template", None) or ""
        if not template:
            raise ValueError("the tokenizer has no chat template")
        native = "tools" in template and "<tool_call>" in template
        self.style = ("native" if native else "fallback") if style == "auto" else style
        self.system_prompt = edit_hint(system_prompt, self.tools)
        self.task_notes = task_notes  # opens the conversation's first user turn, after the project listing
        self.example = EXAMPLES[example]  # the native template's worked exchange (`EXAMPLES`)
        # a task that asks for a change gets `change_example` instead, for the whole task (config `change_example`)
        self.change = change_example([t["function"]["name"] for t in self.tools]) if change else ()
        self.keep_results = keep_results
        self.vocab_size = vocab_size or len(tokenizer)
        self.stop_ids = stop_token_ids(tokenizer)

    # --- rendering --------------------------------------------------------------------------------

    def to_template_messages(self, messages: Sequence[Message]) -> list[dict[str, str]]:
        """The conversation as the template's dicts: our system prompt first, few-shot if fallback;
        `task_notes` (the project's rules with `memory_at=task`) open the first user turn, a user message's own
        notes (`records.NOTES`: rules given later in the session) open its turn; stale tool results and
        superseded failed replies shortened (`context.compact`)."""
        messages = compact(messages, keep_results=self.keep_results)
        out: list[dict[str, str]] = []
        system = self.system_prompt
        if self.style == "fallback":
            system += (
                "\n\nTools:\n" + _tool_lines(self.tools) + "\n\nTo call a tool, reply with exactly:\n"
                f'{CALL_OPEN}{{"name": TOOL, "arguments": {{...}}}}{CALL_CLOSE}'
            )
        out.append({"role": "system", "content": system})
        example = FALLBACK_EXAMPLE if self.style == "fallback" else self.example if self.tools else ()
        task = next((m.content for m in reversed(messages) if m.role == "user" and m.meta.get(TASK)), "")
        if example is self.example and self.change and asks_for_change(task):
            example = self.change
        elif example is self.example and any(m.role == "tool" for m in messages):
            example = ()  # the conversation has its own calls now; the 0.5B model copied the example's answer
        out.extend({"role": r, "content": c} for r, c in example)
        pending: list[str] = []  # the session's own system text (the project overview): opens the next user turn
        first_user = True
        for m in messages:
            if m.role == "user":
                if first_user and self.task_notes:
                    pending.append(self.task_notes)
                first_user = False
                if m.meta.get(NOTES):
                    pending.append(m.meta[NOTES])
            if m.role == "system":
                pending.append(m.content)
            elif m.role == "user" and pending:
                out.append({"role": "user", "content": "\n\n".join([*pending, m.content])})
                pending = []
            elif m.role == "tool":
                if self.style == "native":
                    out.append({"role": "tool", "content": m.content})
                else:
                    name = m.meta.get("tool", "tool")
                    out.append({"role": "user", "content": f"Tool result ({name}):\n{m.content}"})
            else:
                out.append({"role": m.role, "content": m.content})
        if pending:  # no user turn after it: it stays system text
            out[0]["content"] += "\n\n" + "\n\n".join(pending)
        return out

    def prompt_text(self, messages: Sequence[Message]) -> str:
        kwargs: dict[str, Any] = {"tools": self.tools} if self.style == "native" else {}
        return self.tok.apply_chat_template(
            self.to_template_messages(messages), add_generation_prompt=True, tokenize=False, **kwargs
        )

    def prompt_ids(self, messages: Sequence[Message]) -> list[int]:
        return list(self.tok.encode(self.prompt_text(messages), add_special_tokens=False))

    def decode(self, tokens: Sequence[int]) -> str:
        """The completion's text, without the stop token."""
        toks = list(tokens)
        if toks and toks[-1] in self.stop_ids:
            toks = toks[:-1]
        return self.tok.decode(toks, skip_special_tokens=False)

    def token_pieces(self, tokens: Sequence[int]) -> list[str]:
        """Each token's own text (for heatmaps)."""
        return [self.tok.decode([t], skip_special_tokens=False) for t in tokens]

    def parse(self, text: str) -> Parsed:
        return parse(text, self.tools)

    def constraint(self, *, allow_text: bool = True, allow_calls: bool = True,
                   only: Sequence[str] | None = None) -> GrammarConstraint:
        """The call-or-text grammar; `only` names the tools a call may use (all by default): the prompt still
        shows every tool, only the grammar narrows (`bench speed`'s drafts part measures each tool kind so)."""
        tools = self.tools if only is None else [t for t in self.tools if t["function"]["name"] in only]
        if only is not None and {t["function"]["name"] for t in tools} != set(only):
            raise ValueError(f"unknown tools {sorted(set(only) - {t['function']['name'] for t in tools})}")
        return build_constraint(self.tok, tools, vocab_size=self.vocab_size, stop_ids=self.stop_ids,
                                allow_text=allow_text, allow_calls=allow_calls)
