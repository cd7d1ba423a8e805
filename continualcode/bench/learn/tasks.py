"""Running tasks: the simulated user drives a real `Session` on a fresh temp workspace.

The real model, the real tools; only the user is simulated (violates → Deny(correction), else
Approve; a bash command that could leave the workspace is never run).  One task gives a
`TaskRecord`, one control's first reply a `FirstCallRecord`; a unit is the records of one scenario
before learning (`baseline_unit`) or under one variant (`variant_unit`).  A variant with project
memory starts its sessions with the rules kept from its corrections, where `memory_at` puts them
(`Ctx.with_memory`: all in the system prompt, or each task's own opening its turn, `learn.recall`), exactly as
the product does.  This module knows the agent only through `Session` and a backend, and
nothing of files on disk or of the run's plan.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypedDict, TypeVar

from continualcode.agent import Abort, Approve, Decision, Deny, SamplingConfig, Session
from continualcode.backends.base import Backend, Snapshot
from continualcode.bench.learn.records import (
    BaselineRecords,
    BaselineRow,
    CallRecord,
    FirstCallRecord,
    Retry,
    TaskRecord,
    VariantRecords,
)
from continualcode.bench.learn.scenario import Scenario, Task, decide, unsafe
from continualcode.bench.learn.variants import BenchLearner
from continualcode.build import make_renderer, read_cap
from continualcode.config import Config
from continualcode.events import Decided, ErrorShown, Event, MessageAdded, Proposal
from continualcode.learn.memory import Memory, Rule, lasting, project_block, prompt_texts
from continualcode.learn.recall import TaskRules
from continualcode.records import NOTES, Message, Sample, ToolCall
from continualcode.render import SYSTEM_PROMPT, Renderer
from continualcode.retrieve import defined, python_chunks
from continualcode.tools import Workspace

BENCH_BASH_TIMEOUT = 30
ENDED = ("answered", "max_turns")
SNIPPET = 300

Other = tuple[Scenario, int, Task]  # another scenario's fresh task: (scenario, index, task)


class _Session(Session):
    """A Session that keeps each sample's prompt and tokens (for scoring the first call)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.samples: list[tuple[list[int], Sample]] = []

    def query(self, **kw: Any) -> tuple[list[int], Sample, str]:
        prompt_ids, sample, text = super().query(**kw)
        self.samples.append((prompt_ids, sample))
        return prompt_ids, sample, text


class SimUser:
    """The simulated user: violates → Deny(correction); else Approve.  `measure` stops at the decision.

    A preference about order (`Scenario.order`) is kept once its complying call has run: after `python
    split.py` in "reproduce before you fix", the read of split.py is the next step, approved (the user used to
    deny it with the correction, so the learner took a step against the very read the preference leads to).
    """

    def __init__(self, scenario: Scenario | None, *, measure: bool) -> None:
        self.sc = scenario
        self.measure = measure
        self.calls: list[CallRecord] = []
        self.turns = 0  # the session's turns so far, asked about or not (`Live` counts them from its events)

    def decide(self, call: ToolCall, preview: str) -> Decision:
        cls = self.sc.classify(call) if self.sc is not None else "neutral"
        if cls == "violates" and self.sc is not None and self.sc.order and any(
                c["class"] == "complies" and c["user"] == "approve" for c in self.calls):
            cls = "neutral"
        user, decision = self._answer(call, cls)
        self.calls.append({"name": call.name, "args": _summary(call.arguments), "class": cls, "user": user,
                           "turn": self.turns + 1})
        return decision

    def _answer(self, call: ToolCall, cls: str) -> tuple[str, Decision]:
        if cls == "violates" and self.sc is not None:
            return ("abort", Abort()) if self.measure else ("deny", Deny(self.sc.correction))
        if cls == "complies" and self.measure and self.sc is not None and self.sc.complies is not None:
            return "abort", Abort()
        if unsafe(call):
            return "guard", Abort()
        return "approve", Approve()


def _summary(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v if not isinstance(v, str) or len(v) <= SNIPPET else v[:SNIPPET] + "…" for k, v in args.items()}


def task_seed(seed: int, scenario_id: str, kind: str, index: int) -> int:
    """The sampling seed of one task: the same in baseline and after learning (paired comparison)."""
    return zlib.crc32(f"{seed}:{scenario_id}:{kind}:{index}".encode()) & 0x7FFFFFFF


def prompt_kwargs(rules: Sequence[str], at: str) -> dict[str, str]:
    """The renderer texts of a session that starts with these memory rules (the product's, app.py)."""
    return prompt_texts(SYSTEM_PROMPT, project_block(rules), at)


Notes = Callable[[str], str]  # a session's `notes`: the rules that open a task's user turn


@dataclass
class Ctx:
    """One loaded backend under one variant config (and the memory rules its sessions start with)."""

    backend: Backend
    renderer: Renderer
    cfg: Config
    base: Snapshot  # the adapter snapshot taken right after load
    seed: int
    rules: tuple[Rule, ...] = ()  # the project memory every session of this context starts with

    def with_memory(self, rules: Sequence[Rule]) -> Ctx:
        """This context with `rules` as its sessions' project memory, as the app puts it: every rule in the
        system prompt (`memory_at=system`), or a task's own opening its user turn (`notes`)."""
        rules = tuple(rules)
        if rules == self.rules:
            return self
        renderer = make_renderer(self.backend, self.cfg, **prompt_kwargs(self._opening(rules), self.cfg.memory_at))
        return dataclasses.replace(self, renderer=renderer, rules=rules)

    def _opening(self, rules: Sequence[Rule]) -> list[str]:
        return [r.text for r in rules] if self.cfg.memory_at == "system" else []

    def notes(self, memory: Memory | None = None) -> Notes:
        """A new session's `notes` (`learn.recall.TaskRules`): the rules of `memory`, a live one that may
        grow during the session, or (None) this context's."""
        mem = memory if memory is not None else Memory(None, self.rules) if self.rules else None
        task_rules = TaskRules(self.cfg.memory_rules, self._opening(self.rules))
        return lambda task: task_rules(mem, task)

    def sampling(self, sc: Scenario | None, *, constrained: bool | None = None) -> SamplingConfig:
        """The product's sampling settings (`Config.sampling_config`), with the scenario's turn cap."""
        c = self.cfg.sampling_config()
        turns = min(sc.max_turns, c.max_turns) if sc is not None else c.max_turns
        return dataclasses.replace(c, max_turns=turns,
                                   constrained=c.constrained if constrained is None else constrained)

    def workspace(self, root: Path, files: dict[str, str]) -> Workspace:
        write_files(root, files)
        return Workspace(root, result_cap=self.cfg.result_cap, read_outline=self.cfg.read_outline,
                         read_cap=read_cap(self.cfg), bash_timeout=min(self.cfg.bash_timeout, BENCH_BASH_TIMEOUT))


def _defined(files: dict[str, str]) -> frozenset[str]:
    """The names a scenario's Python files define: what the app's Recorder hands `memory.fleeting`."""
    return defined(c for path, text in files.items() if path.endswith(".py") for c in python_chunks(path, text))


def write_files(root: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)


@contextmanager
def reference_apart(backend: Backend) -> Iterator[None]:
    """Score the reference (adapter=False) from its own KV prefixes, as it is scored once the adapter
    has changed.  While the adapter is a no-op the local backend lets the reference start from the
    sampler's KV (the same weights), which makes KL exactly 0 by construction: a floor measured that
    way would not be the floor of the path the drift metric takes.  Backends without that sharing
    (no `adapter.is_noop`) are left as they are."""
    adapter = getattr(backend, "adapter", None)
    if adapter is None or not callable(getattr(adapter, "is_noop", None)):
        yield
        return
    adapter.is_noop = lambda: False
    try:
        yield
    finally:
        del adapter.is_noop  # the class's method again


def kl_first(ctx: Ctx, prompt_ids: list[int], sample: Sample) -> tuple[float, float]:
    """Mean per-token KL(adapted ‖ base) on a sample's tokens: (k1 on the sampled tokens, exact over the vocab)."""
    b, tokens = ctx.backend, list(sample.tokens)
    a = b.score(prompt_ids, tokens, full=True, adapter=True)
    r = b.score(prompt_ids, tokens, full=True, adapter=False)
    k1 = float((a.logprobs - r.logprobs).mean())
    pa_TV, pb_TV = a.full_logprobs, r.full_logprobs
    assert pa_TV is not None and pb_TV is not None  # full=True
    exact = float((pa_TV.exp() * (pa_TV - pb_TV)).sum(-1).mean())
    return k1, exact


class Live:
    """One simulated session kept open in its temp workspace: the scenario's task, then (in-session
    persistence) later tasks in the same conversation, each with its own simulated user and sampling seed."""

    def __init__(self, ctx: Ctx, sc: Scenario | None, files: dict[str, str], *,
                 learner: BenchLearner | None = None, notes: Notes | None = None) -> None:
        self.ctx, self.sc = ctx, sc
        self._tmp = tempfile.TemporaryDirectory(prefix="cc-bench-")
        self.malformed = 0
        self.errors: list[str] = []  # what the session showed as an error (a learning step that failed and rolled back)
        from_retry = learner is not None and ctx.cfg.learn_from_approved_retry
        self.session = _Session(ctx.backend, ctx.renderer, ctx.workspace(Path(self._tmp.name), files),
                                SimUser(sc, measure=True), learner=learner, sampling=ctx.sampling(sc),
                                on_event=self._sink, notes=notes or ctx.notes(),
                                learn_from_approved_retry=from_retry)

    def _sink(self, ev: Event) -> None:
        """Counts what the record needs: malformed replies, errors shown, and the task's turns (each turn's call
        ends in a tool result, a repeat's included, or in a denial; a call the tool refuses is never asked)."""
        user = getattr(getattr(self, "session", None), "approver", None)  # None while the session is built
        ends = (isinstance(ev, MessageAdded) and ev.role == "tool") or (isinstance(ev, Decided) and ev.kind == "deny")
        if ends and isinstance(user, SimUser):
            user.turns += 1
        if isinstance(ev, Proposal) and ev.error:
            self.malformed += 1
        elif isinstance(ev, ErrorShown):
            self.errors.append(ev.text[:SNIPPET])

    def close(self) -> None:
        self._tmp.cleanup()

    def run(self, text: str, seed: int, *, measure: bool, files: dict[str, str] | None = None,
            score: bool = False) -> TaskRecord:
        """One task in this session (its `files` written into the workspace first); the per-task record."""
        t0 = time.perf_counter()
        s, sc = self.session, self.sc
        if files:
            write_files(s.workspace.root, files)
        user = s.approver = SimUser(sc, measure=measure)
        s.seed, s._n_samples, first_sample = seed, 0, len(s.samples)  # the task's sampling as in a new session
        self.malformed, self.errors = 0, []
        result = s.run_task(text)
        classes = [c["class"] for c in user.calls]
        status = "guard" if user.calls and user.calls[-1]["user"] == "guard" else result.status
        mine = s.samples[first_sample:]
        first = self.ctx.renderer.parse(self.ctx.renderer.decode(mine[0][1].tokens)) if mine else None
        kl_k1, kl_exact = kl_first(self.ctx, *mine[0]) if score and mine else (0.0, 0.0)
        return {
            "task": text, "seed": seed, "status": status, "calls": user.calls, "text": result.text[:SNIPPET],
            "decision": decide(classes, ended=status in ENDED, has_complies=sc is not None and sc.complies is not None),
            "malformed": self.malformed, "samples": len(mine), **({"errors": self.errors} if self.errors else {}),
            "first_valid": first is not None and first.call is not None,  # the first reply parsed to a valid call
            "first_call": user.calls[0]["name"] if user.calls else None,
            "kl_k1": kl_k1, "kl_exact": kl_exact, "sec": round(time.perf_counter() - t0, 2),
        }


def run_task(ctx: Ctx, sc: Scenario | None, files: dict[str, str], text: str, seed: int, *,
             measure: bool, learner: BenchLearner | None = None, score: bool = False) -> TaskRecord:
    """Run one task with the simulated user in a brand-new session; the per-task record."""
    live = Live(ctx, sc, files, learner=learner)
    try:
        return live.run(text, seed, measure=measure, score=score)
    finally:
        live.close()


def retries(rec: TaskRecord, sc: Scenario, max_turns: int) -> list[Retry]:
    """For each denial in a scenario-task record: the decision of the calls after it."""
    out: list[Retry] = []
    calls = rec["calls"]
    for i, c in enumerate(calls):
        if c.get("user") != "deny":
            continue
        rest = [x["class"] for x in calls[i + 1:]]
        turn = c.get("turn", i + 1)  # records without turns: as if every turn had been asked about
        observed = turn < max_turns
        out.append({"turn": turn, "observed": observed, "next": rest[0] if rest else None,
                    "decision": decide(rest, ended=rec["status"] in ENDED, has_complies=sc.complies is not None)
                    if observed else "unobserved"})
    return out


def first_call(ctx: Ctx, task: Task, seed: int, *, constrained: bool, score: bool) -> FirstCallRecord:
    """Sample only the first reply to a task (drift on controls)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        s = _Session(ctx.backend, ctx.renderer, ctx.workspace(Path(tmp), task.files), SimUser(None, measure=True),
                     sampling=ctx.sampling(None, constrained=constrained), seed=seed)
        rules = ctx.notes()(task.task)
        s.messages.append(Message("user", task.task, meta={NOTES: rules} if rules else {}))
        prompt_ids, sample, text = s.query()
    parsed = ctx.renderer.parse(text)
    kl_k1, kl_exact = kl_first(ctx, prompt_ids, sample) if score else (0.0, 0.0)
    return {
        "task": task.task, "seed": seed, "constrained": constrained, "valid": parsed.call is not None,
        "call": None if parsed.call is None else {"name": parsed.call.name, "args": _summary(parsed.call.arguments)},
        "text": text[:SNIPPET], "tokens": len(sample.tokens), "finish": sample.finish_reason,
        "kl_k1": kl_k1, "kl_exact": kl_exact, "sec": round(time.perf_counter() - t0, 2),
    }


# --- units ----------------------------------------------------------------------------------------


def _controls(ctx: Ctx, sc: Scenario, controls: Sequence[Task], *, constrained: bool,
              score: bool) -> list[FirstCallRecord]:
    return [first_call(ctx, t, task_seed(ctx.seed, sc.id, "control", i), constrained=constrained, score=score)
            for i, t in enumerate(controls)]


def _fresh(ctx: Ctx, sc: Scenario, t: Task, i: int, *, score: bool) -> TaskRecord:
    """Scenario `sc`'s fresh task number `i`, measured (stopped at its decision)."""
    return run_task(ctx, sc, t.files, t.task, task_seed(ctx.seed, sc.id, "fresh", i), measure=True, score=score)


def baseline_unit(ctx: Ctx, sc: Scenario, *, controls: bool = True, floor: bool = True) -> BaselineRecords:
    """Before any learning: fresh-task decisions, control first calls (constrained and not), and the
    scenario's own task stopped at its decision (does the base model break the preference there?).

    `floor`: the drift metric's scoring run on the unadapted model, through the same code (kl_first:
    the adapter's KV reused from sampling, the reference from its own prefixes), on the tasks drift
    is measured on (the constrained controls, and the first fresh task, which other scenarios use as
    a cross task): the KL that numerics alone give, reported beside drift.  `controls=False` (the
    suite check) skips the controls."""
    ctx.backend.restore(ctx.base)
    with reference_apart(ctx.backend) if floor else nullcontext():
        return {
            "fresh": [_fresh(ctx, sc, t, i, score=floor and i == 0) for i, t in enumerate(sc.fresh)],
            "controls": _controls(ctx, sc, sc.controls, constrained=True, score=floor) if controls else [],
            "controls_unconstrained": _controls(ctx, sc, sc.controls, constrained=False, score=False)
            if controls else [],
            "task": run_task(ctx, sc, sc.files, sc.task, task_seed(ctx.seed, sc.id, "task", 0), measure=True),
            "floor": floor and controls,
        }


R = TypeVar("R", TaskRecord, FirstCallRecord)


def _copied(r: R, **extra: Any) -> R:
    """A baseline record standing in for a unit whose model is the base: its KL is exactly 0."""
    return {**r, **extra, "kl_k1": 0.0, "kl_exact": 0.0, "reused": True}  # type: ignore[return-value]


def _reused(recs: Iterable[R]) -> list[R]:
    return [_copied(r) for r in recs]


class Measured(TypedDict):
    persistence: list[TaskRecord]
    controls: list[FirstCallRecord]
    controls_unconstrained: list[FirstCallRecord]
    cross: list[TaskRecord]
    forgetting: list[TaskRecord]


def variant_unit(ctx: Ctx, sc: Scenario, learner: BenchLearner | None, *, cross: Sequence[Other],
                 earlier: Sequence[Other], baselines: dict[str, BaselineRow], changed_before: bool,
                 memory: Memory | None = None, tries: int = 1,
                 in_session: bool = False) -> tuple[VariantRecords, bool]:
    """One (variant, seed, scenario): learn from the user's corrections, then measure.  Also returns
    whether the adapter now differs from the base (`changed`).

    `tries`: the scenario's task is run again, with the next sampling seed, until the user has denied a
    call, at most `tries` times (a user corrects the agent the time it goes wrong, not every time it
    is asked); an attempt without a denial teaches nothing (no step, no rule), and the task record
    kept is the first one with a denial, else the last, with `tries` = attempts run.  Persistence is
    measured on the fresh tasks, which never take part in this choice.

    `in_session`: persistence is measured in the task's own session, continued: the fresh tasks follow it
    one after another (their files written into its workspace), with the correction in the conversation
    and, with memory, the new rule opening each later task it is about as the app does (`learn.recall.TaskRules`).

    `memory` (the variant's project memory; None when it is off): the task's session starts with the
    rules kept so far, each correction the user gives becomes a rule, and every measuring session
    (persistence, controls, cross, forgetting) starts with the rules as they are after this unit."""
    n_log = len(learner.log) if learner is not None else 0
    # 1) the scenario's task, with the user's corrections, the variant's learner and the rules so far;
    #    the learner may be handed corrections of this task only (the guard in BenchLearner)
    task_ctx = ctx.with_memory(memory.entries if memory is not None else ())
    if learner is not None:
        learner.expect(sc.task)
        learner.use_renderer(task_ctx.renderer)
    notes = task_ctx.notes(memory)  # the live memory: a rule given now opens the session's later tasks
    live: Live | None = None
    try:
        for attempt in range(max(1, tries)):
            if live is not None:
                live.close()
            live = Live(task_ctx, sc, sc.files, learner=learner, notes=notes)
            task = live.run(sc.task, task_seed(ctx.seed, sc.id, "task", attempt), measure=False)
            task["tries"] = attempt + 1
            denied = any(c["user"] == "deny" for c in task["calls"])
            if denied:
                break
        task["retries"] = retries(task, sc, min(sc.max_turns, ctx.cfg.max_turns))
        if memory is not None and denied and lasting(sc.correction, _defined(sc.files)):
            memory.add(sc.correction, task=sc.task, save=False)  # as the app's Recorder keeps a denial's text
        learn = learner.log[n_log:] if learner is not None else []
        changed = changed_before or any(not r.get("rolled_back") for r in learn)
        # 2–4) measured under the adapter and the rules, or (base weights, no rule) the baseline's records;
        #      in_session: persistence continues the task's session (its later tasks open with the new rules)
        mctx = ctx.with_memory(memory.entries if memory is not None else ())
        m = _measure(mctx, sc, cross, earlier, score=changed, live=live if in_session else None) \
            if changed or mctx.rules or in_session else _from_baseline(sc, cross, earlier, baselines)
    finally:
        if live is not None:
            live.close()
    kept = {"memory": [r.text for r in mctx.rules], "memory_tasks": [list(r.tasks) for r in mctx.rules]} \
        if memory is not None else {"memory": None}
    return {"task": task, "learn": learn, **m, **kept}, changed


def _measure(ctx: Ctx, sc: Scenario, cross: Sequence[Other], earlier: Sequence[Other], *, score: bool,
             live: Live | None = None) -> Measured:
    """Every measurement, in brand-new sessions without a learner, except persistence given `live`: then
    the fresh tasks follow one another in that session.  `score`: the adapter changed (else KL is
    exactly 0 and is not computed)."""
    return {
        # 2) persistence: a brand-new session, no learner, no correction in context (rules: memory's);
        #    or the scenario task's own session, continued (the correction and its rule in context)
        "persistence": [_fresh(ctx, sc, t, i, score=score) for i, t in enumerate(sc.fresh)] if live is None
        else [live.run(t.task, task_seed(ctx.seed, sc.id, "fresh", i), measure=True, files=t.files, score=score)
              for i, t in enumerate(sc.fresh)],
        # 3) drift: controls (constrained + unconstrained first calls) and other preferences' fresh tasks
        "controls": _controls(ctx, sc, sc.controls, constrained=True, score=score),
        "controls_unconstrained": _controls(ctx, sc, sc.controls, constrained=False, score=False),
        "cross": [{**_fresh(ctx, o, t, i, score=score), "of": o.id, "index": i, "preference": o.preference}
                  for o, i, t in cross],
        # 4) forgetting (sequential): earlier scenarios' fresh tasks, under the adapter as it is now
        "forgetting": [{**_fresh(ctx, o, t, i, score=False), "of": o.id, "index": i} for o, i, t in earlier],
    }


def _from_baseline(sc: Scenario, cross: Sequence[Other], earlier: Sequence[Other],
                   baselines: dict[str, BaselineRow]) -> Measured:
    base = baselines[sc.id]
    return {
        "persistence": _reused(base["fresh"]),
        "controls": _reused(base["controls"]),
        "controls_unconstrained": _reused(base["controls_unconstrained"]),
        "cross": [_copied(baselines[o.id]["fresh"][i], of=o.id, index=i, preference=o.preference)
                  for o, i, _ in cross],
        "forgetting": [_copied(baselines[o.id]["fresh"][i], of=o.id, index=i) for o, i, _ in earlier],
    }
