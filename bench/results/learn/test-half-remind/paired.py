"""Pair two baseline runs of `bench learn` by (scenario, task): decided and compliant, up / down, sign test.

Usage: python paired.py BEFORE_DIR AFTER_DIR   (each a `bench learn --baseline-only` output folder)
"""

import json
import sys
from pathlib import Path

from continualcode.bench.learn.metrics import sign_test


def decisions(run: str) -> dict[tuple[str, str], str]:
    """(scenario, "task" or "fresh<i>") -> the baseline's decision."""
    out = {}
    for line in Path(run, "units.jsonl").read_text().splitlines():
        u = json.loads(line)
        if u["kind"] == "baseline":
            out[(u["scenario"], "task")] = u["task"]["decision"]
            for i, f in enumerate(u["fresh"]):
                out[(u["scenario"], f"fresh{i}")] = f["decision"]
    return out


before, after = decisions(sys.argv[1]), decisions(sys.argv[2])
keys = sorted(set(before) & set(after))
for name, hit in (("decided", lambda d: d != "undecided"), ("compliant", lambda d: d == "compliant")):
    n_before = sum(hit(before[k]) for k in keys)
    n_after = sum(hit(after[k]) for k in keys)
    up = sum(hit(after[k]) and not hit(before[k]) for k in keys)
    down = sum(hit(before[k]) and not hit(after[k]) for k in keys)
    print(f"{name}: {n_before} -> {n_after} of {len(keys)}; up {up} down {down}; "
          f"exact sign p = {sign_test(up, down):.3f}")
