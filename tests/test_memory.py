"""Project memory: corrections and feedback kept as rules, read back into later sessions' system prompt."""

from __future__ import annotations

from pathlib import Path

import pytest

from continualcode.events import Decided, UserTask
from continualcode.learn.memory import (
    HEADER,
    MAX_RULES,
    Memory,
    Rule,
    fleeting,
    lasting,
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


def test_a_correction_that_names_a_line_or_where_a_bug_is_is_not_a_lasting_rule():
    assert lasting("search with grep before reading") and lasting("the outline is fine; deadline 4")
    assert not lasting("in its body, line 223, use endswith") and not lasting("Lines 3-4 are wrong")
    assert not lasting("The bug is in _func_ends_with: it calls the wrong method")
    assert not lasting("no, the problem lies in parse_timezone") and not lasting("the typo is on the SECS line")
    assert fleeting("the error is in setup.py") == "the correction says where a bug is, which is about this task"
    assert lasting("fix bugs with edit_lines, not sed") and lasting("an error in a test is no reason to skip it")
    assert fleeting("run the tests after a fix") == ""
    # the line at hand (a user trial on toml kept this one), not a rule about lines
    assert fleeting("that still writes True; the line should lowercase the text: bool: lambda v: unicode(v).lower(),") \
        == "the correction speaks of the line at hand, which is about this change"
    assert not lasting("This line is still wrong") and not lasting("that line must stay as it was")
    assert lasting("keep the line length under 100") and lasting("the outline is fine")
    assert lasting("one import per line")
    # a search for one definition (a user trial on isodate kept this one, and the next task began with the grep)
    why = "the correction asks to search for one definition, which is about this task"
    assert fleeting("negation is done by the __neg__ method of Duration; grep for 'def __neg__' in "
                    "src/isodate/duration.py") == why
    assert not lasting("search for class Parser first") and not lasting('look for "def parse" in parse.py')
    assert lasting("search with the grep tool instead of guessing a file to read")
    assert lasting("grep for the definition before you read a file") and lasting("find the class of a bug first")


def test_a_correction_that_names_the_projects_code_is_a_rule_only_with_the_words_of_a_habit():
    code = {"load_dotenv", "set_as_environment_variables", "DotEnv", "make_request", "Path"}
    said = ("that is unrelated. load_dotenv calls set_as_environment_variables of DotEnv, which decides whether a "
            "variable already in os.environ is kept: look at that method")  # a user trial on python-dotenv
    assert fleeting(said, code) == ("the correction names the project's code (load_dotenv, "
                                    "set_as_environment_variables, DotEnv), which is about this task")
    assert lasting(said)  # without the project's names (a caller that has no workspace) it is kept
    assert lasting("run exactly: PYTHONPATH=src python -m pytest -q tests/test_main.py", code)  # names no definition
    assert lasting("call our make_request() helper instead of requests.get", code)
    assert lasting("always go through make_request()", code) and lasting("use make_request, not urlopen", code)
    assert lasting("use pathlib for file paths (Path(p).suffix), not os.path", code)
    assert not lasting("make_request should retry", code)


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


def test_a_rule_keeps_the_tasks_it_was_given_on_in_its_file(tmp_path: Path):
    path = tmp_path / "memory.md"
    m = Memory(path)
    assert m.add("search with grep first", task="where is total\ndefined?")
    assert not m.add("Search with grep first", task="which file defines mean?")  # known: one more task
    assert not m.add("search with grep first", task="which file defines mean?")  # nothing new
    assert path.read_text() == HEADER + ("- search with grep first\n  from: where is total defined?\n"
                                         "  from: which file defines mean?\n")
    assert Memory(path).entries == [Rule("search with grep first",
                                         ("where is total defined?", "which file defines mean?"))]
    for i in range(5):
        m.add("search with grep first", task=f"task {i}", save=False)
    assert m.entries[0].tasks == ("task 2", "task 3", "task 4")  # the latest MAX_ORIGINS
    # a `from:` line before any rule is a comment; a rule typed by hand has no tasks
    assert parse_rules("  from: stray\n- use python3\n") == [Rule("use python3")]


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
    (ws / "env.py").write_text("class DotEnv:\n    def set_as_environment_variables(self):\n        pass\n")
    cfg = parse_config([f"workspace={ws}", f"state_home={tmp_path / 'state'}", "enable_training=false",
                        "memory_at=system"])
    app = App.build(cfg, NoInput(), Display(), backend=backend)
    assert "Tabs, not spaces." in app.session.renderer.system_prompt
    app.recorder(Decided("deny", text="search with grep before reading"))
    app.recorder(Decided("feedback", text="the tests live in tests/unit"))
    app.recorder(Decided("deny", text=""))  # a bare denial is no rule
    with app.display.console.capture() as shown:  # nor one that names a line: it is about the change at hand
        app.recorder(Decided("deny", text="on line 223 use endswith instead of startswith"))
        app.recorder(Decided("deny", text="the bug is in _func_abs"))  # nor where a bug is: about the task at hand
        # nor one that names the workspace's code without the words of a habit (a user trial on python-dotenv)
        app.recorder(Decided("deny", text="look at set_as_environment_variables of DotEnv"))
    said = " ".join(shown.get().split())
    assert said.count("not kept in memory") == 3 and "names a line number" in said and "where a bug is" in said
    assert "names the project's code (set_as_environment_variables, DotEnv)" in said
    kept = "".join(app.recorder.memory.rules)
    assert "endswith" not in kept and "_func_abs" not in kept and "look at" not in kept
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
    assert "search with grep" not in r.system_prompt + r.task_notes and "Tabs, not spaces." in r.task_notes
    # memory_at=task: each task opens with its rules (all of them: no more than memory_rules)
    both = ["search with grep before reading", "the tests live in tests/unit"]
    assert at_task.session.notes("where is total?") == project_block(both)
    at_task.recorder(UserTask("is cents.py correct?"))
    at_task.recorder(Decided("deny", text="run the tests with pytest -q"))
    assert at_task.session.notes("next") == project_block([*both, "run the tests with pytest -q"])
    at_task.recorder(Decided("deny", text="a fourth rule"))  # now 4 > memory_rules: a task gets its own
    assert "run the tests" in at_task.session.notes("is odd.py correct?")
    assert "search with grep" not in at_task.session.notes("is odd.py correct?")
    with at_task.display.console.capture() as shown:  # /memory: the rules, and that a task gets a few
        at_task._memory("")
    assert "- a fourth rule" in shown.get() and "each task gets the 3 that fit it best" in shown.get()
    at_task.close()
    kept = [e for e in at_task.recorder.memory.entries if e.tasks]
    assert kept == [Rule("run the tests with pytest -q", ("is cents.py correct?",)),
                    Rule("a fourth rule", ("is cents.py correct?",))]  # the task at hand when it was given
