"""The bash sandbox: bubblewrap (`bwrap`, Debian's `bubblewrap`) around one command.

The boundary: `Sandbox(root, network=...).argv(["bash", "-c", cmd])` is the command line bash.py
runs instead of the bare command; `unavailable()` says why bwrap cannot run here (None when it can).
Nothing here runs a command or kills one: bash.py keeps doing that, and its process-group and marker
killing works unchanged (the sandboxed processes are ordinary processes of the host, and they all
die with the sandbox's PID namespace when bwrap is killed).

What a sandboxed command gets:
- the whole filesystem read-only, except the workspace (read-write) and a private, empty /tmp
  (TMPDIR=/tmp; gone when the command ends);
- its own PID namespace with a fresh /proc: the agent and every other process of the user are
  invisible, so `/proc/$PPID/environ` is the sandbox's own init, not the agent;
- no network unless `network=True` (its own network namespace with only loopback); /run and
  /var/run (host daemons' sockets: docker, dbus) are hidden behind an empty tmpfs either way;
- no capabilities, no new user namespaces, a new session (no terminal to inject keystrokes into),
  and a fresh /dev with only the harmless devices;
- well-known credential files and directories under $HOME (`~/.ssh`, `~/.aws`, `~/.netrc`, …)
  hidden behind empty ones.
Limits (what it does not stop) are in docs/security.md.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

BWRAP = "bwrap"
# credentials under $HOME that a command has no business reading (hidden behind empty ones)
HIDDEN_HOME_DIRS = (".ssh", ".aws", ".gnupg", ".kube", ".docker", ".config/gcloud", ".azure", ".config/gh")
HIDDEN_HOME_FILES = (".netrc", ".git-credentials", ".pypirc", ".npmrc", ".pgpass")


class SandboxUnavailable(ValueError):
    """sandbox=on, but bwrap cannot run here; the message is one line."""


class Sandbox:
    """How one command is confined: the workspace `root` writable, network or not."""

    def __init__(self, root: Path, *, network: bool = False) -> None:
        self.root = Path(root)
        self.network = network

    def argv(self, command: Sequence[str], *, home: str | None = None) -> list[str]:
        """bwrap's command line around `command` (run with cwd = root; the environment passes through)."""
        return [BWRAP, *self._flags(home), "--", *command]

    def _flags(self, home: str | None) -> list[str]:
        root = str(self.root)
        # 1) namespaces: all of them (user, pid, net, ipc, uts, cgroup), network back only when allowed
        flags = ["--unshare-all", "--unshare-user", "--disable-userns", "--cap-drop", "ALL",
                 "--die-with-parent", "--new-session"]
        if self.network:
            flags.append("--share-net")
        # 2) the filesystem: everything read-only, then fresh /dev and /proc, private /tmp, no host sockets
        flags += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for run in ("/run", "/var/run"):
            if os.path.isdir(run) and not os.path.islink(run):
                flags += ["--tmpfs", run]
        if self.network:  # DNS on systemd-resolved hosts reads its stub file from /run
            flags += ["--ro-bind-try", "/run/systemd/resolve", "/run/systemd/resolve"]
        # 3) the workspace, writable, and the working directory
        flags += ["--bind", root, root, "--chdir", root, "--setenv", "TMPDIR", "/tmp"]
        # 4) credentials under $HOME hidden behind empty ones (after the workspace: it may be $HOME itself)
        if home and os.path.isabs(home):
            for d in HIDDEN_HOME_DIRS:
                p = os.path.join(home, d)
                if os.path.isdir(p) and not _contains(p, root):
                    flags += ["--tmpfs", p]
            for f in HIDDEN_HOME_FILES:
                p = os.path.join(home, f)
                if os.path.isfile(p):
                    flags += ["--ro-bind", "/dev/null", p]
        return flags


def _contains(d: str, root: str) -> bool:
    """Is `root` at or below directory `d` (hiding `d` would hide the workspace)?"""
    return root == d or root.startswith(d.rstrip("/") + "/")


@functools.cache
def unavailable() -> str | None:
    """Why bwrap cannot confine a command here (None when it can): tried once per process, with the
    same flags a real command gets."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    if shutil.which(BWRAP) is None:
        return "bwrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    try:
        with tempfile.TemporaryDirectory(prefix="cc-sandbox-probe-") as d:
            probe = Sandbox(Path(d), network=False).argv(["true"])
            r = subprocess.run(probe, cwd=d, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bwrap does not start: {e}"
    if r.returncode != 0:
        last = (r.stderr.strip().splitlines() or [f"exit code {r.returncode}"])[-1]
        return f"bwrap cannot create its namespaces here ({last})"
    return None


def foreign_owner(root: Path) -> str | None:
    """Why sandboxed commands run as root cannot write the workspace, or None: inside its user namespace root
    is root only for files root owns, and no capability reaches a file whose owner the namespace does not
    map (an sdist unpacked by root keeps its packager's uid).  Unconfined, the same root writes them."""
    try:
        if os.geteuid() != 0 or (owner := root.stat().st_uid) == 0:
            return None
    except OSError:
        return None
    return (f"bash runs as root in the sandbox, and root there cannot write files root does not own: {root} "
            f"belongs to uid {owner}; `chown -R 0:0` it, or sandbox=off")


@functools.cache
def say_once(line: str) -> None:
    """One line about the sandbox on stderr, once per process for the same line."""
    print(f"continualcode: {line}", file=sys.stderr, flush=True)


def say_unavailable_once(why: str) -> None:
    """sandbox=auto on a machine without a working bwrap: one line on stderr, once per process."""
    say_once(f"no sandbox for bash ({why}); commands run unconfined (sandbox=off silences this)")
