"""Paired comparison of two variants' persistence on the same fresh tasks (and of each against the baseline),
or (`--retry`) of their first retries on the same denied tasks.

    python bench/results/learn/dense/compare.py [--retry] [--corrected] RUN_DIR:VARIANT RUN_DIR:VARIANT

A fresh task is keyed by (scenario, task text, sampling seed): the same in every run of the same
scenario file and seed, so two runs made side by side pair task by task.  "up" = compliant under the
second variant and not under the first; exact two-sided sign test on up vs down.  A first retry is
keyed by (scenario, seed): the decision of the calls after the first denial of the scenario's task,
where a turn was left to observe it.  `--corrected`: only the scenarios whose task was corrected (a call
denied) under both variants.
"""

from __future__ import annotations

import json
import sys

from continualcode.bench.learn.metrics import sign_test


def units(arg: str) -> list[dict]:
    """The rows of RUN_DIR/units.jsonl for VARIANT ("baseline" names the baseline's rows)."""
    run, variant = arg.rsplit(":", 1)
    with open(f"{run}/units.jsonl") as f:
        return [u for u in map(json.loads, f) if u.get("variant") == variant]


def persistence(arg: str) -> dict[tuple[str, str, int], bool]:
    return {(u["scenario"], t["task"], t["seed"]): t["decision"] == "compliant" for u in units(arg)
            for t in (u.get("persistence") if u.get("kind") == "variant" else u.get("fresh")) or ()}


def first_retries(arg: str) -> dict[tuple[str, str, int], bool]:
    out: dict[tuple[str, str, int], bool] = {}
    for u in units(arg):
        observed = [r for r in u["task"].get("retries", ()) if r["observed"]] if u.get("kind") == "variant" else []
        if observed:
            out[(u["scenario"], "first retry", u["seed"])] = observed[0]["decision"] == "compliant"
    return out


def corrected(arg: str) -> set[str]:
    return {u["scenario"] for u in units(arg)
            if u.get("kind") == "variant" and any(c.get("user") == "deny" for c in u["task"]["calls"])}


def main(a_arg: str, b_arg: str, *, retry: bool = False, only_corrected: bool = False) -> None:
    get = first_retries if retry else persistence
    a, b = get(a_arg), get(b_arg)
    keys = sorted(set(a) & set(b))
    if only_corrected:
        both = corrected(a_arg) & corrected(b_arg)
        keys = [k for k in keys if k[0] in both]
    up = sum(b[k] and not a[k] for k in keys)
    down = sum(a[k] and not b[k] for k in keys)
    print(f"{a_arg} -> {b_arg}: compliant {sum(a[k] for k in keys)} -> {sum(b[k] for k in keys)} of {len(keys)}; "
          f"up {up}, down {down}; exact sign test p = {sign_test(up, down):.4f}")


if __name__ == "__main__":
    args = [x for x in sys.argv[1:] if not x.startswith("--")]
    main(args[0], args[1], retry="--retry" in sys.argv[1:], only_corrected="--corrected" in sys.argv[1:])
