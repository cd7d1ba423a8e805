"""The bash tool: one command in the workspace root, bounded in time and output, killed entirely.

bash is not confined (an approved command runs with the user's rights). What is enforced: it runs
in its own session (process group) with stdin from /dev/null, stdout and stderr merged, and the
agent's secrets dropped from its environment unless `pass_secrets`. Output goes through a bounded
head/tail buffer; past `BASH_BYTE_BUDGET` bytes the command is killed. On timeout, and again once it
has finished, its process group is SIGKILLed, and so is every process carrying this command's
marker variable in /proc/<pid>/environ (those that left the group). The limits of this, and the
status line format, are in docs/tools.md.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import select
import signal
import subprocess
import time
from typing import TYPE_CHECKING

from continualcode.tools.base import Tool, function_schema

if TYPE_CHECKING:
    from continualcode.tools.workspace import Workspace

SECRET_NAMES = frozenset(
    {"TINKER_API_KEY", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "OPENAI_API_KEY", "ANTHROPIC_API_KEY"}
)
SECRET_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MARKER_VAR = "CONTINUALCODE_BASH_ID"
BASH_BYTE_BUDGET = 8 * 2**20  # bash output read before the command is killed


def bash(ws: Workspace, command: str, timeout: int | None) -> tuple[bool, str]:
    timeout = timeout or ws.bash_timeout
    marker = secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if ws.pass_secrets or not _is_secret(k)}
    env[MARKER_VAR] = marker
    env["PWD"] = str(ws.root)
    half = max((ws.result_cap - 200) // 2, 0)
    out = _HeadTail(half, half)
    # 1) start the command in its own session, reading its merged output as it comes
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ws.root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    start = time.monotonic()
    deadline, exited_at, last_data = start + timeout, None, start
    status = ""
    try:
        while True:
            now = time.monotonic()
            if now >= deadline:
                status = f"timed out after {timeout}s, killed"
                break
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and (now - last_data > 0.1 or now - exited_at > 1.0):
                break  # bash is done; whatever still holds the pipe is a leftover
            ready, _, _ = select.select([fd], [], [], min(deadline - now, 0.05))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:  # every writer closed the pipe; let bash finish its exit before the kill
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=max(deadline - time.monotonic(), 0))
                if proc.returncode is None:
                    status = f"timed out after {timeout}s, killed"
                break
            last_data = time.monotonic()
            out.feed(chunk)
            if out.total > BASH_BYTE_BUDGET:
                status = f"output exceeded {BASH_BYTE_BUDGET // 2**20} MiB, killed"
                break
    finally:
        # 2) kill whatever is left: the process group, then anything carrying the marker
        _kill_group(proc.pid)
        _kill_marked(marker)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)
        # 3) drain what the dead processes left in the pipe (bounded: an escaped writer may stay)
        _drain(fd, out, until=time.monotonic() + 0.5)
        proc.stdout.close()
    code = proc.returncode
    if not status:
        status = f"exit code {code}"
        if code is not None and code < 0:
            status += f" (killed by {signal.Signals(-code).name})"
    text = out.text()
    body = text if text else "(no output)"
    return (not status.startswith(("timed", "output")) and code == 0), f"{body}\n[{status}]"


def preview_bash(ws: Workspace, command: str, timeout: int | None) -> str:
    return f"$ {command}" + (f"  (timeout {timeout}s)" if timeout else "")


BASH = Tool(
    function_schema(
        "bash",
        "Run a bash command in the workspace root. Returns its output and exit code.",
        {
            "command": {"type": "string"},
            "timeout": {"type": "integer", "minimum": 1, "maximum": 3600, "description": "Seconds."},
        },
        ["command"],
    ),
    bash,
    preview_bash,
)


class _HeadTail:
    """Keeps the first `head` and last `tail` bytes of a stream, counting the rest."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_cap, self.tail_cap = head, tail
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_cap - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk and self.tail_cap:
            self.tail += chunk
            if len(self.tail) > 2 * self.tail_cap:
                del self.tail[: -self.tail_cap]

    def text(self) -> str:
        tail = bytes(self.tail[-self.tail_cap :]) if self.tail_cap else b""
        elided = self.total - len(self.head) - len(tail)
        mid = f"\n[… {elided} bytes elided …]\n" if elided else ""
        text = bytes(self.head).decode("utf-8", "replace") + mid + tail.decode("utf-8", "replace")
        return text.rstrip("\n")


def _is_secret(name: str) -> bool:
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _kill_marked(marker: str) -> None:
    """SIGKILL every process whose environment carries this command's marker (those that left the
    process group with setsid or a double fork); repeat while new ones appear (forks in flight)."""
    needle = f"{MARKER_VAR}={marker}".encode()
    me = os.getpid()
    for _ in range(20):
        found = False
        try:
            pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
        except OSError:
            return
        for pid in pids:
            if pid == me:
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\x00"):
                found = True
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
        if not found:
            return
        time.sleep(0.01)


def _drain(fd: int, out: _HeadTail, *, until: float) -> None:
    while (left := until - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            return
        chunk = os.read(fd, 65536)
        if not chunk or out.total > BASH_BYTE_BUDGET:
            return
        out.feed(chunk)
