"""Variants: what is compared.  A variant is config overrides on the base config, plus `replay`.

Every variant says whether project memory is on (config `memory`): `memory` alone (the
correction written down as a rule and put in later sessions' prompt (`memory_at`), no weight update),
each learning variant alone (memory off, set explicitly: the product's default is on), and
`memory+<variant>` (the rules and the weight update).

`BenchLearner` is the variant's learner as the benchmark sees it: the real `Learner`, each update
logged, and with `replay` one more update on every earlier correction after each new one.  It is
also the guard that no held-out prompt (a fresh or control task: what measures learning) is ever
trained on.  This module knows the learner only as a callable with a `cfg`; the registry is
described in docs/bench-learn.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from continualcode.bench.learn.records import LearnRecord
from continualcode.bench.learn.scenario import norm
from continualcode.learn.types import LearnConfig
from continualcode.records import Correction

DEFAULT_VARIANTS = "in-context,memory,topk,memory+topk"
MEMORY = "memory"


@dataclass(frozen=True)
class Variant:
    overrides: dict[str, str] = field(default_factory=dict)
    replay: bool = False

    @property
    def memory(self) -> bool:
        return self.overrides.get(MEMORY, "false").lower() in ("1", "true", "yes")

    @property
    def learns(self) -> bool:
        return self.overrides.get("enable_training", "true").lower() not in ("0", "false", "no")

    def with_memory(self) -> Variant:
        return Variant({**self.overrides, MEMORY: "true"}, replay=self.replay)


# the learning variants, each alone (memory off); each also gets a `memory+<name>` twin below
_LEARNING: dict[str, Variant] = {
    "seed-literal": Variant({"distill_loss": "sampled_token", "teacher": "live", "teacher_sees_attempt": "true",
                             "steps_per_correction": "1"}),
    # the update on the denied prompt alone (the default before distill_prompts=3)
    "topk": Variant({"distill_loss": "topk", "distill_prompts": "0"}),
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
    # issue #14 C: step again until the student's top token at the decision is the teacher's (at most 4,
    # each step bounded by a per-step trust region); distil on 3 more prompts; what beta does
    "adaptive": Variant({"adaptive": "true", "steps_per_correction": "4", "step_max_kl": "1.0"}),
    "distill": Variant({"distill_prompts": "3"}),
    "kl0": Variant({"kl_beta": "0"}),
}

VARIANTS: dict[str, Variant] = {
    # the retry sees the correction in context; nothing is kept for later sessions
    "in-context": Variant({"enable_training": "false"}),
    # the correction kept as a rule in later sessions' prompt (where memory_at puts it); no weight update
    MEMORY: Variant({"enable_training": "false", MEMORY: "true"}),
    # the same rules at each place `memory_at` offers: the first user turn (the default) or the system prompt
    "memory-task": Variant({"enable_training": "false", MEMORY: "true", "memory_at": "task"}),
    "memory-system": Variant({"enable_training": "false", MEMORY: "true", "memory_at": "system"}),
    # every rule before every task (memory_rules=0), as before learn/recall.py picked a task's own
    "memory-all": Variant({"enable_training": "false", MEMORY: "true", "memory_rules": "0"}),
    **_LEARNING,
    **{f"{MEMORY}+{n}": v.with_memory() for n, v in _LEARNING.items()},
}


def resolve_variants(spec: str) -> dict[str, Variant]:
    """Registry names (or `all`), ad-hoc `key=value+key=value` variants, and `memory+` before either;
    comma-separated.  A variant without `memory=true` has memory off."""
    out: dict[str, Variant] = {}
    for name in (n.strip() for n in spec.split(",")):
        if name == "all":
            out.update(VARIANTS)
        elif name:
            out[name] = _one_variant(name)
    if not out:
        raise ValueError("no variants")
    return out


def _one_variant(name: str) -> Variant:
    if name in VARIANTS:
        return VARIANTS[name]
    if name.startswith(MEMORY + "+"):
        return _one_variant(name[len(MEMORY) + 1:]).with_memory()
    if "=" in name and all("=" in p for p in name.split("+")):
        kv = dict(p.split("=", 1) for p in name.split("+"))
        replay = kv.pop("replay", "false").lower() in ("1", "true", "yes")
        return Variant(kv, replay=replay)
    raise ValueError(f"unknown variant {name!r}: one of {', '.join(VARIANTS)}, all, key=value+key=value, "
                     "or memory+ before any of these")


class ConfiguredLearner(Protocol):
    """`learn.step.Learner` as far as the benchmark needs it."""

    @property
    def cfg(self) -> LearnConfig: ...

    def __call__(self, c: Correction) -> dict[str, Any] | None: ...


def _scalars(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if isinstance(v, int | float | str | bool)}
    out["n_tokens"] = len(report.get("tokens") or ())
    return out


class PromptLeak(AssertionError):
    """A held-out task (fresh or control) reached a learner, or a correction came from outside the
    scenario's own task: a bug in the benchmark.  An AssertionError so that the session, which goes
    on after a learner's RuntimeError, never swallows it."""


class BenchLearner:
    """The variant's `Learner`, logged; with `replay`, after each new correction one more update on each
    earlier correction of this run (its stored `Correction`, learned again by the same Learner).

    The guard (docs/bench-learn.md, "Held-out prompts"): a new correction must come from the task
    named by `expect` (the scenario's own task, set per unit), and no correction, replayed one or
    extra distillation prompt may hold a `held_out` text (every fresh and control task)."""

    def __init__(self, learner: ConfiguredLearner, *, replay: bool = False, past: Iterable[Correction] = (),
                 held_out: frozenset[str] = frozenset()) -> None:
        self.learner = learner
        self.replay = replay
        self.past: list[Correction] = list(past)
        self.log: list[LearnRecord] = []
        self.held_out = held_out
        self.expected: str | None = None
        source = getattr(learner, "prompts", None)  # context distillation's other prompts, when given
        if callable(source):
            learner.prompts = self._guarded(source)  # type: ignore[attr-defined]

    def expect(self, task: str | None) -> None:
        """The task whose corrections this learner may be handed next (None: any task not held out)."""
        self.expected = task

    def use_renderer(self, renderer: Any) -> None:
        """The renderer of the session being corrected (its prompt texts hold the memory rules, if any),
        so that the teacher sees what the student saw, as in the product."""
        if hasattr(self.learner, "renderer"):
            self.learner.renderer = renderer  # type: ignore[attr-defined]

    def check(self, c: Correction, *, new: bool) -> None:
        """Raise PromptLeak when `c` holds a held-out task, or (new) is not from the expected task."""
        users = [m.content for m in c.messages if m.role == "user"]
        for text in users:
            if norm(text) in self.held_out:
                raise PromptLeak(f"a held-out task reached the learner: {text[:80]!r}")
        if new and self.expected is not None and (not users or norm(users[0]) != norm(self.expected)):
            raise PromptLeak(f"a correction from another task than the scenario's: {(users or [''])[0][:80]!r}")

    def _guarded(self, source: Callable[[Correction], Sequence[str]]) -> Callable[[Correction], Sequence[str]]:
        def prompts(c: Correction) -> Sequence[str]:
            out = list(source(c))
            for p in out:
                if norm(p) in self.held_out:
                    raise PromptLeak(f"a held-out task offered as a distillation prompt: {p[:80]!r}")
            return out

        return prompts

    def __call__(self, c: Correction) -> dict[str, Any] | None:
        self.check(c, new=True)
        report = self._one(c, replayed=False)
        if report is not None and self.replay and c.kind != "approved_retry":
            for p in list(self.past):
                self._one(p, replayed=True)
            self.past.append(c)
        return report

    @property
    def pending(self) -> Any:
        return getattr(self.learner, "pending", ())

    def settle(self, stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """The learner's deferred distillation updates, logged like the others (`stop`: settle.py's pause)."""
        settle = getattr(self.learner, "settle", None)
        reports = settle(stop=stop) if settle is not None else []
        for report in reports:
            self.log.append({**_scalars(report), "replay": False,
                             "n_steps": int(self.learner.cfg.steps_per_correction)})
        return reports

    def _one(self, c: Correction, *, replayed: bool) -> dict[str, Any] | None:
        if replayed:
            self.check(c, new=False)
        report = self.learner(c)
        if report is not None:
            self.log.append({**_scalars(report), "replay": replayed,
                             "n_steps": int(self.learner.cfg.steps_per_correction)})
        return report
