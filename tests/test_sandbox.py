"""Tests of the bash sandbox (continualcode/tools/sandbox.py): bubblewrap around every command.

With bwrap working (the README's test command installs it where it can): a command writes only the
workspace and a private /tmp, has no network (a TCP server on the host's loopback is unreachable)
unless `sandbox_network`, sees neither the agent's processes nor its environment, cannot undo its
confinement (umount /proc, new user namespaces), finds credential files under $HOME empty, and is
still killed entirely on timeout and at its end, including the `env -i setsid` daemon that escapes
without the sandbox. Without bwrap these skip, saying why; the mode logic (on refuses, auto says
once) is tested either way by pretending bwrap is missing.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import pytest

from continualcode.tools import Workspace
from continualcode.tools import sandbox as sandbox_mod
from continualcode.tools import workspace as workspace_mod
from continualcode.tools.sandbox import SandboxUnavailable

WHY = sandbox_mod.unavailable()
needs_bwrap = pytest.mark.skipif(WHY is not None, reason=f"no sandbox here: {WHY}")


@pytest.fixture
def box(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root, sandbox="on", bash_timeout=20)


def sh(ws: Workspace, command: str, **args: object) -> str:
    return ws.run("bash", {"command": command, **args}).output


def processes_with(needle: bytes) -> list[int]:
    """Host pids whose command line contains `needle` (zombies excluded)."""
    found = []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{p}/cmdline").read_bytes()
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if needle in cmd and state not in ("Z", "X"):
            found.append(int(p))
    return found


# ---------------------------------------------------------------------------------------------------
# the modes, with bwrap pretended missing


def test_sandbox_on_without_bwrap_is_refused_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(workspace_mod, "unavailable", lambda: "bwrap is not installed (test)")
    with pytest.raises(SandboxUnavailable) as exc:
        Workspace(tmp_path, sandbox="on")
    assert str(exc.value) == "sandbox=on, but bwrap is not installed (test)"


def test_sandbox_auto_without_bwrap_says_so_once_and_runs_unconfined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture[str]):
    monkeypatch.setattr(workspace_mod, "unavailable", lambda: "bwrap is missing (auto test)")
    first = Workspace(tmp_path, sandbox="auto")
    Workspace(tmp_path, sandbox="auto")
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["continualcode: no sandbox for bash (bwrap is missing (auto test)); commands run unconfined "
                   "(sandbox=off silences this)"]
    assert first.sandbox is None
    assert first.run("bash", {"command": "echo hi"}).output == "hi\n[exit code 0]"


@needs_bwrap
@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a workspace to another uid")
def test_a_workspace_root_does_not_own_is_named_once_and_really_is_read_only_in_the_sandbox(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    root = tmp_path / "sdist"
    root.mkdir()
    os.chown(root, 1000, 1000)  # as `tar x` by root leaves an sdist: its packager's uid
    ws = Workspace(root, sandbox="on", bash_timeout=20)
    Workspace(root, sandbox="on")
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "belongs to uid 1000" in err[0] and err[0].endswith("or sandbox=off")
    assert "Permission denied" in sh(ws, "touch made")  # what the line warns of: the sandbox cannot write there
    assert not (root / "made").exists()
    os.chown(root, 0, 0)
    assert "[exit code 0]" in sh(ws, "touch made") and (root / "made").exists()


def test_foreign_owner_is_silent_for_root_owned_workspaces_and_for_other_users(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(sandbox_mod.os, "geteuid", lambda: 0)
    owner = tmp_path.stat().st_uid
    assert (sandbox_mod.foreign_owner(tmp_path) is None) == (owner == 0)
    monkeypatch.setattr(sandbox_mod.os, "geteuid", lambda: 1000)
    assert sandbox_mod.foreign_owner(tmp_path) is None
    assert sandbox_mod.foreign_owner(tmp_path / "missing") is None


def test_sandbox_off_is_the_library_default_and_bad_modes_are_refused(tmp_path: Path):
    assert Workspace(tmp_path).sandbox is None
    assert Workspace(tmp_path, sandbox="off").sandbox is None
    with pytest.raises(ValueError, match="sandbox must be auto, on or off"):
        Workspace(tmp_path, sandbox="strict")


def test_the_command_line_has_no_network_and_no_capabilities_by_default(tmp_path: Path):
    argv = sandbox_mod.Sandbox(tmp_path).argv(["bash", "-c", "true"], home=None)
    assert argv[0] == "bwrap" and argv[-3:] == ["bash", "-c", "true"]
    assert "--share-net" not in argv and "--unshare-all" in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and "--disable-userns" in argv
    assert "--share-net" in sandbox_mod.Sandbox(tmp_path, network=True).argv(["true"])


# ---------------------------------------------------------------------------------------------------
# with bwrap: writes


@needs_bwrap
def test_a_command_writes_the_workspace_and_nothing_else(box: Workspace, tmp_path: Path):
    outside = tmp_path / "outside"  # a sibling of the workspace (under the host's /tmp: not even visible)
    outside.mkdir()
    (outside / "keep.txt").write_text("untouched\n")
    (box.root / "link_out").symlink_to(outside / "keep.txt")
    before = {p: p.stat().st_mtime_ns for p in (Path("/etc"), Path("/var/tmp"), Path.home())}
    out = sh(box, "echo in > inside.txt && echo wrote-inside; "
                  f"echo x > {outside}/new.txt; echo x >> {outside}/keep.txt; echo x > link_out; "
                  "echo x > ../escape.txt; touch ~/cc-sandbox-probe; mkdir /var/tmp/cc-sandbox-probe; "
                  "touch /etc/cc-sandbox-probe; cp inside.txt /usr/cc-sandbox-probe; "
                  f"rm -f {outside}/keep.txt; true")
    assert "wrote-inside" in out and out.count("Read-only file system") >= 4, out
    assert (box.root / "inside.txt").read_text() == "in\n"
    assert sorted(p.name for p in outside.iterdir()) == ["keep.txt"]
    assert (outside / "keep.txt").read_text() == "untouched\n"
    assert not (tmp_path / "escape.txt").exists()
    for d, mtime in before.items():
        assert not (d / "cc-sandbox-probe").exists() and d.stat().st_mtime_ns == mtime, d
    assert not Path("/usr/cc-sandbox-probe").exists()


@needs_bwrap
def test_tmp_is_private_and_does_not_outlive_the_command(box: Workspace, tmp_path: Path):
    marker = f"cc-private-{os.getpid()}-{time.monotonic_ns()}"
    out = sh(box, f'echo secret > /tmp/{marker} && echo "$TMPDIR" && ls /tmp')
    assert out.splitlines()[:2] == ["/tmp", marker], out
    host_tmp = Path(os.environ.get("TMPDIR", "/" + "tmp"))
    assert not (host_tmp / marker).exists() and not (Path("/" + "tmp") / marker).exists()
    assert sh(box, f"cat /tmp/{marker}").startswith("cat: ")  # gone for the next command


# ---------------------------------------------------------------------------------------------------
# with bwrap: network


@pytest.fixture
def loopback_server():
    """A TCP server on the host's loopback answering 'pong'; yields its port."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(5)
    srv.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            with conn:
                conn.sendall(b"pong\n")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join(2)
    srv.close()


@needs_bwrap
def test_no_network_unless_allowed(box: Workspace, loopback_server: int):
    cmd = f"timeout 5 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{loopback_server}; head -1 <&3' 2>&1; echo rc=$?"
    unconfined = Workspace(box.root)
    assert "pong" in sh(unconfined, cmd)  # the server answers outside the sandbox
    out = sh(box, cmd)
    assert "pong" not in out and "rc=0" not in out, out
    assert "pong" not in sh(box, f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', "
                                  f"{loopback_server}), 3)\" 2>&1 | tail -1")
    networked = Workspace(box.root, sandbox="on", sandbox_network=True)
    assert "pong" in sh(networked, cmd)


# ---------------------------------------------------------------------------------------------------
# with bwrap: the agent's processes and secrets


@needs_bwrap
def test_the_agents_proc_and_environment_are_invisible(box: Workspace, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("CC_SANDBOX_TEST_TOKEN", "agent-secret-51d2")  # a secret name: never passed
    monkeypatch.setenv("CC_SANDBOX_AGENT_ONLY", "x")
    out = sh(box, "cat /proc/$PPID/environ /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n'; echo ppid=$PPID")
    assert "agent-secret-51d2" not in out
    assert "ppid=1" in out  # its parent is the sandbox's own init, not the agent
    listing = sh(box, f"ps -eo pid=,comm=; kill -0 {os.getpid()} 2>/dev/null || echo no-agent")
    names = [ln.split()[1] for ln in listing.splitlines() if ln.strip()[:1].isdigit()]
    assert names == ["bwrap", "bash", "ps"], listing  # the sandbox's own init, the command; no host process
    assert "no-agent" in listing


@needs_bwrap
def test_the_confinement_cannot_be_undone_from_inside(box: Workspace):
    out = sh(box, "umount -l /proc 2>&1; mount -o remount,rw / 2>&1; unshare -r true 2>&1; "
                  "unshare -m true 2>&1; grep CapEff /proc/self/status; touch /cc-escape 2>&1; echo done")
    assert "CapEff:\t0000000000000000" in out, out
    assert not Path("/cc-escape").exists()
    assert sh(box, "ls /proc | grep -c '^[0-9]'").splitlines()[0].isdigit()


@needs_bwrap
def test_credential_files_under_home_are_hidden(box: Workspace, monkeypatch: pytest.MonkeyPatch):
    home = box.root / "home"  # inside the workspace, so that the sandbox sees it (the host's /tmp it does not)
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("PRIVATE KEY 9a8b\n")
    (home / ".aws").mkdir()
    (home / ".aws" / "credentials").write_text("aws_secret_access_key = 9a8b\n")
    (home / ".netrc").write_text("machine x login y password 9a8b\n")
    (home / "notes.txt").write_text("readable\n")
    monkeypatch.setenv("HOME", str(home))
    out = sh(box, "cat ~/.ssh/id_ed25519 ~/.aws/credentials ~/.netrc ~/notes.txt 2>&1; ls -A ~/.ssh; "
                  "echo leak > ~/.netrc; rm -rf ~/.ssh 2>&1 | tail -1")
    assert "9a8b" not in out and "readable" in out, out
    assert (home / ".ssh" / "id_ed25519").read_text() == "PRIVATE KEY 9a8b\n", "the real files are untouched"
    assert (home / ".netrc").read_text().endswith("9a8b\n")


# ---------------------------------------------------------------------------------------------------
# with bwrap: the process cleanup still works


@needs_bwrap
def test_timeout_and_leftovers_are_killed_inside_the_sandbox(box: Workspace):
    tag = f"{os.getpid() % 1000 + 7000}.{time.monotonic_ns() % 1000:03d}"
    start = time.monotonic()
    out = sh(box, f"sleep 61{tag} & setsid sleep 62{tag} & env -i setsid sleep 63{tag} > /dev/null 2>&1 & "
                  "trap '' TERM; while :; do sleep 0.05; done", timeout=1)
    assert time.monotonic() - start < 5 and out.endswith("[timed out after 1s, killed]"), out
    time.sleep(0.3)
    for n in ("61", "62", "63"):  # 63: the escape documented for unconfined bash is closed here
        assert processes_with(f"sleep\x00{n}{tag}".encode()) == [], n


@needs_bwrap
def test_a_finished_commands_daemons_are_killed_inside_the_sandbox(box: Workspace):
    tag = f"{os.getpid() % 1000 + 8000}.{time.monotonic_ns() % 1000:03d}"
    start = time.monotonic()
    out = sh(box, f"env -i setsid sleep 64{tag} > /dev/null 2>&1 & nohup sleep 65{tag} >/dev/null 2>&1 & echo started")
    assert time.monotonic() - start < 4 and out == "started\n[exit code 0]", out
    time.sleep(0.3)
    for n in ("64", "65"):
        assert processes_with(f"sleep\x00{n}{tag}".encode()) == [], n


@needs_bwrap
def test_exit_codes_output_and_cwd_are_as_without_the_sandbox(box: Workspace):
    res = box.run("bash", {"command": "echo out; echo err >&2; pwd; exit 3"})
    assert not res.ok and res.output == f"out\nerr\n{box.root}\n[exit code 3]"
    assert sh(box, "cat") == "(no output)\n[exit code 0]"
