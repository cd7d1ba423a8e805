"""The user's answer to one proposed call: the decisions, the approver protocol, and the asking.

Boundary: asking only.  `ask` returns the approver's decision on a call: an auto-approved tool is
approved without asking; feedback is handed on and the same call asked about again.  While the user
reads, the speculative prefill it is handed runs (speculate.py): an approval waits for it, any other
answer (or an interrupt) stops it.  What the next prompt would be is the session's business.

- Approve:   execute the call.  `always=True` also auto-approves that tool later.
- Deny:      with correction text, the learning event; an empty correction denies without learning.
- Edit:      the edited arguments are executed, and the edit is the correction.
- Feedback:  free-form text kept for the next correction; the same call is asked about again.
- Abort:     the task ends here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from continualcode.records import ToolCall
from continualcode.speculate import Speculation, Warmable


@dataclass(frozen=True)
class Approve:
    always: bool = False


@dataclass(frozen=True)
class Deny:
    correction: str = ""


@dataclass(frozen=True)
class Edit:
    arguments: dict[str, Any]


@dataclass(frozen=True)
class Feedback:
    text: str


@dataclass(frozen=True)
class Abort:
    pass


Decision = Approve | Deny | Edit | Feedback | Abort


class Approver(Protocol):
    def decide(self, call: ToolCall, preview: str) -> Decision: ...


def ask(approver: Approver, call: ToolCall, preview: Callable[[], str], *, auto: bool,
        on_feedback: Callable[[str], None], warm: Warmable | None = None,
        next_prompt: Callable[[], Sequence[int]] | None = None, prompt: Sequence[int] | None = None) -> Decision:
    """The decision on `call`; with `warm`, `next_prompt()` (the prompt that follows an approval) is
    prefilled on a background thread while the approver decides, then the base's KV of `prompt` (the call's
    own prompt: a denial's reference, speculate.py)."""
    if auto:
        return Approve()
    spec = Speculation(warm, next_prompt, prompt) if warm is not None and next_prompt is not None else None
    d: Decision = Abort()
    try:
        while True:
            d = approver.decide(call, preview())
            if not isinstance(d, Feedback):
                return d
            on_feedback(d.text)
    finally:
        if spec is not None:
            spec.finish() if isinstance(d, Approve) else spec.cancel()
