"""The typed event vocabulary: one dataclass per kind of thing that happens in a session.

Producers: the `Session` (agent.py) and the `App` (app.py).  Consumers: the terminal display, the
journal (through the app), the benchmarks and `replay` / resume (reading the journal back).
Everything imports its kinds from here; nobody spells an event kind as a bare string.

On disk an event is one journal line `{"type": TYPE, "t", "seq", **record()}`; `from_record`
reads such a line back into its class.  `JOURNALED = False` marks the display-only kinds (a spinner
start) that the app does not write.  The field names are the journal's format: renaming one is a
format change.

| TYPE           | class          | fields                                                     |
|----------------|----------------|------------------------------------------------------------|
| session_start  | SessionStart   | model, workspace, config                                   |
| user           | UserTask       | text                                                       |
| thinking       | Thinking       | (display only)                                             |
| proposal       | Proposal       | text, tokens, finish, call {name, arguments} or None, error |
| message        | MessageAdded   | role, content, meta (resume rebuilds the conversation)     |
| decision       | Decided        | kind (approve/deny/edit/feedback/abort), text, diff, arguments, always |
| tool_result    | ToolOutput     | name, ok, output                                           |
| assistant_text | AssistantText  | text                                                       |
| correction     | CorrectionMade | the `Correction` record (replay re-runs it)                |
| learn_start    | LearnStarted   | kind (display only)                                        |
| learn          | Learned        | the step's metrics, heatmap {tokens, student_lp, teacher_lp, advantage} |
| error          | ErrorShown     | text                                                       |
| info           | Info           | text (display only)                                        |
| resume         | Resumed        | messages, step                                             |
| checkpoint     | Checkpoint     | path, step                                                 |
| undo           | Undone         | step                                                       |
| clear          | Cleared        |                                                            |
| session_end    | SessionEnd     | step                                                       |
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from continualcode.records import Correction, Message, Role

DecisionKind = Literal["approve", "deny", "edit", "feedback", "abort"]
HEAT_KEYS = ("tokens", "student_lp", "teacher_lp", "advantage")


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""
    JOURNALED: ClassVar[bool] = True

    def record(self) -> dict[str, Any]:
        """The journal line's fields (without type, t and seq)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Event:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


@dataclass(frozen=True)
class SessionStart(Event):
    TYPE: ClassVar[str] = "session_start"
    model: str = ""
    workspace: str = ""
    config: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class UserTask(Event):
    TYPE: ClassVar[str] = "user"
    text: str


@dataclass(frozen=True)
class Thinking(Event):
    TYPE: ClassVar[str] = "thinking"
    JOURNALED: ClassVar[bool] = False


@dataclass(frozen=True)
class Proposal(Event):
    """One sampled reply: its text, token count, why sampling stopped, and what it parsed to."""

    TYPE: ClassVar[str] = "proposal"
    text: str
    tokens: int
    finish: str
    call: dict[str, Any] | None = None
    error: str | None = None


@dataclass(frozen=True)
class MessageAdded(Event):
    TYPE: ClassVar[str] = "message"
    role: Role
    content: str
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, m: Message) -> MessageAdded:
        return cls(m.role, m.content, dict(m.meta))

    def message(self) -> Message:
        return Message(self.role, self.content, dict(self.meta or {}))


@dataclass(frozen=True)
class Decided(Event):
    """The user's answer to one proposed call.  Fields a kind does not use stay None and are not
    written: deny/feedback carry text, edit carries diff and arguments, approve carries always."""

    TYPE: ClassVar[str] = "decision"
    kind: DecisionKind
    text: str | None = None
    diff: str | None = None
    arguments: dict[str, Any] | None = None
    always: bool | None = None

    def record(self) -> dict[str, Any]:
        return {k: v for k, v in super().record().items() if v is not None}


@dataclass(frozen=True)
class ToolOutput(Event):
    TYPE: ClassVar[str] = "tool_result"
    name: str
    ok: bool
    output: str


@dataclass(frozen=True)
class AssistantText(Event):
    TYPE: ClassVar[str] = "assistant_text"
    text: str


@dataclass(frozen=True)
class CorrectionMade(Event):
    """A learning event as the learner receives it; the journal keeps it whole for `replay`."""

    TYPE: ClassVar[str] = "correction"
    correction: Correction

    def record(self) -> dict[str, Any]:
        return self.correction.to_dict()

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> CorrectionMade:
        return cls(Correction.from_dict(d))


@dataclass(frozen=True)
class LearnStarted(Event):
    TYPE: ClassVar[str] = "learn_start"
    JOURNALED: ClassVar[bool] = False
    kind: str


@dataclass(frozen=True)
class Learned(Event):
    """One learning step's outcome: its metrics, and the per-token heatmap of the completion.

    metrics: the learner's scalars (loss, kl_after, rolled_back, step, sec_*, …; learn/step.py).
    heatmap: {tokens, student_lp, teacher_lp, advantage}, one entry per completion token.
    """

    TYPE: ClassVar[str] = "learn"
    metrics: dict[str, Any]
    heatmap: dict[str, list[Any]] = field(default_factory=dict)

    @classmethod
    def from_report(cls, report: dict[str, Any]) -> Learned:
        heat = {k: report.get(k) or [] for k in HEAT_KEYS}
        return cls({k: v for k, v in report.items() if k not in HEAT_KEYS}, heat)

    def record(self) -> dict[str, Any]:
        return {**self.metrics, "heatmap": self.heatmap}

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> Learned:
        return cls({k: v for k, v in d.items() if k not in ("type", "t", "seq", "heatmap")}, d.get("heatmap") or {})

    @property
    def step(self) -> int:
        return int(self.metrics.get("step", 0))

    @property
    def rolled_back(self) -> str:
        return str(self.metrics.get("rolled_back") or "")


@dataclass(frozen=True)
class ErrorShown(Event):
    TYPE: ClassVar[str] = "error"
    text: str


@dataclass(frozen=True)
class Info(Event):
    TYPE: ClassVar[str] = "info"
    JOURNALED: ClassVar[bool] = False
    text: str


@dataclass(frozen=True)
class Resumed(Event):
    TYPE: ClassVar[str] = "resume"
    messages: int
    step: int


@dataclass(frozen=True)
class Checkpoint(Event):
    TYPE: ClassVar[str] = "checkpoint"
    path: str
    step: int


@dataclass(frozen=True)
class Undone(Event):
    TYPE: ClassVar[str] = "undo"
    step: int


@dataclass(frozen=True)
class Cleared(Event):
    TYPE: ClassVar[str] = "clear"


@dataclass(frozen=True)
class SessionEnd(Event):
    TYPE: ClassVar[str] = "session_end"
    step: int


KINDS: dict[str, type[Event]] = {
    c.TYPE: c
    for c in (SessionStart, UserTask, Thinking, Proposal, MessageAdded, Decided, ToolOutput, AssistantText,
              CorrectionMade, LearnStarted, Learned, ErrorShown, Info, Resumed, Checkpoint, Undone, Cleared,
              SessionEnd)
}

EventSink = Callable[[Event], None]


def from_record(d: dict[str, Any]) -> Event | None:
    """A journal line back as its event (None for a type this version does not know)."""
    cls = KINDS.get(str(d.get("type")))
    return None if cls is None else cls.from_record(d)
