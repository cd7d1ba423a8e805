"""The learning benchmark (`continualcode bench learn`): a simulated user drives the real agent.

    continualcode bench learn --scenarios FILE --out DIR [--quick] [--seeds N] [--variants A,B|all]
                              [--limit N] [--cross N] [--forget N] [mode=independent|sequential]
                              [config key=value …]

The real model, the real tools and a fresh temp workspace per task; only the user is simulated.
Writes DIR/units.jsonl (one line per finished unit, fsynced: the run resumes from it after an
interrupt), and from it DIR/results.json (every per-task record, so the analysis can be redone)
and DIR/results.md.  This module knows the agent only through `Session`, `Learner` and a backend.

Scenarios (JSONL, one per line; see continualcode/bench/scenarios/public.jsonl):
    {"id", "preference", "files": {path: text}, "task", "correction",
     "violates": MATCHER, "complies": MATCHER (optional),
     "fresh": [{"files", "task"}, …], "controls": [{"files", "task"}, …], "max_turns"}
A MATCHER is {"tool": NAME or [NAMES], "args": {ARG: REGEX, …}} (args optional); a call matches when
its tool is one of the names and every given argument is present and `re.search`es str(value).
A call that matches `violates` is "violates" (even when it also matches `complies`), else
"complies" if it matches `complies`, else "neutral".

The simulated user, for each proposed call: violates → Deny(correction) (the learning event);
otherwise Approve (the call is executed).  A task ends when the agent answers in text or after
max_turns calls (the scenario's, capped by config max_turns).  One guard: a bash command that could
reach outside the temp workspace (absolute paths, `..`, `~`, `$`, rm, git, curl, …) is never
executed; the user aborts the task instead (status "guard", decision undecided).

A task's decision, from its calls in order:
- with `complies`: the first call that is "violates" → non_compliant, or "complies" → compliant;
  neither within max_turns → undecided.
- without `complies` (kept literal): non_compliant at the first violating call; else compliant if
  the task ended (a text answer or max_turns) with ≥ 1 call; else undecided.
Undecided is reported on its own and never counted as compliant: a compliance rate is
compliant / all tasks.  Measurement runs (baseline, persistence, cross, forgetting) stop as soon as
the decision is known (the user aborts right after the deciding call; nothing later can change it).

Metrics (per scenario, per preference, overall; per seed, then mean and spread over seeds):
1. baseline:    compliance on the `fresh` tasks before any learning.
2. retry:       after each denial + update, the decision of the calls that follow it (the same rule
                applied to the rest of the task).  Only denials with a turn left count ("observed").
3. persistence: after the scenario's corrections, compliance on its `fresh` tasks in a brand-new
                Session: learner=None, fresh workspace, no correction anywhere in the context.  The
                number that shows the weights changed, not the context.  Each fresh task uses the
                same sampling seed as its baseline run, so the comparison is paired.
4. drift:       on `controls` and on `--cross N` fresh tasks of other preferences: the adapted
                model's own first call (constrained, as in production) is scored with the adapter
                and without it: kl_k1 = mean over tokens of (lp_adapted − lp_base) and the exact
                kl = mean over tokens of Σ_v p_a(v)(log p_a(v) − log p_b(v)) (full distributions).
                Also the valid-call rate of first replies (constrained on controls + cross, and
                unconstrained on controls, where validity is informative) and the compliance on the
                cross tasks, each as a change from the baseline.
5. cost:        optimizer steps, seconds per step, seconds per correction (learner sec_total).

Modes: independent (default): the adapter is restored to the snapshot taken right after load for
every (variant, scenario).  sequential: corrections accumulate across scenarios in one adapter, and
after each scenario the first `--forget N` fresh tasks of every earlier scenario are re-measured:
the forgetting curve (compliance by lag = how many scenarios later).  The adapter (and replay
buffer) is checkpointed after every sequential unit so that resuming continues the same sequence.

Variants (`VARIANTS`, or an ad-hoc `key=value+key=value`) are config overrides on top of the base
config; `replay` also re-steps on each earlier correction of the same run after every new one (in
independent mode: of the same scenario, since the adapter is reset).  Seeds fix LocalBackend(seed=…)
(the LoRA init) and every Session's sampling seed; results give mean ± std (and min/max) over seeds.
--quick: the first scenarios of 2 different preferences with 1 fresh task and 1 control each, 1 seed,
in-context + topk, max_turns ≤ 2, max_tokens 160 (unless given).  DIR/run.json pins the run's
configuration (resuming with another one is refused) and DIR/.lock keeps a second process out.
Cost control: max_tokens 192 unless given; one backend per (seed, backend-level settings) and the
adapter restored between variants; baseline measurements are computed once per seed and shared by
all variants; a unit whose learner kept no step (in-context, or nothing to correct) reuses the
baseline records instead of re-sampling an identical model (records say "reused").
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continualcode.agent import Abort, Approve, Decision, Deny, SamplingConfig, Session
from continualcode.events import Event, Proposal
from continualcode.records import Correction, Message, ToolCall

PUBLIC = Path(__file__).resolve().parent / "scenarios" / "public.jsonl"
BENCH_MAX_TOKENS = 192
QUICK = {"scenarios": 2, "max_turns": 2, "max_tokens": 160, "variants": "in-context,topk"}
DEFAULT_VARIANTS = "in-context,seed-literal,topk"
BACKEND_KEYS = ("model_name", "backend", "device", "dtype", "lora_rank", "lora_alpha", "lora_targets",
                "cache_dir", "prefix_grad", "grad_clip", "threads")
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "max_turns", "constrained")
BENCH_BASH_TIMEOUT = 30
ENDED = ("answered", "max_turns")
SNIPPET = 300


# --- scenarios ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    tools: tuple[str, ...]
    args: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> Matcher:
        if not isinstance(d, dict) or "tool" not in d or set(d) - {"tool", "args"}:
            raise ValueError(f'a matcher is {{"tool": NAME or [NAMES], "args": {{ARG: REGEX}}}}, got {d!r}')
        tools = (d["tool"],) if isinstance(d["tool"], str) else tuple(d["tool"])
        args = tuple((str(k), str(v)) for k, v in (d.get("args") or {}).items())
        for _, rx in args:
            re.compile(rx)
        return cls(tools, args)

    def matches(self, name: str, arguments: dict[str, Any]) -> bool:
        if name not in self.tools:
            return False
        return all(k in arguments and re.search(rx, str(arguments[k])) for k, rx in self.args)


@dataclass(frozen=True)
class Task:
    files: dict[str, str]
    task: str


@dataclass(frozen=True)
class Scenario:
    id: str
    preference: str
    files: dict[str, str]
    task: str
    correction: str
    violates: Matcher
    complies: Matcher | None
    fresh: tuple[Task, ...]
    controls: tuple[Task, ...]
    max_turns: int = 4

    def classify(self, call: ToolCall) -> str:
        """'violates' (takes precedence), 'complies' or 'neutral'."""
        if self.violates.matches(call.name, call.arguments):
            return "violates"
        if self.complies is not None and self.complies.matches(call.name, call.arguments):
            return "complies"
        return "neutral"


def _task(d: Any) -> Task:
    if not isinstance(d, dict) or not isinstance(d.get("task"), str):
        raise ValueError(f'a task is {{"files": {{…}}, "task": TEXT}}, got {d!r}')
    return Task(dict(d.get("files") or {}), d["task"])


def load_scenarios(path: Path) -> list[Scenario]:
    """Parse a scenario JSONL file; ValueError naming the line on any problem."""
    out: list[Scenario] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            sc = Scenario(
                id=str(d["id"]), preference=str(d["preference"]), files=dict(d.get("files") or {}),
                task=str(d["task"]), correction=str(d["correction"]), violates=Matcher.from_json(d["violates"]),
                complies=Matcher.from_json(d["complies"]) if d.get("complies") else None,
                fresh=tuple(_task(t) for t in d.get("fresh", ())),
                controls=tuple(_task(t) for t in d.get("controls", ())), max_turns=int(d.get("max_turns", 4)),
            )
        except (KeyError, ValueError, TypeError, re.error) as e:
            raise ValueError(f"{path}:{n}: {type(e).__name__}: {e}") from None
        if any(s.id == sc.id for s in out):
            raise ValueError(f"{path}:{n}: duplicate scenario id {sc.id!r}")
        out.append(sc)
    if not out:
        raise ValueError(f"{path}: no scenarios")
    return out


def decide(classes: Sequence[str], *, ended: bool, has_complies: bool) -> str:
    """The decision of a sequence of call classes (see the module docstring)."""
    for c in classes:
        if c == "violates":
            return "non_compliant"
        if c == "complies" and has_complies:
            return "compliant"
    if not has_complies and classes and ended:
        return "compliant"
    return "undecided"


_UNSAFE_BASH = re.compile(
    r"\b(rm|rmdir|sudo|su|dd|mkfs\w*|chmod|chown|kill|pkill|killall|shutdown|reboot|curl|wget|ssh|scp|nc|"
    r"pip3?|apt|apt-get|conda|npm|git|cd|xargs|eval|exec)\b|-delete|-exec|~|\.\.|\$|`|"
    r"(^|[\s;&|<>=\"'(])/(?!dev/null\b)"
)


def unsafe(call: ToolCall) -> bool:
    """A bash command that could reach outside the temp workspace (best effort, conservative)."""
    return call.name == "bash" and bool(_UNSAFE_BASH.search(str(call.arguments.get("command", ""))))


# --- variants -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    overrides: dict[str, str] = field(default_factory=dict)
    replay: bool = False


VARIANTS: dict[str, Variant] = {
    "in-context": Variant({"enable_training": "false"}),
    "seed-literal": Variant({"distill_loss": "sampled_token", "teacher": "live", "teacher_sees_attempt": "true",
                             "steps_per_correction": "1"}),
    "topk": Variant({"distill_loss": "topk"}),
    "topk-no-attempt": Variant({"distill_loss": "topk", "teacher_sees_attempt": "false"}),
    "topk-attempt": Variant({"distill_loss": "topk", "teacher_sees_attempt": "true"}),
    "full": Variant({"distill_loss": "full"}),
    "ema": Variant({"teacher": "ema"}),
    "demo-retry": Variant({"learn_from_approved_retry": "true"}),
    "steps2": Variant({"steps_per_correction": "2"}),
    "steps3": Variant({"steps_per_correction": "3"}),
    "lr1e-3": Variant({"learning_rate": "1e-3"}),
    "lr2e-4": Variant({"learning_rate": "2e-4"}),
    "replay": Variant({}, replay=True),
    # everything that pushes harder at once: 3 steps, the approved retry as a demonstration, 2× the lr
    "aggressive": Variant({"steps_per_correction": "3", "learn_from_approved_retry": "true", "learning_rate": "1e-3"}),
}


def resolve_variants(spec: str) -> dict[str, Variant]:
    """Registry names (or `all`), or ad-hoc `key=value+key=value` variants; comma-separated."""
    out: dict[str, Variant] = {}
    for name in (n.strip() for n in spec.split(",")):
        if not name:
            continue
        if name == "all":
            out.update(VARIANTS)
        elif name in VARIANTS:
            out[name] = VARIANTS[name]
        elif "=" in name:
            kv = dict(p.split("=", 1) for p in name.split("+"))
            replay = kv.pop("replay", "false").lower() in ("1", "true", "yes")
            out[name] = Variant(kv, replay=replay)
        else:
            raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}, all, or key=value+key=value")
    if not out:
        raise ValueError("no variants")
    return out


# --- the learner as the benchmark sees it ---------------------------------------------------------


def _scalars(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if isinstance(v, int | float | str | bool)}
    out["n_tokens"] = len(report.get("tokens") or ())
    return out


class BenchLearner:
    """The variant's `Learner`, logged; with `replay`, after each new correction one more update on each
    earlier correction of this run (its stored `Correction`, learned again by the same Learner)."""

    def __init__(self, learner: Any, *, replay: bool = False, past: Iterable[Correction] = ()) -> None:
        self.learner = learner
        self.replay = replay
        self.past: list[Correction] = list(past)
        self.log: list[dict[str, Any]] = []

    def __call__(self, c: Correction) -> dict[str, Any] | None:
        report = self._one(c, replayed=False)
        if report is not None and self.replay and c.kind != "approved_retry":
            for p in list(self.past):
                self._one(p, replayed=True)
            self.past.append(c)
        return report

    def _one(self, c: Correction, *, replayed: bool) -> dict[str, Any] | None:
        report = self.learner(c)
        if report is not None:
            self.log.append({**_scalars(report), "replay": replayed,
                             "n_steps": int(self.learner.cfg.steps_per_correction)})
        return report


# --- running tasks --------------------------------------------------------------------------------


class _Session(Session):
    """A Session that keeps each sample's prompt and tokens (for scoring the first call)."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.samples: list[tuple[list[int], Any]] = []

    def query(self) -> tuple[list[int], Any, str]:
        prompt_ids, sample, text = super().query()
        self.samples.append((prompt_ids, sample))
        return prompt_ids, sample, text


class SimUser:
    """The simulated user: violates → Deny(correction); else Approve.  `measure` stops at the decision."""

    def __init__(self, scenario: Scenario | None, *, measure: bool) -> None:
        self.sc = scenario
        self.measure = measure
        self.calls: list[dict[str, Any]] = []

    def decide(self, call: ToolCall, preview: str) -> Decision:
        cls = self.sc.classify(call) if self.sc is not None else "neutral"
        has_complies = self.sc is not None and self.sc.complies is not None
        rec = {"name": call.name, "args": _summary(call.arguments), "class": cls}
        self.calls.append(rec)
        if cls == "violates":
            rec["user"] = "abort" if self.measure else "deny"
            return Abort() if self.measure else Deny(self.sc.correction)  # type: ignore[union-attr]
        if cls == "complies" and self.measure and has_complies:
            rec["user"] = "abort"
            return Abort()
        if unsafe(call):
            rec["user"] = "guard"
            return Abort()
        rec["user"] = "approve"
        return Approve()


def _summary(args: dict[str, Any]) -> dict[str, Any]:
    return {k: v if not isinstance(v, str) or len(v) <= SNIPPET else v[:SNIPPET] + "…" for k, v in args.items()}


def task_seed(seed: int, scenario_id: str, kind: str, index: int) -> int:
    """The sampling seed of one task: the same in baseline and after learning (paired comparison)."""
    return zlib.crc32(f"{seed}:{scenario_id}:{kind}:{index}".encode()) & 0x7FFFFFFF


@dataclass
class Ctx:
    """One loaded backend under one variant config."""

    backend: Any
    renderer: Any
    cfg: Any
    base: Any  # the adapter snapshot taken right after load
    seed: int

    def sampling(self, sc: Scenario | None, *, constrained: bool | None = None) -> SamplingConfig:
        c = self.cfg
        turns = min(sc.max_turns, c.max_turns) if sc is not None else c.max_turns
        return SamplingConfig(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                              constrained=c.constrained if constrained is None else constrained, max_turns=turns)

    def workspace(self, root: Path, files: dict[str, str]) -> Any:
        from continualcode.tools import Workspace

        for rel, text in files.items():
            p = root / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(text)
        return Workspace(root, result_cap=self.cfg.result_cap, bash_timeout=min(self.cfg.bash_timeout,
                                                                                 BENCH_BASH_TIMEOUT))


def kl_first(ctx: Ctx, prompt_ids: list[int], tokens: list[int]) -> tuple[float, float]:
    """Mean per-token KL(adapted ‖ base) on these tokens: (k1 on the sampled tokens, exact over the vocab)."""
    b = ctx.backend
    a = b.score(prompt_ids, tokens, full=True, adapter=True)
    r = b.score(prompt_ids, tokens, full=True, adapter=False)
    k1 = float((a.logprobs - r.logprobs).mean())
    pa_TV, pb_TV = a.full_logprobs, r.full_logprobs
    exact = float((pa_TV.exp() * (pa_TV - pb_TV)).sum(-1).mean())
    return k1, exact


def run_task(ctx: Ctx, sc: Scenario | None, files: dict[str, str], text: str, seed: int, *,
             measure: bool, learner: Any = None, score: bool = False) -> dict[str, Any]:
    """Run one task with the simulated user; the per-task record."""
    t0 = time.perf_counter()
    user = SimUser(sc, measure=measure)
    malformed = [0]

    def sink(ev: Event) -> None:
        if isinstance(ev, Proposal) and ev.error:
            malformed[0] += 1

    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        s = _Session(ctx.backend, ctx.renderer, ctx.workspace(Path(tmp), files), user, learner=learner,
                     sampling=ctx.sampling(sc), on_event=sink, seed=seed,
                     learn_from_approved_retry=bool(learner is not None and ctx.cfg.learn_from_approved_retry))
        result = s.run_task(text)
    classes = [c["class"] for c in user.calls]
    status = "guard" if user.calls and user.calls[-1]["user"] == "guard" else result.status
    first = ctx.renderer.parse(ctx.renderer.decode(s.samples[0][1].tokens)) if s.samples else None
    rec: dict[str, Any] = {
        "task": text, "seed": seed, "status": status, "calls": user.calls, "text": result.text[:SNIPPET],
        "decision": decide(classes, ended=status in ENDED, has_complies=sc is not None and sc.complies is not None),
        "malformed": malformed[0], "samples": len(s.samples),
        "first_valid": first is not None and first.call is not None,  # the first reply parsed to a valid call
        "first_call": user.calls[0]["name"] if user.calls else None,
    }
    if score and s.samples:
        rec["kl_k1"], rec["kl_exact"] = kl_first(ctx, s.samples[0][0], list(s.samples[0][1].tokens))
    else:
        rec["kl_k1"] = rec["kl_exact"] = 0.0
    rec["sec"] = round(time.perf_counter() - t0, 2)
    return rec


def retries(rec: dict[str, Any], sc: Scenario, max_turns: int) -> list[dict[str, Any]]:
    """For each denial in a scenario-task record: the decision of the calls after it."""
    out = []
    calls = rec["calls"]
    for i, c in enumerate(calls):
        if c.get("user") != "deny":
            continue
        rest = [x["class"] for x in calls[i + 1:]]
        observed = i + 1 < max_turns
        out.append({"turn": i + 1, "observed": observed, "next": rest[0] if rest else None,
                    "decision": decide(rest, ended=rec["status"] in ENDED, has_complies=sc.complies is not None)
                    if observed else "unobserved"})
    return out


def first_call(ctx: Ctx, task: Task, seed: int, *, constrained: bool, score: bool) -> dict[str, Any]:
    """Sample only the first reply to a task (drift on controls)."""
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cc-bench-") as tmp:
        s = _Session(ctx.backend, ctx.renderer, ctx.workspace(Path(tmp), task.files), SimUser(None, measure=True),
                     sampling=ctx.sampling(None, constrained=constrained), seed=seed)
        s.messages.append(Message("user", task.task))
        prompt_ids, sample, text = s.query()
    parsed = ctx.renderer.parse(text)
    rec: dict[str, Any] = {
        "task": task.task, "seed": seed, "constrained": constrained, "valid": parsed.call is not None,
        "call": None if parsed.call is None else {"name": parsed.call.name, "args": _summary(parsed.call.arguments)},
        "text": text[:SNIPPET], "tokens": len(sample.tokens), "finish": sample.finish_reason,
    }
    rec["kl_k1"], rec["kl_exact"] = kl_first(ctx, prompt_ids, list(sample.tokens)) if score else (0.0, 0.0)
    rec["sec"] = round(time.perf_counter() - t0, 2)
    return rec


# --- units ----------------------------------------------------------------------------------------


def baseline_unit(ctx: Ctx, sc: Scenario, fresh: Sequence[Task], controls: Sequence[Task]) -> dict[str, Any]:
    """Before any learning: fresh-task decisions, control first calls (constrained and not)."""
    ctx.backend.restore(ctx.base)
    return {
        "fresh": [run_task(ctx, sc, t.files, t.task, task_seed(ctx.seed, sc.id, "fresh", i), measure=True)
                  for i, t in enumerate(fresh)],
        "controls": [first_call(ctx, t, task_seed(ctx.seed, sc.id, "control", i), constrained=True, score=False)
                     for i, t in enumerate(controls)],
        "controls_unconstrained": [
            first_call(ctx, t, task_seed(ctx.seed, sc.id, "control", i), constrained=False, score=False)
            for i, t in enumerate(controls)],
    }


def _reused(recs: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**r, "reused": True} for r in recs]


def variant_unit(ctx: Ctx, sc: Scenario, learner: BenchLearner | None, *, fresh: Sequence[Task],
                 controls: Sequence[Task], cross: Sequence[tuple[Scenario, int, Task]],
                 earlier: Sequence[tuple[Scenario, int, Task]], baselines: dict[str, dict[str, Any]],
                 changed_before: bool) -> dict[str, Any]:
    """One (variant, seed, scenario): learn from the user's corrections, then measure."""
    n_log = len(learner.log) if learner is not None else 0
    # 1) the scenario's task, with the user's corrections and the variant's learner
    turns = min(sc.max_turns, ctx.cfg.max_turns)
    task = run_task(ctx, sc, sc.files, sc.task, task_seed(ctx.seed, sc.id, "task", 0), measure=False,
                    learner=learner)
    task["retries"] = retries(task, sc, turns)
    learn = learner.log[n_log:] if learner is not None else []
    changed = changed_before or any(not r.get("rolled_back") for r in learn)
    unit: dict[str, Any] = {"task": task, "learn": learn, "changed": changed}
    base = baselines[sc.id]
    if not changed:
        # 2–4) the adapter is the base: measurements equal the baseline's exactly
        unit["persistence"] = _reused(base["fresh"])
        unit["controls"] = _reused(base["controls"])
        unit["controls_unconstrained"] = _reused(base["controls_unconstrained"])
        unit["cross"] = [{**baselines[o.id]["fresh"][i], "of": o.id, "index": i, "preference": o.preference,
                          "reused": True} for o, i, _ in cross]
        unit["forgetting"] = [{**baselines[o.id]["fresh"][i], "of": o.id, "index": i, "reused": True}
                              for o, i, _ in earlier]
        return unit
    # 2) persistence: a brand-new session, no learner, no correction in context
    unit["persistence"] = [run_task(ctx, sc, t.files, t.task, task_seed(ctx.seed, sc.id, "fresh", i), measure=True,
                                    score=True) for i, t in enumerate(fresh)]
    # 3) drift: controls (constrained + unconstrained first calls) and other preferences' fresh tasks
    unit["controls"] = [first_call(ctx, t, task_seed(ctx.seed, sc.id, "control", i), constrained=True, score=True)
                        for i, t in enumerate(controls)]
    unit["controls_unconstrained"] = [
        first_call(ctx, t, task_seed(ctx.seed, sc.id, "control", i), constrained=False, score=False)
        for i, t in enumerate(controls)]
    unit["cross"] = [{**run_task(ctx, o, t.files, t.task, task_seed(ctx.seed, o.id, "fresh", i), measure=True,
                                 score=True), "of": o.id, "index": i, "preference": o.preference}
                     for o, i, t in cross]
    # 4) forgetting (sequential): earlier scenarios' fresh tasks, under the adapter as it is now
    unit["forgetting"] = [{**run_task(ctx, o, t.files, t.task, task_seed(ctx.seed, o.id, "fresh", i),
                                      measure=True), "of": o.id, "index": i} for o, i, t in earlier]
    return unit


# --- aggregation ----------------------------------------------------------------------------------


def _rate(recs: Sequence[dict[str, Any]], key: str, value: Any) -> float | None:
    return sum(r[key] == value for r in recs) / len(recs) if recs else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _base(baselines: dict[tuple[str, int, str], dict[str, Any]], u: dict[str, Any], scenario: str) -> dict[str, Any]:
    return baselines[(u.get("baseline", "baseline"), u["seed"], scenario)]


def metrics(units: Sequence[dict[str, Any]], baselines: dict[tuple[str, int, str], dict[str, Any]]) -> dict[str, Any]:
    """All metrics, pooled over the per-task records of these variant units (any seeds, any scenarios).
    `baselines` maps (baseline name, seed, scenario id) → that baseline unit."""
    base_fresh = [r for u in units for r in _base(baselines, u, u["scenario"])["fresh"]]
    base_ctrl = [r for u in units for r in _base(baselines, u, u["scenario"])["controls"]]
    base_unc = [r for u in units for r in _base(baselines, u, u["scenario"])["controls_unconstrained"]]
    base_cross = [_base(baselines, u, r["of"])["fresh"][r["index"]] for u in units for r in u["cross"]]
    pers = [r for u in units for r in u["persistence"]]
    ctrl = [r for u in units for r in u["controls"]]
    unc = [r for u in units for r in u["controls_unconstrained"]]
    cross = [r for u in units for r in u["cross"]]
    drift = ctrl + cross
    tries = [t for u in units for t in u["task"]["retries"] if t["observed"]]
    learn = [r for u in units for r in u["learn"]]
    denials = sum(len(u["task"]["retries"]) for u in units)
    steps = sum(r["n_steps"] for r in learn)
    m: dict[str, Any] = {
        "n_units": len(units),
        "baseline": _rate(base_fresh, "decision", "compliant"),
        "baseline_undecided": _rate(base_fresh, "decision", "undecided"),
        "corrected": _mean([float(bool(u["task"]["retries"])) for u in units]),
        "denials": denials,
        "retries_observed": len(tries),
        "retry": _rate(tries, "decision", "compliant"),
        "retry_undecided": _rate(tries, "decision", "undecided"),
        "persistence": _rate(pers, "decision", "compliant"),
        "persistence_undecided": _rate(pers, "decision", "undecided"),
        "kl_k1": _mean([r["kl_k1"] for r in drift]),
        "kl_exact": _mean([r["kl_exact"] for r in drift]),
        "kl_target_k1": _mean([r["kl_k1"] for r in pers]),
        "kl_target_exact": _mean([r["kl_exact"] for r in pers]),
        "valid": _mean([float(r["valid"]) for r in ctrl] + [float(r["first_valid"]) for r in cross]),
        "valid_base": _mean([float(r["valid"]) for r in base_ctrl] + [float(r["first_valid"]) for r in base_cross]),
        "valid_unconstrained": _mean([float(r["valid"]) for r in unc]),
        "valid_unconstrained_base": _mean([float(r["valid"]) for r in base_unc]),
        "cross": _rate(cross, "decision", "compliant"),
        "cross_base": _rate(base_cross, "decision", "compliant"),
        "updates": len(learn),
        "steps": steps,
        "rolled_back": sum(1 for r in learn if r.get("rolled_back")),
        "sec_per_step": (sum(r.get("sec_step", 0.0) for r in learn) / steps) if steps else None,
        "sec_per_correction": (sum(r.get("sec_total", 0.0) for r in learn) / denials) if learn and denials else None,
        "sec_learn": sum(r.get("sec_total", 0.0) for r in learn),
        "sec_unit": sum(u["sec"] for u in units),
    }
    m["persistence_gain"] = _sub(m["persistence"], m["baseline"])
    m["valid_delta"] = _sub(m["valid"], m["valid_base"])
    m["valid_unconstrained_delta"] = _sub(m["valid_unconstrained"], m["valid_unconstrained_base"])
    m["cross_delta"] = _sub(m["cross"], m["cross_base"])
    return m


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    xs = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not xs:
        return {"mean": None, "std": None, "min": None, "max": None, "n": 0, "per_seed": list(values)}
    return {"mean": sum(xs) / len(xs), "std": statistics.pstdev(xs) if len(xs) > 1 else 0.0,
            "min": min(xs), "max": max(xs), "n": len(xs), "per_seed": list(values)}


def forgetting_curve(units: Sequence[dict[str, Any]], forget: int) -> dict[str, Any]:
    """Sequential mode: compliance on a scenario's first `forget` fresh tasks by lag (0 = its persistence)."""
    by_lag: dict[int, list[dict[str, Any]]] = {}
    pos = {(u["seed"], u["scenario"]): u["position"] for u in units}
    for u in units:
        by_lag.setdefault(0, []).extend(u["persistence"][:forget])
        for r in u["forgetting"]:
            by_lag.setdefault(u["position"] - pos[(u["seed"], r["of"])], []).append(r)
    return {str(lag): {"n": len(rs), "compliance": _rate(rs, "decision", "compliant"),
                       "undecided": _rate(rs, "decision", "undecided")} for lag, rs in sorted(by_lag.items())}


def aggregate(units: Sequence[dict[str, Any]], variants: Sequence[str], seeds: Sequence[int],
              scenarios: Sequence[Scenario], meta: dict[str, Any]) -> dict[str, Any]:
    """results.json from the units: summary (per seed → mean/spread), per preference, per scenario."""
    ids = {s.id for s in scenarios}
    pref = {s.id: s.preference for s in scenarios}
    base_units = [u for u in units if u["kind"] == "baseline" and u["seed"] in seeds and u["scenario"] in ids]
    baselines = {(u["variant"], u["seed"], u["scenario"]): u for u in base_units}

    def complete(u: dict[str, Any]) -> bool:
        b = u.get("baseline", "baseline")
        return all((b, u["seed"], s) in baselines for s in [u["scenario"], *(r["of"] for r in u["cross"])])

    var_units = [u for u in units if u["kind"] == "variant" and u["variant"] in variants and u["seed"] in seeds
                 and u["scenario"] in ids and complete(u)]
    summary: dict[str, Any] = {}
    per_pref: dict[str, Any] = {}
    per_scen: dict[str, Any] = {}
    forgetting: dict[str, Any] = {}
    for v in variants:
        vu = [u for u in var_units if u["variant"] == v]
        if not vu:
            continue
        per_seed = [metrics([u for u in vu if u["seed"] == s], baselines) for s in seeds
                    if any(u["seed"] == s for u in vu)]
        summary[v] = {k: spread([m[k] for m in per_seed]) for k in per_seed[0]}
        per_pref[v] = {p: metrics([u for u in vu if pref[u["scenario"]] == p], baselines)
                       for p in sorted({pref[u["scenario"]] for u in vu})}
        per_scen[v] = {s.id: metrics([u for u in vu if u["scenario"] == s.id], baselines)
                       for s in scenarios if any(u["scenario"] == s.id for u in vu)}
        if meta.get("mode") == "sequential":
            forgetting[v] = forgetting_curve(vu, int(meta.get("forget", 1)))
    return {"meta": meta, "summary": summary, "per_preference": per_pref, "per_scenario": per_scen,
            "forgetting": forgetting, "baseline_units": base_units, "units": var_units}


# --- results.md -----------------------------------------------------------------------------------


def _f(s: dict[str, Any] | None, digits: int = 2, pct: bool = False) -> str:
    if not s or s.get("mean") is None:
        return "–"
    k = 100.0 if pct else 1.0
    body = f"{s['mean'] * k:.{0 if pct else digits}f}"
    if s["n"] > 1:
        body += f" ± {s['std'] * k:.{0 if pct else digits}f}"
    return body + ("%" if pct else "")


def _v(x: float | None, digits: int = 2, pct: bool = False) -> str:
    if x is None:
        return "–"
    return f"{x * 100:.0f}%" if pct else f"{x:.{digits}f}"


def best_variant(summary: dict[str, Any]) -> str | None:
    """The learning variant with the highest mean persistence gain (ties: the lower drift)."""
    cands = [(v, s) for v, s in summary.items() if (s["steps"]["mean"] or 0) > 0]
    if not cands:
        return next(iter(summary), None)
    return max(cands, key=lambda vs: ((vs[1]["persistence_gain"]["mean"] or 0.0),
                                      -(vs[1]["kl_exact"]["mean"] or 0.0)))[0]


def to_markdown(res: dict[str, Any]) -> str:
    meta, summary = res["meta"], res["summary"]
    lines = [
        "# continualcode learning benchmark", "",
        f"- command: `{meta['command']}`",
        f"- model: {meta.get('model', '?')} · mode: {meta['mode']} · seeds: {meta['seeds']} · "
        f"scenarios: {meta['n_scenarios']} ({meta['scenarios_file']}) · cross: {meta['cross']}",
        f"- date: {meta['date']} · wall time of this invocation: {meta.get('seconds', 0):.0f} s",
        f"- base config: `{' '.join(f'{k}={v}' for k, v in meta['base_overrides'].items()) or '(defaults)'}` "
        f"(temperature {meta['config'].get('temperature')}, max_tokens {meta['config'].get('max_tokens')}, "
        f"max_turns cap {meta['config'].get('max_turns')}, constrained {meta['config'].get('constrained')})",
        "", "Rates are compliant / all tasks (undecided counted apart); ± is the standard deviation over seeds "
        "(min and max per seed in results.json).  KL in nats/token on the adapted model's own first calls "
        "(controls + other preferences' tasks).  Δ = after learning − baseline, paired (same tasks, same sampling "
        "seeds).", "",
        "## Variants", "",
        "| variant | overrides | baseline | retry | persistence | Δ persistence | undecided base / retry / persist "
        "| KL k1 | KL exact | Δ valid (constrained) | Δ valid (unconstrained) | Δ other-pref compliance | steps "
        "| s/step | s/correction |",
        "|" + "---|" * 15,
    ]
    for v, s in summary.items():
        ov = meta["variants"].get(v, {})
        ovs = " ".join(f"{k}={x}" for k, x in ov.get("overrides", {}).items())
        ovs = (ovs + (" +replay" if ov.get("replay") else "")).strip()
        lines.append(
            f"| {v} | {ovs or '–'} | {_f(s['baseline'], pct=True)} | {_f(s['retry'], pct=True)} "
            f"| {_f(s['persistence'], pct=True)} | {_f(s['persistence_gain'], pct=True)} "
            f"| {_f(s['baseline_undecided'], pct=True)} / {_f(s['retry_undecided'], pct=True)} / "
            f"{_f(s['persistence_undecided'], pct=True)} | {_f(s['kl_k1'], 3)} | {_f(s['kl_exact'], 3)} "
            f"| {_f(s['valid_delta'], pct=True)} | {_f(s['valid_unconstrained_delta'], pct=True)} "
            f"| {_f(s['cross_delta'], pct=True)} | {_f(s['steps'], 1)} | {_f(s['sec_per_step'])} "
            f"| {_f(s['sec_per_correction'])} |")
    best = best_variant(summary)
    if best is not None:
        lines += ["", f"## Per preference: {best}", "",
                  "| preference | units | baseline | retry (n) | persistence | undecided persist | KL exact | steps |",
                  "|" + "---|" * 8]
        for p, m in res["per_preference"][best].items():
            lines.append(f"| {p} | {m['n_units']} | {_v(m['baseline'], pct=True)} | {_v(m['retry'], pct=True)} "
                         f"({m['retries_observed']}) | {_v(m['persistence'], pct=True)} "
                         f"| {_v(m['persistence_undecided'], pct=True)} | {_v(m['kl_exact'], 3)} | {m['steps']} |")
    if res.get("forgetting"):
        lines += ["", "## Forgetting curve (sequential)", "",
                  "Compliance on a scenario's fresh tasks, `lag` scenarios after its own corrections "
                  "(lag 0 = persistence).", ""]
        for v, curve in res["forgetting"].items():
            lines += [f"### {v}", "", "| lag | n | compliance | undecided |", "|---|---|---|---|"]
            lines += [f"| {lag} | {c['n']} | {_v(c['compliance'], pct=True)} | {_v(c['undecided'], pct=True)} |"
                      for lag, c in curve.items()]
            lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Options:
    scenarios: Path
    out: Path
    quick: bool
    seeds: int
    variants: dict[str, Variant]
    limit: int
    cross: int
    forget: int
    mode: str
    base_args: dict[str, str]
    argv: list[str]


def parse_args(args: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="continualcode bench learn", description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=str(PUBLIC), help="scenario JSONL (default: the public suite)")
    p.add_argument("--out", required=True, help="results directory (resumed when it holds units.jsonl)")
    p.add_argument("--quick", action="store_true", help="2 scenarios, 1 seed, in-context + topk, max_turns ≤ 2")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    p.add_argument("--variants", default=None, help=f"comma-separated (default {DEFAULT_VARIANTS}; 'all')")
    p.add_argument("--limit", type=int, default=0, help="only the first N scenarios")
    p.add_argument("--cross", type=int, default=1, help="other preferences' fresh tasks per scenario for drift")
    p.add_argument("--forget", type=int, default=1, help="sequential: fresh tasks per earlier scenario re-measured")
    p.add_argument("--mode", choices=("independent", "sequential"), default=None)
    p.add_argument("overrides", nargs="*", help="config key=value (the base config of every variant)")
    ns = p.parse_intermixed_args(list(args))
    base: dict[str, str] = {}
    for a in ns.overrides:
        if "=" not in a:
            raise ValueError(f"expected key=value, got {a!r}")
        k, v = a.split("=", 1)
        base[k] = v
    mode = base.pop("mode", None) or ns.mode or "independent"
    if mode not in ("independent", "sequential"):
        raise ValueError(f"mode must be independent or sequential, got {mode!r}")
    base.setdefault("max_tokens", str(QUICK["max_tokens"] if ns.quick else BENCH_MAX_TOKENS))
    if ns.seeds is not None and ns.seeds < 1:
        raise ValueError("--seeds must be ≥ 1")
    if ns.quick:
        base["max_turns"] = str(min(int(base.get("max_turns", QUICK["max_turns"])), QUICK["max_turns"]))
    return Options(
        scenarios=Path(ns.scenarios), out=Path(ns.out), quick=ns.quick,
        seeds=ns.seeds if ns.seeds is not None else (1 if ns.quick else 3),
        variants=resolve_variants(ns.variants or (QUICK["variants"] if ns.quick else DEFAULT_VARIANTS)),
        limit=ns.limit, cross=ns.cross, forget=ns.forget, mode=mode, base_args=base, argv=list(args),
    )


def select_scenarios(all_sc: list[Scenario], opts: Options) -> list[Scenario]:
    sc = all_sc[: opts.limit] if opts.limit > 0 else all_sc
    if opts.quick:  # two scenarios of different preferences, 1 fresh task and 1 control each
        picked: list[Scenario] = []
        for s in sc:
            if len(picked) < QUICK["scenarios"] and all(p.preference != s.preference for p in picked):
                picked.append(s)
        sc = [dataclasses.replace(s, fresh=s.fresh[:1], controls=s.controls[:1]) for s in picked]
    return sc


def cross_tasks(scenarios: Sequence[Scenario], i: int, n: int) -> list[tuple[Scenario, int, Task]]:
    """The first fresh task of the next `n` scenarios (cyclic) of other, distinct preferences."""
    out: list[tuple[Scenario, int, Task]] = []
    seen = {scenarios[i].preference}
    for k in range(1, len(scenarios)):
        o = scenarios[(i + k) % len(scenarios)]
        if len(out) >= n:
            break
        if o.preference not in seen and o.fresh:
            seen.add(o.preference)
            out.append((o, 0, o.fresh[0]))
    return out


class Units:
    """DIR/units.jsonl: append-only, one fsynced line per finished unit; a torn line is ignored and a
    repeated key keeps its first row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.done: set[tuple[Any, ...]] = set()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if tuple(row["key"]) not in self.done:
                    self.rows.append(row)
                    self.done.add(tuple(row["key"]))

    def add(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        with open(self.path, "a+b") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a crash: start on a new one
                    data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        self.done.add(tuple(row["key"]))


def _group_key(cfg: Any) -> tuple[Any, ...]:
    return tuple(getattr(cfg, k) for k in (*BACKEND_KEYS, *SAMPLING_KEYS))


def _baseline_name(variant_cfg: Any, base_cfg: Any) -> str:
    diff = [f"{k}={getattr(variant_cfg, k)}" for k in (*BACKEND_KEYS, *SAMPLING_KEYS)
            if getattr(variant_cfg, k) != getattr(base_cfg, k)]
    return "baseline" + (f"[{','.join(diff)}]" if diff else "")


def run(opts: Options, *, console: Any = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; writes units.jsonl, results.json and results.md under opts.out."""
    import chz
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from continualcode.build import build_backend, make_renderer
    from continualcode.config import parse_config
    from continualcode.learn.step import Learner

    t_start = time.perf_counter()
    console = console or Console(stderr=True)
    scenarios = select_scenarios(load_scenarios(opts.scenarios), opts)
    base_cfg = parse_config([f"{k}={v}" for k, v in opts.base_args.items()])
    seeds = [int(base_cfg.seed) + i for i in range(opts.seeds)]

    def cfg_for(variant: Variant, seed: int) -> Any:
        return parse_config([f"{k}={v}" for k, v in {**opts.base_args, **variant.overrides, "seed": str(seed)}.items()])

    # 1) the plan, per seed: variants grouped by backend-level settings (one backend load per group);
    #    every variant's config is checked here, before anything is written
    plan: list[tuple[int, tuple[Any, ...], list[str]]] = []
    for seed in seeds:
        groups: dict[tuple[Any, ...], list[str]] = {}
        for name, v in opts.variants.items():
            groups.setdefault(_group_key(cfg_for(v, seed)), []).append(name)
        plan += [(seed, g, names) for g, names in groups.items()]
    n_sc = len(scenarios)
    total = sum(n_sc * (1 + len(names)) for _, _, names in plan)
    opts.out.mkdir(parents=True, exist_ok=True)
    # 2) the run's identity: resuming with another configuration would mix incomparable units
    signature = {"scenarios_sha256": hashlib.sha256(opts.scenarios.read_bytes()).hexdigest(),
                 "base": opts.base_args, "mode": opts.mode, "cross": opts.cross, "forget": opts.forget,
                 "limit": opts.limit, "quick": opts.quick}
    lock = open(opts.out / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ValueError(f"another run is writing to {opts.out}") from None
    sig_path = opts.out / "run.json"
    if sig_path.exists() and json.loads(sig_path.read_text()).get("signature") != signature:
        lock.close()
        raise ValueError(f"{opts.out} holds a run with another configuration (see run.json): use another --out")
    sig_path.write_text(json.dumps({"signature": signature}, indent=1) + "\n")
    units = Units(opts.out / "units.jsonl")
    meta: dict[str, Any] = {
        "command": "continualcode bench learn " + shlex.join(opts.argv), "date": dt.datetime.now().isoformat(
            timespec="seconds"), "mode": opts.mode, "seeds": seeds, "cross": opts.cross, "forget": opts.forget,
        "quick": opts.quick, "scenarios_file": _shown_path(opts.scenarios), "n_scenarios": n_sc,
        "scenario_ids": [s.id for s in scenarios], "base_overrides": opts.base_args,
        "config": {k: v for k, v in chz.asdict(base_cfg).items() if isinstance(v, str | int | float | bool)},
        "variants": {n: {"overrides": v.overrides, "replay": v.replay} for n, v in opts.variants.items()},
    }
    new_units = 0
    # a bar on a terminal; otherwise (logs, CI) only the one line per finished unit
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                        console=console, transient=False, disable=not console.is_terminal)

    def log(u: dict[str, Any]) -> None:
        line = f"[{len(units.rows)}] " + _unit_line(u)
        if console.is_terminal:
            progress.console.print(line, highlight=False, markup=False)
        else:
            print(line, file=sys.stderr, flush=True)

    try:
        with progress:
            bar = progress.add_task("bench learn", total=total)
            for seed, _g, names in plan:
                first_cfg = cfg_for(opts.variants[names[0]], seed)
                bname = _baseline_name(first_cfg, cfg_for(Variant(), seed))
                keys = [(n, seed, s.id) for n in (bname, *names) for s in scenarios]
                left = sum(k not in units.done for k in keys)
                progress.advance(bar, len(keys) - left)
                if not left:
                    continue
                # 3) one backend for this seed and group; the adapter snapshot right after load
                progress.update(bar, description=f"seed {seed} · loading {first_cfg.model_name}")
                backend = build_backend(first_cfg)
                if "snapshot" not in backend.capabilities:
                    raise ValueError(f"backend {first_cfg.backend} cannot snapshot/restore the adapter")
                renderer = make_renderer(backend)
                meta["model"] = backend.model_id
                meta.setdefault("dtype", str(getattr(backend, "dtype", "")))
                base_snap = backend.snapshot()
                # 4) the shared baseline, once per seed (and backend group)
                for sc in scenarios:
                    key = (bname, seed, sc.id)
                    if key in units.done:
                        continue
                    progress.update(bar, description=f"seed {seed} · {bname} · {sc.id}")
                    ctx = Ctx(backend, renderer, first_cfg, base_snap, seed)
                    t0 = time.perf_counter()
                    recs = baseline_unit(ctx, sc, sc.fresh, sc.controls)
                    units.add({"key": list(key), "kind": "baseline", "variant": bname, "seed": seed,
                               "scenario": sc.id, "preference": sc.preference, **recs,
                               "sec": round(time.perf_counter() - t0, 2)})
                    log(units.rows[-1])
                    new_units += 1
                    progress.advance(bar)
                baselines = {u["scenario"]: u for u in units.rows if u["kind"] == "baseline"
                             and u["variant"] == bname and u["seed"] == seed}
                progress.update(bar, description=f"seed {seed} · variants")
                # 5) the variants, each from the same snapshot
                for name in names:
                    variant = opts.variants[name]
                    cfg = cfg_for(variant, seed)
                    ctx = Ctx(backend, renderer, cfg, base_snap, seed)
                    new_units += _run_variant(ctx, name, variant, scenarios, (bname, baselines), units, opts,
                                              progress, bar, Learner, log)
                backend = None  # free this group's model before the next one loads
    except KeyboardInterrupt:
        console.print(f"interrupted: {len(units.rows)} units kept in {opts.out / 'units.jsonl'}; "
                      "rerun the same command to resume")
        raise
    finally:
        meta["seconds"] = time.perf_counter() - t_start
        meta["new_units"] = new_units
        res = aggregate(units.rows, list(opts.variants), seeds, scenarios, meta)
        _write(opts.out / "results.json", json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        _write(opts.out / "results.md", to_markdown(res))
        lock.close()
    return res


def _run_variant(ctx: Ctx, name: str, variant: Variant, scenarios: Sequence[Scenario],
                 baseline: tuple[str, dict[str, dict[str, Any]]], units: Units, opts: Options, progress: Any,
                 bar: Any, learner_cls: Any, log: Any) -> int:
    """All scenarios of one variant and seed; returns the number of new units."""
    seed, b = ctx.seed, ctx.backend
    bname, baselines = baseline
    done = [s for s in scenarios if (name, seed, s.id) in units.done]
    sequential = opts.mode == "sequential"
    state_dir = opts.out / "state" / f"{_safe(name)}-s{seed}"
    past: list[Correction] = []
    changed = False
    b.restore(ctx.base)
    if sequential and done:
        # resume the sequence: the adapter and replay buffer saved after the last finished unit
        ck = state_dir / f"after-{len(done)}"
        b.load(ck)
        past = [Correction.from_dict(d) for d in json.loads((ck / "replay.json").read_text())]
        changed = any(u.get("changed") for u in units.rows if u["kind"] == "variant" and u["variant"] == name
                      and u["seed"] == seed)
    new = 0
    learner: BenchLearner | None = None
    if ctx.cfg.enable_training:
        learner = BenchLearner(learner_cls(b, ctx.renderer, ctx.cfg.learn_config()), replay=variant.replay, past=past)
    for pos, sc in enumerate(scenarios):
        key = (name, seed, sc.id)
        if key in units.done:
            continue
        progress.update(bar, description=f"seed {seed} · {name} · {sc.id}")
        if not sequential:
            b.restore(ctx.base)
            changed = False
            if learner is not None:
                learner.past.clear()
        earlier = [(o, i, o.fresh[i]) for o in scenarios[:pos] for i in range(min(opts.forget, len(o.fresh)))] \
            if sequential else []
        t0 = time.perf_counter()
        recs = variant_unit(ctx, sc, learner, fresh=sc.fresh, controls=sc.controls,
                            cross=cross_tasks(scenarios, pos, opts.cross), earlier=earlier, baselines=baselines,
                            changed_before=changed)
        changed = recs.pop("changed")
        if sequential:
            ck = state_dir / f"after-{pos + 1}"
            b.save(ck)
            (ck / "replay.json").write_text(json.dumps([c.to_dict() for c in
                                                        (learner.past if learner else [])]))
        units.add({"key": list(key), "kind": "variant", "variant": name, "seed": seed, "scenario": sc.id,
                   "preference": sc.preference, "baseline": bname, "position": pos, "mode": opts.mode,
                   "changed": changed, **recs,
                   "sec": round(time.perf_counter() - t0, 2)})
        log(units.rows[-1])
        if sequential:  # the committed unit's checkpoint is the one to resume from; drop the older ones
            for old in state_dir.glob("after-*"):
                if old.name != f"after-{pos + 1}":
                    remove_checkpoint(old)
        new += 1
        progress.advance(bar)
    b.restore(ctx.base)
    return new


def _unit_line(u: dict[str, Any]) -> str:
    """One log line per finished unit (above the progress bar; the only output when not a terminal)."""
    head = f"{u['variant']} · seed {u['seed']} · {u['scenario']}: "
    if u["kind"] == "baseline":
        dec = Counter(r["decision"] for r in u["fresh"])
        body = f"fresh {dict(dec)}, controls valid {sum(r['valid'] for r in u['controls'])}/{len(u['controls'])}"
    else:
        dec = Counter(r["decision"] for r in u["persistence"])
        body = (f"calls {[c['name'] + ('✗' if c['class'] == 'violates' else '') for c in u['task']['calls']]}, "
                f"steps {sum(r['n_steps'] for r in u['learn'])}, persistence {dict(dec)}"
                + (" (reused)" if not u["changed"] else ""))
    return head + body + f" · {u['sec']:.0f} s"


def _shown_path(p: Path) -> str:
    """The scenario file as results show it: relative to the package's repository or the working
    directory when under one (no machine paths in committed results), else as given."""
    full = p.expanduser().resolve()
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if full.is_relative_to(root):
            return str(full.relative_to(root))
    return str(p)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def remove_checkpoint(p: Path) -> None:
    """Remove a saved adapter directory, or the symlink the backend's atomic save made and its target."""
    import shutil

    if p.is_symlink():
        target = p.resolve()
        p.unlink()
        shutil.rmtree(target, ignore_errors=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(args: list[str]) -> int:
    """`continualcode bench learn …`; 0 on success, 2 on a usage error, 130 when interrupted."""
    from continualcode.backends.base import BackendError
    from continualcode.config import UsageError

    try:
        opts = parse_args(args)
        res = run(opts)
    except SystemExit as e:  # argparse: usage already printed
        return int(e.code or 0)
    except (ValueError, UsageError, FileNotFoundError) as e:
        print(f"continualcode bench learn: {e}", file=sys.stderr)
        return 2
    except BackendError as e:
        print(f"continualcode bench learn: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"wrote {opts.out / 'results.md'} and results.json ({res['meta']['new_units']} new units)")
    return 0
