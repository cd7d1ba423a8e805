"""The learning benchmark's records: what units.jsonl and results.json hold, as types.

Pure data at the bottom of the benchmark: `tasks.py` produces them, `run.py` writes them one unit
row per line, `metrics.py` reads them back.  They are TypedDicts because they are the on-disk
JSON: the key names and their order are the format (docs/bench-learn.md), and results committed
under bench/results/learn/ must aggregate the same after any change here.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypedDict

TaskDecision = Literal["compliant", "non_compliant", "undecided"]

# A proposed call as the simulated user saw it: "class" is a keyword, hence the functional form.
CallRecord = TypedDict("CallRecord", {
    "name": str,
    "args": dict[str, Any],  # long string values cut to SNIPPET characters
    "class": str,  # violates / complies / neutral
    "user": str,  # deny / approve / abort / guard
    "turn": NotRequired[int],  # the session's turn: calls not asked about (refused by the tool, repeats) count too
})


class Retry(TypedDict):
    """After one denial: the decision of the calls that followed it in the same task."""

    turn: int
    observed: bool  # a turn was left after the denial
    next: str | None  # the class of the next call
    decision: str  # a TaskDecision, or "unobserved"


class TaskRecord(TypedDict):
    """One task run with the simulated user."""

    task: str
    seed: int
    status: str  # answered / max_turns / denied / aborted / malformed / guard
    calls: list[CallRecord]
    text: str
    decision: TaskDecision
    malformed: int
    samples: int
    first_valid: bool  # the first reply parsed to a valid call
    first_call: str | None
    kl_k1: float
    kl_exact: float
    sec: float
    retries: NotRequired[list[Retry]]  # the scenario's own task
    of: NotRequired[str]  # cross and forgetting: the scenario the task comes from
    index: NotRequired[int]
    preference: NotRequired[str]  # cross only
    reused: NotRequired[bool]  # copied from the baseline (the adapter was the base)


class CallSummary(TypedDict):
    name: str
    args: dict[str, Any]


class FirstCallRecord(TypedDict):
    """Only the first reply to a control task."""

    task: str
    seed: int
    constrained: bool
    valid: bool
    call: CallSummary | None
    text: str
    tokens: int
    finish: str
    kl_k1: float
    kl_exact: float
    sec: float
    reused: NotRequired[bool]


LearnRecord = dict[str, Any]  # the learner's scalars for one update, + n_tokens, replay, n_steps


class BaselineRecords(TypedDict):
    fresh: list[TaskRecord]
    controls: list[FirstCallRecord]
    controls_unconstrained: list[FirstCallRecord]
    task: NotRequired[TaskRecord]  # the scenario's own task, stopped at its decision
    floor: NotRequired[bool]  # controls and fresh[0] scored as the drift metric scores (its floor)


class VariantRecords(TypedDict):
    task: TaskRecord
    learn: list[LearnRecord]
    persistence: list[TaskRecord]
    controls: list[FirstCallRecord]
    controls_unconstrained: list[FirstCallRecord]
    cross: list[TaskRecord]
    forgetting: list[TaskRecord]
    memory: NotRequired[list[str] | None]  # the rules the measuring sessions started with (None: memory off)
    memory_tasks: NotRequired[list[list[str]]]  # per rule, the tasks it was given on (learn/recall.py)


class BaselineRow(TypedDict):
    """A units.jsonl line: one scenario measured before any learning, for one seed."""

    key: list[Any]  # [baseline name, seed, scenario id]
    kind: Literal["baseline"]
    variant: str  # the baseline's name: "baseline", or "baseline[k=v,…]" for other backend settings
    seed: int
    scenario: str
    preference: str
    fresh: list[TaskRecord]
    controls: list[FirstCallRecord]
    controls_unconstrained: list[FirstCallRecord]
    task: NotRequired[TaskRecord]  # the scenario's own task, stopped at its decision (absent in older runs)
    floor: NotRequired[bool]  # controls and fresh[0] scored for the drift floor (absent: not scored)
    sec: float


class VariantRow(TypedDict):
    """A units.jsonl line: one (variant, seed, scenario), learned then measured."""

    key: list[Any]  # [variant, seed, scenario id]
    kind: Literal["variant"]
    variant: str
    seed: int
    scenario: str
    preference: str
    baseline: str  # the name of the baseline rows it is compared with
    position: int  # the scenario's index in the run
    mode: str
    changed: bool  # the adapter differed from the base when measuring
    task: TaskRecord
    learn: list[LearnRecord]
    persistence: list[TaskRecord]
    controls: list[FirstCallRecord]
    controls_unconstrained: list[FirstCallRecord]
    cross: list[TaskRecord]
    forgetting: list[TaskRecord]
    memory: NotRequired[list[str] | None]  # the rules the measuring sessions started with (None: memory off)
    memory_tasks: NotRequired[list[list[str]]]  # per rule, the tasks it was given on (learn/recall.py)
    sec: float


UnitRow = BaselineRow | VariantRow
