"""Measures: per task from its transcript, and results.json from the unit rows.

Pure functions of records.  `task_measures` reads one session's event records (each with its
time stamp "t"); `aggregate` pools rows overall, per kind, per split, per package and per task.
The definitions are in docs/bench-tasks.md ("Metrics").
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from continualcode.bench.tasks.checks import outcome_of
from continualcode.bench.tasks.taskfile import KINDS, SPLITS
from continualcode.events import AssistantText, Decided, Proposal
from continualcode.render import parse
from continualcode.textcall import looks_like_call
from continualcode.tools import TOOL_SCHEMAS

GROUPS = ("kind", "split", "package")


def _valid(p: dict[str, Any]) -> bool:
    """A proposal is valid when its raw text parses to a call, or is a text answer that is not a call
    written as text.  Judged on the text as sampled: a call the session recovered from prose (the
    proposal's `call` set although its text is not a call) counts as invalid, and as a `text_call`.  A call
    of any tool counts (the model may have been shown `replace`: `edit_tool`)."""
    parsed = parse(str(p.get("text") or ""), TOOL_SCHEMAS)
    return parsed.call is not None or (parsed.text is not None and not looks_like_call(parsed.text))


def _text_call(p: dict[str, Any]) -> bool:
    return p.get("call") is not None and parse(str(p.get("text") or ""), TOOL_SCHEMAS).call is None


def task_measures(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One session's measures from its event records (see the module docstring)."""
    proposals = [r for r in records if r.get("type") == Proposal.TYPE]
    latencies, decided, approved, proposed_at = [], [], None, None
    for r in records:
        if r.get("type") == Decided.TYPE and r.get("kind") == "approve" and proposed_at is not None:
            approved = (proposed_at, r["t"])
        elif r.get("type") == Proposal.TYPE:
            if approved is not None:  # the simulated user approves at once: its wait starts at the proposal
                latencies.append(round(r["t"] - approved[0], 3))  # prefill while deciding + tool + prompt + sampling
                decided.append(round(r["t"] - approved[1], 3))  # after that prefill (a user who read longer)
            approved, proposed_at = None, r["t"]
    texts = [str(r.get("text") or "") for r in records if r.get("type") == AssistantText.TYPE]
    return {
        "proposals": len(proposals),
        "valid": sum(_valid(p) for p in proposals),
        "malformed": sum(bool(p.get("error")) for p in proposals),
        "text_calls": sum(_text_call(p) for p in proposals),
        "calls": len(outcome_of(records).calls),
        "fake_tool_text": sum(looks_like_call(t) for t in texts),
        "latencies": latencies,
        "latencies_decided": decided,
    }


def _median(xs: Sequence[float]) -> float | None:
    return round(statistics.median(xs), 3) if xs else None


def _mean(xs: Sequence[float]) -> float | None:
    return round(sum(xs) / len(xs), 3) if xs else None


def summarize(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Pooled figures for some unit rows (rates are None when there is nothing to rate)."""
    n = len(rows)
    proposals = sum(r["proposals"] for r in rows)
    lat = [x for r in rows for x in r["latencies"]]
    decided = [x for r in rows for x in r.get("latencies_decided", [])]  # absent from rows before 2026-12-05
    prompt = [x for r in rows for x in r["prompt_tokens"]]
    secs = [r["sec"] for r in rows]
    return {
        "n": n,
        "success_rate": round(sum(r["success"] for r in rows) / n, 4) if n else None,
        "valid_call_rate": round(sum(r["valid"] for r in rows) / proposals, 4) if proposals else None,
        "fake_tool_text": sum(r["fake_tool_text"] for r in rows),
        "turn_latency_median_s": _median(lat),
        "turn_latency_p90_s": round(statistics.quantiles(lat, n=10)[-1], 3) if len(lat) > 1 else _median(lat),
        "turn_latency_decided_median_s": _median(decided),
        "sec_per_task_mean": _mean(secs),
        "sec_per_task_median": _median(secs),
        "calls_mean": _mean([r["calls"] for r in rows]),
        "proposals": proposals,
        "malformed": sum(r["malformed"] for r in rows),
        "text_calls": sum(r.get("text_calls", 0) for r in rows),
        "prompt_tokens_mean": _mean(prompt),
        "prompt_tokens_max": max(prompt) if prompt else None,
        "status": dict(Counter(r["status"] for r in rows)),
    }


def _by(rows: Iterable[dict[str, Any]], key: str, order: Sequence[str]) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r[key], []).append(r)
    return {k: summarize(groups[k]) for k in order if k in groups}


def aggregate(rows: Sequence[dict[str, Any]], task_order: Sequence[str], meta: dict[str, Any]) -> dict[str, Any]:
    """results.json: the overall figures at the top level, then per kind / split / package / task."""
    rows = [r for r in rows if r["task"] in set(task_order)]
    packages = list(dict.fromkeys(r["package"] for r in rows))
    tasks: dict[str, dict[str, Any]] = {}
    for tid in task_order:
        mine = [r for r in rows if r["task"] == tid]
        if mine:
            first = mine[0]
            tasks[tid] = {"package": first["package"], "kind": first["kind"], "split": first["split"],
                          **summarize(mine),
                          "runs": [{k: r[k] for k in ("seed", "status", "success", "calls", "sec")} | {
                              "check": r["check"]["details"]} for r in mine]}
    return {
        **summarize(rows),
        "per_kind": _by(rows, "kind", KINDS),
        "per_split": _by(rows, "split", SPLITS),
        "per_package": _by(rows, "package", packages),
        "tasks": tasks,
        "meta": meta,
    }
