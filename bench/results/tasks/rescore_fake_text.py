"""Re-count, with the current detector (`continualcode.textcall.looks_like_call`), the text answers
shown to the user that were really tool calls, in committed task-benchmark runs.

    python bench/results/tasks/rescore_fake_text.py bench/results/tasks/*/ bench/results/tasks/dev-rails/*/

Per run: the count its results.json reported (the detector of its day), the count now, and the tasks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from continualcode.textcall import call_in_text, looks_like_call


def main(runs: list[str]) -> None:
    print("| run | reported | now | recoverable as a call | tasks |")
    print("|---|---|---|---|---|")
    for run in map(Path, runs):
        files = sorted((run / "transcripts").glob("*.json"))
        if not files:
            continue
        texts = [(json.loads(f.read_text())["task"], e["text"]) for f in files
                 for e in json.loads(f.read_text())["events"] if e.get("type") == "assistant_text"]
        fake = [(task, t) for task, t in texts if looks_like_call(t)]
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").exists() else {}
        reported = results.get("fake_tool_text", "?")
        recovered = sum(call_in_text(t) is not None for _, t in fake)
        print(f"| {run.as_posix().rstrip('/')} | {reported} | {len(fake)} | {recovered} | "
              f"{', '.join(task for task, _ in fake) or '-'} |")


if __name__ == "__main__":
    main(sys.argv[1:])
