"""The task benchmark without a model and without the network: the task file, the checkers on
hand-made transcripts, the sdist fetch/verify/extract on a fake sdist, and the runner's control
flow driven by a SCRIPTED model (a fake backend replaying fixed replies) on a tiny package."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from continualcode.bench.learn.scenario import Matcher
from continualcode.bench.tasks import packages as pk
from continualcode.bench.tasks.checks import Outcome, check, missing_groups, outcome_of
from continualcode.bench.tasks.metrics import aggregate, task_measures
from continualcode.bench.tasks.run import Options, run
from continualcode.bench.tasks.runner import Ctx, SimUser, run_task
from continualcode.bench.tasks.taskfile import (
    KINDS,
    SPLITS,
    Check,
    Op,
    Reference,
    Task,
    coverage,
    load_tasks,
    select,
)
from continualcode.config import parse_config
from continualcode.records import Sample, ToolCall
from continualcode.render import Renderer

# --- the task file --------------------------------------------------------------------------------


def test_task_file_is_valid_and_both_splits_cover_every_kind_and_package() -> None:
    tasks = load_tasks()
    packages = {t.package for t in tasks}
    assert len(tasks) >= 24 and len(packages) >= 3
    assert coverage(tasks) == []
    for split in SPLITS:
        part = [t for t in tasks if t.split == split]
        assert {t.kind for t in part} == set(KINDS) and {t.package for t in part} == packages
    assert abs(sum(t.split == "dev" for t in tasks) - sum(t.split == "test" for t in tasks)) <= 4
    for t in tasks:
        assert t.check, t.id  # every task has a checker
        assert t.package in pk.PINS
        if t.check.tests:
            assert pk.PINS[t.package].tests
        if t.snippet_path is not None:
            assert t.snippet_path.is_file()
            compile(t.snippet_path.read_text(), str(t.snippet_path), "exec")


def test_answer_checks_accept_the_reference_and_not_the_question_repeated() -> None:
    for t in load_tasks():
        if t.check.answer:
            assert missing_groups(t.check.answer, t.reference.answer) == [], t.id
            assert missing_groups(t.check.answer, t.task) != [], t.id


def test_load_tasks_names_the_bad_line(tmp_path: Path) -> None:
    good = {"id": "a", "package": "parse", "kind": "locate", "split": "dev", "task": "where?",
            "check": {"answer": [["parse\\.py"]]}, "reference": {"answer": "parse.py"}}
    for bad, why in (({"kind": "refactor"}, "kind"), ({"package": "numpy"}, "not pinned"),
                     ({"check": {}}, "no check"), ({"check": {"snippet": "nope.py"}}, "answer"),
                     ({"kind": "edit", "check": {"snippet": "nope.py"}}, "nope.py")):
        f = tmp_path / "t.jsonl"
        f.write_text(json.dumps(good) + "\n" + json.dumps({**good, "id": "b", **bad}) + "\n")
        with pytest.raises(ValueError, match=rf"t\.jsonl:2: .*{why}"):
            load_tasks(f)


def test_coverage_and_select() -> None:
    def t(i: str, kind: str, split: str, package: str = "parse") -> Task:
        return Task(i, package, kind, split, "x", Check(answer=(("y",),)))  # type: ignore[arg-type]

    tasks = [t("a", "locate", "dev"), t("b", "locate", "test"), t("c", "edit", "dev", "schedule")]
    assert coverage(tasks) == ["split test has no kind edit", "split test has no package schedule"]
    assert [x.id for x in select(tasks, split="dev")] == ["a", "c"]
    assert [x.id for x in select(tasks, ids=["c", "a"], limit=1)] == ["a"]
    with pytest.raises(ValueError, match="unknown task ids: z"):
        select(tasks, ids=["z"])


def test_op_applies_exactly_or_refuses(tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("x = 1\nx = 1\n")
    Op("m.py", "y = 2\n", "x = 1\n", 2).apply(tmp_path)
    assert (tmp_path / "m.py").read_text() == "y = 2\ny = 2\n"
    with pytest.raises(ValueError, match="occurs 0 times"):
        Op("m.py", "z", "x = 1").apply(tmp_path)
    with pytest.raises(ValueError, match="inside the tree"):
        Op("../m.py", "z").apply(tmp_path)


# --- checkers on hand-made transcripts -----------------------------------------------------------


def _call(name: str, t: float, **args) -> dict:
    return {"type": "proposal", "t": t, "text": ToolCall(name, args).to_text(), "tokens": 9, "finish": "stop",
            "call": {"name": name, "arguments": args}, "error": None}


def _text(t: float, text: str) -> list[dict]:
    return [{"type": "proposal", "t": t, "text": text, "tokens": 9, "finish": "stop", "call": None, "error": None},
            {"type": "assistant_text", "t": t, "text": text}]


def _decide(t: float, kind: str, **kw) -> dict:
    return {"type": "decision", "t": t, "kind": kind, **kw}


LOCATE = Task("loc", "inflection", "locate", "dev", "where is pluralize?",
              Check(answer=(("__init__\\.py",), ("pluralize",))), reference=Reference("pluralize in __init__.py"))
MULTI = Task("multi", "inflection", "multi", "dev", "fix it and run the tests",
             Check(calls=(Matcher.from_json({"tool": "bash", "args": {"command": "pytest"}}),)))


def test_checker_passes_a_located_answer_and_fails_a_wrong_one(tmp_path: Path) -> None:
    good = [{"type": "user", "t": 0, "text": "where"}, _call("grep", 0.1, pattern="def pluralize"),
            _decide(0.2, "approve"), {"type": "tool_result", "t": 0.3, "name": "grep", "ok": True, "output": "x"},
            *_text(2.0, "It is `pluralize` in inflection/__init__.py.")]
    out = outcome_of(good)
    assert out.answer.startswith("It is") and [c.name for c in out.calls] == ["grep"]
    assert check(LOCATE, out, tmp_path).passed
    wrong = check(LOCATE, outcome_of([*good[:4], *_text(2.0, "It is singularize in utils.py.")]), tmp_path)
    assert not wrong.passed and wrong.details["answer"].startswith("missing")
    # a call written as text is no answer to the user's question either
    fake = '```json\n{"name": "read", "arguments": {"path": "inflection/__init__.py"}}\n```'
    assert not check(LOCATE, outcome_of(_text(1.0, fake)), tmp_path).passed


def test_checker_counts_only_executed_calls() -> None:
    ran = [_call("bash", 0, command="python -m pytest -q"), _decide(0.1, "approve"), *_text(1, "done")]
    denied = [_call("bash", 0, command="python -m pytest -q"), _decide(0.1, "deny", text="")]
    edited = [_call("bash", 0, command="ls"), _decide(0.1, "edit", diff="", arguments={"command": "pytest -x"})]
    assert check(MULTI, outcome_of(ran), Path(".")).passed
    assert not check(MULTI, outcome_of(denied), Path(".")).passed
    assert check(MULTI, outcome_of(edited), Path(".")).passed


def test_task_measures_from_a_transcript() -> None:
    fake = '{"name": "read", "arguments": {"path": "a.py"}}'
    recs = [_call("read", 1.0, path="a.py"), _decide(1.5, "approve"),
            {"type": "proposal", "t": 3.0, "text": "<tool_call>{bad", "tokens": 3, "finish": "stop", "call": None,
             "error": "not closed"},
            _call("grep", 4.0, pattern="x"), _decide(4.2, "approve"), *_text(7.2, fake)]
    m = task_measures(recs)
    assert m["proposals"] == 4 and m["valid"] == 2 and m["malformed"] == 1
    assert m["calls"] == 2 and m["fake_tool_text"] == 1 and m["text_calls"] == 0
    # proposed at 1.0, approved at 1.5 (after the speculated prefill), next proposal at 3.0: the instant
    # approver waited 2.0, a reader who read past the prefill 1.5; proposed 4.0, approved 4.2, next 7.2
    assert m["latencies"] == [2.0, 3.2] and m["latencies_decided"] == [1.5, 3.0]
    # a call written as text that the session took as the call: executed, but not a valid proposal
    rescued = {**_call("read", 0, path="a.py"), "text": f"```json\n{fake}\n```"}
    m = task_measures([rescued, _decide(0.1, "approve")])
    assert m["valid"] == 0 and m["text_calls"] == 1 and m["calls"] == 1 and m["fake_tool_text"] == 0
    # a call of a tool the default prompt does not show (`edit_tool=both` shows `replace`) is a valid call
    replaced = _call("replace", 0, path="a.py", old_string="1", new_string="2")
    m = task_measures([replaced, _decide(0.1, "approve")])
    assert m["valid"] == 1 and m["text_calls"] == 0 and m["calls"] == 1


def test_aggregate_top_level_and_breakdowns() -> None:
    def row(task: str, kind: str, split: str, ok: bool) -> dict:
        return {"task": task, "package": "p", "kind": kind, "split": split, "seed": 0, "status": "answered",
                "success": ok, "calls": 1, "proposals": 2, "valid": 2, "malformed": 0, "fake_tool_text": 0,
                "latencies": [2.0], "latencies_decided": [0.5], "prompt_tokens": [100, 300], "sec": 10.0,
                "check": {"details": {}}}

    res = aggregate([row("a", "locate", "dev", True), row("b", "edit", "test", False)], ["a", "b"], {})
    assert res["success_rate"] == 0.5 and res["valid_call_rate"] == 1.0 and res["fake_tool_text"] == 0
    assert res["turn_latency_median_s"] == 2.0 and res["prompt_tokens_mean"] == 200
    assert res["turn_latency_decided_median_s"] == 0.5
    assert res["per_kind"]["locate"]["success_rate"] == 1.0 and res["per_split"]["test"]["success_rate"] == 0.0
    assert res["tasks"]["a"]["package"] == "p"


# --- packages: fetch, verify, extract (a fake sdist, no network) -----------------------------------


def _sdist(path: Path, top: str, files: dict[str, str]) -> str:
    """Write a .tar.gz with `top/` holding `files`; its sha256."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tf:
        for rel, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(f"{top}/{rel}" if top else rel)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return hashlib.sha256(path.read_bytes()).hexdigest()


TINY = {
    "tiny.py": 'def shout(s):\n    return s.upper() + "?"\n',
    "test_tiny.py": "from tiny import shout\n\n\ndef test_shout():\n    assert shout('hi') == 'HI!'\n",
}


def test_fetch_verify_extract_a_fake_sdist(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    built = tmp_path / "built" / "tiny-1.0.tar.gz"
    sha = _sdist(built, "tiny-1.0", TINY)
    pin = pk.Pin("tiny", "1.0", "tiny-1.0.tar.gz", sha, built.stat().st_size, "test_tiny.py")
    fetched: list[str] = []

    def fake_pip(p: pk.Pin, dest: Path) -> None:  # the index, simulated: it serves `built`
        fetched.append(p.name)
        (dest / p.filename).write_bytes(built.read_bytes())

    monkeypatch.setattr(pk, "_pip_download", fake_pip)
    cache = tmp_path / "cache"
    tree = pk.source(pin, cache)
    assert tree == cache / "sources" / "tiny-1.0" and (tree / "tiny.py").read_text() == TINY["tiny.py"]
    assert (cache / "downloads" / "tiny-1.0.tar.gz").is_file()
    assert pk.source(pin, cache) == tree and fetched == ["tiny"]  # verified from the cache, extracted once
    # a different file under the pinned name: one line, and the file is removed
    bad = pk.Pin("tiny", "1.0", "tiny-1.0.tar.gz", "0" * 64, 1)
    with pytest.raises(pk.PackageError, match=r"^tiny-1\.0\.tar\.gz: sha256 [0-9a-f]{16}… differs") as e:
        pk.fetch(bad, cache)
    assert "\n" not in str(e.value) and not (cache / "downloads" / "tiny-1.0.tar.gz").exists()
    with pytest.raises(pk.PackageError, match="differs"):  # a fresh download that differs: the same
        pk.fetch(bad, tmp_path / "cache2")
    assert not list((tmp_path / "cache2" / "downloads").iterdir())


def test_fetch_offline_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # the real `pip download`, with no index and an empty local folder to look in: what offline looks like
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    monkeypatch.setenv("PIP_CONSTRAINT", "")
    pin = pk.Pin("cc-no-such-package", "1.0", "cc-no-such-package-1.0.tar.gz", "0" * 64, 1)
    with pytest.raises(pk.PackageError, match=r"^cannot fetch cc-no-such-package==1\.0 from the package index") as e:
        pk.fetch(pin, tmp_path / "cache")
    assert "\n" not in str(e.value)


def test_extract_refuses_members_outside(tmp_path: Path) -> None:
    arc = tmp_path / "evil-1.0.tar.gz"
    sha = _sdist(arc, "", {"../evil.py": "x = 1\n"})
    pin = pk.Pin("evil", "1.0", arc.name, sha, arc.stat().st_size)
    with pytest.raises(pk.PackageError, match="refusing the archive member"):
        pk.extract(pin, arc, tmp_path / "cache")
    assert not (tmp_path / "evil.py").exists()


# --- the runner, driven by a SCRIPTED model on a tiny package ---------------------------------------


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path):
    import transformers

    from continualcode.models import BUILTINS, ensure_converted

    return transformers.AutoTokenizer.from_pretrained(str(ensure_converted(BUILTINS["smollm2-135m"], cache_dir)))


class ScriptedModel:
    """A fake backend: `sample` returns the next scripted reply's tokens (and fails when there is none)."""

    model_id = "scripted"

    def __init__(self, tokenizer, replies: list[str]) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.replies = list(replies)

    def sample(self, prompt_ids, **kw) -> Sample:
        assert self.replies, "the session asked for more replies than scripted"
        toks = [*self.tokenizer.encode(self.replies.pop(0), add_special_tokens=False), self.tokenizer.eos_token_id]
        return Sample(toks, [0.0] * len(toks), "stop")


def call(name: str, **args) -> str:
    return ToolCall(name, args).to_text()


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The tiny package's tree (its own test fails: shout ends in '?', not '!') and its pin."""
    root = tmp_path / "tiny-1.0"
    root.mkdir()
    for rel, text in TINY.items():
        (root / rel).write_text(text)
    monkeypatch.setitem(pk.PINS, "tiny", pk.Pin("tiny", "1.0", "tiny-1.0.tar.gz", "0" * 64, 1, "test_tiny.py"))
    return root


def _ctx(tokenizer, replies: list[str]) -> Ctx:
    model = ScriptedModel(tokenizer, replies)
    cfg = parse_config(["constrained=false", "max_turns=4"])
    return Ctx(model, Renderer(tokenizer, vocab_size=model.vocab_size), cfg)  # type: ignore[arg-type]


def test_scripted_model_locate_task_succeeds(tokenizer, tiny: Path) -> None:
    task = Task("tiny-locate", "tiny", "locate", "dev", "where is shout defined?",
                Check(answer=(("tiny\\.py",), ("shout",))), reference=Reference("shout in tiny.py"))
    ctx = _ctx(tokenizer, [call("grep", pattern="def shout"), "shout is defined in tiny.py, line 1."])
    row, doc = run_task(ctx, task, tiny, seed=0)
    assert row["success"] and row["status"] == "answered" and row["calls"] == 1
    assert row["proposals"] == 2 and row["valid"] == 2 and row["fake_tool_text"] == 0
    assert len(row["latencies"]) == 1 and len(row["prompt_tokens"]) == 2
    assert row["prompt_tokens"][1] > row["prompt_tokens"][0]  # the grep result joined the prompt
    types = [e["type"] for e in doc["events"]]
    assert types[0] == "user" and "tool_result" in types and types[-1] == "assistant_text"
    json.dumps(doc)  # the transcript is plain JSON


def test_scripted_model_edit_task_checked_by_its_snippet(tokenizer, tiny: Path, tmp_path: Path) -> None:
    snippet = tmp_path / "checks" / "tiny-fix.py"
    snippet.parent.mkdir()
    snippet.write_text("from tiny import shout\nassert shout('a') == 'A!', shout('a')\n")
    task = Task("tiny-fix", "tiny", "multi", "dev", "shout should end in '!'; fix it and run the tests",
                Check(snippet="tiny-fix.py", tests=True,
                      calls=(Matcher.from_json({"tool": "bash", "args": {"command": "pytest"}}),)),
                snippet_path=snippet)
    fix = call("edit_lines", path="tiny.py", start_line=2, end_line=2, content='    return s.upper() + "!"\n')
    ctx = _ctx(tokenizer, [call("read", path="tiny.py"), fix, call("bash", command="python -m pytest -q test_tiny.py"),
                           "Fixed."])
    row, _ = run_task(ctx, task, tiny, seed=0)
    assert row["success"], row["check"]
    assert row["check"]["parts"] == {"snippet": True, "tests": True, "calls": True}
    assert (tiny / "tiny.py").read_text() == TINY["tiny.py"]  # the session worked on a copy
    # the same task answered without the edit (three times: the guard rails re-ask each) fails its snippet
    # and the package's tests
    row, _ = run_task(_ctx(tokenizer, [call("bash", command="python -m pytest -q"), "Done.", "Done.", "Done."]),
                      task, tiny, seed=0)
    assert not row["success"] and row["check"]["parts"] == {"snippet": False, "tests": False, "calls": True}


def test_scripted_model_outside_workspace_bash_is_denied_and_ends_the_task(tokenizer, tiny: Path) -> None:
    task = Task("tiny-locate", "tiny", "locate", "dev", "where is shout defined?",
                Check(answer=(("tiny\\.py",),)), reference=Reference("tiny.py"))
    ctx = _ctx(tokenizer, [call("bash", command="cat /etc/passwd")])  # a second reply would fail the model
    row, doc = run_task(ctx, task, tiny, seed=0)
    assert row["status"] == "denied" and not row["success"] and row["calls"] == 0
    assert [(d["name"], d["arguments"]["command"]) for d in row["denied"]] == [("bash", "cat /etc/passwd")]
    assert [(e["kind"], e["text"]) for e in doc["events"] if e["type"] == "decision"] == [("deny", "")]
    # what stays inside is approved: the tests, grep, a relative path
    user = SimUser()
    for cmd in ("python -m pytest -q tests/test_x.py", "pytest -x", "grep -rn 'def shout' .", "ls -la"):
        assert type(user.decide(ToolCall("bash", {"command": cmd}), "")).__name__ == "Approve", cmd
    assert user.denied == []


def test_scripted_model_run_writes_results_and_resumes_from_units(tokenizer, tiny: Path, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    # the package as an sdist in a cache, pinned by its sha256; two locate tasks in a task file
    cache = tmp_path / "cache"
    sha = _sdist(cache / "downloads" / "tiny-1.0.tar.gz", "tiny-1.0", TINY)
    monkeypatch.setitem(pk.PINS, "tiny", pk.Pin("tiny", "1.0", "tiny-1.0.tar.gz", sha, 1, "test_tiny.py"))
    tasks_file = tmp_path / "tasks.jsonl"
    tasks_file.write_text("".join(json.dumps(
        {"id": i, "package": "tiny", "kind": "locate", "split": s, "task": f"where is shout? ({i})",
         "check": {"answer": [["tiny\\.py"]]}, "reference": {"answer": "tiny.py"}}) + "\n"
        for i, s in (("t1", "dev"), ("t2", "test"))))
    out = tmp_path / "out"
    opts = Options(out=out, tasks_file=tasks_file, base_args={"cache_dir": str(cache), "constrained": "false"},
                   argv=["--out", "OUT"])
    # 1) interrupted after the first task: the second sample raises
    model = ScriptedModel(tokenizer, [call("grep", pattern="shout"), "In tiny.py."])
    with pytest.raises(AssertionError, match="more replies than scripted"):
        run(opts, backend=model)  # type: ignore[arg-type]
    rows = [json.loads(x) for x in (out / "units.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rows] == [["t1", 0]] and rows[0]["success"]
    assert (out / "transcripts" / "t1.s0.json").is_file() and json.loads((out / "run.json").read_text())
    # 2) resumed: only t2 runs
    # (an answer to "where" that names no file is sent back once: the second stands)
    res = run(opts, backend=ScriptedModel(tokenizer, ["I could not find it."] * 2))  # type: ignore[arg-type]
    assert [json.loads(x)["key"] for x in (out / "units.jsonl").read_text().splitlines()] == [["t1", 0], ["t2", 0]]
    assert res["success_rate"] == 0.5 and res["tasks"]["t1"]["package"] == "tiny"
    assert set(res["per_split"]) == {"dev", "test"} and res["per_kind"]["locate"]["n"] == 2
    for key in ("valid_call_rate", "fake_tool_text", "turn_latency_median_s"):
        assert key in res
    meta = json.loads((out / "results.json").read_text())["meta"]
    assert meta["new_units"] == 1
    from continualcode.build import read_cap
    from continualcode.config import parse_config

    # what auto became (the 1.5B default; a read's window by where the model runs: 4,000 characters on a CPU)
    assert meta["resolved"] == {"edit_tool": "both", "worked_example": "grep", "read_cap": read_cap(parse_config([]))}
    assert "| t2 | tiny | locate | test | ✗ |" in (out / "results.md").read_text()
    # 3) nothing left: the model is not even asked; another configuration is refused
    run(opts, backend=ScriptedModel(tokenizer, []))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="another configuration"):
        run(Options(out=out, tasks_file=tasks_file, seeds=2, base_args=opts.base_args),
            backend=ScriptedModel(tokenizer, []))  # type: ignore[arg-type]


def test_options() -> None:
    from continualcode.bench.tasks.run import parse_args

    o = parse_args(["--out", "d", "--split", "dev", "--tasks", "a,b", "--limit", "3", "model_name=x", "threads=1"])
    assert o.split == "dev" and o.ids == ["a", "b"] and o.limit == 3
    assert o.base_args == {"model_name": "x", "threads": "1"}
    with pytest.raises(ValueError, match="--out"):
        parse_args([])
    assert parse_args(["--verify"]).verify
    assert Outcome().answer == ""


def _results(solved: dict[str, tuple[str, list[bool]]], latency: float) -> dict:
    """A hand-made results.json: task -> (kind, solved per seed)."""
    return {"turn_latency_median_s": latency, "sec_per_task_mean": 10 * latency,
            "tasks": {t: {"kind": kind, "runs": [{"seed": s, "success": ok} for s, ok in enumerate(runs)]}
                      for t, (kind, runs) in solved.items()}}


def test_compare_pairs_runs_by_task_and_seed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from continualcode.bench.tasks import compare
    from continualcode.bench.tasks.run import main

    before = _results({"a": ("edit", [False, False]), "b": ("edit", [True, False]), "c": ("locate", [True]),
                       "d": ("locate", [False]), "gone": ("multi", [True])}, 12.0)
    after = _results({"a": ("edit", [True, True]), "b": ("edit", [True, True]), "c": ("locate", [False]),
                      "d": ("locate", [False]), "new": ("multi", [True])}, 9.0)
    c = compare.compare(before, after)
    # pairs a/0, a/1, b/0, b/1, c/0, d/0: up a/0, a/1, b/1; down c/0; "gone" and "new" are in one run only
    assert (c["n"], c["before"], c["after"], c["up"], c["down"], c["only_one"]) == (6, 2, 4, 3, 1, 2)
    assert c["p"] == pytest.approx(0.625)  # two-sided: 2 * (1 + 4) / 16
    assert c["per_kind"]["edit"] == {"n": 4, "before": 1, "after": 4, "up": 3, "down": 0, "p": 0.25}
    assert c["per_kind"]["locate"]["down"] == 1 and "multi" not in c["per_kind"]
    assert [(m["task"], m["seed"], m["after"]) for m in c["moved"]] == [
        ("a", 0, True), ("a", 1, True), ("b", 1, True), ("c", 0, False)]
    for name, res in (("b4", before), ("af", after)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(res))
    assert main(["--compare", str(tmp_path / "b4"), str(tmp_path / "af")]) == 0
    out = capsys.readouterr().out
    assert "| all | 6 | 2 | 4 | 3 | 1 | 0.625 |" in out and "- c (seed 0): down" in out and "12.0 → 9.0" in out
    assert main(["--compare", str(tmp_path / "b4"), str(tmp_path / "none")]) == 2
    assert "no results.json" in capsys.readouterr().err
