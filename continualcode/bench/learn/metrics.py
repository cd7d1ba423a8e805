"""Aggregation: results.json from the unit rows, and nothing else.

Pure functions of the records (`records.py`): every number is recomputed from the per-task
records, so an analysis can be redone from units.jsonl alone.  Two views:

- `summary` / `per_preference` / `per_scenario`: rates pooled over the units of one seed, then
  summarised over seeds (mean, std, min, max);
- `variants` (the headline): pooled over seeds and scenarios, measured so that it cannot flatter:
  the first retry after each denied task (one observation per task), persistence over all
  scenarios and over the corrected ones beside the baseline of the same tasks, the paired
  per-task table with an exact sign test, a bootstrap interval that resamples scenarios (seeds at
  temperature 0.3 are near-replicates, scenarios are the unit of generalisation), and drift beside
  its measured floor.

Each after-learning number is paired with the baseline of the same tasks and sampling seeds.  The
metrics are defined in docs/bench-learn.md.
"""

from __future__ import annotations

import math
import random
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
BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


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
    base_fresh_corrected: list[TaskRecord]  # the baseline of the units whose correction was given

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
            base_fresh_corrected=[r for u in units if u["task"]["retries"]
                                  for r in _base(baselines, u, u["scenario"])["fresh"]],
        )

    @property
    def denials(self) -> int:
        return sum(len(u["task"]["retries"]) for u in self.units)


def first_retries(units: Sequence[VariantRow]) -> tuple[list[Retry], list[Retry]]:
    """(the first retry of each denied task, when observed; every later observed retry)."""
    first = [u["task"]["retries"][0] for u in units if u["task"]["retries"]]
    later = [t for u in units for t in u["task"]["retries"][1:]]
    return [t for t in first if t["observed"]], [t for t in later if t["observed"]]


def _compliance(p: _Pool) -> dict[str, Any]:
    first, later = first_retries(p.units)
    corr = [u for u in p.units if u["task"]["retries"]]
    return {
        "n_units": len(p.units),
        "baseline": _rate(p.base_fresh, "decision", "compliant"),
        "baseline_undecided": _rate(p.base_fresh, "decision", "undecided"),
        "corrected": _mean([float(bool(u["task"]["retries"])) for u in p.units]),
        "denials": p.denials,
        "retries_observed": len(p.tries),
        "retry": _rate(p.tries, "decision", "compliant"),
        "retry_undecided": _rate(p.tries, "decision", "undecided"),
        "retry_first": _rate(first, "decision", "compliant"),
        "retry_first_n": len(first),
        "retry_later": _rate(later, "decision", "compliant"),
        "retry_later_n": len(later),
        "persistence": _rate(p.pers, "decision", "compliant"),
        "persistence_undecided": _rate(p.pers, "decision", "undecided"),
        "corrected_units": len(corr),
        "persistence_corrected": _rate([r for u in corr for r in u["persistence"]], "decision", "compliant"),
        "baseline_corrected": _rate(p.base_fresh_corrected, "decision", "compliant"),
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
        # what the retry after a denial waited for (the deferred distillation's updates run after the task)
        "sec_before_retry": (sum(r.get("sec_total", 0.0) for r in learn if not r.get("deferred")) / denials)
        if learn and denials else None,
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


def forgetting_curve(units: Sequence[VariantRow], forget: int, baselines: Baselines) -> dict[str, Any]:
    """Sequential mode: compliance on a scenario's first `forget` fresh tasks by lag (0 = its persistence),
    each task paired with the baseline's same task (`paired`: up / down / same, sign test); `later` pools
    every lag ≥ 1, and `corrected` keeps the tasks of scenarios whose correction was given."""
    by_lag: dict[int, list[dict[str, Any]]] = {}
    pos = {(u["seed"], u["scenario"]): u["position"] for u in units}
    corrected = {(u["seed"], u["scenario"]) for u in units if u["task"]["retries"]}

    def add(lag: int, u: VariantRow, of: str, index: int, r: TaskRecord) -> None:
        base = _base(baselines, u, of)["fresh"][index]
        by_lag.setdefault(lag, []).append(_pair(of, base, r, (u["seed"], of) in corrected))

    for u in units:
        for i, r in enumerate(u["persistence"][:forget]):
            add(0, u, u["scenario"], i, r)
        for r in u["forgetting"]:
            add(u["position"] - pos[(u["seed"], r["of"])], u, r["of"], r["index"], r)

    def row(ps: Sequence[dict[str, Any]]) -> dict[str, Any]:
        und = sum(p["after"] == "undecided" for p in ps)
        fix = [p for p in ps if p["corrected"]]
        both = paired(ps)
        return {"n": len(ps), "compliance": both["rate"], "undecided": und / len(ps) if ps else None,
                "paired": both, "corrected": paired(fix) if fix else None}

    out = {str(lag): row(ps) for lag, ps in sorted(by_lag.items())}
    later = [p for lag, ps in by_lag.items() if lag >= 1 for p in ps]
    if later:
        out["later"] = row(later)
    return out


# --- the headline: paired, over scenarios -------------------------------------------------------


def sign_test(up: int, down: int) -> float:
    """Exact two-sided sign test (McNemar on the discordant pairs): P(as or more lopsided | p = 1/2)."""
    n = up + down
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, i) for i in range(min(up, down) + 1)) / 2**n  # exact integers, one rounding
    return min(1.0, 2 * tail)


def bootstrap_gain(clusters: Sequence[tuple[int, int, int]], *, resamples: int = BOOTSTRAP_RESAMPLES,
                   seed: int = BOOTSTRAP_SEED) -> list[float] | None:
    """A percentile 95% interval of the pooled gain (Σ after − Σ before) / Σ n, resampling clusters
    (scenarios: each (compliant after, compliant before, tasks)) with replacement; None without any."""
    clusters = [c for c in clusters if c[2] > 0]
    if not clusters:
        return None
    rng = random.Random(seed)
    k = len(clusters)
    gains: list[float] = []
    for _ in range(resamples):
        pick = [clusters[rng.randrange(k)] for _ in range(k)]
        gains.append((sum(c[0] for c in pick) - sum(c[1] for c in pick)) / sum(c[2] for c in pick))
    gains.sort()
    return [gains[int(0.025 * resamples)], gains[math.ceil(0.975 * resamples) - 1]]


def pairs(units: Sequence[VariantRow], baselines: Baselines) -> list[dict[str, Any]]:
    """The paired per-task table: every persistence task beside its baseline (same task, same sampling
    seed); `change` up (now compliant, was not), down, or same; `corrected`: the unit's correction
    was given (its task had a denial)."""
    out: list[dict[str, Any]] = []
    for u in units:
        base = _base(baselines, u, u["scenario"])["fresh"]
        for i, r in enumerate(u["persistence"]):
            out.append({"seed": u["seed"], "index": i, **_pair(u["scenario"], base[i], r, bool(u["task"]["retries"]))})
    return out


def _pair(scenario: str, base: TaskRecord, after: TaskRecord, corrected: bool) -> dict[str, Any]:
    """One task's decision in the baseline and after learning: `change` up (now compliant, was not),
    down, or same."""
    b, a = base["decision"], after["decision"]
    up, down = a == "compliant" and b != "compliant", b == "compliant" and a != "compliant"
    return {"scenario": scenario, "baseline": b, "after": a, "change": "up" if up else "down" if down else "same",
            "corrected": corrected}


def paired(ps: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Persistence of these pairs beside their baseline, the sign test and the scenario bootstrap."""
    n = len(ps)
    after = sum(p["after"] == "compliant" for p in ps)
    before = sum(p["baseline"] == "compliant" for p in ps)
    c = {k: sum(p["change"] == k for p in ps) for k in ("up", "down", "same")}
    by: dict[str, list[int]] = {}
    for p in ps:
        x = by.setdefault(p["scenario"], [0, 0, 0])
        x[0] += p["after"] == "compliant"
        x[1] += p["baseline"] == "compliant"
        x[2] += 1
    return {
        "rate": after / n if n else None, "baseline": before / n if n else None,
        "gain": (after - before) / n if n else None, "n": n, "scenarios": len(by), **c,
        "p_value": sign_test(c["up"], c["down"]),
        "ci95": bootstrap_gain([(x[0], x[1], x[2]) for _, x in sorted(by.items())]),
    }


def drift(units: Sequence[VariantRow], baselines: Baselines) -> dict[str, Any]:
    """KL (exact, nats/token) on the drift tasks (controls + cross) of the units whose adapter changed,
    and the floor: the same scoring on the same tasks with the unadapted model (the baseline's, when
    it was measured: rows with `floor`).  Units with the base weights have KL 0 by construction and
    are left out, so that units that never learned cannot dilute the figure."""
    changed = [u for u in units if u.get("changed")]
    recs: list[Any] = [r for u in changed for r in (*u["controls"], *u["cross"])]
    if not recs:
        return {"value": 0.0 if units else None, "floor": None, "over_floor": None, "n": 0, "units": 0}
    rows = [_base(baselines, u, u["scenario"]) for u in changed]
    rows += [_base(baselines, u, r["of"]) for u in changed for r in u["cross"]]
    value = _mean([r["kl_exact"] for r in recs])
    floor = None
    if all(b.get("floor") for b in rows):
        base: list[Any] = [r for u in changed for r in _base(baselines, u, u["scenario"])["controls"]]
        base += [_base(baselines, u, r["of"])["fresh"][r["index"]] for u in changed for r in u["cross"]]
        floor = _mean([r["kl_exact"] for r in base])
    return {"value": value, "floor": floor, "over_floor": _sub(value, floor), "n": len(recs), "units": len(changed),
            "value_k1": _mean([r["kl_k1"] for r in recs])}


def headline(units: Sequence[VariantRow], baselines: Baselines) -> dict[str, Any]:
    """One variant's headline, pooled over seeds and scenarios (docs/bench-learn.md, "Headline")."""
    first, later = first_retries(units)
    denied = sum(bool(u["task"]["retries"]) for u in units)
    ps = pairs(units, baselines)
    pers = {"all": paired(ps), "corrected": paired([p for p in ps if p["corrected"]])}
    return {
        "n_units": len(units), "denied_tasks": denied,
        "first_retry": {"rate": _rate(first, "decision", "compliant"), "n": len(first),
                        "undecided": _rate(first, "decision", "undecided")},
        "later_retries": {"rate": _rate(later, "decision", "compliant"), "n": len(later)},
        "persistence": pers,
        "p_value": pers["all"]["p_value"],
        "ci95": pers["all"]["ci95"],
        "drift": drift(units, baselines),
        "pairs": ps,
    }


def suite(base_units: Sequence[BaselineRow], scenarios: Sequence[Scenario],
          split_of: dict[str, str]) -> dict[str, Any]:
    """Does the base model break each preference?  Per scenario, from the baseline rows: its own task's
    decision and its fresh tasks' violation rate over seeds; `violates` = the task violated in at
    least half the seeds and more than half the fresh tasks violated (a preference the base model
    already follows teaches nothing).  Per preference: scenarios, how many violate, the rates."""
    rows = [u for u in base_units if u["variant"] == "baseline" and "task" in u]
    per_scen: dict[str, Any] = {}
    for s in scenarios:
        mine = [u for u in rows if u["scenario"] == s.id]
        if not mine:
            continue
        tasks = [u["task"] for u in mine]
        fresh = [r for u in mine for r in u["fresh"]]
        t_rate = _rate(tasks, "decision", "non_compliant")
        f_rate = _rate(fresh, "decision", "non_compliant")
        per_scen[s.id] = {
            "preference": s.preference, "split": split_of.get(s.id), "seeds": len(mine),
            "task_violated": sum(t["decision"] == "non_compliant" for t in tasks),
            "task_first_call": [t["first_call"] for t in tasks],
            "fresh_n": len(fresh), "fresh_violated": sum(r["decision"] == "non_compliant" for r in fresh),
            "fresh_undecided": sum(r["decision"] == "undecided" for r in fresh),
            "violates": bool(t_rate is not None and f_rate is not None and t_rate >= 0.5 and f_rate > 0.5),
        }
    per_pref: dict[str, Any] = {}
    for pref in dict.fromkeys(s.preference for s in scenarios):
        ss = [x for x in per_scen.values() if x["preference"] == pref]
        if not ss:
            continue
        fn, tn = sum(x["fresh_n"] for x in ss), sum(x["seeds"] for x in ss)
        per_pref[pref] = {
            "scenarios": len(ss), "violating": sum(x["violates"] for x in ss),
            "task_n": tn, "task_violation": sum(x["task_violated"] for x in ss) / tn if tn else None,
            "fresh_n": fn, "fresh_violation": sum(x["fresh_violated"] for x in ss) / fn if fn else None,
            "fresh_undecided": sum(x["fresh_undecided"] for x in ss) / fn if fn else None,
        }
    return {"per_preference": per_pref, "per_scenario": per_scen}


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
    heads: dict[str, Any] = {}
    per_pref: dict[str, Any] = {}
    per_scen: dict[str, Any] = {}
    forgetting: dict[str, Any] = {}
    split_of: dict[str, str] = meta.get("scenario_split") or {}
    for v in variants:
        vu = [u for u in var_units if u["variant"] == v]
        if not vu:
            continue
        heads[v] = {"split": meta.get("split", "all"), **headline(vu, baselines)}
        per_seed = [metrics([u for u in vu if u["seed"] == s], baselines) for s in seeds
                    if any(u["seed"] == s for u in vu)]
        summary[v] = {k: spread([m[k] for m in per_seed]) for k in per_seed[0]}
        per_pref[v] = {p: metrics([u for u in vu if pref[u["scenario"]] == p], baselines)
                       for p in sorted({pref[u["scenario"]] for u in vu})}
        per_scen[v] = {s.id: metrics([u for u in vu if u["scenario"] == s.id], baselines)
                       for s in scenarios if any(u["scenario"] == s.id for u in vu)}
        if meta.get("mode") == "sequential":
            forgetting[v] = forgetting_curve(vu, int(meta.get("forget", 1)), baselines)
    return {"meta": meta, "variants": heads, "summary": summary, "per_preference": per_pref,
            "per_scenario": per_scen, "forgetting": forgetting, "suite": suite(base_units, scenarios, split_of),
            "baseline_units": base_units, "units": var_units}
