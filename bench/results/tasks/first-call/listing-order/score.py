"""First calls on the main module (`bench tasks` dev split, the default 0.5B model): before vs after the
listing puts the code first.  A call counts when its path is the package's main module or its package
directory, or it is a grep over the whole project; a first proposal the rails refused (an edit before a
read becomes the read of its file) counts when it names the main module.

    python bench/results/tasks/first-call/listing-order/score.py before.jsonl after.jsonl
"""

from __future__ import annotations

import json
import sys
from math import comb
from pathlib import Path

MAIN = {"inflection": "inflection/__init__.py", "parse": "parse.py", "schedule": "schedule/__init__.py",
        "xmltodict": "xmltodict.py"}


def score(path: str) -> dict[str, int]:
    out = {}
    for line in Path(path).read_text().splitlines():
        r = json.loads(line)
        pkg, call = r["task"].split("-")[0], r["call"]
        if not call:
            out[r["task"]] = int(MAIN[pkg] in r["text"])
            continue
        p = call["arguments"].get("path", "")
        out[r["task"]] = int(p in (MAIN[pkg], pkg) or (call["name"] == "grep" and p in (".", "")))
    return out


def main() -> None:
    a, b = score(sys.argv[1]), score(sys.argv[2])
    keys = [k for k in a if k in b]
    up, down = sum(b[k] > a[k] for k in keys), sum(b[k] < a[k] for k in keys)
    n = up + down
    p = min(1.0, 2 * sum(comb(n, i) for i in range(min(up, down) + 1)) / 2**n) if n else 1.0
    print(f"n {len(keys)}  before {sum(a[k] for k in keys)}  after {sum(b[k] for k in keys)}  "
          f"up {up} down {down}  exact sign p = {p:.3f}")


if __name__ == "__main__":
    main()
