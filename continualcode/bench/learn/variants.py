"""Variants: what is compared.  A variant is config overrides on the base config, plus `replay`.

`BenchLearner` is the variant's learner as the benchmark sees it: the real `Learner`, each update
logged, and with `replay` one more update on every earlier correction after each new one.  This
module knows the learner only as a callable with a `cfg`; the registry is described in
docs/bench-learn.md.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from continualcode.bench.learn.records import LearnRecord
from continualcode.learn.types import LearnConfig
from continualcode.records import Correction

DEFAULT_VARIANTS = "in-context,seed-literal,topk"


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


class ConfiguredLearner(Protocol):
    """`learn.step.Learner` as far as the benchmark needs it."""

    @property
    def cfg(self) -> LearnConfig: ...

    def __call__(self, c: Correction) -> dict[str, Any] | None: ...


def _scalars(report: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in report.items() if isinstance(v, int | float | str | bool)}
    out["n_tokens"] = len(report.get("tokens") or ())
    return out


class BenchLearner:
    """The variant's `Learner`, logged; with `replay`, after each new correction one more update on each
    earlier correction of this run (its stored `Correction`, learned again by the same Learner)."""

    def __init__(self, learner: ConfiguredLearner, *, replay: bool = False, past: Iterable[Correction] = ()) -> None:
        self.learner = learner
        self.replay = replay
        self.past: list[Correction] = list(past)
        self.log: list[LearnRecord] = []

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
