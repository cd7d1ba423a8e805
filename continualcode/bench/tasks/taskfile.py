"""The task file: its schema, loading with one-line errors, coverage of the splits, and file edits.

A task is one user request on one pinned package, with what is done to the tree before the session
(`setup`, e.g. a planted bug), how success is checked (`check`) and a reference solution that the
checker must accept (`reference`, used by `--verify`, never shown to the model).  Pure: no model,
no network.  The format is specified in docs/bench-tasks.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from continualcode.bench.learn.scenario import Matcher
from continualcode.bench.tasks.packages import PINS

HERE = Path(__file__).resolve().parent
TASKS_FILE = HERE / "tasks.jsonl"
CHECKS_DIR = HERE / "checks"

Kind = Literal["locate", "explain", "edit", "multi"]
KINDS: tuple[Kind, ...] = ("locate", "explain", "edit", "multi")
SPLITS = ("dev", "test")
ANSWER_KINDS = ("locate", "explain")  # judged on the text answer
_ID = re.compile(r"[a-z0-9][a-z0-9-]*")


@dataclass(frozen=True)
class Op:
    """One file edit: replace `old` by `new` (`old` must occur exactly `count` times), or, with
    `old` None, append `new` to the file."""

    path: str
    new: str
    old: str | None = None
    count: int = 1

    @classmethod
    def from_json(cls, d: Any) -> Op:
        if not isinstance(d, dict) or not isinstance(d.get("path"), str):
            raise ValueError(f'an edit is {{"path", "old", "new"[, "count"]}} or {{"path", "append"}}, got {d!r}')
        if "append" in d:
            return cls(d["path"], str(d["append"]))
        if set(d) - {"path", "old", "new", "count"} or not isinstance(d.get("old"), str) or not d["old"]:
            raise ValueError(f'an edit is {{"path", "old", "new"[, "count"]}} or {{"path", "append"}}, got {d!r}')
        return cls(d["path"], str(d.get("new", "")), d["old"], int(d.get("count", 1)))

    def apply(self, root: Path) -> None:
        """Apply to the tree at `root`; ValueError (one line) when the file or the text is not as expected."""
        rel = Path(self.path)
        if rel.is_absolute() or ".." in rel.parts:
            raise ValueError(f"edit path {self.path!r} must be relative and inside the tree")
        p = root / rel
        if self.old is None:
            p.parent.mkdir(parents=True, exist_ok=True)
            with open(p, "a") as f:
                f.write(self.new)
            return
        if not p.is_file():
            raise ValueError(f"edit of {self.path}: no such file")
        text = p.read_text()
        n = text.count(self.old)
        if n != self.count:
            raise ValueError(f"edit of {self.path}: {self.old[:40]!r} occurs {n} times, expected {self.count}")
        p.write_text(text.replace(self.old, self.new))


def apply_ops(root: Path, ops: Sequence[Op]) -> None:
    for op in ops:
        op.apply(root)


@dataclass(frozen=True)
class Check:
    """What must hold after the session; every part that is given must pass.

    answer:  keyword groups: each group is a tuple of alternatives (regexes, case-insensitive), and
             the final text answer must contain one alternative of every group.
    snippet: a Python file in checks/ run in the workspace (`python -c`, the tree's root on
             sys.path); exit status 0 passes.
    tests:   the package's own tests (its `Pin.tests`) pass in the workspace.
    calls:   each matcher matches at least one executed call (e.g. a bash call running pytest).
    """

    answer: tuple[tuple[str, ...], ...] = ()
    snippet: str = ""
    tests: bool = False
    calls: tuple[Matcher, ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> Check:
        if not isinstance(d, dict) or set(d) - {"answer", "snippet", "tests", "calls"}:
            raise ValueError(f"check keys are answer, snippet, tests, calls; got {d!r}")
        groups = tuple(tuple(str(a) for a in g) if isinstance(g, list) else (str(g),) for g in d.get("answer", ()))
        for g in groups:
            if not g:
                raise ValueError("an answer group needs at least one alternative")
            for rx in g:
                re.compile(rx)
        return cls(groups, str(d.get("snippet", "")), bool(d.get("tests", False)),
                   tuple(Matcher.from_json(m) for m in d.get("calls", ())))

    def __bool__(self) -> bool:
        return bool(self.answer or self.snippet or self.tests or self.calls)


@dataclass(frozen=True)
class Reference:
    """A solution the checker must accept: an answer text and the edits a correct session makes."""

    answer: str = ""
    edits: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Task:
    id: str
    package: str
    kind: Kind
    split: str
    task: str
    check: Check
    setup: tuple[Op, ...] = ()
    reference: Reference = Reference()
    snippet_path: Path | None = None  # check.snippet resolved in the task file's checks/ folder


def _task(d: Any, checks_dir: Path) -> Task:
    if not isinstance(d, dict):
        raise ValueError("a task is a JSON object")
    unknown = set(d) - {"id", "package", "kind", "split", "task", "setup", "check", "reference"}
    if unknown:
        raise ValueError(f"unknown task keys {sorted(unknown)}")
    ref = d.get("reference") or {}
    t = Task(
        id=str(d["id"]), package=str(d["package"]), kind=d["kind"], split=str(d["split"]), task=str(d["task"]),
        check=Check.from_json(d["check"]), setup=tuple(Op.from_json(o) for o in d.get("setup", ())),
        reference=Reference(str(ref.get("answer", "")), tuple(Op.from_json(o) for o in ref.get("edits", ()))),
    )
    if t.check.snippet:
        t = dataclasses.replace(t, snippet_path=checks_dir / t.check.snippet)
    _validate(t, checks_dir)
    return t


def _validate(t: Task, checks_dir: Path) -> None:
    if not _ID.fullmatch(t.id):
        raise ValueError(f"id {t.id!r}: lowercase letters, digits and dashes only")
    if t.package not in PINS:
        raise ValueError(f"package {t.package!r} is not pinned (pinned: {', '.join(PINS)})")
    if t.kind not in KINDS:
        raise ValueError(f"kind {t.kind!r} is not one of {', '.join(KINDS)}")
    if t.split not in SPLITS:
        raise ValueError(f"split {t.split!r} is not one of {', '.join(SPLITS)}")
    if not t.task.strip():
        raise ValueError("empty task text")
    c = t.check
    if not c:
        raise ValueError("the task has no check")
    if t.kind in ANSWER_KINDS and not c.answer:
        raise ValueError(f"a {t.kind} task is checked on its answer: give check.answer")
    if t.kind not in ANSWER_KINDS and not (c.snippet or c.tests):
        raise ValueError(f"a {t.kind} task is checked on the files: give check.snippet or check.tests")
    if c.snippet and not (checks_dir / c.snippet).is_file():
        raise ValueError(f"check snippet {c.snippet!r} is not in {checks_dir.name}/")
    if c.tests and not PINS[t.package].tests:
        raise ValueError(f"check.tests: {t.package} has no tests of its own")
    if c.answer and not t.reference.answer:
        raise ValueError("an answer check needs reference.answer")
    if (c.snippet or c.tests) and t.kind not in ANSWER_KINDS and not t.reference.edits:
        raise ValueError("a file check needs reference.edits")


def load_tasks(path: Path = TASKS_FILE, *, checks_dir: Path | None = None) -> list[Task]:
    """Parse a task JSONL file (its snippets in `checks_dir`, default: the file's folder's checks/);
    ValueError naming the file and line on any problem."""
    checks_dir = checks_dir if checks_dir is not None else Path(path).parent / CHECKS_DIR.name
    out: list[Task] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            t = _task(json.loads(line), checks_dir)
        except (KeyError, ValueError, TypeError, re.error) as e:
            raise ValueError(f"{Path(path).name}:{n}: {type(e).__name__}: {e}") from None
        if any(o.id == t.id for o in out):
            raise ValueError(f"{Path(path).name}:{n}: duplicate task id {t.id!r}")
        out.append(t)
    if not out:
        raise ValueError(f"{Path(path).name}: no tasks")
    return out


def coverage(tasks: Sequence[Task]) -> list[str]:
    """Problems with the split: each split must hold every kind and every package of the file."""
    problems = []
    kinds = {t.kind for t in tasks}
    packages = {t.package for t in tasks}
    for split in SPLITS:
        part = [t for t in tasks if t.split == split]
        for what, have, want in (("kind", {t.kind for t in part}, kinds), ("package", {t.package for t in part},
                                                                            packages)):
            for missing in sorted(want - have):
                problems.append(f"split {split} has no {what} {missing}")
    return problems


def select(tasks: Sequence[Task], *, split: str = "all", ids: Sequence[str] = (), limit: int = 0) -> list[Task]:
    """The tasks a run covers: one split (or all), then the given ids (in file order), then the first N."""
    out = [t for t in tasks if split == "all" or t.split == split]
    if ids:
        unknown = set(ids) - {t.id for t in tasks}
        if unknown:
            raise ValueError(f"unknown task ids: {', '.join(sorted(unknown))}")
        out = [t for t in out if t.id in set(ids)]
    return out[:limit] if limit > 0 else out
