"""Two task-benchmark runs side by side, paired task by task (`bench tasks --compare BEFORE AFTER`).

A change is judged on the same tasks and seeds in both runs: each (task, seed) solved in one run and not
in the other is an up or a down, and the exact sign test over those discordant pairs (McNemar) says how
likely so lopsided a split is if the change did nothing.  Runs of different task sets are compared on the
pairs they share (the count says how many).  Turn latency and seconds per task are shown beside it as
each run measured them: on a shared machine only a pair run side by side compares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from continualcode.bench.learn.metrics import sign_test


def load(run_dir: Path) -> dict[str, Any]:
    """A run's results.json (a clear error if the directory holds none)."""
    path = run_dir / "results.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir}: no results.json (not a finished `bench tasks` run)")
    return json.loads(path.read_text())


def _outcomes(res: dict[str, Any]) -> dict[tuple[str, int], tuple[str, bool]]:
    """(task, seed) -> (kind, solved)."""
    return {(tid, int(r["seed"])): (t["kind"], bool(r["success"]))
            for tid, t in res.get("tasks", {}).items() for r in t.get("runs", [])}


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """The paired comparison: counts over the shared (task, seed) pairs, overall and per kind, and the
    tasks that moved."""
    a, b = _outcomes(before), _outcomes(after)
    shared = sorted(set(a) & set(b))

    def count(keys: list[tuple[str, int]]) -> dict[str, Any]:
        up = sum(not a[k][1] and b[k][1] for k in keys)
        down = sum(a[k][1] and not b[k][1] for k in keys)
        return {"n": len(keys), "before": sum(a[k][1] for k in keys), "after": sum(b[k][1] for k in keys),
                "up": up, "down": down, "p": sign_test(up, down)}

    kinds = list(dict.fromkeys(a[k][0] for k in shared))
    return {
        **count(shared),
        "per_kind": {kind: count([k for k in shared if a[k][0] == kind]) for kind in kinds},
        "moved": [{"task": t, "seed": s, "after": b[(t, s)][1]} for t, s in shared if a[(t, s)][1] != b[(t, s)][1]],
        "only_one": len(set(a) ^ set(b)),
        "latency": {"before": before.get("turn_latency_median_s"), "after": after.get("turn_latency_median_s")},
        "sec_per_task": {"before": before.get("sec_per_task_mean"), "after": after.get("sec_per_task_mean")},
    }


def to_markdown(c: dict[str, Any], before: str = "before", after: str = "after") -> str:
    """The comparison as a short markdown report."""
    def row(name: str, x: dict[str, Any]) -> str:
        return (f"| {name} | {x['n']} | {x['before']} | {x['after']} | {x['up']} | {x['down']} | "
                f"{x['p']:.3g} |")

    lines = [f"`{before}` → `{after}`, paired by task and seed"
             + (f" ({c['only_one']} runs in one only, left out)" if c["only_one"] else ""), "",
             "| | pairs | solved before | solved after | up | down | p (sign test) |", "|---|---|---|---|---|---|---|",
             row("all", c), *(row(k, x) for k, x in c["per_kind"].items()), ""]
    for m in c["moved"]:
        lines.append(f"- {m['task']} (seed {m['seed']}): {'up' if m['after'] else 'down'}")
    lat, sec = c["latency"], c["sec_per_task"]
    lines.append(f"\nmedian turn {lat['before']} → {lat['after']} s; seconds per task {sec['before']} → "
                 f"{sec['after']} (as each run measured them)")
    return "\n".join(lines) + "\n"
