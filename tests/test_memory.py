"""Project memory: corrections and feedback kept as rules, read back into later sessions' system prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from continualcode.events import Decided
from continualcode.learn.memory import (
    HEADER,
    MAX_RULES,
    Memory,
    later_block,
    parse_rules,
    project_block,
    prompt_texts,
    workspace_notes,
)


def test_rules_are_one_line_deduplicated_and_persisted(tmp_path: Path):
    path = tmp_path / "memory.md"
    m = Memory(path)
    assert m.add("use edit_lines;\n  don't overwrite") and not m.add("USE EDIT_LINES; DON'T OVERWRITE")
    assert m.add("this project uses Poetry, not pip")
    assert path.read_text() == HEADER + "- use edit_lines; don't overwrite\n- this project uses Poetry, not pip\n"
    assert Memory(path).rules == m.rules  # read back
    assert not m.add("   ")


def test_a_hand_edited_file_is_read_leniently(tmp_path: Path):
    path = tmp_path / "memory.md"
    path.write_text("# my notes\n- run tests with pytest -x\nnot a rule\n-   \n- prefer rg over grep\n")
    assert Memory(path).rules == ["run tests with pytest -x", "prefer rg over grep"]
    assert parse_rules("") == []


def test_the_oldest_rules_go_beyond_the_cap(tmp_path: Path):
    m = Memory(tmp_path / "m.md")
    for i in range(MAX_RULES + 3):
        m.add(f"rule {i}")
    assert len(m.rules) == MAX_RULES and m.rules[0] == "rule 3"


def test_project_block_and_workspace_notes(tmp_path: Path):
    assert project_block([], "") == ""
    (tmp_path / "AGENTS.md").write_text("Run `make test` before committing.\n")
    notes = workspace_notes(tmp_path)
    block = project_block(["use edit_lines"], notes)
    assert "Project notes:\nRun `make test`" in block and "- use edit_lines" in block


def test_prompt_texts_put_the_block_in_the_system_prompt_or_the_first_task():
    assert prompt_texts("SYS", "- grep first") == {"system_prompt": "SYS\n\n- grep first", "task_notes": ""}
    assert prompt_texts("SYS", "- grep first", "task") == {"system_prompt": "SYS", "task_notes": "- grep first"}
    assert prompt_texts("SYS", "", "task") == prompt_texts("SYS", "") == {"system_prompt": "SYS", "task_notes": ""}
    with pytest.raises(ValueError, match="memory_at"):
        prompt_texts("SYS", "- x", "user")


def test_later_block_holds_only_the_rules_the_session_did_not_open_with():
    m = Memory(None, ["grep first", "use python3"])
    assert later_block(m, ["grep first", "use python3"]) == "" == later_block(None, [])
    m.add("run the tests with pytest -q")
    assert later_block(m, ["Grep first", "use python3"]) == project_block(["run the tests with pytest -q"])


@pytest.mark.slow
def test_a_denial_becomes_a_rule_in_the_next_sessions_prompt(tmp_path: Path, backend):
    """Through the app: the Recorder keeps the correction; a new App starts with it in its first user turn
    (`memory_at=task`, the default) or its system prompt (`memory_at=system`)."""
    from continualcode.app import App
    from continualcode.config import parse_config
    from continualcode.ui.terminal import Display

    class NoInput:
        def read_task(self):
            return None

        def decide(self, call, preview):
            raise AssertionError("not asked")

    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "CLAUDE.md").write_text("Tabs, not spaces.\n")
    cfg = parse_config([f"workspace={ws}", f"state_home={tmp_path / 'state'}", "enable_training=false",
                        "memory_at=system"])
    app = App.build(cfg, NoInput(), Display(), backend=backend)
    assert "Tabs, not spaces." in app.session.renderer.system_prompt
    app.recorder(Decided("deny", text="search with grep before reading"))
    app.recorder(Decided("feedback", text="the tests live in tests/unit"))
    app.recorder(Decided("deny", text=""))  # a bare denial is no rule
    app.close()
    later = App.build(cfg, NoInput(), Display(), backend=backend)
    prompt = later.session.renderer.system_prompt
    assert "- search with grep before reading\n- the tests live in tests/unit" in prompt
    later.close()
    off = App.build(parse_config([*(f"{k}={v}" for k, v in (("workspace", ws), ("state_home", tmp_path / "state"))),
                                  "memory=false", "enable_training=false"]), NoInput(), Display(), backend=backend)
    assert "search with grep" not in off.session.renderer.system_prompt
    off.close()
    at_task = App.build(parse_config([f"workspace={ws}", f"state_home={tmp_path / 'state'}", "enable_training=false"]),
                        NoInput(), Display(), backend=backend)
    r = at_task.session.renderer
    assert "search with grep" not in r.system_prompt and "- search with grep before reading" in r.task_notes
    assert "Tabs, not spaces." in r.task_notes
    # during the session: a new rule opens the session's later tasks (the opening rules are not repeated)
    assert at_task.session.notes is not None and at_task.session.notes() == ""
    at_task.recorder(Decided("deny", text="run the tests with pytest -q"))
    assert at_task.session.notes() == project_block(["run the tests with pytest -q"])
    at_task.close()
