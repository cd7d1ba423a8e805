"""End to end with the REAL embedded model, through the non-interactive (stdin) mode of the
installed command: a task in a temp project, the first call denied with a correction (one SDPO
step), a retry, approvals, and the file changed on disk; then the journal, metrics and heatmap
it left behind, and a resumed session."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def run_cli(args: list[str], stdin: str, home: Path, cwd: Path, timeout: int = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "CONTINUALCODE_HOME": str(home), "COLUMNS": "100"}
    # the embedded small model, whatever the default: these tests are about the command, not the model
    cmd = [sys.executable, "-m", "continualcode", "model_name=smollm2-135m", *args]
    return subprocess.run(cmd, input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)


def converse(args: list[str], task: str, home: Path, cwd: Path, timeout: int = 400) -> str:
    """Run the command as a user at a terminal would (stdin lines, the non-interactive mode): read what it
    shows; deny the first proposal, whatever it is, with a correction; approve every later one; say again what
    to do when the task stops; quit once hello.py is written, the task is answered, or after ten answers.  A
    fixed list of answers was tied to one sampled path: the 135M model's first call with one seed was a `read`
    on one host and a `write` on another (bf16 kernels sum in other orders), and the list's "do not read"
    denial of that write left a retry that repeated it."""
    from pexpect import EOF
    from pexpect.popen_spawn import PopenSpawn

    env = {**os.environ, "CONTINUALCODE_HOME": str(home), "COLUMNS": "400", "PYTHONUNBUFFERED": "1"}
    child = PopenSpawn([sys.executable, "-m", "continualcode", "model_name=smollm2-135m", *args], cwd=str(cwd),
                       env=env, encoding="utf-8", timeout=timeout)
    child.sendline(task)
    out, denied = "", False
    for _ in range(10):
        asked = child.expect([r"answer \(one line\)[^\n]*\n", r"to go on[^\n]*\n", r"assistant: [^\n]*\n", EOF])
        out += child.before + (child.after if asked < 3 else "")
        if asked >= 2 or (cwd / "hello.py").is_file():  # answered (it waits for a task), ended, or written
            break
        if asked == 1:  # the task stopped: say again what to do
            child.sendline("create hello.py with the write tool")
        elif not denied:  # the first proposal, whatever it is, is denied with a correction
            denied = True
            tool = re.findall(r"╭─ (\w+) ─", out)[-1]
            child.sendline("n write print('hello') into hello.py" if tool == "write"
                           else "n do not read, just create hello.py with the write tool")
        else:
            child.sendline("y")
    child.sendline("/metrics")
    child.sendline("/quit")
    child.expect(EOF)
    child.wait()
    return out + child.before


def test_deny_correct_retry_approve_changes_file(tmp_path: Path, cache_dir: Path) -> None:
    ws, home = tmp_path / "proj", tmp_path / "home"
    ws.mkdir()
    (ws / "main.py").write_text("def add(a, b):\n    return a + b\n")
    # drafts off: their sizes follow measured forward costs (timing), and a drafted run's rows round their bf16
    # inputs after sums in another order than a step's, so with drafts the sampled path varied from run to run
    out = converse(["max_turns=3", "max_tokens=128", "seed=2", "threads=1", "draft=off"],
                   "create a file hello.py that prints hello", home, ws)
    assert "update #1" in out  # one learning step after the denial
    assert (ws / "hello.py").is_file(), out[-3000:]  # an approved write reached the disk
    # the journal: every event, in order, with the learning step and the retry after it
    (proj,) = (home / "projects").iterdir()
    (sess,) = (proj / "sessions").iterdir()
    events = [json.loads(line) for line in (sess / "journal.jsonl").read_text().splitlines()]
    kinds = [e["type"] for e in events]
    assert kinds[0] == "session_start" and kinds[-1] == "session_end"
    first_deny = next(i for i, e in enumerate(events) if e["type"] == "decision" and e["kind"] == "deny")
    learn = next(i for i, e in enumerate(events) if e["type"] == "learn")
    assert first_deny < kinds.index("correction") < learn
    assert "proposal" in kinds[learn:]  # the retry
    assert any(e["type"] == "tool_result" and e["name"] == "write" for e in events)
    step = events[learn]
    assert step["step"] == 1 and not step["rolled_back"]
    assert len(step["heatmap"]["tokens"]) == len(step["heatmap"]["advantage"]) > 0
    assert not step.get("deferred")  # the interim update on the denied call, before the retry
    final = [e for e in events if e["type"] == "learn" and e.get("deferred")]  # the task's end: it is replaced
    assert len(final) == 1 and final[0]["step"] == 1 and events.index(final[0]) > learn
    metrics = [json.loads(line) for line in (sess / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and metrics[0]["loss"] == step["loss"] and metrics[1]["loss"] == final[0]["loss"]
    assert (sess / "heatmaps" / "step-1.html").is_file()
    assert (sess / "heatmaps" / "step-1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (proj / "adapter" / "adapter_model.safetensors").is_file()
    assert "steps" in out and "no learning steps yet" not in out  # /metrics printed the table

    # resume: the conversation and the adapter come back
    r2 = run_cli(["resume=true", "enable_training=false"], "/quit\n", home, ws)
    assert r2.returncode == 0, r2.stderr[-2000:]
    assert "resumed session" in r2.stdout and "adapter at step 1" in r2.stdout


def test_bad_config_is_one_line_and_nonzero(tmp_path: Path) -> None:
    for args, needle in [(["lora_rnk=3"], "did you mean 'lora_rank'"), (["lora_rank=abc"], "bad value 'abc'"),
                         (["temperature=-1"], "temperature must be"), (["oops"], "expected key=value")]:
        r = run_cli(args, "", tmp_path, tmp_path, timeout=60)
        assert r.returncode == 2
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0], r.stderr


def test_workspace_not_a_directory_is_one_line(tmp_path: Path) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    r = run_cli([f"workspace={f}"], "", tmp_path, tmp_path, timeout=120)
    assert r.returncode == 1
    assert r.stderr.strip().splitlines()[-1] == f"continualcode: workspace {str(f)!r} is not a directory"


def test_interactive_prompt_comes_before_the_model_and_takes_the_first_line() -> None:
    """On a terminal the prompt is up while the model loads in the background; the line typed at
    once is handled after the load (the loaded-model banner comes between prompt and exit)."""
    from continualcode.bench.speed.start import interactive_start

    _, _, out = interactive_start(["model_name=smollm2-135m"], ["/help", "/quit"], timeout=400)
    loading, prompt = out.index("loading smollm2-135m"), out.index("›")
    ready = out.index("smollm2-135m · workspace")
    assert loading < prompt < ready  # the prompt did not wait for the model
    assert "/undo" in out[ready:]  # /help ran after the load
    assert "Traceback" not in out


def test_interactive_missing_model_is_one_line_after_the_prompt() -> None:
    from continualcode.bench.speed.start import interactive_start

    _, _, out = interactive_start(["model_name=/nonexistent/model"], ["hello"], timeout=400)
    assert "continualcode: model path '/nonexistent/model' is not a model directory" in out
    assert "Traceback" not in out
