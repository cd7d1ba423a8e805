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
HEADLINE_NOTE = (
    "Pooled over seeds and scenarios.  First retry: the first decision after each denied task (one per task; n = "
    "denied tasks with a turn left); later retries apart.  Persistence: fresh tasks in a brand-new session (memory "
    "variants: the rules where memory_at puts them; never the correction in context), beside the baseline of the same "
    "tasks; *corrected* = the scenarios whose correction was actually given.  up/down/same: paired per task "
    "(seed, task); p: exact two-sided sign test on up vs down; 95% CI: bootstrap of the gain resampling scenarios "
    "(2000 resamples, fixed seed).  Drift: KL exact on the controls + cross tasks of the units whose weights "
    "changed; floor: the same scoring of the unadapted model on the same tasks.")


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


def _p(x: float | None) -> str:
    return "–" if x is None else f"{x:.3g}"


def _ci(ci: list[float] | None) -> str:
    return "–" if not ci else f"[{ci[0] * 100:+.0f}, {ci[1] * 100:+.0f}]"


def _header(meta: dict[str, Any]) -> list[str]:
    cfg = meta["config"]
    return [
        "# continualcode learning benchmark", "",
        f"- command: `{meta['command']}`",
        f"- model: {meta.get('model', '?')} · mode: {meta['mode']} · seeds: {meta['seeds']} · "
        f"scenarios: {meta['n_scenarios']} ({meta['scenarios_file']}) · split: **{meta.get('split', 'all')}** · "
        f"cross: {meta['cross']}" + (" · persistence **in the task's own session**" if meta.get("in_session") else ""),
        f"- date: {meta['date']} · wall time of this invocation: {meta.get('seconds', 0):.0f} s",
        f"- base config: `{' '.join(f'{k}={v}' for k, v in meta['base_overrides'].items()) or '(defaults)'}` "
        f"(temperature {cfg.get('temperature')}, max_tokens {cfg.get('max_tokens')}, "
        f"max_turns cap {cfg.get('max_turns')}, constrained {cfg.get('constrained')})",
        "", NOTE, "",
    ]


def _persist(x: dict[str, Any]) -> list[str]:
    """base → after (n) | up/down/same | p | CI of the gain."""
    if not x["n"]:
        return ["–", "–", "–", "–"]
    return [f"{_v(x['baseline'], pct=True)} → {_v(x['rate'], pct=True)} ({x['n']})",
            f"{x['up']}/{x['down']}/{x['same']}", _p(x["p_value"]), _ci(x["ci95"])]


def _headline(variants: dict[str, Any]) -> list[str]:
    lines = ["## Headline", "", HEADLINE_NOTE, "",
             "| variant | split | first retry (n) | later retries (n) | persistence, all: base → after (n) "
             "| up/down/same | p | 95% CI of gain | persistence, corrected: base → after (n) | up/down/same | p "
             "| 95% CI of gain | drift (floor) | drift − floor |",
             "|" + "---|" * 14]
    for v, h in variants.items():
        fr, lr, d = h["first_retry"], h["later_retries"], h["drift"]
        drift = "0 (weights unchanged)" if not d["n"] else f"{_v(d['value'], 3)} ({_v(d['floor'], 3)})"
        cells = [v, h.get("split", "all"), f"{_v(fr['rate'], pct=True)} ({fr['n']})",
                 f"{_v(lr['rate'], pct=True)} ({lr['n']})", *_persist(h["persistence"]["all"]),
                 *_persist(h["persistence"]["corrected"]), drift, _v(d["over_floor"], 3)]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _paired(variants: dict[str, Any]) -> list[str]:
    """Per scenario, per variant: up/down/same over its (seed, task) pairs; * = corrected in some seed."""
    names = list(variants)
    scen: dict[str, dict[str, list[int]]] = {}
    corrected: set[tuple[str, str]] = set()
    for v, h in variants.items():
        for pr in h["pairs"]:
            c = scen.setdefault(pr["scenario"], {}).setdefault(v, [0, 0, 0])
            c[("up", "down", "same").index(pr["change"])] += 1
            if pr["corrected"]:
                corrected.add((pr["scenario"], v))
    lines = ["", "## Paired per task (up/down/same vs baseline; * = the correction was given)", "",
             "| scenario | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for sid, per in scen.items():
        cells = [("{}/{}/{}".format(*per[v]) + ("*" if (sid, v) in corrected else "")) if v in per else "–"
                 for v in names]
        lines.append(f"| {sid} | " + " | ".join(cells) + " |")
    return lines


def _suite(suite: dict[str, Any]) -> list[str]:
    """Does the base model break each preference (baseline rows with the scenario's own task)?"""
    if not suite.get("per_scenario"):
        return []
    lines = ["", "## Suite: does the base model break the preference?", "",
             "A scenario *violates* when the base model broke the preference on its own task (in ≥ half the "
             "seeds) and on more than half of its fresh tasks.", "",
             "| preference | scenarios | violating | task violation (n) | fresh violation (n) | fresh undecided |",
             "|" + "---|" * 6]
    for pref, x in suite["per_preference"].items():
        lines.append(f"| {pref} | {x['scenarios']} | {x['violating']} | {_v(x['task_violation'], pct=True)} "
                     f"({x['task_n']}) | {_v(x['fresh_violation'], pct=True)} ({x['fresh_n']}) "
                     f"| {_v(x['fresh_undecided'], pct=True)} |")
    lines += ["", "| scenario | split | task violated / seeds | task first call | fresh violated / n "
              "| fresh undecided | violates |", "|" + "---|" * 7]
    for sid, x in suite["per_scenario"].items():
        lines.append(f"| {sid} | {x['split'] or '–'} | {x['task_violated']}/{x['seeds']} "
                     f"| {', '.join(str(c) for c in x['task_first_call'])} | {x['fresh_violated']}/{x['fresh_n']} "
                     f"| {x['fresh_undecided']} | {'yes' if x['violates'] else 'no'} |")
    return lines


def _variants_table(meta: dict[str, Any], summary: dict[str, Any]) -> list[str]:
    lines = [
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
             "| preference | units | baseline | first retry (n) | all retries (n) | persistence | corrected units "
             "| corrected: base → after | undecided persist | KL exact | steps |",
             "|" + "---|" * 11]
    for p, m in per_pref.items():
        corr = (f"{_v(m.get('baseline_corrected'), pct=True)} → {_v(m.get('persistence_corrected'), pct=True)}"
                if m.get("corrected_units") else "–")
        lines.append(f"| {p} | {m['n_units']} | {_v(m['baseline'], pct=True)} "
                     f"| {_v(m.get('retry_first'), pct=True)} ({m.get('retry_first_n', '–')}) "
                     f"| {_v(m['retry'], pct=True)} ({m['retries_observed']}) | {_v(m['persistence'], pct=True)} "
                     f"| {m.get('corrected_units', '–')} | {corr} "
                     f"| {_v(m['persistence_undecided'], pct=True)} | {_v(m['kl_exact'], 3)} | {m['steps']} |")
    return lines


def _forgetting(forgetting: dict[str, Any]) -> list[str]:
    lines = ["", "## Forgetting curve (sequential)", "",
             "Compliance on a scenario's fresh tasks, `lag` scenarios after its own correction "
             "(lag 0 = persistence; `later` = every lag ≥ 1), each task beside the baseline's same task; "
             "`corrected`: only scenarios whose correction was given.", ""]
    for v, curve in forgetting.items():
        lines += [f"### {v}", "", "| lag | n | baseline → after | undecided | up / down | p | corrected: n, "
                  "baseline → after, up / down |", "|---|---|---|---|---|---|---|"]
        for lag, c in curve.items():
            q = c.get("paired") or {}
            k = c.get("corrected") or {}
            fix = (f"{k['n']}, {_v(k['baseline'], pct=True)} → {_v(k['rate'], pct=True)}, {k['up']} / {k['down']}"
                   if k else "–")
            lines.append(f"| {lag} | {c['n']} | {_v(q.get('baseline'), pct=True)} → {_v(c['compliance'], pct=True)} "
                         f"| {_v(c['undecided'], pct=True)} | {q.get('up', '–')} / {q.get('down', '–')} "
                         f"| {_v(q.get('p_value'), 2)} | {fix} |")
        lines.append("")
    return lines


def to_markdown(res: dict[str, Any]) -> str:
    meta, summary = res["meta"], res["summary"]
    lines = _header(meta)
    if res.get("variants"):
        lines += _headline(res["variants"])
    if summary:
        lines += ["## Variants: per seed, then mean ± sd over seeds", "", *_variants_table(meta, summary)]
    best = best_variant(summary)
    if best is not None:
        lines += _per_preference(best, res["per_preference"][best])
    if res.get("variants"):
        lines += _paired(res["variants"])
    if res.get("forgetting"):
        lines += _forgetting(res["forgetting"])
    lines += _suite(res.get("suite") or {})
    return "\n".join(lines).rstrip("\n") + "\n"
