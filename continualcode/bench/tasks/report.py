"""results.md: results.json (`metrics.aggregate`) as tables for a reader; computes nothing new."""

from __future__ import annotations

from typing import Any

NOTE = ("success: the task's checker passed (answer keywords, check snippet, the package's own tests, required "
        "calls; docs/bench-tasks.md).  valid: proposals that are a valid call or a text answer that is not a call "
        "written as text, over all proposals.  fake text: text answers shown to the user that look like a tool "
        "call.  latency: seconds from an approved proposal to the next one, the wait of a user who approves at "
        "once (the prefill speculated while the simulated user decided, the tool run, the prompt, the sampling); "
        "after decision: from the approval on, the wait of a user who reads longer than that prefill.  "
        "prompt: tokens of the prompt at each query.")


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.0f}%"


def _num(x: float | None, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _status(s: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(s.items())) or "–"


HEAD = ("| {what} | n | success | valid | fake text | latency median s | latency p90 s | after decision median s | "
        "s/task | calls | prompt mean / max | status |")


def _row(name: str, s: dict[str, Any]) -> str:
    return (f"| {name} | {s['n']} | {_pct(s['success_rate'])} | {_pct(s['valid_call_rate'])} "
            f"| {s['fake_tool_text']} | {_num(s['turn_latency_median_s'])} | {_num(s['turn_latency_p90_s'])} "
            f"| {_num(s.get('turn_latency_decided_median_s'))} "
            f"| {_num(s['sec_per_task_mean'], 0)} "
            f"| {_num(s['calls_mean'])} | {_num(s['prompt_tokens_mean'], 0)} / {s['prompt_tokens_max'] or '–'} "
            f"| {_status(s['status'])} |")


def _table(what: str, groups: dict[str, dict[str, Any]]) -> list[str]:
    lines = [HEAD.format(what=what), "|" + "---|" * 12]
    return lines + [_row(k, s) for k, s in groups.items()]


def to_markdown(res: dict[str, Any]) -> str:
    meta = res["meta"]
    cfg = meta.get("config", {})
    lines = [
        "# continualcode task benchmark", "",
        f"- command: `{meta.get('command', '')}`",
        f"- model: {meta.get('model', '?')} · seeds: {meta.get('seeds')} · tasks: {len(res['tasks'])} "
        f"({meta.get('split', 'all')} split) · packages: "
        + ", ".join(f"{k}=={v}" for k, v in meta.get("packages", {}).items()),
        f"- date: {meta.get('date', '')} · wall time of this invocation: {meta.get('seconds', 0):.0f} s",
        f"- config: temperature {cfg.get('temperature')}, max_tokens {cfg.get('max_tokens')}, "
        f"max_turns {cfg.get('max_turns')}, constrained {cfg.get('constrained')}, threads {cfg.get('threads')}",
        "", NOTE, "",
        "## Overall", "", *_table("", {"all": res}), "",
        "## Per split", "", *_table("split", res["per_split"]), "",
        "## Per kind", "", *_table("kind", res["per_kind"]), "",
        "## Per package", "", *_table("package", res["per_package"]), "",
        "## Per task", "",
        "| task | package | kind | split | success | calls | s | status | check |",
        "|" + "---|" * 9,
    ]
    for tid, t in res["tasks"].items():
        for run in t["runs"]:
            detail = "; ".join(f"{k}: {v}" for k, v in run["check"].items()).replace("|", "\\|")
            lines.append(f"| {tid} | {t['package']} | {t['kind']} | {t['split']} | {'✓' if run['success'] else '✗'} "
                         f"| {run['calls']} | {run['sec']:.0f} | {run['status']} | {detail[:160]} |")
    return "\n".join(lines).rstrip("\n") + "\n"
