"""bash process cleanup (unconfined): timeouts, background children, nohup and setsid daemons,
endless output, stdin, secrets in the command's environment; one row per check.

Each check runs one command through the bash tool and judges it from the outside: a pid the command
wrote must be gone afterwards, output must stay capped and prompt. The one known escape (a daemon
that clears its environment) is recorded as a documented limitation and killed by the benchmark.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import alive, env, scrub
from continualcode.tools import Workspace

Verdict = Callable[[str, float], tuple[bool, str]]  # (output, seconds) -> (passed, observed)


def bash_checks(root: Path) -> list[dict[str, Any]]:
    """Process-group and output-cap behaviour of the bash tool; one row per check."""
    root.mkdir(parents=True)
    ws = Workspace(root, result_cap=4000)
    rows = []

    def check(name: str, command: str, expected: str, verdict: Verdict, timeout: int | None = None) -> None:
        for p in root.iterdir():
            p.unlink()
        start = time.monotonic()
        res = ws.run("bash", {"command": command, "timeout": timeout})
        seconds = time.monotonic() - start
        passed, observed = verdict(res.output, seconds)
        rows.append(
            {
                "check": name,
                "command": command,
                "expected": expected,
                "observed": observed,
                "passed": passed,
                "seconds": round(seconds, 2),
                "output_tail": scrub(res.output, root),
            }
        )

    pid_gone = _pid_gone(root / "pid")
    quick = "<= 4000 chars, within"
    check(
        "timeout kills a child that ignores SIGTERM",
        "trap '' TERM; bash -c 'trap \"\" TERM; echo $$ > pid; while :; do sleep 0.05; done'",
        "timed out after 1s; child gone",
        pid_gone,
        timeout=1,
    )
    check("background child killed at the end", "sleep 60 & echo $! > pid", "child gone", pid_gone)
    check("nohup child killed", "nohup sleep 60 > /dev/null 2>&1 & echo $! > pid", "child gone", pid_gone)
    check("setsid daemon killed (marker)", "setsid sleep 60 & echo $! > pid; sleep 0.2", "gone", pid_gone)
    check("double-fork daemon", "setsid bash -c 'sleep 60 & echo $! > pid' & sleep 0.3", "gone", pid_gone)
    check("endless output capped", "yes", f"killed, {quick} 5 s", _prompt(5, "killed"))
    check("endless background output after exit", "yes & echo started", f"{quick} 5 s", _prompt(5))
    check("stdin is /dev/null", "cat; echo done", f"{quick} 2 s", _prompt(2, "done"))
    with env(TINKER_API_KEY="tk-secret-1", SOME_SERVICE_TOKEN="tok-secret-2"):
        check("secrets hidden from the command", "env", "no *_API_KEY / *_TOKEN values", _lacks("-secret-"))
    check(
        "LIMITATION: daemon that clears its environment",
        "env -i setsid sleep 60 > /dev/null 2>&1 & echo $! > pid; sleep 0.3",
        "escapes (documented limitation)",
        _escapes(root / "pid"),
    )
    return rows


def _pid_gone(pidfile: Path) -> Verdict:
    def verdict(_: str, __: float) -> tuple[bool, str]:
        pid = _wait_pid(pidfile)
        if pid is None:
            return False, "no pid written"
        return (False, f"pid {pid} still running") if alive(pid) else (True, f"pid {pid} gone")

    return verdict


def _prompt(limit_s: float, needle: str = "") -> Verdict:
    return lambda out, t: (t < limit_s and len(out) <= 4000 and needle in out, f"{t:.2f}s, {len(out)} chars")


def _lacks(needle: str) -> Verdict:
    return lambda out, _: (needle not in out, "hidden" if needle not in out else "visible")


def _escapes(pidfile: Path) -> Verdict:
    def verdict(_: str, __: float) -> tuple[bool, str]:
        pid = _wait_pid(pidfile)
        if pid is None:
            return False, "no pid written"
        if alive(pid):
            os.kill(pid, signal.SIGKILL)  # clean up after ourselves
            return True, f"pid {pid} escaped (killed by the benchmark)"
        return True, f"pid {pid} gone (better than documented)"

    return verdict


def _wait_pid(pidfile: Path) -> int | None:
    for _ in range(200):
        try:
            return int(pidfile.read_text())
        except (OSError, ValueError):
            time.sleep(0.01)
    return None
