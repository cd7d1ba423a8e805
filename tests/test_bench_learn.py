"""The learning benchmark: matchers and decisions without a model; quick mode end to end with the real one."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from continualcode.bench import learn
from continualcode.bench.learn import (
    PUBLIC,
    BenchLearner,
    Matcher,
    Units,
    decide,
    load_scenarios,
    parse_args,
    resolve_variants,
    retries,
    unsafe,
)
from continualcode.records import ToolCall
from continualcode.tools import TOOL_NAMES


def scenario(**kw: object) -> learn.Scenario:
    d = {"id": "s", "preference": "p", "files": {}, "task": "t", "correction": "c",
         "violates": {"tool": "write"}, "complies": {"tool": "edit_lines"}, "fresh": [], "controls": []}
    d.update(kw)
    return learn.Scenario(
        id=str(d["id"]), preference=str(d["preference"]), files={}, task="t", correction="c",
        violates=Matcher.from_json(d["violates"]),
        complies=Matcher.from_json(d["complies"]) if d["complies"] else None, fresh=(), controls=(),
    )


# --- matchers and decisions (no model) ------------------------------------------------------------


def test_matcher_tool_names_and_arg_regexes() -> None:
    m = Matcher.from_json({"tool": ["write", "edit_lines"], "args": {"path": "^tests/"}})
    assert m.matches("write", {"path": "tests/test_a.py", "content": ""})
    assert m.matches("edit_lines", {"path": "tests/x.py"})
    assert not m.matches("write", {"path": "src/tests/x.py"})  # re.search, anchored by the regex itself
    assert not m.matches("read", {"path": "tests/test_a.py"})
    assert not m.matches("write", {"content": "x"})  # a required arg that is missing never matches
    assert Matcher.from_json({"tool": "bash"}).matches("bash", {"command": "ls"})
    n = Matcher.from_json({"tool": "read", "args": {"offset": "^1$"}})
    assert n.matches("read", {"path": "a", "offset": 1})  # str(value)
    b = Matcher.from_json({"tool": "bash", "args": {"command": r"\bgrep\b"}})
    assert b.matches("bash", {"command": "grep -rn TODO ."}) and not b.matches("bash", {"command": "egrep x"})
    for bad in ({"tools": "x"}, {"tool": "x", "argz": {}}, "write", {"tool": "x", "args": {"a": "("}}):
        with pytest.raises(Exception):  # noqa: B017 - ValueError or re.error
            Matcher.from_json(bad)


def test_classify_violation_takes_precedence() -> None:
    sc = scenario(violates={"tool": ["write", "edit_lines"], "args": {"content": r"os\.path"}},
                  complies={"tool": ["write", "edit_lines"], "args": {"content": "pathlib"}})
    assert sc.classify(ToolCall("write", {"path": "a", "content": "import os.path, pathlib"})) == "violates"
    assert sc.classify(ToolCall("write", {"path": "a", "content": "import pathlib"})) == "complies"
    assert sc.classify(ToolCall("write", {"path": "a", "content": "x = 1"})) == "neutral"
    assert sc.classify(ToolCall("read", {"path": "a"})) == "neutral"


def test_decision_rules() -> None:
    with_c = {"has_complies": True}
    assert decide(["neutral", "complies", "violates"], ended=True, **with_c) == "compliant"
    assert decide(["neutral", "violates", "complies"], ended=True, **with_c) == "non_compliant"
    assert decide(["neutral", "neutral"], ended=True, **with_c) == "undecided"
    assert decide([], ended=True, **with_c) == "undecided"
    without = {"has_complies": False}
    assert decide(["neutral", "violates"], ended=True, **without) == "non_compliant"
    assert decide(["neutral"], ended=True, **without) == "compliant"  # ended with ≥ 1 call, no violation
    assert decide(["neutral"], ended=False, **without) == "undecided"  # aborted / malformed / guard
    assert decide([], ended=True, **without) == "undecided"  # answered without a call
    # a "complies" class cannot occur without a complies matcher, but would not decide anything
    assert decide(["complies"], ended=False, **without) == "undecided"


def test_retries_are_the_decision_of_the_calls_after_each_denial() -> None:
    sc = scenario()
    calls = [{"class": "violates", "user": "deny"}, {"class": "neutral", "user": "approve"},
             {"class": "violates", "user": "deny"}, {"class": "complies", "user": "approve"}]
    r = retries({"calls": calls, "status": "max_turns"}, sc, max_turns=4)
    assert [x["decision"] for x in r] == ["non_compliant", "compliant"]
    assert [x["next"] for x in r] == ["neutral", "complies"]
    last = retries({"calls": calls[:3], "status": "max_turns"}, sc, max_turns=3)
    assert last[-1] == {"turn": 3, "observed": False, "next": None, "decision": "unobserved"}
    answered = retries({"calls": calls[:1], "status": "answered"}, sc, max_turns=4)
    assert answered[0]["decision"] == "undecided" and answered[0]["observed"]


def test_bash_guard() -> None:
    for cmd in ("rm -rf build", "cat /etc/passwd", "ls ..", "echo $HOME", "ls ~", "git status", "cd /; ls",
                "find . -delete", "python -c 'open(\"/x\")'"):
        assert unsafe(ToolCall("bash", {"command": cmd})), cmd
    for cmd in ("pytest -q", "python -m pytest -q test_a.py", "ls", "grep -rn TODO .", "cat notes.txt",
                "python -m unittest 2>/dev/null"):
        assert not unsafe(ToolCall("bash", {"command": cmd})), cmd
    assert not unsafe(ToolCall("write", {"path": "/etc/x", "content": ""}))  # file tools are confined already


def test_public_suite_shape() -> None:
    sc = load_scenarios(PUBLIC)
    prefs = Counter(s.preference for s in sc)
    assert len(sc) >= 24 and len(prefs) >= 8
    assert all(len(s.fresh) >= 3 and len(s.controls) >= 2 and s.max_turns >= 2 for s in sc)
    assert len({s.id for s in sc}) == len(sc)
    for s in sc:
        assert set(s.violates.tools) <= set(TOOL_NAMES)
        assert s.complies is None or set(s.complies.tools) <= set(TOOL_NAMES)
    # the first scenario of each preference comes first (quick mode and --limit cover preferences)
    firsts = [s.preference for s in sc[: len(prefs)]]
    assert len(set(firsts)) == len(prefs)


def test_load_scenarios_names_the_bad_line(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "preference": "p", "task": "t", "correction": "c", "violates": {"tool": "write"}})
    p = tmp_path / "s.jsonl"
    p.write_text(good + "\n" + json.dumps({"id": "b", "preference": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:2"):
        load_scenarios(p)
    p.write_text(good + "\n" + good + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_scenarios(p)


def test_options_and_variants() -> None:
    o = parse_args(["--out", "x", "--quick", "mode=sequential", "temperature=0.5"])
    assert o.mode == "sequential" and o.seeds == 1 and list(o.variants) == ["in-context", "topk"]
    assert o.base_args == {"temperature": "0.5", "max_tokens": "160", "max_turns": "2"}
    o = parse_args(["--out", "x", "max_tokens=64", "max_turns=9", "--variants", "all"])
    assert o.base_args["max_tokens"] == "64" and o.seeds == 3 and o.mode == "independent"
    assert set(o.variants) == set(learn.VARIANTS)
    assert parse_args(["--out", "x"]).base_args == {"max_tokens": "192"}
    adhoc = resolve_variants("topk,learning_rate=1e-3+replay=true")
    assert adhoc["learning_rate=1e-3+replay=true"].overrides == {"learning_rate": "1e-3"}
    assert adhoc["learning_rate=1e-3+replay=true"].replay
    with pytest.raises(ValueError, match="unknown variant"):
        resolve_variants("nope")


def test_replay_learner_resteps_earlier_corrections() -> None:
    class Fake:
        class cfg:
            steps_per_correction = 2

        def __init__(self) -> None:
            self.seen: list[str] = []

        def __call__(self, c):
            self.seen.append(c.text)
            return {"sec_total": 1.0, "rolled_back": "", "tokens": ["a", "b"], "advantage": [0.1, 0.2]}

    def corr(text: str, kind: str = "deny"):
        from continualcode.agent import Correction
        from continualcode.records import Sample

        return Correction(kind, (), [1], Sample([2], [0.0], "stop"), "", text)  # type: ignore[arg-type]

    fake = Fake()
    bl = BenchLearner(fake, replay=True)
    bl(corr("a"))
    bl(corr("b"))
    bl(corr("c", kind="approved_retry"))  # learned, but neither replayed after nor stored
    bl(corr("d"))
    assert fake.seen == ["a", "b", "a", "c", "d", "a", "b"]
    assert [r["replay"] for r in bl.log] == [False, False, True, False, False, True, True]
    assert bl.log[0]["n_tokens"] == 2 and "advantage" not in bl.log[0] and bl.log[0]["n_steps"] == 2
    plain = BenchLearner(Fake())
    plain(corr("a"))
    plain(corr("b"))
    assert plain.learner.seen == ["a", "b"] and plain.past == []


def test_units_file_survives_a_torn_line(tmp_path: Path) -> None:
    p = tmp_path / "units.jsonl"
    u = Units(p)
    u.add({"key": ["a", 0, "s1"], "x": 1})
    with open(p, "a") as f:
        f.write('{"key": ["a", 0, "s2"], "x"')  # a crash mid-write
    u2 = Units(p)
    assert u2.done == {("a", 0, "s1")}
    u2.add({"key": ["a", 0, "s2"], "x": 2})
    assert Units(p).done == {("a", 0, "s1"), ("a", 0, "s2")}


# --- quick mode end to end on the real model ------------------------------------------------------

TEST_SCENARIOS = [
    {"id": "find-1", "preference": "search-with-grep",
     "files": {"util.py": "def total(xs):\n    return sum(xs)\n", "app.py": "from util import total\n"},
     "task": "where is the function total defined?",
     "correction": "don't open files one by one; search with the grep tool",
     "violates": {"tool": ["read", "write", "edit_lines", "bash"]}, "complies": {"tool": ["grep", "glob"]},
     "fresh": [{"files": {"a.py": "def mean(xs):\n    return sum(xs) / len(xs)\n"},
                "task": "which file defines mean?"}],
     "controls": [{"files": {"notes.txt": "todo\n"}, "task": "show me what is in notes.txt"}], "max_turns": 2},
    {"id": "edit-1", "preference": "edit-lines-not-write",
     "files": {"main.py": "def add(a, b):\n    return a + b\n"}, "task": "add a divide function to main.py",
     "correction": "use edit_lines to change the file; never overwrite it with write",
     "violates": {"tool": "write"}, "complies": {"tool": "edit_lines"},
     "fresh": [{"files": {"calc.py": "def sub(a, b):\n    return a - b\n"},
                "task": "add a multiply function to calc.py"}],
     "controls": [{"files": {"todo.md": "- buy milk\n"}, "task": "what is on my todo list?"}], "max_turns": 2},
]


def _recompute(units: list[dict], baselines: dict) -> dict[str, float | None]:
    """The headline numbers straight from the per-task records."""
    def rate(recs: list[dict], value: str) -> float | None:
        return sum(r["decision"] == value for r in recs) / len(recs) if recs else None

    tries = [t for u in units for t in u["task"]["retries"] if t["observed"]]
    drift = [r for u in units for r in u["controls"] + u["cross"]]
    return {
        "baseline": rate([r for u in units for r in baselines[u["scenario"]]["fresh"]], "compliant"),
        "persistence": rate([r for u in units for r in u["persistence"]], "compliant"),
        "persistence_undecided": rate([r for u in units for r in u["persistence"]], "undecided"),
        "retry": rate(tries, "compliant"),
        "kl_exact": sum(r["kl_exact"] for r in drift) / len(drift) if drift else None,
        "steps": sum(r["n_steps"] for u in units for r in u["learn"]),
    }


@pytest.mark.slow
def test_quick_mode_end_to_end_and_resume(tmp_path: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONTINUALCODE_CACHE", str(cache_dir))
    sc_file = tmp_path / "two.jsonl"
    sc_file.write_text("".join(json.dumps(s) + "\n" for s in TEST_SCENARIOS))
    out = tmp_path / "out"
    argv = ["--scenarios", str(sc_file), "--out", str(out), "--quick", "max_tokens=128", "model_name=smollm2-135m"]
    assert learn.main(argv) == 0

    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    lines = (out / "units.jsonl").read_text().splitlines()
    assert len(lines) == 2 + 2 * 2  # baseline per scenario + (variant, scenario)
    assert res["meta"]["new_units"] == 6 and res["meta"]["seeds"] == [0] and res["meta"]["model"]
    assert set(res["summary"]) == {"in-context", "topk"}
    for head in ("# continualcode learning benchmark", "## Variants", "| in-context |", "| topk |",
                 "## Per preference: topk", "max_tokens=128"):
        assert head in md
    # real runs: the model's own calls, real tools, real seconds
    calls = [c for u in res["units"] for c in u["task"]["calls"]]
    calls += [c for u in res["baseline_units"] for r in u["fresh"] for c in r["calls"]]
    assert calls and all(c["name"] in TOOL_NAMES for c in calls)
    assert all(r["call"] is None or r["call"]["name"] in TOOL_NAMES
               for u in res["baseline_units"] for r in u["controls"])
    assert all(u["sec"] > 0 for u in res["units"] + res["baseline_units"])
    by = {v: [u for u in res["units"] if u["variant"] == v] for v in ("in-context", "topk")}
    baselines = {u["scenario"]: u for u in res["baseline_units"]}
    s = res["summary"]
    assert s["in-context"]["steps"]["mean"] == 0 and s["in-context"]["sec_per_step"]["mean"] is None
    assert s["topk"]["steps"]["mean"] > 0, "the model never violated find-1: no learning step to measure"
    assert s["topk"]["sec_per_step"]["mean"] > 0 and s["topk"]["sec_per_correction"]["mean"] > 0
    assert s["topk"]["denials"]["mean"] >= 1 and s["topk"]["retries_observed"]["mean"] >= 1
    learned = [u for u in by["topk"] if u["changed"]]
    assert all(not r.get("reused") for u in learned for r in u["persistence"] + u["controls"])
    assert any(r["kl_exact"] > 0 for u in learned for r in u["controls"])
    assert all(r.get("reused") for u in by["in-context"] for r in u["persistence"])
    # every aggregate is a recomputation from the per-task records
    for v, units in by.items():
        for k, want in _recompute(units, baselines).items():
            got = s[v][k]["mean"]
            assert (got is None and want is None) or got == pytest.approx(want), (v, k, got, want)
    # in-context: identical weights → persistence is exactly the baseline
    assert s["in-context"]["persistence"]["mean"] == s["in-context"]["baseline"]["mean"]

    # resume: the same command again does no new unit and rewrites the same results
    assert learn.main(argv) == 0
    res2 = json.loads((out / "results.json").read_text())
    assert (out / "units.jsonl").read_text().splitlines() == lines
    assert res2["meta"]["new_units"] == 0 and res2["summary"] == res["summary"]
    # another configuration in the same directory is refused
    assert learn.main([*argv, "temperature=0.9"]) == 2


def _rec(decision: str, **kw: object) -> dict:
    return {"decision": decision, "first_valid": True, "kl_k1": 0.0, "kl_exact": 0.0, "calls": [], **kw}


def test_aggregate_from_synthetic_units() -> None:
    """Pooled rates per seed, then mean/spread over seeds; paired deltas; markdown renders (both modes)."""
    scs = [scenario(id="a", preference="p"), scenario(id="b", preference="q")]
    units: list[dict] = []
    for seed in (0, 1):
        for sid in ("a", "b"):
            units.append({"key": ["baseline", seed, sid], "kind": "baseline", "variant": "baseline", "seed": seed,
                          "scenario": sid, "fresh": [_rec("non_compliant"), _rec("undecided")],
                          "controls": [{"valid": True, "kl_k1": 0.0, "kl_exact": 0.0}],
                          "controls_unconstrained": [{"valid": False}], "sec": 1.0})
            comp = "compliant" if seed == 0 else "non_compliant"
            units.append({
                "key": ["v", seed, sid], "kind": "variant", "variant": "v", "seed": seed, "scenario": sid,
                "position": 0 if sid == "a" else 1, "changed": True, "sec": 2.0,
                "task": {"calls": [{"class": "violates"}], "retries": [
                    {"observed": True, "decision": comp}, {"observed": False, "decision": "unobserved"}]},
                "learn": [{"n_steps": 1, "sec_step": 0.5, "sec_total": 1.0, "rolled_back": ""}] * 2,
                "persistence": [_rec(comp, kl_k1=0.2), _rec("undecided")],
                "controls": [{"valid": False, "kl_k1": 0.1, "kl_exact": 0.3}],
                "controls_unconstrained": [{"valid": True}],
                "cross": [_rec("compliant", kl_exact=0.1, of="b" if sid == "a" else "a", index=0)],
                "forgetting": [] if sid == "a" else [_rec(comp, of="a", index=0)],
            })
    meta = {"mode": "sequential", "forget": 1, "command": "x", "seeds": [0, 1], "cross": 1, "n_scenarios": 2,
            "scenarios_file": "f", "date": "d", "base_overrides": {}, "config": {}, "variants": {"v": {}}}
    res = learn.aggregate(units, ["v"], [0, 1], scs, meta)
    s = res["summary"]["v"]
    assert s["baseline"]["mean"] == 0.0 and s["baseline_undecided"]["mean"] == 0.5
    assert s["persistence"]["per_seed"] == [0.5, 0.0] and s["persistence"]["std"] == pytest.approx(0.25)
    assert s["persistence_gain"]["mean"] == pytest.approx(0.25)
    assert s["retry"]["per_seed"] == [1.0, 0.0] and s["retries_observed"]["mean"] == 2
    assert s["kl_exact"]["mean"] == pytest.approx(0.2) and s["kl_target_k1"]["mean"] == pytest.approx(0.1)
    assert s["valid_delta"]["mean"] == pytest.approx(-0.5)  # controls 1 → 0, cross first calls stay valid
    assert s["valid_unconstrained_delta"]["mean"] == 1.0
    assert s["cross_delta"]["mean"] == 1.0  # baseline non_compliant → compliant on the same task
    assert s["steps"]["mean"] == 4 and s["sec_per_step"]["mean"] == 0.5 and s["sec_per_correction"]["mean"] == 1.0
    assert set(res["per_preference"]["v"]) == {"p", "q"} and set(res["per_scenario"]["v"]) == {"a", "b"}
    assert res["forgetting"]["v"]["1"] == {"n": 2, "compliance": 0.5, "undecided": 0.0}
    md = learn.to_markdown(res)
    assert "| v |" in md and "## Forgetting curve" in md and "± 25%" in md


def test_remove_checkpoint_handles_the_atomic_symlink(tmp_path: Path) -> None:
    target = tmp_path / ".after-1.abc"
    target.mkdir()
    (target / "adapter_model.safetensors").write_text("x")
    (tmp_path / "after-1").symlink_to(target.name)
    plain = tmp_path / "after-2"
    plain.mkdir()
    learn.remove_checkpoint(tmp_path / "after-1")
    learn.remove_checkpoint(plain)
    assert list(tmp_path.iterdir()) == []
