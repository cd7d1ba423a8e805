"""Scenarios: a preference, a task that tempts the model to break it, and how to tell.

Pure and model-free: parsing the scenario JSONL, classifying a proposed call with the scenario's
matchers, deciding a task from its calls' classes, the bash guard, which other scenarios' tasks a
unit measures, the dev/test split, and which prompts are held out from training.  The format and
the decision rules are specified in docs/bench-learn.md.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continualcode.bench.learn.records import TaskDecision
from continualcode.records import ToolCall

PUBLIC = Path(__file__).resolve().parents[1] / "scenarios" / "public.jsonl"


@dataclass(frozen=True)
class Matcher:
    """A tool name (or names) and argument regexes; a call matches when its tool is one of the names
    and every given argument is present and `re.search`es str(value).

    `replace`, the edit tool the suite predates, counts as the edit tools a matcher names (`write`,
    `edit_lines`) when it names neither it nor `edit_lines`' own line arguments: its `new_string` is their
    `content`.  The 1.5B model (`edit_tool=both`) answered "always add type hints" with a `replace` of
    `def is_weekend(day)` by the annotated line, which no matcher saw (undecided).
    """

    tools: tuple[str, ...]
    args: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_json(cls, d: Any) -> Matcher:
        if not isinstance(d, dict) or "tool" not in d or set(d) - {"tool", "args"}:
            raise ValueError(f'a matcher is {{"tool": NAME or [NAMES], "args": {{ARG: REGEX}}}}, got {d!r}')
        tools = (d["tool"],) if isinstance(d["tool"], str) else tuple(d["tool"])
        args = tuple((str(k), str(v)) for k, v in (d.get("args") or {}).items())
        for _, rx in args:
            re.compile(rx)
        return cls(tools, args)

    def matches(self, name: str, arguments: dict[str, Any]) -> bool:
        if (name == "replace" and name not in self.tools and {"write", "edit_lines"} & set(self.tools)
                and not {"start_line", "end_line"} & {k for k, _ in self.args}):
            name = "edit_lines" if "edit_lines" in self.tools else "write"
            arguments = {**arguments, "content": arguments.get("new_string", "")}
        if name not in self.tools:
            return False
        return all(k in arguments and re.search(rx, str(arguments[k])) for k, rx in self.args)


@dataclass(frozen=True)
class Task:
    files: dict[str, str]
    task: str


@dataclass(frozen=True)
class Scenario:
    id: str
    preference: str
    files: dict[str, str]
    task: str
    correction: str
    violates: Matcher
    complies: Matcher | None
    fresh: tuple[Task, ...]
    controls: tuple[Task, ...]
    max_turns: int = 4
    # a preference about order ("run it first, then read"): once a complying call has run in a task, a call
    # that matches `violates` is what the preference asks for next, no violation (tasks.SimUser)
    order: bool = False

    def classify(self, call: ToolCall) -> str:
        """'violates' (takes precedence), 'complies' or 'neutral', the call taken alone."""
        if self.violates.matches(call.name, call.arguments):
            return "violates"
        if self.complies is not None and self.complies.matches(call.name, call.arguments):
            return "complies"
        return "neutral"


def _task(d: Any) -> Task:
    if not isinstance(d, dict) or not isinstance(d.get("task"), str):
        raise ValueError(f'a task is {{"files": {{…}}, "task": TEXT}}, got {d!r}')
    return Task(dict(d.get("files") or {}), d["task"])


def _scenario(d: Any) -> Scenario:
    return Scenario(
        id=str(d["id"]), preference=str(d["preference"]), files=dict(d.get("files") or {}),
        task=str(d["task"]), correction=str(d["correction"]), violates=Matcher.from_json(d["violates"]),
        complies=Matcher.from_json(d["complies"]) if d.get("complies") else None,
        fresh=tuple(_task(t) for t in d.get("fresh", ())),
        controls=tuple(_task(t) for t in d.get("controls", ())), max_turns=int(d.get("max_turns", 4)),
        order=_flag(d.get("order", False)),
    )


def _flag(value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f'"order" is true or false, got {value!r}')
    return value


def load_scenarios(path: Path) -> list[Scenario]:
    """Parse a scenario JSONL file; ValueError naming the line on any problem."""
    out: list[Scenario] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            sc = _scenario(json.loads(line))
        except (KeyError, ValueError, TypeError, re.error) as e:
            raise ValueError(f"{path}:{n}: {type(e).__name__}: {e}") from None
        if any(s.id == sc.id for s in out):
            raise ValueError(f"{path}:{n}: duplicate scenario id {sc.id!r}")
        out.append(sc)
    if not out:
        raise ValueError(f"{path}: no scenarios")
    return out


def decide(classes: Sequence[str], *, ended: bool, has_complies: bool) -> TaskDecision:
    """The decision of a sequence of call classes (docs/bench-learn.md, "Decisions")."""
    for c in classes:
        if c == "violates":
            return "non_compliant"
        if c == "complies" and has_complies:
            return "compliant"
    if not has_complies and classes and ended:
        return "compliant"
    return "undecided"


_UNSAFE_BASH = re.compile(
    r"\b(rm|rmdir|sudo|su|dd|mkfs\w*|chmod|chown|kill|pkill|killall|shutdown|reboot|curl|wget|ssh|scp|nc|"
    r"pip3?|apt|apt-get|conda|npm|git|cd|xargs|eval|exec)\b|-delete|-exec|~|\.\.|\$|`|"
    r"(^|[\s;&|<>=\"'(])/(?!dev/null\b)"
)


def unsafe(call: ToolCall) -> bool:
    """A bash command that could reach outside the temp workspace (best effort, conservative)."""
    return call.name == "bash" and bool(_UNSAFE_BASH.search(str(call.arguments.get("command", ""))))


def cross_tasks(scenarios: Sequence[Scenario], i: int, n: int) -> list[tuple[Scenario, int, Task]]:
    """The first fresh task of the next `n` scenarios (cyclic) of other, distinct preferences."""
    out: list[tuple[Scenario, int, Task]] = []
    seen = {scenarios[i].preference}
    for k in range(1, len(scenarios)):
        o = scenarios[(i + k) % len(scenarios)]
        if len(out) >= n:
            break
        if o.preference not in seen and o.fresh:
            seen.add(o.preference)
            out.append((o, 0, o.fresh[0]))
    return out


# --- the dev/test split ---------------------------------------------------------------------------

SPLITS = ("dev", "test", "all")


def splits(scenarios: Sequence[Scenario]) -> dict[str, str]:
    """Scenario id → "dev" or "test": within each preference, its scenarios in file order alternate
    dev / test, starting on the side a hash of the preference picks (so that over many preferences
    the halves are even).  Deterministic, independent of the other preferences' order, and a
    scenario appended to a preference never moves the earlier ones."""
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for s in scenarios:
        k = seen.get(s.preference, 0)
        seen[s.preference] = k + 1
        out[s.id] = "dev" if (k + zlib.crc32(s.preference.encode())) % 2 == 0 else "test"
    return out


def select_split(scenarios: Sequence[Scenario], split: str) -> list[Scenario]:
    """The scenarios of one half (`dev` / `test`), or all of them, in file order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split == "all":
        return list(scenarios)
    of = splits(scenarios)
    return [s for s in scenarios if of[s.id] == split]


# --- held-out prompts -----------------------------------------------------------------------------


def norm(text: str) -> str:
    """A task text for comparison: case and whitespace folded."""
    return " ".join(text.split()).casefold()


def held_out(scenarios: Sequence[Scenario]) -> frozenset[str]:
    """Every fresh and control task text of these scenarios (normalised): what measures learning,
    and so never a training prompt of any variant."""
    return frozenset(norm(t.task) for s in scenarios for t in (*s.fresh, *s.controls))
