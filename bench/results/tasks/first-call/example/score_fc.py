import json, sys
from math import comb
MAIN = {"inflection": "inflection/__init__.py", "parse": "parse.py", "schedule": "schedule/__init__.py", "xmltodict": "xmltodict.py"}
rows = [json.loads(l) for l in open(sys.argv[1])]
base = sys.argv[2] if len(sys.argv) > 2 else None
sc = {}
for r in rows:
    pkg, call = r["task"].split("-")[0], r["call"]
    if not call:
        ok = int(MAIN[pkg] in r["text"])
    else:
        p = call["arguments"].get("path", "") or ""
        ok = int(p.rstrip("/") in (MAIN[pkg], pkg) or (call["name"] == "grep" and p in (".", "", "./")))
    sc.setdefault(r["variant"], {})[r["task"]] = ok
base = base or next(iter(sc))
for v, d in sc.items():
    keys = [k for k in d if k in sc[base]]
    up = sum(d[k] > sc[base][k] for k in keys); down = sum(d[k] < sc[base][k] for k in keys)
    n = up + down
    p = min(1.0, 2 * sum(comb(n, i) for i in range(min(up, down) + 1)) / 2**n) if n else 1.0
    print(f"{v:10} n {len(keys)}  main-module first calls {sum(d[k] for k in keys)}  vs {base}: up {up} down {down} p {p:.3f}")
