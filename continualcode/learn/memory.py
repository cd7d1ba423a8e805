"""Project memory: corrections kept as plain-language rules that every later session starts with.

The in-context competitor users already have (Claude Code's memory, AGENTS.md / CLAUDE.md, aider's
conventions), built in: each correction with text and each piece of free-form feedback becomes
one rule, a line `- <text>` in `<project state>/memory.md`, a file the user can read and edit
(`/memory` shows it, `/memory edit` opens it in $EDITOR).  An AGENTS.md or CLAUDE.md in the
workspace is read as project rules too.  Both go into a session's prompt when it starts: the system
prompt (`memory_at=system`), or the session's first user turn, just before the first task
(`memory_at=task`, where Claude Code puts CLAUDE.md: next to the task, not ~1k tokens of tool schemas
above it).  A rule added during a session opens each later task's user turn of that session
(`later_block`, put there by the session as the message's notes): the prompt's start stays put, so the
KV cache of the conversation stays valid, and the rule is next to the task it governs rather than only
somewhere above in the conversation.

It is also what the weights can learn from: `project_block` is the same text a teacher sees when
the learner distils the rules into the adapter (learn/step.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from continualcode.fsio import atomic_write

MEMORY_FILE = "memory.md"
PROJECT_FILES = ("AGENTS.md", "CLAUDE.md")
MAX_RULES = 50  # the oldest go first beyond this: a small model's prompt stays short
MAX_RULE_CHARS = 300
MAX_PROJECT_CHARS = 2000
HEADER = "# continualcode memory: one rule per line, from your corrections; edit freely\n"


class Memory:
    """The project's rules: a list of one-line texts, persisted to `path` (None: kept in memory only)."""

    def __init__(self, path: Path | None = None, rules: Iterable[str] = ()) -> None:
        self.path = path
        self._rules: list[str] = []
        if path is not None and path.is_file():
            self._rules = parse_rules(path.read_text(errors="replace"))
        for r in rules:
            self.add(r, save=False)

    @property
    def rules(self) -> list[str]:
        return list(self._rules)

    def add(self, text: str, *, save: bool = True) -> bool:
        """Keep `text` as a rule (one line, deduplicated); True when it is new."""
        rule = one_line(text)
        if not rule or rule.lower() in (r.lower() for r in self._rules):
            return False
        self._rules = [*self._rules, rule][-MAX_RULES:]
        if save and self.path is not None:
            atomic_write(self.path, HEADER + "".join(f"- {r}\n" for r in self._rules))
        return True


def parse_rules(text: str) -> list[str]:
    """The rules of a memory file: its `- ` lines (other lines, like the header, are comments)."""
    return [one_line(line[2:]) for line in text.splitlines() if line.startswith("- ") and one_line(line[2:])]


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


def later_block(memory: Memory | None, opening: Iterable[str]) -> str:
    """The prompt block of the rules `memory` holds now that the session's opening block did not ("" when
    none): what opens each later task of the session."""
    if memory is None:
        return ""
    seen = {r.lower() for r in opening}
    return project_block([r for r in memory.rules if r.lower() not in seen])


def project_block(rules: Iterable[str], notes: str = "") -> str:
    """The prompt block for these rules and notes ("" when there are none; `prompt_texts` places it)."""
    rules = list(rules)
    parts = []
    if notes:
        parts.append("Project notes:\n" + notes)
    if rules:
        parts.append("Rules from the user for this project (follow them):\n" + "\n".join(f"- {r}" for r in rules))
    return "\n\n".join(parts)
