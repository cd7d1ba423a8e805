"""Aggregation: results.json from the unit rows, and nothing else.

Pure functions of the records (`records.py`): every number is recomputed from the per-task
records, so an analysis can be redone from units.jsonl alone.  Rates are pooled over the units of
one seed, then summarised over seeds (mean, std, min, max); each after-learning number is paired
with the baseline of the same tasks and sampling seeds.  The metrics are defined in
docs/bench-learn.md.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from continualcode.bench.learn.records import (
    BaselineRow,
    FirstCallRecord,
    LearnRecord,
    Retry,
    TaskRecord,
    UnitRow,
    VariantRow,
)
from continualcode.bench.learn.scenario import Scenario

Baselines = dict[tuple[str, int, str], BaselineRow]  # (baseline name, seed, scenario id) → the baseline row


def _rate(recs: Sequence[Any], key: str, value: Any) -> float | None:
    return sum(r[key] == value for r in recs) / len(recs) if recs else None


def _mean(xs: Sequence[float]) -> float | None:
    return sum(xs) / len(xs) if xs else None


def _sub(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _base(baselines: Baselines, u: VariantRow, scenario: str) -> BaselineRow:
    return baselines[(u.get("baseline", "baseline"), u["seed"], scenario)]


@dataclass
class _Pool:
    """The per-task records of some variant units, and of their paired baselines, pooled."""

    units: Sequence[VariantRow]
    base_fresh: list[TaskRecord]
    base_ctrl: list[FirstCallRecord]
    base_unc: list[FirstCallRecord]
    base_cross: list[TaskRecord]
    pers: list[TaskRecord]
    ctrl: list[FirstCallRecord]
    unc: list[FirstCallRecord]
    cross: list[TaskRecord]
    tries: list[Retry]  # observed retries only
    learn: list[LearnRecord]

    @classmethod
    def of(cls, units: Sequence[VariantRow], baselines: Baselines) -> _Pool:
        return cls(
            units=units,
            base_fresh=[r for u in units for r in _base(baselines, u, u["scenario"])["fresh"]],
            base_ctrl=[r for u in units for r in _base(baselines, u, u["scenario"])["controls"]],
            base_unc=[r for u in units for r in _base(baselines, u, u["scenario"])["controls_unconstrained"]],
            base_cross=[_base(baselines, u, r["of"])["fresh"][r["index"]] for u in units for r in u["cross"]],
            pers=[r for u in units for r in u["persistence"]],
            ctrl=[r for u in units for r in u["controls"]],
            unc=[r for u in units for r in u["controls_unconstrained"]],
            cross=[r for u in units for r in u["cross"]],
            tries=[t for u in units for t in u["task"]["retries"] if t["observed"]],
            learn=[r for u in units for r in u["learn"]],
        )

    @property
    def denials(self) -> int:
        return sum(len(u["task"]["retries"]) for u in self.units)


def _compliance(p: _Pool) -> dict[str, Any]:
    return {
        "n_units": len(p.units),
        "baseline": _rate(p.base_fresh, "decision", "compliant"),
        "baseline_undecided": _rate(p.base_fresh, "decision", "undecided"),
        "corrected": _mean([float(bool(u["task"]["retries"])) for u in p.units]),
        "denials": p.denials,
        "retries_observed": len(p.tries),
        "retry": _rate(p.tries, "decision", "compliant"),
        "retry_undecided": _rate(p.tries, "decision", "undecided"),
        "persistence": _rate(p.pers, "decision", "compliant"),
        "persistence_undecided": _rate(p.pers, "decision", "undecided"),
    }


def _drift(p: _Pool) -> dict[str, Any]:
    drift: list[Any] = [*p.ctrl, *p.cross]
    return {
        "kl_k1": _mean([r["kl_k1"] for r in drift]),
        "kl_exact": _mean([r["kl_exact"] for r in drift]),
        "kl_target_k1": _mean([r["kl_k1"] for r in p.pers]),
        "kl_target_exact": _mean([r["kl_exact"] for r in p.pers]),
        "valid": _mean([float(r["valid"]) for r in p.ctrl] + [float(r["first_valid"]) for r in p.cross]),
        "valid_base": _mean([float(r["valid"]) for r in p.base_ctrl] + [float(r["first_valid"]) for r in p.base_cross]),
        "valid_unconstrained": _mean([float(r["valid"]) for r in p.unc]),
        "valid_unconstrained_base": _mean([float(r["valid"]) for r in p.base_unc]),
        "cross": _rate(p.cross, "decision", "compliant"),
        "cross_base": _rate(p.base_cross, "decision", "compliant"),
    }


def _cost(p: _Pool) -> dict[str, Any]:
    learn, denials = p.learn, p.denials
    steps = sum(r["n_steps"] for r in learn)
    return {
        "updates": len(learn),
        "steps": steps,
        "rolled_back": sum(1 for r in learn if r.get("rolled_back")),
        "sec_per_step": (sum(r.get("sec_step", 0.0) for r in learn) / steps) if steps else None,
        "sec_per_correction": (sum(r.get("sec_total", 0.0) for r in learn) / denials) if learn and denials else None,
        "sec_learn": sum(r.get("sec_total", 0.0) for r in learn),
        "sec_unit": sum(u["sec"] for u in p.units),
    }


def metrics(units: Sequence[VariantRow], baselines: Baselines) -> dict[str, Any]:
    """All metrics, pooled over the per-task records of these variant units (any seeds, any scenarios).
    `baselines` maps (baseline name, seed, scenario id) → that baseline unit."""
    p = _Pool.of(units, baselines)
    m = {**_compliance(p), **_drift(p), **_cost(p)}
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


def forgetting_curve(units: Sequence[VariantRow], forget: int) -> dict[str, Any]:
    """Sequential mode: compliance on a scenario's first `forget` fresh tasks by lag (0 = its persistence)."""
    by_lag: dict[int, list[TaskRecord]] = {}
    pos = {(u["seed"], u["scenario"]): u["position"] for u in units}
    for u in units:
        by_lag.setdefault(0, []).extend(u["persistence"][:forget])
        for r in u["forgetting"]:
            by_lag.setdefault(u["position"] - pos[(u["seed"], r["of"])], []).append(r)
    return {str(lag): {"n": len(rs), "compliance": _rate(rs, "decision", "compliant"),
                       "undecided": _rate(rs, "decision", "undecided")} for lag, rs in sorted(by_lag.items())}


def aggregate(units: Sequence[UnitRow], variants: Sequence[str], seeds: Sequence[int],
              scenarios: Sequence[Scenario], meta: dict[str, Any]) -> dict[str, Any]:
    """results.json from the units: summary (per seed → mean/spread), per preference, per scenario."""
    ids = {s.id for s in scenarios}
    pref = {s.id: s.preference for s in scenarios}
    base_units = [u for u in units if u["kind"] == "baseline" and u["seed"] in seeds and u["scenario"] in ids]
    baselines = {(u["variant"], u["seed"], u["scenario"]): u for u in base_units}

    def complete(u: VariantRow) -> bool:
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
