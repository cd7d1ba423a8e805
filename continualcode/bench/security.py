"""Security benchmark for the agent's tools (`continualcode bench security`): not a test, a report.

Three measurements against `continualcode.tools.Workspace`, each in a throwaway directory:
1. path attacks: every path-taking tool (read, write, edit_lines, glob, grep) is called with `..`,
   absolute paths outside, file and directory symlinks leading out, /proc/self/root, /proc itself,
   over-long names, NUL bytes, non-UTF-8 names and `~` (HOME is pointed at a scratch directory for the
   run). A row is safe when an escape is refused, nothing outside is read (the secret's text never
   appears) and nothing outside is created or changed.
2. kill -9 atomicity: a child process rewrites a large file in a loop (via write, or via edit_lines
   replacing every line) alternating two versions, and is SIGKILLed at a random moment, `kills` times
   per tool. Each outcome is old (the version before the interrupted call), new, or partial (anything
   else, which must never happen); we also count kills that left an orphaned temp file, whether glob
   showed it, and whether the next write cleaned it.
3. bash process cleanup: timeouts, background children, setsid daemons, endless output, stdin and
   secrets; plus one documented limitation (a daemon that clears its environment escapes).

Writes `out_dir/security.json` and `out_dir/security.md` and returns the same dict. Imports only the
standard library and `continualcode.tools` (no torch).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from continualcode.tools import TEMP_PREFIX, Workspace

SECRET = "TOP SECRET 7c1e"
PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # what the kill -9 child needs on sys.path
ATOMICITY_KEYS = (
    "old",
    "new",
    "partial",
    "missing",
    "child_errors",
    "orphan_temp_left",
    "orphan_visible_to_glob",
)


def parser_fuzz(n: int, *, seed: int = 0) -> dict[str, Any]:
    """Feed `n` generated replies (random text, mutated and truncated valid calls, wrong types) to the
    tool-call parser and argument validation; count crashes (must be 0) and outcome kinds."""
    import random

    from continualcode.records import ToolCall
    from continualcode.render import parse
    from continualcode.tools import TOOL_NAMES

    rng = random.Random(seed)
    atoms: list[Any] = [None, True, 0, -1, 2**70, 1.5, float("nan"), "", "x", "../../etc/passwd", [], {}, [1], {"a": 1}]
    valid = [ToolCall("read", {"path": "a.py"}).to_text(),
             ToolCall("edit_lines", {"path": "a", "start_line": 1, "end_line": 1, "content": "x"}).to_text(),
             ToolCall("bash", {"command": "ls"}).to_text()]
    alphabet = '<>{}[]":,\\n tool_call/abcxyz0123456789\x00\u00e9\ud800'
    counts = {"call": 0, "text": 0, "error": 0, "crash": 0, "multiline_error": 0}
    crashes: list[str] = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:
            s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        elif kind == 1:
            v = list(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(v))
                v[i] = rng.choice(alphabet) if rng.random() < 0.7 else ""
            s = "".join(v)
        elif kind == 2:
            v = rng.choice(valid)
            s = v[: rng.randrange(len(v))]
        else:
            name = rng.choice([*TOOL_NAMES, "nope"])
            args = {rng.choice(["path", "content", "start_line", "end_line", "command", "pattern", "zzz"]):
                    rng.choice(atoms) for _ in range(rng.randrange(5))}
            s = "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"
        try:
            p = parse(s)
        except Exception as e:  # the parser promises never to raise
            counts["crash"] += 1
            crashes.append(f"{type(e).__name__}: {s[:80]!r}")
            continue
        key = "call" if p.call else "text" if p.text is not None else "error"
        counts[key] += 1
        if p.error is not None and "\n" in p.error:
            counts["multiline_error"] += 1
    return {"inputs": n, **counts, "crash_examples": crashes[:10]}


def run(out_dir: Path, *, kills: int = 200, fuzz: int = 100_000) -> dict:
    """Run all three measurements; write security.json and security.md into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cc-security-") as tmp:
        base = Path(tmp)
        paths = path_attacks(base / "paths")
        atomicity = {tool: kill_trials(base / tool, tool, kills) for tool in ("write", "edit_lines")}
        bash = bash_checks(base / "bash")
    fuzzed = parser_fuzz(fuzz)
    report: dict[str, Any] = {
        "summary": {
            "path_attacks": len(paths),
            "path_attacks_unsafe": sum(not r["safe"] for r in paths),
            "kills": sum(a["kills"] for a in atomicity.values()),
            "partial_files": sum(a["partial"] + a["missing"] for a in atomicity.values()),
            "bash_checks": len(bash),
            "bash_checks_failed": sum(not c["passed"] for c in bash),
            "parser_inputs": fuzzed["inputs"],
            "parser_crashes": fuzzed["crash"],
            "seconds": round(time.monotonic() - started, 1),
        },
        "parser_fuzz": fuzzed,
        "path_attacks": paths,
        "atomicity": atomicity,
        "bash": bash,
    }
    (out_dir / "security.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    (out_dir / "security.md").write_text(to_markdown(report))
    return report


# ------------------------------------------------------------------------------------ 1) path attacks

PATH_TOOLS: dict[str, Callable[[str], dict[str, Any]]] = {
    "read": lambda p: {"path": p},
    "write": lambda p: {"path": p, "content": "pwned\n"},
    "edit_lines": lambda p: {"path": p, "start_line": 1, "end_line": 1, "content": "pwned\n"},
    "glob": lambda p: {"pattern": "**/*", "path": p},
    "grep": lambda p: {"pattern": "SECRET", "path": p},
}


def path_attacks(base: Path) -> list[dict[str, Any]]:
    """Every path-taking tool against every attack; one row each."""
    root, outside, home = base / "ws", base / "outside", base / "home"
    for d in (root / "inner", outside / "sub", home):
        d.mkdir(parents=True)
    (outside / "secret.txt").write_text(SECRET + "\n")
    (outside / "sub" / "secret.txt").write_text(SECRET + "\n")
    (home / ".bashrc").write_text(SECRET + "\n")
    (root / "file_link").symlink_to(outside / "secret.txt")
    (root / "dir_link").symlink_to(outside)
    (root / "inner" / "up").symlink_to("../..")
    (root / "inside.txt").write_text("inside\n")
    non_utf8 = os.fsdecode(b"caf\xe9.txt")
    (root / non_utf8).write_text("inside\n")
    # (name, path, must_refuse): the last two are legitimate and must work without escaping
    attacks: list[tuple[str, str, bool]] = [
        ("dotdot", "../outside/secret.txt", True),
        ("dotdot_dir", "../outside", True),
        ("absolute_outside", str(outside / "secret.txt"), True),
        ("file_symlink_out", "file_link", True),
        ("dir_symlink_out", "dir_link/secret.txt", True),
        ("dir_symlink_new_file", "dir_link/new.txt", True),
        ("dir_symlink_itself", "dir_link", True),
        ("nested_symlink_up", "inner/up/outside/secret.txt", True),
        ("proc_self_root", f"/proc/self/root{outside}/secret.txt", True),
        ("proc_self_root_inside", f"/proc/self/root{root}/inside.txt", True),
        ("proc_environ", "/proc/self/environ", True),
        ("long_name", "a" * 300, True),
        ("long_path", "/".join(["d" * 200] * 25), True),
        ("nul_byte", "inside.txt\x00/../../outside/secret.txt", True),
        ("non_utf8_escape", "../" + os.fsdecode(b"\xff\xfe"), True),
        ("tilde_home", "~/.bashrc", True),
        ("tilde_dir", "~", True),
        ("non_utf8_inside", non_utf8, False),
        ("absolute_inside", str(root / "inside.txt"), False),
    ]
    rows = []
    with _env(HOME=str(home)):
        for tool, make_args in PATH_TOOLS.items():
            for name, path, must_refuse in attacks:
                rows.append(_attack(root, base, tool, name, make_args(path), must_refuse))
        patterns = {"pattern_dotdot": "../*", "pattern_absolute": "/etc/*", "pattern_deep": "**/../../o/*"}
        for name, pattern in patterns.items():
            rows.append(_attack(root, base, "glob", name, {"pattern": pattern}, True))
    return rows


def _attack(root: Path, base: Path, tool: str, name: str, args: dict[str, Any], must_refuse: bool) -> dict:
    before = _snapshot(base, skip=root)
    res = Workspace(root).run(tool, args)
    leaked = SECRET in res.output
    modified = _snapshot(base, skip=root) != before
    refused = not res.ok
    safe = (refused or not must_refuse) and not leaked and not modified
    message = res.output.splitlines()[0][:160] if res.output else ""
    return {
        "tool": tool,
        "attack": name,
        "must_refuse": must_refuse,
        "refused": refused,
        "leaked": leaked,
        "modified_outside": modified,
        "safe": safe,
        "message": message,
    }


def _snapshot(base: Path, *, skip: Path) -> dict[str, bytes]:
    """Contents of every file under `base` except the workspace itself (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for f in filenames:
            p = Path(dirpath, f)
            out[str(p)] = p.read_bytes() if p.is_file() and not p.is_symlink() else b"<link>"
    return out


@contextmanager
def _env(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# -------------------------------------------------------------------------------- 2) kill -9 atomicity

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
    path = os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path}
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
    Workspace(root).run("write", {"path": "data.txt", "content": "done\n"})
    counts["orphans_after_next_write"] = sum(p.name.startswith(TEMP_PREFIX) for p in root.iterdir())
    return counts


# ------------------------------------------------------------------------------------- 3) bash cleanup


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
                "output_tail": res.output[-120:],
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
    with _env(TINKER_API_KEY="tk-secret-1", SOME_SERVICE_TOKEN="tok-secret-2"):
        check("secrets hidden from the command", "env", "no *_API_KEY / *_TOKEN values", _lacks("-secret-"))
    check(
        "LIMITATION: daemon that clears its environment",
        "env -i setsid sleep 60 > /dev/null 2>&1 & echo $! > pid; sleep 0.3",
        "escapes (documented limitation)",
        _escapes(root / "pid"),
    )
    return rows


Verdict = Callable[[str, float], tuple[bool, str]]  # (output, seconds) -> (passed, observed)


def _pid_gone(pidfile: Path) -> Verdict:
    def verdict(_: str, __: float) -> tuple[bool, str]:
        pid = _wait_pid(pidfile)
        if pid is None:
            return False, "no pid written"
        return (False, f"pid {pid} still running") if _alive(pid) else (True, f"pid {pid} gone")

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
        if _alive(pid):
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


def _alive(pid: int) -> bool:
    """Running; a zombie counts as dead (pid 1 in a container may never reap it)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


# ------------------------------------------------------------------------------------------- report


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    lines = [
        "# continualcode tools: security benchmark",
        "",
        f"- path attacks: {s['path_attacks']} calls, {s['path_attacks_unsafe']} unsafe",
        f"- kill -9 in write and edit_lines: {s['kills']} kills, {s['partial_files']} partial/missing files",
        f"- bash cleanup: {s['bash_checks']} checks, {s['bash_checks_failed']} failed",
        f"- tool-call parser fuzz: {s['parser_inputs']} generated replies, {s['parser_crashes']} crashes "
        f"(outcomes: {_outcomes(report['parser_fuzz'])})",
        f"- took {s['seconds']} s",
        "",
        "## Path attacks",
        "",
        "| tool | attack | must refuse | refused | leaked | modified outside | safe | message |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["path_attacks"]:
        flags = [_yn(r[k]) for k in ("must_refuse", "refused", "leaked", "modified_outside", "safe")]
        msg = r["message"].replace("|", "\\|").replace("`", "'")
        lines.append(_row([r["tool"], r["attack"], *flags, f"`{msg}`"]))
    keys = ["kills", *ATOMICITY_KEYS, "orphans_after_next_write", "seconds_per_call"]
    lines += ["", "## kill -9 atomicity", "", _row(["tool", *keys]), _row(["---"] * (len(keys) + 1))]
    lines += [_row([tool, *(str(a[k]) for k in keys)]) for tool, a in report["atomicity"].items()]
    lines += ["", "## bash process cleanup", "", _row(["check", "expected", "observed", "passed", "seconds"])]
    lines.append(_row(["---"] * 5))
    for c in report["bash"]:
        lines.append(_row([c["check"], c["expected"], c["observed"], _yn(c["passed"]), str(c["seconds"])]))
    return "\n".join(lines) + "\n"


def _outcomes(f: dict[str, Any]) -> str:
    return ", ".join(f"{k} {f[k]}" for k in ("call", "text", "error", "multiline_error"))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"
