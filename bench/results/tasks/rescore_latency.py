"""Re-measure, from their transcripts, the turn latencies of committed task-benchmark runs with the current
definition (`metrics.task_measures`: from the approved proposal, so the prefill speculated while the simulated
user decided counts; before 2026-12-05 it was from the approval event, which comes after that prefill).

    python bench/results/tasks/rescore_latency.py bench/results/tasks/*/            # a table, nothing written
    python bench/results/tasks/rescore_latency.py --write bench/results/tasks/qwen2.5-coder-1.5b/

Per run: the median its results.json reported, the median now (and after the decision, the old definition,
recomputed as a check), the p90 now.  `--write` puts the re-measured rows into units.jsonl and rewrites
results.json and results.md from them (the same `aggregate` and report as the run; its meta kept).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from continualcode.bench.tasks.metrics import aggregate, task_measures
from continualcode.bench.tasks.report import to_markdown


def rescored(run: Path) -> tuple[list[dict], dict] | None:
    """The run's unit rows with their latencies re-measured, and its results; None without transcripts."""
    units, results = run / "units.jsonl", run / "results.json"
    if not units.exists() or not results.exists() or not (run / "transcripts").is_dir():
        return None
    rows = [json.loads(line) for line in units.read_text().splitlines() if line.strip()]
    for row in rows:
        doc = json.loads((run / "transcripts" / f"{row['task']}.s{row['seed']}.json").read_text())
        m = task_measures(doc["events"])
        row["latencies"], row["latencies_decided"] = m["latencies"], m["latencies_decided"]
    return rows, json.loads(results.read_text())


def main(argv: list[str]) -> None:
    write = "--write" in argv
    print("| run | median reported | median now | after decision (recomputed) | p90 now |")
    print("|---|---|---|---|---|")
    for run in (Path(a) for a in argv if a != "--write"):
        got = rescored(run)
        if got is None:
            continue
        rows, old = got
        new = aggregate(rows, list(old["tasks"]), old["meta"])
        print(f"| {run.as_posix().rstrip('/')} | {old['turn_latency_median_s']} | {new['turn_latency_median_s']} "
              f"| {new['turn_latency_decided_median_s']} | {new['turn_latency_p90_s']} |")
        if write:
            (run / "units.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
            (run / "results.json").write_text(json.dumps(new, indent=1, ensure_ascii=False) + "\n")
            (run / "results.md").write_text(to_markdown(new))


if __name__ == "__main__":
    main(sys.argv[1:])
