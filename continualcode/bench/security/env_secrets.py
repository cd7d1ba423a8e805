"""Secrets: values in the agent's environment (names outside the old patterns, passwords inside
URLs) that a bash command must not see, unconfined and sandboxed; and the agent's own environment
read through /proc/$PPID/environ.

The unconfined /proc read is measured as a non-root user: root can always read another process's
environ (CAP_SYS_PTRACE), so as root the agent runs as the user nobody, from a world-readable temp
directory; when that is impossible here the row says "not measured".
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import AGENT_ONLY, PACKAGE_PARENT, SECRET_ENV, env, sandbox_why
from continualcode.tools import Workspace

URL_ENV = {"DATABASE_URL": ("postgres://app:dbpw-5a6b@db:5432/app", "dbpw-5a6b"),
           "HTTPS_PROXY": ("http://me:proxypw-7c8d@proxy:3128", "proxypw-7c8d")}
AGENT_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from continualcode.tools import Workspace
    os.environ["CC_BENCH_AGENT_TOKEN"] = "agent-only-9e0f"
    res = Workspace(Path(sys.argv[1])).run("bash", {"command": "cat /proc/$PPID/environ"})
    print(res.output)
    """
)


def secret_checks(root: Path) -> list[dict[str, Any]]:
    """Secret values in the agent's environment that a bash command must not see."""
    root.mkdir(parents=True)
    rows = []
    env_values = {**SECRET_ENV, **{k: v for k, (v, _) in URL_ENV.items()}, AGENT_ONLY[0]: AGENT_ONLY[1]}
    modes = [("unconfined", "off")] + ([("sandboxed", "on")] if sandbox_why() is None else [])
    with env(**env_values):
        for label, mode in modes:
            ws = Workspace(root, sandbox=mode)
            out = ws.run("bash", {"command": "env"}).output
            for name, value in SECRET_ENV.items():
                rows.append({"check": f"{label}: ${name} in env", "leaked": value in out})
            for name, (_, password) in URL_ENV.items():
                rows.append({"check": f"{label}: password in ${name}", "leaked": password in out})
            if mode == "on":
                out = ws.run("bash", {"command": "cat /proc/$PPID/environ /proc/[0-9]*/environ 2>/dev/null"}).output
                rows.append({"check": "sandboxed: the agent's environment via /proc/$PPID and /proc/*/environ",
                             "leaked": AGENT_ONLY[1] in out})
    leaked, note = _unconfined_proc_read()
    rows.append({"check": f"unconfined: the agent's environment via /proc/$PPID/environ ({note})", "leaked": leaked})
    return rows


def _unconfined_proc_read() -> tuple[bool, str]:
    """Can an unconfined command read its agent's environment? As root it always can (CAP_SYS_PTRACE),
    so as root the agent runs as the user nobody here, from a world-readable temp directory."""
    as_nobody = os.getuid() == 0
    python = _world_python() if as_nobody else sys.executable
    if python is None or (as_nobody and not _world_traversable(PACKAGE_PARENT)):
        return False, "not measured: no python and checkout the user nobody can run"
    root = Path(tempfile.mkdtemp(prefix="cc-security-proc-"))
    try:
        root.chmod(0o777)
        environ = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}

        def demote() -> None:
            os.setgid(65534)
            os.setuid(65534)

        r = subprocess.run([python, "-c", AGENT_CHILD, str(root)], env=environ, capture_output=True, text=True,
                           timeout=120, cwd=root, preexec_fn=demote if as_nobody else None)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    note = "agent and command as the user nobody" if as_nobody else "agent and command as this user"
    return AGENT_ONLY[1] in r.stdout or r.returncode != 0, note


def _world_traversable(p: Path) -> bool:
    return all(os.stat(d).st_mode & 0o001 for d in (p, *p.parents))


def _world_python() -> str | None:
    cands = [sys.executable] + [os.path.join(d, "python3") for d in os.environ.get("PATH", "").split(os.pathsep)]
    for c in cands:
        real = os.path.realpath(c)
        if os.path.isfile(real) and os.stat(real).st_mode & 0o001 and _world_traversable(Path(real).parent):
            return c
    return None
