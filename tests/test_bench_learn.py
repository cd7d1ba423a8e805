"""The learning benchmark: matchers, decisions and statistics without a model; the memory variant and the
training-prompt guard with a SCRIPTED backend (a fake that replies by rule, named as such); quick mode end
to end with the real model."""

from __future__ import annotations

import dataclasses
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
from continualcode.bench.learn.metrics import bootstrap_gain, first_retries, headline, sign_test
from continualcode.bench.learn.scenario import held_out, norm, select_split, splits
from continualcode.bench.learn.variants import PromptLeak
from continualcode.rails import DENIED
from continualcode.records import ToolCall
from continualcode.tools import TOOL_NAMES

REPO = Path(__file__).resolve().parents[1]


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
    assert len(prefs) >= 12 and min(prefs.values()) >= 3  # every preference in both halves of the split
    assert all(len(s.fresh) >= 3 and len(s.controls) >= 2 and s.max_turns >= 2 for s in sc)
    assert len({s.id for s in sc}) == len(sc)
    for s in sc:
        assert set(s.violates.tools) <= set(TOOL_NAMES)
        assert s.complies is None or set(s.complies.tools) <= set(TOOL_NAMES)
    # the first scenario of each preference comes first (quick mode and --limit cover preferences)
    firsts = [s.preference for s in sc[: len(prefs)]]
    assert len(set(firsts)) == len(prefs)


def test_matcher_counts_replace_as_the_edit_tools_it_names_with_new_string_as_content() -> None:
    hints = Matcher.from_json({"tool": ["write", "edit_lines"], "args": {"content": r"def \w+\(.*\)\s*->"}})
    call = {"path": "dates.py", "old_string": "def is_weekend(day):", "new_string": "def is_weekend(day) -> bool:"}
    assert hints.matches("replace", call)
    assert not hints.matches("replace", {**call, "new_string": "def is_weekend(day):  # x"})
    assert Matcher.from_json({"tool": "write"}).matches("replace", call)  # an edit, as write is (read-before-edit)
    assert not Matcher.from_json({"tool": "read"}).matches("replace", call)
    assert not Matcher.from_json({"tool": "edit_lines", "args": {"start_line": "1"}}).matches("replace", call)
    tests = Matcher.from_json({"tool": ["write", "edit_lines"], "args": {"path": "(^|/)tests?/"}})
    assert tests.matches("replace", {**call, "path": "tests/test_a.py"}) and not tests.matches("replace", call)


def test_load_scenarios_names_the_bad_line(tmp_path: Path) -> None:
    good = json.dumps({"id": "a", "preference": "p", "task": "t", "correction": "c", "violates": {"tool": "write"}})
    p = tmp_path / "s.jsonl"
    p.write_text(good + "\n" + json.dumps({"id": "b", "preference": "p"}) + "\n")
    with pytest.raises(ValueError, match=r"s\.jsonl:2"):
        load_scenarios(p)
    p.write_text(good + "\n" + good + "\n")
    with pytest.raises(ValueError, match="duplicate"):
        load_scenarios(p)


def test_sim_user_keeps_a_preference_about_order_once_its_complying_call_has_run(tmp_path: Path) -> None:
    """After `python split.py` in "reproduce before you fix", reading split.py is the next step: approved for a
    preference about order (`"order": true`), still denied with the correction for any other preference;
    in measuring mode the first decided call ends the task either way."""
    import dataclasses

    from continualcode.agent import Approve, Deny
    from continualcode.bench.learn.tasks import SimUser

    base = scenario(violates={"tool": ["read", "write"]}, complies={"tool": "bash", "args": {"command": "python"}})
    run, read = ToolCall("bash", {"command": "python split.py"}), ToolCall("read", {"path": "split.py"})
    for order, after in ((True, Approve), (False, Deny)):
        user = SimUser(dataclasses.replace(base, order=order), measure=False)
        assert isinstance(user.decide(read, ""), Deny)  # before the run: the preference is broken
        assert isinstance(user.decide(run, ""), Approve)
        assert isinstance(user.decide(read, ""), after)
        assert [c["class"] for c in user.calls] == ["violates", "complies", "neutral" if order else "violates"]
    line = {"id": "a", "preference": "p", "task": "t", "correction": "c", "violates": {"tool": "read"}}
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps({**line, "order": True}) + "\n")
    assert load_scenarios(p)[0].order
    p.write_text(json.dumps({**line, "order": "yes"}) + "\n")
    with pytest.raises(ValueError, match=r's\.jsonl:1: .*"order" is true or false'):
        load_scenarios(p)
    public = load_scenarios(REPO / "continualcode" / "bench" / "scenarios" / "public.jsonl")
    assert {s.preference for s in public if s.order} == {
        "search-before-reading", "reproduce-before-fix", "read-before-edit", "check-by-running-tests"}


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
    argv = ["--scenarios", str(sc_file), "--out", str(out), "--quick", "max_tokens=128", "model_name=smollm2-135m",
            "threads=1"]
    assert learn.main(argv) == 0

    res = json.loads((out / "results.json").read_text())
    md = (out / "results.md").read_text()
    lines = (out / "units.jsonl").read_text().splitlines()
    assert len(lines) == 2 + 2 * 2  # baseline per scenario + (variant, scenario)
    assert res["meta"]["new_units"] == 6 and res["meta"]["seeds"] == [0] and res["meta"]["model"]
    assert set(res["summary"]) == {"in-context", "topk"}
    for head in ("# continualcode learning benchmark", "## Headline", "## Variants", "| in-context |", "| topk |",
                 "## Per preference: topk", "max_tokens=128", "## Paired per task", "## Suite"):
        assert head in md
    # the headline: per variant, pooled; the baseline ran each scenario's own task and the drift floor
    assert all("task" in u and u["floor"] for u in res["baseline_units"])
    for v in ("in-context", "topk"):
        h = res["variants"][v]
        assert h["split"] == "all" and h["persistence"]["all"]["n"] == 2 and len(h["pairs"]) == 2
        assert {"rate", "n"} <= set(h["first_retry"]) and 0 <= h["p_value"] <= 1 and h["ci95"] is not None
        assert {"value", "floor"} <= set(h["drift"])
    if res["variants"]["topk"]["drift"]["n"]:
        assert res["variants"]["topk"]["drift"]["floor"] is not None
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
    f1 = res["forgetting"]["v"]["1"]  # a's first fresh task, one scenario later: seed 0 compliant, seed 1 not
    assert (f1["n"], f1["compliance"], f1["undecided"]) == (2, 0.5, 0.0)
    assert (f1["paired"]["baseline"], f1["paired"]["up"], f1["paired"]["down"]) == (0.0, 1, 0)
    assert f1["paired"]["p_value"] == 1.0 and f1["corrected"]["n"] == 2  # a's correction was given
    assert res["forgetting"]["v"]["later"] == f1  # the only lag ≥ 1
    f0 = res["forgetting"]["v"]["0"]  # persistence[:1] of a and b in both seeds
    assert (f0["n"], f0["paired"]["up"], f0["paired"]["down"]) == (4, 2, 0)
    h = res["variants"]["v"]
    assert h["first_retry"] == {"rate": 0.5, "n": 4, "undecided": 0.0} and h["later_retries"]["n"] == 0
    assert h["persistence"]["all"]["n"] == 8 and h["persistence"]["corrected"]["n"] == 8
    assert (h["persistence"]["all"]["up"], h["persistence"]["all"]["down"]) == (2, 0)
    assert h["drift"]["floor"] is None  # these baselines were not scored
    md = learn.to_markdown(res)
    assert "| v |" in md and "## Forgetting curve" in md and "± 25%" in md and "## Headline" in md


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


# --- measurement that cannot flatter (no model) ---------------------------------------------------


def test_sign_test_exact_two_sided() -> None:
    assert sign_test(6, 2) == 0.2890625  # 2 · (1 + 8 + 28) / 2^8
    assert sign_test(2, 6) == sign_test(6, 2)
    assert sign_test(5, 0) == 0.0625  # 2 / 2^5
    assert sign_test(12, 0) == 2 / 4096
    assert sign_test(3, 3) == 1.0 and sign_test(0, 0) == 1.0  # capped at 1; no discordant pair: no evidence
    assert sign_test(1, 0) == 1.0
    assert sign_test(9, 1) == pytest.approx(2 * 11 / 1024)


def test_bootstrap_over_scenarios() -> None:
    toy = [(3, 1, 3), (1, 1, 3), (2, 0, 3), (0, 1, 3), (3, 3, 3)]  # (after, before, n) per scenario
    point = (9 - 6) / 15
    ci = bootstrap_gain(toy)
    assert ci is not None and ci[0] <= point <= ci[1] and ci[0] < ci[1]
    assert bootstrap_gain(toy) == ci  # fixed seed: reproducible
    assert bootstrap_gain([(2, 2, 3), (1, 1, 3)]) == [0.0, 0.0]  # degenerate: every scenario unchanged
    assert bootstrap_gain([(3, 0, 3)] * 4) == [1.0, 1.0]
    assert bootstrap_gain([]) is None and bootstrap_gain([(0, 0, 0)]) is None


def _unit(sid: str, seed: int, retries_: list[dict], persistence: list[str], **kw: object) -> dict:
    return {"key": ["v", seed, sid], "kind": "variant", "variant": "v", "seed": seed, "scenario": sid,
            "position": 0, "changed": kw.get("changed", False), "sec": 1.0,
            "task": {"calls": [], "retries": retries_}, "learn": [],
            "persistence": [_rec(d) for d in persistence], "controls": kw.get("controls", []),
            "controls_unconstrained": [], "cross": kw.get("cross", []), "forgetting": []}


def _retry(decision: str, observed: bool = True) -> dict:
    return {"turn": 1, "observed": observed, "next": None, "decision": decision if observed else "unobserved"}


def test_first_retry_counts_each_denied_task_once() -> None:
    units = [
        _unit("a", 0, [_retry("non_compliant"), _retry("non_compliant"), _retry("compliant")], []),  # 3 denials
        _unit("b", 0, [_retry("compliant")], []),
        _unit("c", 0, [], []),  # never denied: no observation
        _unit("d", 0, [_retry("compliant", observed=False)], []),  # denied on the last turn: not observed
    ]
    first, later = first_retries(units)
    assert [t["decision"] for t in first] == ["non_compliant", "compliant"]
    assert [t["decision"] for t in later] == ["non_compliant", "compliant"]
    base = {("baseline", 0, s): {"fresh": [], "controls": []} for s in "abcd"}
    h = headline(units, base)
    assert h["first_retry"]["rate"] == 0.5 and h["first_retry"]["n"] == 2 and h["denied_tasks"] == 3
    assert h["later_retries"] == {"rate": 0.5, "n": 2}


def test_headline_pairs_persistence_with_the_same_tasks() -> None:
    """all vs corrected-only, each beside the baseline of the same tasks; the pairs, p and the interval."""
    base = {("baseline", 0, "a"): {"fresh": [_rec("non_compliant")] * 3, "controls": []},
            ("baseline", 0, "b"): {"fresh": [_rec("compliant"), _rec("undecided"), _rec("compliant")],
                                   "controls": []}}
    units = [_unit("a", 0, [_retry("compliant")], ["compliant", "compliant", "non_compliant"]),
             _unit("b", 0, [], ["compliant", "compliant", "non_compliant"])]
    h = headline(units, base)
    a, c = h["persistence"]["all"], h["persistence"]["corrected"]
    assert (a["n"], a["rate"], a["baseline"]) == (6, 4 / 6, 2 / 6)
    assert (a["up"], a["down"], a["same"]) == (3, 1, 2) and a["p_value"] == sign_test(3, 1) == h["p_value"]
    assert (c["n"], c["rate"], c["baseline"], c["up"], c["down"]) == (3, 2 / 3, 0.0, 2, 0)
    assert c["scenarios"] == 1 and c["ci95"] == [2 / 3, 2 / 3]  # one scenario: nothing to resample
    assert h["ci95"] == a["ci95"] and a["ci95"][0] <= a["gain"] <= a["ci95"][1]
    assert [p["change"] for p in h["pairs"]] == ["up", "up", "same", "same", "up", "down"]


def test_drift_beside_its_floor_over_changed_units_only() -> None:
    ctrl = {"valid": True, "kl_k1": 0.0, "kl_exact": 0.01}
    base = {("baseline", 0, s): {"fresh": [_rec("compliant", kl_exact=0.03)], "controls": [ctrl], "floor": True}
            for s in "ab"}
    moved = {"valid": True, "kl_k1": 0.1, "kl_exact": 0.21}
    units = [_unit("a", 0, [], ["compliant"], changed=True, controls=[moved],
                   cross=[_rec("compliant", kl_exact=0.05, of="b", index=0)]),
             _unit("b", 0, [], ["compliant"], changed=False, controls=[{**ctrl, "kl_exact": 0.0}])]
    d = headline(units, base)["drift"]
    assert d["value"] == pytest.approx(0.13) and d["floor"] == pytest.approx(0.02)
    assert d["over_floor"] == pytest.approx(0.11) and d["n"] == 2 and d["units"] == 1
    del base[("baseline", 0, "b")]["floor"]  # a baseline without the floor's scoring (older runs): no floor
    assert headline(units, base)["drift"]["floor"] is None
    assert headline([units[1]], base)["drift"] == {"value": 0.0, "floor": None, "over_floor": None, "n": 0,
                                                  "units": 0}


def test_split_is_deterministic_and_covers_every_preference() -> None:
    sc = load_scenarios(PUBLIC)
    of = splits(sc)
    # each preference's own file order decides, not where the other preferences are
    assert of == splits(sorted(sc, key=lambda s: s.preference))
    dev, test = select_split(sc, "dev"), select_split(sc, "test")
    assert {s.id for s in dev} | {s.id for s in test} == {s.id for s in sc}
    assert not {s.id for s in dev} & {s.id for s in test}
    assert select_split(sc, "all") == sc
    prefs = {s.preference for s in sc}
    assert {s.preference for s in dev} == prefs == {s.preference for s in test}
    assert abs(len(dev) - len(test)) <= len(prefs) // 2 + 1
    # within a preference the halves alternate, and appending a scenario never moves the earlier ones
    grown = [*sc, dataclasses.replace(sc[0], id="extra")]
    assert {k: v for k, v in splits(grown).items() if k != "extra"} == of
    with pytest.raises(ValueError):
        select_split(sc, "train")


def test_public_suite_holds_no_task_twice() -> None:
    """A scenario's own task (what is trained on) is never some scenario's fresh or control task."""
    sc = load_scenarios(PUBLIC)
    assert not [s.id for s in sc if norm(s.task) in held_out(sc)]


def test_memory_variants_and_explicit_memory_off() -> None:
    v = resolve_variants("memory,topk,memory+topk,memory+learning_rate=1e-3+replay=true")
    assert v["memory"].memory and not v["memory"].learns
    assert not v["topk"].memory and v["memory+topk"].memory and v["memory+topk"].learns
    assert v["memory+topk"].overrides == {"distill_loss": "topk", "distill_prompts": "0", "memory": "true"}
    adhoc = v["memory+learning_rate=1e-3+replay=true"]
    assert adhoc.memory and adhoc.replay and adhoc.overrides["learning_rate"] == "1e-3"
    assert {f"memory+{n}" for n, x in learn.VARIANTS.items() if x.learns and not x.memory} <= set(learn.VARIANTS)
    o = parse_args(["--out", "x", "--variants", "memory,topk,in-context"])
    assert o.config_for(o.variants["memory"], 0).memory is True
    assert o.config_for(o.variants["topk"], 0).memory is False  # the product's default is on: set explicitly
    assert o.config_for(o.variants["in-context"], 0).memory is False
    o = parse_args(["--out", "x", "--variants", "memory,memory-task,memory-system"])
    assert [o.config_for(o.variants[n], 0).memory_at for n in ("memory", "memory-task", "memory-system")] == [
        "task", "task", "system"]  # memory: the product's placement (memory_at's default)
    with pytest.raises(ValueError, match="memory is set per variant"):
        parse_args(["--out", "x", "memory=true"])
    o = parse_args(["--out", "x", "--split", "dev", "--baseline-only"])
    assert o.split == "dev" and o.baseline_only


def test_committed_results_still_aggregate() -> None:
    """The Qwen results committed before this format: the old keys unchanged, the headline recomputed
    (6 up, 2 down, p = 0.289 for topk; first retry 8/10 vs in-context 6/10)."""
    d = REPO / "bench" / "results" / "learn" / "qwen2.5-coder-0.5b"
    old = json.loads((d / "results.json").read_text())
    rows = [json.loads(line) for line in (d / "units.jsonl").read_text().splitlines()]
    sc = [s for s in load_scenarios(PUBLIC) if s.id in old["meta"]["scenario_ids"]]
    res = learn.aggregate(rows, list(old["summary"]), old["meta"]["seeds"], sc, old["meta"])
    assert {v: {k: m[k] for k in old["summary"][v]} for v, m in res["summary"].items()} == old["summary"]
    topk, ic = res["variants"]["topk"], res["variants"]["in-context"]
    assert (topk["first_retry"]["rate"], topk["first_retry"]["n"]) == (0.8, 10)
    assert (ic["first_retry"]["rate"], ic["first_retry"]["n"]) == (0.6, 10)
    pa = topk["persistence"]["all"]
    assert (pa["up"], pa["down"], pa["same"], pa["p_value"]) == (6, 2, 82, 0.2890625)
    assert topk["drift"]["floor"] is None and topk["drift"]["value"] > 0  # older baselines were not scored
    assert "## Headline" in learn.to_markdown(res)


# --- the memory variant and the guard, with a SCRIPTED backend ------------------------------------

GUARD_SCENARIO = {
    "id": "find-1", "preference": "search-with-grep",
    "files": {"util.py": "def total(xs):\n    return sum(xs)\n"}, "task": "where is total defined?",
    "correction": "search with the grep tool first", "violates": {"tool": "read"}, "complies": {"tool": "grep"},
    "fresh": [{"files": {"a.py": "def mean(xs):\n    return 0\n"}, "task": "which file defines mean?"},
              {"files": {"c.py": "class Cart:\n    pass\n"}, "task": "where is Cart defined?"}],
    "controls": [{"files": {"n.txt": "x\n"}, "task": "what is in n.txt?"}], "max_turns": 3,
}


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path):
    import transformers

    from continualcode.models import BUILTINS, ensure_converted

    return transformers.AutoTokenizer.from_pretrained(str(ensure_converted(BUILTINS["smollm2-135m"], cache_dir)))


class ScriptedBackend:
    """A SCRIPTED fake backend (no model): it greps when the system prompt holds the user's rules or right
    after a denial, reads otherwise, and answers in text after a tool result.  Records every prompt."""

    capabilities = frozenset({"snapshot"})

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.prompts: list[str] = []

    def snapshot(self) -> object:
        return object()

    def restore(self, snap: object) -> None:
        pass

    def sample(self, prompt_ids, **kw):
        from continualcode.records import Sample

        text = self.tokenizer.decode(prompt_ids)
        self.prompts.append(text)
        last_user = text.rsplit("<|im_start|>user\n", 1)[-1]
        if last_user.startswith("Tool result"):
            reply = "Done."
        elif "Rules from the user" in text or last_user.startswith(DENIED):
            reply = ToolCall("grep", {"pattern": "def "}).to_text()
        else:
            reply = ToolCall("read", {"path": "a.py"}).to_text()
        toks = [*self.tokenizer.encode(reply, add_special_tokens=False), self.tokenizer.eos_token_id]
        return Sample(toks, [0.0] * len(toks), "stop")


class RecordingLearner:
    """A learner that keeps what it is handed; its step is 'rolled back', so the weights stay the base."""

    class cfg:
        steps_per_correction = 1

    def __init__(self) -> None:
        self.seen: list = []

    def __call__(self, c):
        self.seen.append(c)
        return {"sec_total": 0.0, "rolled_back": "scripted"}


def _scripted_ctx(tokenizer, *args: str):
    from continualcode.bench.learn.tasks import Ctx
    from continualcode.build import make_renderer
    from continualcode.config import parse_config

    b = ScriptedBackend(tokenizer)
    cfg = parse_config(["constrained=false", "max_turns=3", *args])
    return b, Ctx(b, make_renderer(b), cfg, b.snapshot(), 0)


def test_memory_variant_gives_the_persistence_session_the_rules(tokenizer) -> None:
    from continualcode.bench.learn.tasks import baseline_unit, variant_unit
    from continualcode.learn.memory import Memory

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    b, ctx = _scripted_ctx(tokenizer, "enable_training=false", "memory=true")
    base = baseline_unit(ctx, sc, floor=False)
    assert base["task"]["decision"] == "non_compliant"
    assert [r["decision"] for r in base["fresh"]] == ["non_compliant"] * 2
    assert not any("Rules from the user" in p for p in b.prompts)
    row = {**base, "scenario": sc.id}
    # memory: the correction becomes a rule; the brand-new persistence sessions start with it
    b.prompts.clear()
    recs, changed = variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={sc.id: row}, changed_before=False,
                                 memory=Memory(None))
    assert not changed and recs["memory"] == [sc.correction]
    assert [r["decision"] for r in recs["persistence"]] == ["compliant"] * 2
    assert not any(r.get("reused") for r in recs["persistence"] + recs["controls"])
    assert "Rules from the user" not in b.prompts[0]  # the task itself started without rules (none yet)
    fresh_prompts = [p for p in b.prompts if any(t.task in p for t in sc.fresh)]
    assert fresh_prompts and all(f"- {sc.correction}" in p and DENIED not in p for p in fresh_prompts)
    # memory off: the same unit measures nothing new (base weights, no rule): the baseline's records
    recs_off, _ = variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={sc.id: row}, changed_before=False)
    assert recs_off["memory"] is None
    assert [r["decision"] for r in recs_off["persistence"]] == ["non_compliant"] * 2
    assert all(r["reused"] for r in recs_off["persistence"])


def test_memory_variant_opens_each_task_with_the_rules_it_is_about(tokenizer) -> None:
    """memory_rules=1: a fresh task gets the rule given on a task like it (by that task's words), not the newest;
    a control that matches no rule gets the newest.  The unit's row keeps each rule's tasks (to resume from)."""
    from continualcode.bench.learn.tasks import baseline_unit, variant_unit
    from continualcode.learn.memory import Memory, Rule

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    b, ctx = _scripted_ctx(tokenizer, "enable_training=false", "memory=true", "memory_rules=1")
    row = {**baseline_unit(ctx, sc, floor=False), "scenario": sc.id}
    memory = Memory(None)
    variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={sc.id: row}, changed_before=False, memory=memory)
    for rule in (Rule("run scripts with python3", ("run greet.py",)),
                 Rule("use logging, not print", ("report skipped lines in parse.py",))):  # later corrections
        memory.add(rule.text, task=rule.tasks[0], save=False)
    b.prompts.clear()
    recs, _ = variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={sc.id: row}, changed_before=False,
                           memory=memory)  # the scenario again: its rule is no longer the newest
    assert recs["memory"] == [sc.correction, "run scripts with python3", "use logging, not print"]
    assert recs["memory_tasks"] == [[sc.task], ["run greet.py"], ["report skipped lines in parse.py"]]
    fresh = [p for p in b.prompts if any(t.task in p for t in sc.fresh)]
    assert fresh and all(f"- {sc.correction}" in p and "use logging" not in p and "python3" not in p for p in fresh)
    controls = [p for p in b.prompts if sc.controls[0].task in p]
    assert controls and all("- use logging, not print" in p and sc.correction not in p for p in controls)


@pytest.mark.parametrize("earlier", ["whole", "none"])
def test_in_session_persistence_continues_the_task_session_with_the_new_rule_at_each_task(tokenizer, earlier) -> None:
    """--in-session: the fresh tasks follow the scenario's task in its own session (whole: the denial in the
    conversation; none: each later task starts a fresh context); with memory each opens with the new rule, as
    the app does; without, they do not."""
    from continualcode.bench.learn.tasks import baseline_unit, variant_unit
    from continualcode.learn.memory import Memory

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    b, ctx = _scripted_ctx(tokenizer, "enable_training=false", f"earlier_tasks={earlier}")
    row = {**baseline_unit(ctx, sc, floor=False), "scenario": sc.id}
    for memory in (Memory(None), None):
        b.prompts.clear()
        recs, changed = variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={sc.id: row},
                                     changed_before=False, memory=memory, in_session=True)
        assert not changed and not any(r.get("reused") for r in recs["persistence"])
        fresh = [p for p in b.prompts if any(t.task in p for t in sc.fresh)]
        one_session = [sc.task in p and f"{DENIED} Do this instead: {sc.correction}" in p for p in fresh]
        assert fresh and all(one_session) if earlier == "whole" else not any(one_session)
        last_turns = [p.rsplit("<|im_start|>user\n", 1)[-1] for p in fresh if p.rstrip().endswith("assistant")]
        openers = [t for t in last_turns if any(t.split("<|im_end|>")[0].endswith(f.task) for f in sc.fresh)]
        assert len(openers) == len(sc.fresh)
        if memory is not None:  # the rule opens each later task's turn; the scripted model follows it
            rules = f"Rules from the user for this project (follow them):\n- {sc.correction}\n\n"
            assert all(t.startswith(rules) if earlier == "whole" else  # none: after the project's files
                       t.startswith("Files in the project") and rules in t for t in openers)
            assert [r["decision"] for r in recs["persistence"]] == ["compliant"] * 2
        else:
            assert not any("Rules from the user" in p for p in fresh)
            assert [r["decision"] for r in recs["persistence"]] == ["non_compliant"] * 2


def test_guard_no_held_out_prompt_reaches_a_learner(tokenizer) -> None:
    from continualcode.bench.learn.tasks import baseline_unit, run_task, task_seed, variant_unit

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    _, ctx = _scripted_ctx(tokenizer)
    rec = RecordingLearner()
    learner = BenchLearner(rec, held_out=held_out([sc]))
    row = {**baseline_unit(ctx, sc, floor=False), "scenario": sc.id}
    recs, _ = variant_unit(ctx, sc, learner, cross=[], earlier=[], baselines={sc.id: row}, changed_before=False)
    # the learner got the scenario's own task's correction, and nothing from the measuring sessions
    assert len(rec.seen) == 1 and recs["task"]["retries"]
    assert all(next(m.content for m in c.messages if m.role == "user") == sc.task for c in rec.seen)
    assert not any(norm(m.content) in held_out([sc]) for c in rec.seen for m in c.messages)
    # a fresh task handed to a learner is refused loudly (never swallowed as a learner error)
    with pytest.raises(PromptLeak):
        run_task(ctx, sc, sc.fresh[0].files, sc.fresh[0].task, task_seed(0, sc.id, "fresh", 0), measure=False,
                 learner=learner)
    learner.expect(None)
    with pytest.raises(PromptLeak, match="held-out"):
        run_task(ctx, sc, sc.controls[0].files, sc.controls[0].task, 1, measure=False, learner=learner)
    # a replayed correction and a distillation prompt source are checked too
    leaked = dataclasses.replace(rec.seen[0], messages=(learn_msg(sc.fresh[1].task),))
    replaying = BenchLearner(RecordingLearner(), replay=True, past=[leaked], held_out=held_out([sc]))
    with pytest.raises(PromptLeak):
        replaying(rec.seen[0])

    class WithPrompts(RecordingLearner):
        def __init__(self) -> None:
            super().__init__()
            self.prompts = lambda c: ["  Which FILE defines mean? "]

    guarded = BenchLearner(WithPrompts(), held_out=held_out([sc]))
    with pytest.raises(PromptLeak, match="distillation"):
        guarded.learner.prompts(rec.seen[0])


def test_reference_apart_turns_off_kv_sharing_and_restores_it() -> None:
    from continualcode.bench.learn.tasks import reference_apart

    class Adapter:
        def is_noop(self) -> bool:
            return True

    class B:
        adapter = Adapter()

    b = B()
    with reference_apart(b):  # type: ignore[arg-type]
        assert b.adapter.is_noop() is False
    assert b.adapter.is_noop() is True and "is_noop" not in vars(b.adapter)
    with reference_apart(object()):  # type: ignore[arg-type]  # a backend without the sharing
        pass


def learn_msg(text: str):
    from continualcode.records import Message

    return Message("user", text)


def load_scenarios_from(rows: list[dict]) -> list[learn.Scenario]:
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("".join(json.dumps(r) + "\n" for r in rows))
    try:
        return load_scenarios(Path(f.name))
    finally:
        Path(f.name).unlink()


def test_task_tries_reruns_the_task_with_the_next_seed_until_a_denial_scripted_runs(
        tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    """Control flow only (a scripted `Live.run`): the scenario's task runs again with the next sampling
    seed until the user denied a call, at most `tries` times; the kept record says how many ran."""
    from continualcode.bench.learn import tasks
    from continualcode.learn.memory import Memory

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    seeds: list[int] = []

    def scripted(live, text, seed, *, measure, files=None, score=False):
        seeds.append(seed)
        user = "deny" if len(seeds) == 2 else "approve"  # the second attempt goes wrong
        return {"task": text, "seed": seed, "calls": [{"name": "read", "class": "violates", "user": user}],
                "decision": "non_compliant", "status": "done"}

    monkeypatch.setattr(tasks.Live, "run", scripted)
    monkeypatch.setattr(tasks, "_from_baseline", lambda *a: {"persistence": []})
    monkeypatch.setattr(tasks, "_measure", lambda *a, **k: {"persistence": []})
    ctx = _scripted_ctx(tokenizer)[1]
    mem = Memory(None)
    recs, _ = tasks.variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={}, changed_before=False,
                                 memory=mem, tries=3)
    assert recs["task"]["tries"] == 2 and recs["task"]["seed"] == seeds[1] and len(seeds) == 2
    assert seeds == [tasks.task_seed(0, sc.id, "task", i) for i in range(2)] and seeds[0] != seeds[1]
    assert mem.rules == [sc.correction]  # the denied attempt's correction became the rule
    seeds.clear()
    monkeypatch.setattr(tasks.Live, "run", lambda *a, **k: seeds.append(a[2]) or {
        "calls": [{"name": "grep", "class": "complies", "user": "approve"}], "decision": "compliant"})
    recs, _ = tasks.variant_unit(ctx, sc, None, cross=[], earlier=[], baselines={}, changed_before=False,
                                 memory=Memory(None), tries=3)
    assert recs["task"]["tries"] == 3 and len(seeds) == 3 and recs["memory"] == []  # never wrong: no rule
    with pytest.raises(ValueError, match="task-tries"):
        learn.parse_args(["--out", "x", "--task-tries", "0"])


def test_a_failed_learning_step_is_kept_in_the_task_record_scripted_backend(tokenizer) -> None:
    """A learner error (the step rolled back; the session goes on) is recorded with the task, so that a
    denial without a step can be told from one the learner was never handed."""
    from continualcode.answer import DENIED_AGAIN
    from continualcode.bench.learn.tasks import run_task

    sc = load_scenarios_from([GUARD_SCENARIO])[0]
    _, ctx = _scripted_ctx(tokenizer)
    handed = []

    def failing(c):
        handed.append(c)
        raise RuntimeError("learning step failed and was rolled back: ValueError: boom")

    rec = run_task(ctx, sc, sc.files, sc.task, 1, measure=False, learner=failing)  # type: ignore[arg-type]
    assert any(c["user"] == "deny" for c in rec["calls"]) and len(handed) == 1
    # then the line the task ended on (the scripted model proposes the denied call again: `answer.denied_again`)
    stopped = DENIED_AGAIN.format(n=3)
    assert rec["errors"] == ["learning step failed and was rolled back: ValueError: boom", stopped]
    ok = run_task(ctx, sc, sc.files, sc.task, 1, measure=False)
    assert ok["errors"] == [stopped]


class RefusedFirstBackend(ScriptedBackend):
    """SCRIPTED: its first reply is a call the tool refuses (a write outside the workspace), then as
    ScriptedBackend (the read the scenario's user denies, then the grep it asks for)."""

    def sample(self, prompt_ids, **kw):
        from continualcode.records import Sample

        if self.prompts:
            return super().sample(prompt_ids, **kw)
        self.prompts.append(self.tokenizer.decode(prompt_ids))
        reply = ToolCall("write", {"path": "../out.py", "content": "x = 1\n"}).to_text()
        toks = [*self.tokenizer.encode(reply, add_special_tokens=False), self.tokenizer.eos_token_id]
        return Sample(toks, [0.0] * len(toks), "stop")


@pytest.mark.parametrize("max_turns, observed", [(2, False), (3, True)])
def test_a_retry_is_observed_only_when_a_turn_is_left_counting_calls_the_tool_refused_scripted_backend(
        tokenizer, max_turns: int, observed: bool) -> None:
    """Control flow (a SCRIPTED backend): a call the tool refuses is never asked about, yet takes a turn; a
    denial on the last turn leaves no retry to observe (it used to count as an undecided one)."""
    from continualcode.bench.learn.tasks import Ctx, retries, run_task
    from continualcode.build import make_renderer
    from continualcode.config import parse_config

    sc = load_scenarios_from([{**GUARD_SCENARIO, "max_turns": max_turns, "task": "add mean(xs) to util.py"}])[0]
    b = RefusedFirstBackend(tokenizer)
    ctx = Ctx(b, make_renderer(b), parse_config(["constrained=false", "max_turns=3"]), b.snapshot(), 0)
    rec = run_task(ctx, sc, sc.files, sc.task, 0, measure=False)
    assert [(c["name"], c["user"], c["turn"]) for c in rec["calls"]][:1] == [("read", "deny", 2)]
    r = retries(rec, sc, max_turns)
    assert r[0]["observed"] is observed and r[0]["turn"] == 2
    assert r[0]["decision"] == ("compliant" if observed else "unobserved")
