"""What a task asks for, read from its words alone: a change, an explanation, a question, a test run, a place.

Pure functions over the task's text (no model, no files).  The rails (`rails.py`) hold a task to what it asks
(a change made, the tests run, a question answered in words); the renderer (`render.py`) picks the worked
exchange that shows that kind of task done.
"""

from __future__ import annotations

import re

CHANGE_VERBS = re.compile(
    r"\b(add|fix|rename|change|bump|update|implement|create|write|remove|delete|replace|refactor|make|move|"
    r"insert|append|convert|correct|repair|set|edit|modify)\b", re.I)
_EXPLAIN = re.compile(r"\b(what (does|do|is|are)|how (does|do|is)|why|explain|describe|what happens)\b", re.I)
_QUESTION = re.compile(r"(where|which|what|how|why|who|when|does|do|is|are|can|could)\b", re.I)
_WHERE = re.compile(r"\bwhere\b|\b(which|what) (file|module)\b", re.I)  # a question about a place in the code
# a correction that asks for words: "answer in one sentence", "just tell me", "explain it", "stop and say which";
# not "run the test suite to answer that" (a call, for a purpose)
_WORDS = re.compile(r"(?<!to )\b(answer|tell me|explain|describe|summari[sz]e|say|in (one|a|two|a few) sentences?|"
                    r"in words)\b", re.I)
_RUN_TESTS = re.compile(r"\b(run|rerun|execute)\b[^.!?]*\btests?\b|\bpytest\b", re.I)


def asks_for_change(task: str) -> bool:
    """Whether a task asks for a change to the files (an imperative with a change verb, not a question)."""
    text = task.strip()
    return bool(text) and not text.endswith("?") and bool(CHANGE_VERBS.search(text))


def asks_to_explain(task: str) -> bool:
    """Whether a task asks what code does or why (an explanation needs the code read, not just found)."""
    return bool(_EXPLAIN.search(task))


def asks_a_question(task: str) -> bool:
    """Whether a task is a question (it wants an answer in words, not a change)."""
    text = task.strip()
    return text.endswith("?") or asks_to_explain(text) or bool(_QUESTION.match(text))


def asks_only_a_question(task: str) -> bool:
    """Whether a task is a question that names no change at all (its answer should change no file)."""
    return asks_a_question(task) and not CHANGE_VERBS.search(task)


def asks_to_run_tests(task: str) -> bool:
    """Whether a task asks to run the tests."""
    return bool(_RUN_TESTS.search(task))


def asks_where(task: str) -> bool:
    """Whether a task asks where something is (the answer should name its file)."""
    return bool(_WHERE.search(task))


def asks_for_words(correction: str) -> bool:
    """Whether a user's correction asks for an answer in words (after it the model may answer instead of calling
    a tool: `rails._evidence`).  "use grep first" or "run the tests with bash" asks for a call."""
    return bool(_WORDS.search(correction))
