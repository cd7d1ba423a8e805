"""Checkers: did a finished session do the task?  From its transcript and its workspace.

`outcome_of(records)` reads what a checker needs from a session's event records (the final text
answer, the calls that were executed); `check(task, outcome, workspace)` runs every part of the
task's `Check` (answer keywords, the check snippet, the package's own tests, required calls) and
returns each part's verdict with a one-line detail.  `verify` runs a task's checker against its
reference solution (and, unsolved, expects it to fail).  No model is involved.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from continualcode.bench.tasks.packages import PINS, copy_tree
from continualcode.bench.tasks.taskfile import Task, apply_ops
from continualcode.events import AssistantText, Decided, Proposal
from continualcode.records import ToolCall

SNIPPET_TIMEOUT = 60
TESTS_TIMEOUT = 300
PYTEST_CALL = ToolCall("bash", {"command": "python -m pytest -q"})  # the reference session's test run


@dataclass
class Outcome:
    """What a session left: its final text answer ("" when it gave none) and the calls executed."""

    answer: str = ""
    calls: list[ToolCall] = field(default_factory=list)


def outcome_of(records: Iterable[dict[str, Any]]) -> Outcome:
    """The outcome from event records (`{"type": …, **Event.record()}`): a proposed call counts as
    executed when the next decision approves it (or edits it: then with the edited arguments)."""
    out = Outcome()
    pending: dict[str, Any] | None = None
    for r in records:
        kind = r.get("type")
        if kind == Proposal.TYPE:
            pending = r.get("call")
        elif kind == Decided.TYPE and pending is not None:
            if r.get("kind") == "approve":
                out.calls.append(ToolCall(pending["name"], dict(pending.get("arguments") or {})))
            elif r.get("kind") == "edit":
                out.calls.append(ToolCall(pending["name"], dict(r.get("arguments") or {})))
            if r.get("kind") != "feedback":  # feedback asks about the same call again
                pending = None
        elif kind == AssistantText.TYPE:
            out.answer = str(r.get("text") or "")
    return out


@dataclass
class CheckResult:
    """Each given part's verdict ("answer", "snippet", "tests", "calls") and a one-line detail."""

    parts: dict[str, bool] = field(default_factory=dict)
    details: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.parts) and all(self.parts.values())

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "parts": self.parts, "details": self.details}


def missing_groups(groups: Sequence[Sequence[str]], answer: str) -> list[Sequence[str]]:
    """The keyword groups of which the answer contains no alternative (case-insensitive regexes)."""
    return [g for g in groups if not any(re.search(rx, answer, re.I) for rx in g)]


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else ""


def _python(args: list[str], cwd: Path, timeout: int) -> tuple[bool, str]:
    """Run this Python in `cwd`; (exit status 0, the last line of its output)."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    env.pop("PYTHONPATH", None)
    try:
        r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        return False, f"timed out after {timeout} s"
    return r.returncode == 0, _last_line(r.stderr) or _last_line(r.stdout) or f"exit {r.returncode}"


def run_snippet(snippet: Path, workspace: Path) -> tuple[bool, str]:
    """Run a check snippet in the workspace (`python -c`: the workspace's root is first on sys.path)."""
    ok, line = _python(["-c", snippet.read_text()], workspace, SNIPPET_TIMEOUT)
    return ok, "ok" if ok else line


def run_tests(package: str, workspace: Path) -> tuple[bool, str]:
    """The package's own tests in the workspace; (all passed, pytest's summary line)."""
    args = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *shlex.split(PINS[package].tests)]
    return _python(args, workspace, TESTS_TIMEOUT)


def check(task: Task, outcome: Outcome, workspace: Path) -> CheckResult:
    """Every part of the task's check against a finished session's outcome and workspace."""
    c, res = task.check, CheckResult()
    if c.answer:
        missing = missing_groups(c.answer, outcome.answer)
        res.parts["answer"] = not missing
        res.details["answer"] = "ok" if not missing else "missing " + "; ".join("|".join(g) for g in missing)
    if task.snippet_path is not None:
        res.parts["snippet"], res.details["snippet"] = run_snippet(task.snippet_path, workspace)
    if c.tests:
        res.parts["tests"], res.details["tests"] = run_tests(task.package, workspace)
    if c.calls:
        unmet = [m for m in c.calls if not any(m.matches(k.name, k.arguments) for k in outcome.calls)]
        res.parts["calls"] = not unmet
        res.details["calls"] = "ok" if not unmet else "no executed call matches " + "; ".join(
            f"{'|'.join(m.tools)} {dict(m.args)}" for m in unmet)
    return res


def verify(task: Task, source: Path) -> list[str]:
    """Problems with a task's checker on the package tree `source`: repeating the task must not pass
    its answer check, the setup must apply, the unsolved workspace must fail a file check, and the
    reference solution must pass."""
    problems = []
    if task.check.answer and not missing_groups(task.check.answer, task.task):
        problems.append("the task's own text passes the answer check (an answer that repeats it would pass)")
    with tempfile.TemporaryDirectory(prefix="cc-verify-") as tmp:
        ws = copy_tree(source, Path(tmp) / "ws")
        try:
            apply_ops(ws, task.setup)
        except ValueError as e:
            return [f"setup: {e}"]
        if task.check.snippet or task.check.tests:
            unsolved = check(task, Outcome(), ws)
            file_parts = {k: v for k, v in unsolved.parts.items() if k in ("snippet", "tests")}
            if all(file_parts.values()):
                problems.append("the unsolved workspace already passes the file checks")
        try:
            apply_ops(ws, task.reference.edits)
        except ValueError as e:
            return [*problems, f"reference edit: {e}"]
        solved = check(task, Outcome(task.reference.answer, [PYTEST_CALL]), ws)
        problems += [f"reference fails {k}: {solved.details[k]}" for k, ok in solved.parts.items() if not ok]
    return problems
