"""Which rules a task's prompt carries (learn/recall.py): pure cases, and a session's TaskRules."""

from __future__ import annotations

import pytest

from continualcode.learn import recall as R
from continualcode.learn.memory import Memory, Rule, project_block
from continualcode.learn.recall import TaskRules, recall

PY3 = Rule("run Python scripts with python3", ("run greet.py",))
GREP = Rule("search with the grep tool first", ("where is the function total defined?",))
HINTS = Rule("always add type hints", ("write a function is_weekend(day) in dates.py",))
TESTS = Rule("check by running the tests", ("is slug.py correct?",))
RULES = [PY3, GREP, HINTS, TESTS]


def test_with_no_more_rules_than_k_or_k_0_every_rule_in_order():
    assert recall(RULES, "anything", 4) == recall(RULES, "anything", 0) == [r.text for r in RULES]
    assert recall([], "anything", 3) == []


def test_the_task_words_a_rule_was_given_on_pick_it():
    assert recall(RULES, "run sum.py", 1) == [PY3.text]
    assert recall(RULES, "which file defines mean?", 1) == [GREP.text]  # "defined"/"defines" share a stem
    assert recall(RULES, "is odd.py correct?", 1) == [TESTS.text]
    # without its tasks, the rule's own words do not say where it applies
    bare = [Rule(r.text) for r in RULES]
    assert recall(bare, "which file defines mean?", 1) == [TESTS.text]  # no word shared: the newest


def test_the_chosen_rules_keep_the_memory_order_and_weak_matches_are_left_out(monkeypatch):
    rules = [Rule("alpha zeta"), Rule("alpha beta gamma delta"), Rule("qqq"), Rule("rrr")]
    assert recall(rules, "alpha beta gamma delta", 3) == ["alpha beta gamma delta"]  # "alpha zeta" scores < half
    monkeypatch.setattr(R, "RELATIVE", 0.0)
    assert recall(rules, "alpha beta gamma delta", 3) == ["alpha zeta", "alpha beta gamma delta"]  # never a 0 score


def test_a_tie_goes_to_the_newer_rule_and_no_match_to_the_newest():
    rules = [Rule("use one", ("fix a.py",)), Rule("use two", ("fix a.py",)), Rule("qqq"), Rule("rrr")]
    assert recall(rules, "fix a.py", 1) == ["use two"]
    assert recall(rules, "hello there", 2) == ["qqq", "rrr"]


def test_task_rules_open_each_task_with_its_rules_never_the_system_prompts():
    memory = Memory(None, RULES)
    tr = TaskRules(1, opening=[GREP.text])
    assert tr(memory, "run sum.py") == tr(memory, "run sum.py") == project_block([PY3.text])  # every task
    assert GREP.text not in tr(memory, "where is mean defined?")  # in the system prompt already
    assert tr(None, "run sum.py") == ""


@pytest.mark.parametrize("k", [1, 2, 3])
def test_a_rule_added_mid_session_opens_a_later_task_it_is_about(k):
    memory = Memory(None, RULES)
    tr = TaskRules(k)
    tr(memory, "run sum.py")
    memory.add("use logging, not print", task="report skipped lines in parse.py")
    assert "use logging, not print" in tr(memory, "report bad rows in load.py, skipped lines too")
