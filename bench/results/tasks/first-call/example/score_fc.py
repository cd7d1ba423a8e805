"""First calls on the package's main module, per example variant, paired against one variant.

    python bench/results/tasks/first-call/example/score_fc.py OUT.jsonl [BASE_VARIANT]

A call counts when its path is the package's main module or its directory, or it is a grep of the whole
project (as `../listing-order/score.py` counts); a first reply in words counts when it names the module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from continualcode.bench.learn.metrics import sign_test

MAIN = {"inflection": "inflection/__init__.py", "parse": "parse.py", "schedule": "schedule/__init__.py",
        "xmltodict": "xmltodict.py"}


def hit(row: dict) -> int:
    pkg, call = row["task"].split("-")[0], row["call"]
    if not call:
        return int(MAIN[pkg] in row["text"])
    path = (call["arguments"].get("path") or "").rstrip("/")
    return int(path in (MAIN[pkg], pkg) or (call["name"] == "grep" and path in (".", "", "./")))


def main() -> None:
    scores: dict[str, dict[str, int]] = {}
    for line in Path(sys.argv[1]).read_text().splitlines():
        row = json.loads(line)
        scores.setdefault(row["variant"], {})[row["task"]] = hit(row)
    base = sys.argv[2] if len(sys.argv) > 2 else next(iter(scores))
    for variant, got in scores.items():
        keys = [k for k in got if k in scores[base]]
        up = sum(got[k] > scores[base][k] for k in keys)
        down = sum(got[k] < scores[base][k] for k in keys)
        print(f"{variant:10} n {len(keys)}  on the main module {sum(got[k] for k in keys)}  "
              f"vs {base}: up {up} down {down} p {sign_test(up, down):.3f}")


if __name__ == "__main__":
    main()
