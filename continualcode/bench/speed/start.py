"""Start-up: the interactive agent on a pseudo-terminal (prompt ready, backend ready), a fresh process's
backend load, an adapter reload, and the cold-start process's peak memory."""

from __future__ import annotations

import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from continualcode.bench.speed.common import stats, timed

PROMPT = b"\x1b[?2004h"  # prompt_toolkit turns bracketed paste on each time it starts reading a line


def interactive_start(args: Sequence[str], lines: Sequence[str] = ("/quit",),
                      timeout: float = 300.0) -> tuple[float, float, str]:
    """Run the interactive agent (`continualcode ARGS`) on a pseudo-terminal, typing the next of
    `lines` each time a prompt shows: seconds to the first prompt, seconds to its exit, and all it
    wrote.  With `/quit` first, the exit waits for the background load: it bounds backend-ready."""
    import os
    import pty
    import select
    import signal

    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "continualcode", f"state_home={d}/state", f"workspace={d}", *args]
        t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: the agent, on the pty
            os.execvp(cmd[0], cmd)
        buf, t_prompt, typed = b"", None, 0
        try:
            while True:
                if not select.select([fd], [], [], timeout)[0]:
                    raise TimeoutError(f"no prompt within {timeout:.0f} s: {buf[-200:]!r}")
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the child has exited
                    break
                if not data:
                    break
                buf += data
                if buf.count(PROMPT) > typed and typed < len(lines):
                    t_prompt = t_prompt or time.perf_counter() - t0
                    os.write(fd, lines[typed].encode() + b"\r")
                    typed += 1
        finally:
            if t_prompt is None:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        if t_prompt is None:
            raise RuntimeError(f"the agent exited without a prompt: {buf[-300:]!r}")
        return t_prompt, time.perf_counter() - t0, buf.decode(errors="replace")


def bench_start(cfg: Any, backend: Any, repeats: int) -> dict[str, Any]:
    code = ("import time; t=time.time(); from continualcode.backends.local import LocalBackend; "
            f"b=LocalBackend({cfg.model_name!r}, dtype={cfg.dtype!r}); print(time.time()-t)")
    walls, inner, prompt, quit_ = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        inner.append(float(r.stdout.strip().splitlines()[-1]))
        p, q, _ = interactive_start([f"model_name={cfg.model_name}", f"dtype={cfg.dtype}"])
        prompt.append(p)
        quit_.append(q)
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as d:
        backend.save(Path(d) / "a")
        reload = [timed(lambda: backend.load(Path(d) / "a"))[0] for _ in range(repeats)]
    return {"prompt_ready_s": stats(prompt), "backend_ready_and_quit_s": stats(quit_),
            "cold_start_process_s": stats(walls), "cold_start_in_python_s": stats(inner),
            "adapter_reload_s": stats(reload), "cold_start_peak_rss_mb": child_rss}


