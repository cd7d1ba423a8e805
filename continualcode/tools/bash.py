"""The bash tool: one command in the workspace root, bounded in time and output, killed entirely.

An approved command runs with the user's rights; with the workspace's sandbox (sandbox.py, bubblewrap)
it is confined to writing the workspace and a private /tmp, without network and without a view of
the agent's processes. Either way: it runs in its own session (process group) with stdin from
/dev/null, stdout and stderr merged, and the agent's secrets dropped from its environment unless
`pass_secrets` (names holding KEY, SECRET, TOKEN, PASSWORD, PASSWD or CREDENTIAL, names ending in
_PAT or _PWD, and the password of any user:password@ URL). Unconfined, the agent process makes itself
non-dumpable first so that a command cannot read its environment through /proc/$PPID/environ.
Output goes through a bounded head/tail buffer, its terminal escape sequences (colours, cursor moves)
dropped on the way in; past `BASH_BYTE_BUDGET` bytes the command is killed. On timeout (the model's
`timeout`, clamped to the workspace's `bash_timeout`), and again once it has finished, its process
group is SIGKILLed, and so is every process carrying this command's marker variable in
/proc/<pid>/environ (those that left the group). The limits of this, and the status line format, are
in docs/tools.md and docs/security.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import re
import secrets
import select
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING

from continualcode.tools.base import Tool, ToolError, function_schema

if TYPE_CHECKING:
    from continualcode.tools.workspace import Workspace

SECRET_WORDS = ("KEY", "SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL")  # anywhere in the name
SECRET_SUFFIXES = ("_PAT", "_PWD")  # GH_PAT: personal access tokens; MYSQL_PWD (PWD and OLDPWD pass)
URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^\s/:@]*):[^\s/@]*@")
MARKER_VAR = "CONTINUALCODE_BASH_ID"
BASH_BYTE_BUDGET = 8 * 2**20  # bash output read before the command is killed
PR_SET_DUMPABLE = 4


def bash(ws: Workspace, command: str, timeout: int | None) -> tuple[bool, str]:
    _refuse_nul(command)
    timeout = clamp_timeout(ws, timeout)
    marker = secrets.token_hex(16)
    env = command_env(os.environ, pass_secrets=ws.pass_secrets)
    env[MARKER_VAR] = marker
    env["PWD"] = str(ws.root)
    argv = ["bash", "-c", command]
    if ws.sandbox is not None:
        argv = ws.sandbox.argv(argv, home=env.get("HOME"))
    else:
        _make_undumpable()  # unconfined: /proc/$PPID/environ must not show the agent's environment
    half = max((ws.result_cap - 200) // 2, 0)
    out = _HeadTail(half, half)
    # 1) start the command in its own session, reading its merged output as it comes
    proc = subprocess.Popen(
        argv,
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
            if out.raw > BASH_BYTE_BUDGET:
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
    _refuse_nul(command)
    if not timeout:
        return f"$ {command}"
    shown = clamp_timeout(ws, timeout)
    return f"$ {command}  (timeout {shown}s" + (f", asked {timeout}s)" if shown != timeout else ")")


def clamp_timeout(ws: Workspace, timeout: int | None) -> int:
    """The seconds a command gets: the model's `timeout`, at most the workspace's `bash_timeout`."""
    return min(timeout, ws.bash_timeout) if timeout else ws.bash_timeout


def command_env(environ: Mapping[str, str], *, pass_secrets: bool) -> dict[str, str]:
    """The environment a command gets: secrets dropped (by name) and URL passwords redacted, unless
    `pass_secrets`."""
    if pass_secrets:
        return dict(environ)
    return {k: URL_PASSWORD.sub(r"\g<head>:***@", v) for k, v in environ.items() if not is_secret(k)}


def is_secret(name: str) -> bool:
    upper = name.upper()
    return any(w in upper for w in SECRET_WORDS) or upper.endswith(SECRET_SUFFIXES)


def _refuse_nul(command: str) -> None:
    if "\x00" in command:
        raise ToolError(f"command holds a NUL byte at position {command.index(chr(0))}; bash cannot run it")


@functools.cache
def _make_undumpable() -> None:
    """prctl(PR_SET_DUMPABLE, 0) on this (the agent's) process, once: other processes of the same
    user, its bash commands included, can then no longer read its /proc/<pid>/environ, mem or maps.
    Root (CAP_SYS_PTRACE) still can. A no-op off Linux."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


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


# CSI (colours, cursor moves), OSC (titles, links; ended by BEL or ESC \\), and the others (`ESC ( B`, `ESC =`)
ESCAPES = re.compile(rb"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[ -/]*[0-Z\\^-~]")
ESCAPE_CARRY = 256  # bytes of an escape sequence left open at a chunk's end, kept for the next chunk


def strip_escapes(data: bytes) -> tuple[bytes, bytes]:
    """(`data` without its terminal escape sequences, an escape left open at its end to join the next chunk).
    A project's pytest set to `--color=yes` (humanize's) gave the model `\\x1b[31m\\x1b[1m` around every line
    (a user trial): a dozen tokens each, read by a model as part of the message."""
    data = ESCAPES.sub(b"", data)
    at = data.rfind(b"\x1b")
    if at < 0 or len(data) - at > ESCAPE_CARRY:
        return data, b""
    return data[:at], data[at:]


class _HeadTail:
    """Keeps the first `head` and last `tail` bytes of a stream, its escape sequences dropped, counting the
    rest; `raw` counts the bytes fed."""

    def __init__(self, head: int, tail: int) -> None:
        self.head, self.tail = bytearray(), bytearray()
        self.head_cap, self.tail_cap = head, tail
        self.total = self.raw = 0
        self.open = b""  # an escape sequence begun at the end of the last chunk

    def feed(self, chunk: bytes) -> None:
        self.raw += len(chunk)
        chunk, self.open = strip_escapes(self.open + chunk)
        self._keep(chunk)

    def _keep(self, chunk: bytes) -> None:
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
        if self.open:  # never closed: what follows its escape byte is text
            self._keep(self.open[1:])
            self.open = b""
        tail = bytes(self.tail[-self.tail_cap :]) if self.tail_cap else b""
        elided = self.total - len(self.head) - len(tail)
        mid = f"\n[… {elided} bytes elided …]\n" if elided else ""
        text = bytes(self.head).decode("utf-8", "replace") + mid + tail.decode("utf-8", "replace")
        return text.rstrip("\n")


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
