"""The records that cross layers: a message, a tool call, a sampled completion, a correction.

Pure data at the bottom of the package: the agent produces them, the renderer and the tools read
them, the learner and the journal consume them.  This module imports nothing from continualcode.
The call format (`CALL_OPEN` + compact JSON + `CALL_CLOSE`) is defined here because a `ToolCall`
renders itself in it; the decoding grammar (`constrain.py`) guarantees the same format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Literal

Role = Literal["system", "user", "assistant", "tool"]

CALL_OPEN = "<tool_call>\n"
CALL_CLOSE = "\n</tool_call>"
JSON_SEPARATORS = (", ", ": ")

# How a correction is put to the model, the same for the retry (after the denial, rails.DENIAL) and for the
# self-teacher (learn/teacher.py); and how a tool result or a correction is closed by the task it serves
# (`remind_task`; after a tool result the 0.5B model lost the task: docs/agent.md)
INSTEAD = "Do this instead: {fix}"
TASK_REMINDER = "\n\n(The task: {task})"

# A backslash in a call's JSON keeps its JSON meaning before `"`, `\\`, `/`, `n`, `r`, `t` and `u` + four hex
# digits; before anything else it is the code's own backslash, kept as written.
_ESCAPE_RE = re.compile(r"\\(u[0-9A-Fa-f]{4}|.)", re.S)
_JSON_ESCAPES = frozenset('"\\/nrt')


def loads_call_json(text: str) -> Any:
    """`json.loads` for a call as a model writes it: code goes into JSON strings unescaped (`"r'\\d+'"`,
    `"b'\\x00'"`, `"re.compile(r'\\bword\\b')"`), so a backslash that is no JSON escape, and the control
    escapes `\\b` and `\\f` (a backspace or form feed in a source file is never what a coding model means; a
    regex's word boundary is), stay a backslash and that character.  Raises json.JSONDecodeError as
    json.loads does.  The decoding grammar (constrain.py) lets a call hold such escapes for this reason: held to
    JSON's, the 1.5B model wrote `\\d` as `\\b` and `\\x00` as `\\n` in every call that needed them
    (`bench/results/tasks/escapes-probe/`)."""
    return json.loads(_ESCAPE_RE.sub(_code_escape, text))


def _code_escape(m: re.Match[str]) -> str:
    esc = m.group(1)
    return m.group(0) if esc in _JSON_ESCAPES or len(esc) == 5 else "\\\\" + esc


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]

    def to_text(self) -> str:
        body = json.dumps({"name": self.name, "arguments": self.arguments}, separators=JSON_SEPARATORS)
        return f"{CALL_OPEN}{body}{CALL_CLOSE}"


# A user message's meta key: text the renderer puts before the message's content in the same turn (the rules
# the user gave earlier in the session); the content stays the task itself (journal, distillation prompts).
NOTES = "notes"
# A user message's meta keys for a task: TASK marks every task the user gave (not a tool result, an error or a
# denial); FRESH marks a task whose model context starts at it (`earlier_tasks`: the session's earlier tasks are
# left out of what the model sees, or kept only as a recap in its notes).  The journal keeps every message.
TASK = "task"
FRESH = "fresh"


@dataclass(frozen=True)
class Message:
    role: Role
    content: str
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Sample:
    """One sampled completion. `logprobs[i]` = log π(tokens[i]) at temperature 1, unconstrained;
    `allowed_mass`: the share of the first token's distribution (temperature 1) that the grammar allowed
    (None without a grammar): near 0 when the model wanted to write something the grammar bars."""

    tokens: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length", "constraint"]
    allowed_mass: float | None = None


@dataclass(frozen=True)
class Correction:
    """One learning event: the student's exact context and completion, and what the user said.

    kind:          "deny" (text = the correction), "edit" (text = the argument diff,
                   demonstration = the edited call), "approved_retry" (demonstration = the call
                   approved after a denial; text = that denial's correction).
    messages:      the conversation the student saw (before its attempt).
    prompt_ids / sample: the student's prompt tokens and its own sampled completion.
    feedback:      intermediary feedback accumulated in the session.
    """

    kind: Literal["deny", "edit", "approved_retry"]
    messages: tuple[Message, ...]
    prompt_ids: list[int]
    sample: Sample
    attempt_text: str
    text: str
    feedback: tuple[str, ...] = ()
    demonstration: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record (the journal keeps it so that `replay` can re-run the step)."""
        return {
            "kind": self.kind, "text": self.text, "feedback": list(self.feedback),
            "demonstration": self.demonstration, "attempt_text": self.attempt_text,
            "prompt_ids": list(self.prompt_ids),
            "messages": [{"role": m.role, "content": m.content, "meta": m.meta} for m in self.messages],
            "sample": {"tokens": list(self.sample.tokens), "logprobs": list(self.sample.logprobs),
                       "finish_reason": self.sample.finish_reason},
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Correction:
        s = d["sample"]
        return cls(
            kind=d["kind"],
            messages=tuple(Message(m["role"], m["content"], m.get("meta") or {}) for m in d["messages"]),
            prompt_ids=list(d["prompt_ids"]),
            sample=Sample(list(s["tokens"]), list(s["logprobs"]), s["finish_reason"]),
            attempt_text=d["attempt_text"], text=d["text"], feedback=tuple(d.get("feedback", ())),
            demonstration=d.get("demonstration"),
        )
