"""Scores calls.jsonl (beside this file): per variant, first calls on a file or directory that exists
in the task's package (a grep over '.' counts; a read of a directory does not), calls that copied
the worked example's `app/` path, and reads that start past line 1."""

from __future__ import annotations

import collections
import json
from pathlib import Path

from continualcode.bench.tasks.packages import PINS, source
from continualcode.models import cache_root

rows = [json.loads(line) for line in (Path(__file__).parent / "calls.jsonl").read_text().splitlines()]
agg: dict[str, list[int]] = collections.defaultdict(lambda: [0, 0, 0, 0])
for r in rows:
    a = agg[r["variant"]]
    a[0] += 1
    c = r["call"]
    if not c:
        continue
    p = c["arguments"].get("path")
    root = source(PINS[r["task"].split("-")[0]], cache_root())
    real = p is not None and p not in (".", "./") and (root / p).exists()
    good = (c["name"] in ("read", "grep", "glob") and real) or (c["name"] == "grep" and p in (".", None))
    if c["name"] == "read" and p and (root / p).is_dir():
        good = False
    a[1] += good
    a[2] += bool(p and "app/" in p)
    a[3] += bool(c["name"] == "read" and c["arguments"].get("offset", 1) > 1)
print("| variant | tasks | first call on a real path | copied `app/` | read past line 1 |")
print("|---|---|---|---|---|")
for v, a in agg.items():
    print(f"| {v or 'old'} | {a[0]} | {a[1]} | {a[2]} | {a[3]} |")
