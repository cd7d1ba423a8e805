"""Project memory: corrections kept as plain-language rules that every later session starts with.

The in-context competitor users already have (Claude Code's memory, AGENTS.md / CLAUDE.md, aider's
conventions), built in: each correction with text and each piece of free-form feedback becomes
one rule, a line `- <text>` in `<project state>/memory.md`, a file the user can read and edit
(`/memory` shows it, `/memory edit` opens it in $EDITOR).  An AGENTS.md or CLAUDE.md in the
workspace is read as project rules too.  Where they go in a session's prompt: with `memory_at=system`
every rule ends the system prompt; with `memory_at=task` (the default, where Claude Code puts CLAUDE.md:
next to the task, not ~1k tokens of tool schemas above it) the project notes open the session's first
user turn and each task's user turn opens with the few rules that are about it (`learn/recall.py`: a
small model follows the wrong rule, or none, when all of them are shown).  A rule keeps the tasks it was
given on (`  from:` lines under it in the file): they say when it applies better than its own words.

A correction that names a line number, says where a bug is, speaks of "the line", asks to search for one
definition or names the project's code without the words of a habit is not kept (`fleeting`): it is about the
change or the task at hand.
The weights learn from the corrections themselves (learn/step.py), not from this file; a task's rules are in
its messages (the session's notes), so a learning step's student sees them as the model did.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from continualcode.fsio import atomic_write
from continualcode.referred import line_numbers, names

MEMORY_FILE = "memory.md"
PROJECT_FILES = ("AGENTS.md", "CLAUDE.md")
MAX_RULES = 50  # the oldest go first beyond this: a small model's prompt stays short
MAX_RULE_CHARS = 300
MAX_PROJECT_CHARS = 2000
MAX_ORIGINS = 3  # tasks kept per rule
NOT_KEPT = "not kept in memory: {why} (it still teaches)"
BUG_AT = re.compile(r"\b(?:bug|problem|error|fault|mistake|issue|typo)\s+(?:is|was|lies|sits)\s+(?:in|on|at|inside)\b",
                    re.IGNORECASE)
# a search for one definition: "grep for 'def __neg__'", "search for class Duration" (a class name is capitalized)
ONE_SEARCH = re.compile(r"\b(?:grep|search|look|find)\b[^.;!?\n]*?\b(?:def\s+[A-Za-z_]|class\s+_*(?-i:[A-Z]))",
                        re.IGNORECASE)
# words of a lasting preference: a correction naming the project's code with one of them is a convention ("call
# our make_request() helper instead of requests.get"), without them it is about the code at hand
HABIT = re.compile(r"\b(?:always|never|from now on|whenever|every\s?time|each time|by default|as a rule|prefer"
                   r"|instead of|rather than|in this (?:project|repo|repository|codebase))\b|,\s*not\s+\S",
                   re.IGNORECASE)
# "the line should lowercase the text: …" speaks of the line being changed (a user trial on toml kept it as a rule)
THE_LINE = re.compile(r"\b(?:this|that|the)\s+line\b(?!\s*(?:length|width|limit|ending|break|count))", re.IGNORECASE)
FROM = "  from: "  # a rule's task line in the file, under the rule
HEADER = ("# continualcode memory: one rule per line, from your corrections; edit freely\n"
          "# (a `  from:` line under a rule is a task it was given on: it tells which tasks the rule is for)\n")


@dataclass(frozen=True)
class Rule:
    """One rule and the tasks it was given on (the latest `MAX_ORIGINS`): what `recall` matches a task against."""

    text: str
    tasks: tuple[str, ...] = ()


class Memory:
    """The project's rules: a list of one-line texts, persisted to `path` (None: kept in memory only)."""

    def __init__(self, path: Path | None = None, rules: Iterable[str | Rule] = ()) -> None:
        self.path = path
        self._rules: list[Rule] = []
        if path is not None and path.is_file():
            self._rules = parse_rules(path.read_text(errors="replace"))
        for r in rules:
            if isinstance(r, Rule):
                for t in r.tasks or ("",):
                    self.add(r.text, task=t, save=False)
            else:
                self.add(r, save=False)

    @property
    def rules(self) -> list[str]:
        return [r.text for r in self._rules]

    @property
    def entries(self) -> list[Rule]:
        return list(self._rules)

    def add(self, text: str, *, task: str = "", save: bool = True) -> bool:
        """Keep `text` as a rule (one line, deduplicated), given on `task`; True when the rule is new
        (a known rule given on another task keeps that task too)."""
        rule, task = one_line(text), one_line(task)
        if not rule:
            return False
        known = [i for i, r in enumerate(self._rules) if r.text.lower() == rule.lower()]
        if known:
            old = self._rules[known[0]]
            if not task or task in old.tasks:
                return False
            self._rules[known[0]] = Rule(old.text, (*old.tasks, task)[-MAX_ORIGINS:])
        else:
            self._rules = [*self._rules, Rule(rule, (task,) if task else ())][-MAX_RULES:]
        if save and self.path is not None:
            atomic_write(self.path, format_rules(self._rules))
        return not known


def format_rules(rules: Iterable[Rule]) -> str:
    """The memory file's text: the header, then each rule as `- text` with its tasks as `  from: task` lines."""
    return HEADER + "".join(f"- {r.text}\n" + "".join(f"{FROM}{t}\n" for t in r.tasks) for r in rules)


def parse_rules(text: str) -> list[Rule]:
    """The rules of a memory file: its `- ` lines, each with the `  from: ` lines under it (other lines,
    like the header, are comments)."""
    out: list[Rule] = []
    for line in text.splitlines():
        if line.startswith("- ") and one_line(line[2:]):
            out.append(Rule(one_line(line[2:])))
        elif line.startswith(FROM) and out and one_line(line[len(FROM):]):
            last = out[-1]
            out[-1] = Rule(last.text, (*last.tasks, one_line(line[len(FROM):]))[-MAX_ORIGINS:])
    return out


def fleeting(text: str, defined: Collection[str] = ()) -> str:
    """Why a correction is not kept as a rule ("" when it is).  Not one that names a line number ("line 223: use
    endswith"), which is about the change at hand and goes stale with it; nor one that says where a bug is ("the
    bug is in _func_ends_with"), which is about the task at hand.  In a user trial on jmespath both, kept as rules,
    opened the next task (abs() returned its argument), and the model's first changes there were the first task's
    fix in another function, then renames of the function the rule named.  Nor one that speaks of "the line" or
    "this line" ("that still writes True; the line should lowercase the text: …", a user trial on toml): the line
    being changed ("the line length" and the like are rules).  Nor one that asks for a search for one
    definition ("grep for 'def __neg__' in src/isodate/duration.py", a user trial on isodate): kept, it was the
    project's only rule, so it opened every later task, and the next task ("run the tests in …") began with that
    grep, twice.  A search habit ("search with the grep tool before reading") names no definition and stays a
    rule.  Nor one that names the project's code (`defined`: the names its Python files define) without the
    words of a habit ("always", "instead of", ", not …": `HABIT`): "that is unrelated. load_dotenv calls
    set_as_environment_variables of DotEnv …: look at that method" (a user trial on python-dotenv) opened the
    next task, "run the tests in tests/test_parser.py", whose first proposal was a `replace` of
    set_as_environment_variables in that test file.  The correction still teaches the weights and stays in its
    task's conversation."""
    if line_numbers(text):
        return "the correction names a line number, which is about this change"
    if BUG_AT.search(text):
        return "the correction says where a bug is, which is about this task"
    if THE_LINE.search(text):
        return "the correction speaks of the line at hand, which is about this change"
    if ONE_SEARCH.search(text):
        return "the correction asks to search for one definition, which is about this task"
    if defined and not HABIT.search(text) and (named := [n for n in names(text) if n in defined]):
        return f"the correction names the project's code ({', '.join(named[:3])}), which is about this task"
    return ""


def lasting(text: str, defined: Collection[str] = ()) -> bool:
    """Whether a correction is kept as a rule (`fleeting`)."""
    return not fleeting(text, defined)


def one_line(text: str) -> str:
    return " ".join(text.split())[:MAX_RULE_CHARS]


def workspace_notes(root: Path) -> str:
    """AGENTS.md / CLAUDE.md from the workspace root, capped ("" when there are none)."""
    parts = []
    for name in PROJECT_FILES:
        p = root / name
        if p.is_file():
            try:
                parts.append(p.read_text(errors="replace").strip())
            except OSError:
                continue
    text = "\n\n".join(x for x in parts if x)
    return text[:MAX_PROJECT_CHARS]


MEMORY_AT = ("system", "task")


def prompt_texts(system: str, block: str, at: str = "system") -> dict[str, str]:
    """The renderer's `system_prompt` and `task_notes` for a session that starts with `block`: the block
    appended to the system prompt (`at="system"`) or opening the first user turn (`at="task"`)."""
    if at not in MEMORY_AT:
        raise ValueError(f"memory_at must be one of {', '.join(MEMORY_AT)}, got {at!r}")
    if not block:
        return {"system_prompt": system, "task_notes": ""}
    if at == "task":
        return {"system_prompt": system, "task_notes": block}
    return {"system_prompt": system + "\n\n" + block, "task_notes": ""}


def project_block(rules: Iterable[str], notes: str = "") -> str:
    """The prompt block for these rules and notes ("" when there are none; `prompt_texts` places it)."""
    rules = list(rules)
    parts = []
    if notes:
        parts.append("Project notes:\n" + notes)
    if rules:
        parts.append("Rules from the user for this project (follow them):\n" + "\n".join(f"- {r}" for r in rules))
    return "\n\n".join(parts)
