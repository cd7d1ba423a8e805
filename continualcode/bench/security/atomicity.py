"""kill -9 atomicity of write and edit_lines: a child process rewrites a large file in a loop (two
versions of different sizes and line counts) and is SIGKILLed at random moments; each outcome is the
old version, the new one, or partial/missing (never).

The child announces the version it is about to write, so "new" and "old" are judged against what
was being written when it died. Also counted: temp files a killed write left, whether glob shows
them, and whether the next write clears them. Only `continualcode.tools` runs in the child.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import child_env
from continualcode.tools import TEMP_PREFIX, Workspace

ATOMICITY_KEYS = (
    "old",
    "new",
    "partial",
    "missing",
    "child_errors",
    "orphan_temp_left",
    "orphan_visible_to_glob",
)
CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from continualcode.tools import Workspace

    root, tool = Path(sys.argv[1]), sys.argv[2]
    versions = [{versions}]
    ws = Workspace(root)
    target = root / "data.txt"
    print("ready", flush=True)
    i = 1 if target.read_text() == versions[0] else 0  # the first write changes the file
    while True:
        new = versions[i % 2]
        print(i % 2, flush=True)  # the version about to be written
        if tool == "write":
            args = {{"path": "data.txt", "content": new}}
        else:
            n = target.read_text().count("\\n")
            args = {{"path": "data.txt", "start_line": 1, "end_line": n, "content": new}}
        res = ws.run(tool, args)
        assert res.ok, res.output
        i += 1
    """
)
VERSION_EXPRS = [  # two versions with different sizes and line counts (~2.3 MB and ~0.6 MB)
    '"".join(f"alpha {i:07}\\n" for i in range(150_000))',
    '"".join(f"b{i}\\n" for i in range(90_000))',
]


def kill_trials(root: Path, tool: str, kills: int, *, seed: int = 0) -> dict[str, Any]:
    """SIGKILL a child rewriting root/data.txt via `tool` at `kills` random moments; count outcomes."""
    root.mkdir(parents=True)
    versions = [eval(v) for v in VERSION_EXPRS]  # the child builds the same two strings
    target = root / "data.txt"
    script = CHILD.format(versions=", ".join(VERSION_EXPRS))
    env = child_env()
    rng = random.Random(seed)
    counts: dict[str, Any] = dict.fromkeys(ATOMICITY_KEYS, 0) | {"kills": kills}
    target.write_text(versions[1])
    cmd = [sys.executable, "-c", script, str(root), tool]
    # 1) calibrate: kill moments are spread over about two calls' worth of time
    child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
    assert child.stdout is not None
    child.stdout.readline()
    time.sleep(1.0)
    child.kill()
    calls = max(len(child.stdout.read().split()) - 1, 1)
    child.wait()
    window = 2.0 / calls
    counts["seconds_per_call"] = round(1.0 / calls, 4)
    # 2) the kills
    for _ in range(kills):
        before = target.read_text(errors="replace")
        if before not in versions:  # only after a partial file was already counted
            target.write_text(versions[1])
            before = versions[1]
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, text=True)
        assert child.stdout is not None
        if child.stdout.readline() != "ready\n":
            counts["child_errors"] += 1
            child.kill()
            child.wait()
            continue
        time.sleep(rng.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        marks = child.stdout.read().split()
        if child.wait() != -signal.SIGKILL:
            counts["child_errors"] += 1
        if not target.exists():
            counts["missing"] += 1
            continue
        content = target.read_text(errors="replace")
        new = versions[int(marks[-1])] if marks else None  # the version being written when killed
        if content not in versions or (new is None and content != before):
            counts["partial"] += 1  # (the second case: changed although no call had started)
        else:
            counts["new" if content == new else "old"] += 1
        if any(p.name.startswith(TEMP_PREFIX) for p in root.iterdir()):
            counts["orphan_temp_left"] += 1
            shown = Workspace(root).run("glob", {"pattern": "**/*"}).output
            counts["orphan_visible_to_glob"] += TEMP_PREFIX in shown
    # 3) the next write clears what killed writes left
    Workspace(root).run("write", {"path": "data.txt", "content": "done\n"})
    counts["orphans_after_next_write"] = sum(p.name.startswith(TEMP_PREFIX) for p in root.iterdir())
    return counts
