"""The task benchmark (`continualcode bench tasks`): real user tasks on real third-party code.

Can the agent do what a user types (find where something is defined, explain it, edit it, fix a
bug and run the tests) on packages it has never seen?  Pinned sdists from the package index are
fetched at bench time; a simulated user approves what stays in the workspace; each task has a
checker.  The task format, the checkers, the metrics and the output files: docs/bench-tasks.md.

    packages.py  the pinned sdists: fetch, verify (sha256), extract once
    taskfile.py  the task file's schema, loading, split coverage, file edits
    checks.py    checkers: a session's outcome from its transcript, each check part, --verify
    runner.py    the simulated user running one task on a `Session`; the row and transcript
    metrics.py   per-task measures from the transcript; results.json from the rows
    report.py    results.md from results.json
    compare.py   two runs paired task by task (`--compare BEFORE AFTER`)
    run.py       options, the resumable units file, the loop over seeds × tasks, main()

The data: tasks.jsonl (one task a line) and checks/*.py (check snippets).
"""

from continualcode.bench.tasks.run import Options, main, parse_args, run

__all__ = ["Options", "main", "parse_args", "run"]
