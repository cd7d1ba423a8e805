"""results.md: the aggregate (`metrics.aggregate`) as tables, for a reader.

Reads only the results dict; computes nothing that results.json does not hold, except which
learning variant the per-preference table shows (`best_variant`).
"""

from __future__ import annotations

from typing import Any

NOTE = ("Rates are compliant / all tasks (undecided counted apart); ± is the standard deviation over seeds "
        "(min and max per seed in results.json).  KL in nats/token on the adapted model's own first calls "
        "(controls + other preferences' tasks).  Δ = after learning − baseline, paired (same tasks, same sampling "
        "seeds).")


def _f(s: dict[str, Any] | None, digits: int = 2, pct: bool = False) -> str:
    """mean ± std over seeds."""
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


def _header(meta: dict[str, Any]) -> list[str]:
    cfg = meta["config"]
    return [
        "# continualcode learning benchmark", "",
        f"- command: `{meta['command']}`",
        f"- model: {meta.get('model', '?')} · mode: {meta['mode']} · seeds: {meta['seeds']} · "
        f"scenarios: {meta['n_scenarios']} ({meta['scenarios_file']}) · cross: {meta['cross']}",
        f"- date: {meta['date']} · wall time of this invocation: {meta.get('seconds', 0):.0f} s",
        f"- base config: `{' '.join(f'{k}={v}' for k, v in meta['base_overrides'].items()) or '(defaults)'}` "
        f"(temperature {cfg.get('temperature')}, max_tokens {cfg.get('max_tokens')}, "
        f"max_turns cap {cfg.get('max_turns')}, constrained {cfg.get('constrained')})",
        "", NOTE, "",
    ]


def _variants_table(meta: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    lines = [
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
    return lines


def _per_preference(best: str, per_pref: dict[str, Any]) -> list[str]:
    lines = ["", f"## Per preference: {best}", "",
             "| preference | units | baseline | retry (n) | persistence | undecided persist | KL exact | steps |",
             "|" + "---|" * 8]
    for p, m in per_pref.items():
        lines.append(f"| {p} | {m['n_units']} | {_v(m['baseline'], pct=True)} | {_v(m['retry'], pct=True)} "
                     f"({m['retries_observed']}) | {_v(m['persistence'], pct=True)} "
                     f"| {_v(m['persistence_undecided'], pct=True)} | {_v(m['kl_exact'], 3)} | {m['steps']} |")
    return lines


def _forgetting(forgetting: dict[str, Any]) -> list[str]:
    lines = ["", "## Forgetting curve (sequential)", "",
             "Compliance on a scenario's fresh tasks, `lag` scenarios after its own corrections "
             "(lag 0 = persistence).", ""]
    for v, curve in forgetting.items():
        lines += [f"### {v}", "", "| lag | n | compliance | undecided |", "|---|---|---|---|"]
        lines += [f"| {lag} | {c['n']} | {_v(c['compliance'], pct=True)} | {_v(c['undecided'], pct=True)} |"
                  for lag, c in curve.items()]
        lines.append("")
    return lines


def to_markdown(res: dict[str, Any]) -> str:
    meta, summary = res["meta"], res["summary"]
    lines = _header(meta) + _variants_table(meta, summary)
    best = best_variant(summary)
    if best is not None:
        lines += _per_preference(best, res["per_preference"][best])
    if res.get("forgetting"):
        lines += _forgetting(res["forgetting"])
    return "\n".join(lines).rstrip("\n") + "\n"
