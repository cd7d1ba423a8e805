"""Tests for the `replace` tool (tools/replace.py) and the `edit_tool` setting: what the model is shown,
what it is told, and that a quoted edit lands where the text is, or changes nothing and says where to look."""

from __future__ import annotations

from pathlib import Path

import pytest

from continualcode.render import SYSTEM_PROMPT, edit_hint
from continualcode.textcall import looks_like_call
from continualcode.tools import DEFAULT_SCHEMAS, TOOL_NAMES, ToolError, Workspace, tool_schemas
from continualcode.tools.replace import plan_replace

SETUP = 'import codecs\n\n\nVERSION = "1.2.2"\n\n\ndef f():\n    x = 1\n    return x\n'


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    (root / "setup.py").write_text(SETUP)
    return Workspace(root)


def run(ws: Workspace, old: str, new: str, path: str = "setup.py") -> tuple[bool, str]:
    res = ws.run("replace", {"path": path, "old_string": old, "new_string": new})
    return res.ok, res.output


def test_a_unique_quote_is_replaced_and_the_preview_is_that_change(ws: Workspace) -> None:
    preview = ws.preview("replace", {"path": "setup.py", "old_string": 'VERSION = "1.2.2"',
                                     "new_string": 'VERSION = "1.2.3"'})
    assert '-VERSION = "1.2.2"\n+VERSION = "1.2.3"' in preview
    ok, out = run(ws, 'VERSION = "1.2.2"', 'VERSION = "1.2.3"')
    assert ok and out.startswith("replaced line 4 of setup.py with 1 line (now 9 lines)\n"), out
    assert '     4\tVERSION = "1.2.3"' in out  # the region, numbered as read shows it
    assert (ws.root / "setup.py").read_text() == SETUP.replace("1.2.2", "1.2.3")


def test_reads_number_column_copied_into_the_strings_is_dropped(ws: Workspace) -> None:
    ok, out = run(ws, '     4\tVERSION = "1.2.2"', '     4\tVERSION = "2.0"')
    assert ok, out
    assert 'VERSION = "2.0"\n' in (ws.root / "setup.py").read_text()
    assert "\t" not in (ws.root / "setup.py").read_text()


@pytest.mark.parametrize(("old", "why"), [
    ("x", "old_string occurs 2 times in setup.py (at lines 8, 9): include more of the lines around"),
    ('VERSON = "1.2.2"', "its first line is closest to line 4: 'VERSION = \"1.2.2\"'"),
    ("zzzz qqqq", "old_string is not in setup.py (read the lines to change"),
    ("  \n", "old_string is empty"),
    ("import codecs", "old_string and new_string are the same"),
])
def test_a_quote_that_is_not_there_once_changes_nothing_and_says_where_to_look(ws: Workspace, old: str,
                                                                                 why: str) -> None:
    new = old if old == "import codecs" else "y"
    ok, out = run(ws, old, new)
    assert not ok and out.startswith("error: ") and "\n" not in out and why in out, out
    assert (ws.root / "setup.py").read_text() == SETUP
    assert ws.preview("replace", {"path": "setup.py", "old_string": old, "new_string": new}).startswith("error")


def test_text_at_another_indentation_is_matched_once_and_the_new_text_follows_the_file(ws: Workspace) -> None:
    ok, out = run(ws, "x = 1\nreturn x", "x = 2\nif x:\n    return x")
    assert ok and "matched ignoring indentation" in out, out
    assert (ws.root / "setup.py").read_text().endswith("def f():\n    x = 2\n    if x:\n        return x\n")


def test_crlf_files_keep_their_line_ends(ws: Workspace) -> None:
    (ws.root / "w.txt").write_bytes(b"one\r\ntwo\r\nthree\r\n")
    ok, out = run(ws, "one\ntwo", "one\n1.5\ntwo", path="w.txt")
    assert ok, out
    assert (ws.root / "w.txt").read_bytes() == b"one\r\n1.5\r\ntwo\r\nthree\r\n"


def test_bytes_that_are_not_utf8_outside_the_quote_survive(ws: Workspace) -> None:
    (ws.root / "l.txt").write_bytes(b"caf\xe9\nname = 1\n")
    ok, out = run(ws, "name = 1", "name = 2", path="l.txt")
    assert ok, out
    assert (ws.root / "l.txt").read_bytes() == b"caf\xe9\nname = 2\n"


def test_a_missing_file_or_a_path_outside_is_one_line_and_nothing_is_written(ws: Workspace, tmp_path: Path) -> None:
    ok, out = run(ws, "a", "b", path="nope.py")
    assert not ok and "nope.py does not exist" in out
    (tmp_path / "out.txt").write_text("a\n")
    ok, out = run(ws, "a", "b", path="../out.txt")
    assert not ok and out.startswith("error: ")
    assert (tmp_path / "out.txt").read_text() == "a\n"


def test_a_change_that_breaks_python_is_flagged_before_and_after(ws: Workspace) -> None:
    args = {"path": "setup.py", "old_string": "def f():", "new_string": "def f(:"}
    assert ws.breaks_syntax("replace", args) is not None
    assert "no longer parses as Python" in ws.preview("replace", args)
    assert ws.breaks_syntax("replace", {**args, "new_string": "def g():"}) is None
    # judged as it would run: with replace_all, every occurrence (here: both `x`s become `(`)
    assert ws.breaks_syntax("replace", {"path": "setup.py", "old_string": "x", "new_string": "(",
                                        "replace_all": True}) is not None


def test_replace_all_changes_every_occurrence_and_says_where(ws: Workspace) -> None:
    ok, out = run(ws, "x", "y")
    assert not ok and "or set replace_all to change every one" in out
    res = ws.run("replace", {"path": "setup.py", "old_string": "x", "new_string": "n", "replace_all": True})
    assert res.ok and res.output.startswith("replaced 2 occurrences in setup.py (at lines 8, 9; now 9 lines)")
    assert (ws.root / "setup.py").read_text().endswith("    n = 1\n    return n\n")


def test_plan_replace_counts_the_lines_it_replaced_and_wrote() -> None:
    new, summary, first, span = plan_replace("a\nb\nc\nd\n", "b\nc\n", "B\n", rel="t")
    assert (new, first, span) == ("a\nB\nd\n", 2, 1)
    assert summary == "replaced lines 2-3 of t with 1 line (now 3 lines)"
    with pytest.raises(ToolError, match="occurs 2 times"):
        plan_replace("a\na\n", "a", "b", rel="t")


@pytest.mark.parametrize(("edit_tool", "shown"), [
    ("lines", {"edit_lines"}), ("replace", {"replace"}), ("both", {"edit_lines", "replace"})])
def test_the_model_is_shown_and_told_the_edit_tools_the_setting_names(edit_tool: str, shown: set[str]) -> None:
    tools = tool_schemas(edit_tool)
    names = [t["function"]["name"] for t in tools]
    assert {"edit_lines", "replace"} & set(names) == shown
    assert set(names) - {"edit_lines", "replace"} == {"read", "write", "glob", "grep", "bash"}
    prompt = edit_hint(SYSTEM_PROMPT, tools)
    assert "EDIT_HINT" not in prompt
    assert ("replace (old_string" in prompt) == ("replace" in shown)
    assert ("edit_lines" in prompt) == ("edit_lines" in shown)
    assert "replace" in TOOL_NAMES  # every tool runs whatever the model is shown
    assert [t["function"]["name"] for t in DEFAULT_SCHEMAS] == [t["function"]["name"] for t in tool_schemas()]


def test_a_line_standing_in_for_the_files_lines_is_a_placeholder_in_new_text_only() -> None:
    from continualcode.records import ToolCall
    from continualcode.render import placeholder_argument

    def arg(**kw: str) -> str | None:
        return placeholder_argument(ToolCall("replace", {"path": "a.py", "old_string": "x", "new_string": "y", **kw}))

    assert arg(new_string="def f():\n    # ... rest of the code ...\n    return 2") == "new_string"
    assert arg(new_string="<existing code of f>\nreturn 2") == "new_string"
    assert arg(old_string="# ... rest of the code unchanged") is None  # quoting the file: it has that line
    assert arg(new_string="str") is None and arg(new_string="<root attr>") is None  # real values
    assert placeholder_argument(ToolCall("write", {"path": "a.py", "content": "<original content>"})) == "content"
    assert placeholder_argument(ToolCall("write", {"path": "a.xml", "content": "<original>1</original>"})) is None


@pytest.mark.parametrize(("model", "setting", "shown"), [
    ("qwen2.5-coder-0.5b", "auto", "lines"), ("default", "auto", "both"), ("smollm2", "auto", "lines"),
    ("qwen2.5-coder-1.5b", "auto", "both"), ("Qwen/Qwen3-4B-Instruct-2507", "auto", "both"),
    ("qwen2.5-coder-1.5b", "lines", "lines"), ("qwen2.5-coder-0.5b", "replace", "replace")])
def test_auto_keeps_line_edits_for_the_models_measured_with_them_and_adds_replace_for_others(
        model: str, setting: str, shown: str) -> None:
    from continualcode.build import edit_tool
    from continualcode.config import parse_config

    assert edit_tool(parse_config([f"model_name={model}", f"edit_tool={setting}"])) == shown


def test_a_string_method_in_an_answer_is_not_a_call_written_as_text() -> None:
    assert not looks_like_call("kebabize returns word.replace('_', '-').lower()")
    assert looks_like_call('replace("setup.py", "1.2.2", "1.2.3")')


def test_inside_words_finds_the_occurrences_that_are_parts_of_longer_names() -> None:
    from continualcode.tools.replace import inside_words

    assert inside_words("a and nd\nsecond", "nd") == [(1, "a and nd"), (2, "second")]  # `nd` alone is whole
    assert inside_words("_irregular(1)\nx._irregular\n", "_irregular") == []
    assert inside_words("10 1 x1", "1") == [(1, "10 1 x1"), (1, "10 1 x1")]
    assert inside_words("f(b) + g(b)", "(b") == []  # starts with no letter, ends with one that is followed by ")"
    assert inside_words("anything", "") == []


def test_a_text_found_inside_longer_words_is_not_offered_replace_all(ws: Workspace) -> None:
    """Told that "nd" occurs 30 times "… or set replace_all", the 1.5B model set it (dev split): when some
    occurrences are parts of other names, the refusal says so and offers only more context."""
    from continualcode.tools.replace import INSIDE_WORDS

    (ws.root / "m.py").write_text("second = 'nd'\nand_ = 2\n")
    res = ws.run("replace", {"path": "m.py", "old_string": "nd", "new_string": "rd"})
    assert not res.ok and "occurs 3 times in m.py (at lines 1, 1, 2), 2" + INSIDE_WORDS in res.output
    assert "(line 1: \"second = 'nd'\")" in res.output and "replace_all" not in res.output, res.output
    assert ws.embedded_replace_all("replace", {"path": "m.py", "old_string": "nd", "new_string": "rd",
                                               "replace_all": True}).startswith("replace_all would also change 'nd'")
    assert ws.embedded_replace_all("replace", {"path": "m.py", "old_string": "nd", "new_string": "rd"}) is None
    assert ws.embedded_replace_all("replace", {"path": "m.py", "old_string": "and_", "new_string": "x",
                                               "replace_all": True}) is None
    assert ws.embedded_replace_all("replace", {"path": "nope.py", "old_string": "a", "new_string": "b",
                                               "replace_all": True}) is None


def test_a_name_found_only_in_strings_and_comments_is_not_offered_replace_all(ws: Workspace) -> None:
    """Told that "decimal" occurs 3 times "… or set replace_all", the 1.5B model set it to swap the dict key
    `"decimal"` for `"binary"` (humanize's filesize.py, a user trial): the dict then had "binary" twice.  Where a
    Python file has the name only in strings and comments, replace_all is no rename: not offered, and refused
    for a model; a name the code uses, and other files, keep it."""
    from continualcode.tools.replace import IN_TEXT_ONLY, in_text_only
    from continualcode.tools.syntax import name_lines

    source = 'S = {"decimal": 1, "binary": 2}  # decimal\n"""decimal docs"""\nx = S["decimal"]\n'
    (ws.root / "s.py").write_text(source)
    (ws.root / "s.txt").write_text(source)
    assert name_lines(source, "decimal", "s.py") == [] and name_lines(source, "S", "s.py") == [1, 3]
    assert name_lines(source, "S", "s.txt") is None and name_lines('x = """', "x", "u.py") is None
    assert in_text_only(source, "decimal", "s.py") and not in_text_only(source, "S", "s.py")
    assert not in_text_only(source, '"decimal"', "s.py") and not in_text_only(source, "decimal", "s.txt")
    res = ws.run("replace", {"path": "s.py", "old_string": "decimal", "new_string": "binary"})
    assert not res.ok and "occurs 4 times in s.py (at lines 1, 1, 2, 3)," + IN_TEXT_ONLY in res.output, res.output
    assert "replace_all" not in res.output
    everywhere = {"path": "s.py", "old_string": "decimal", "new_string": "binary", "replace_all": True}
    assert ws.embedded_replace_all("replace", everywhere) == (
        "replace_all renames a name, and 'decimal' is no name in the code of s.py (it occurs only in strings and "
        "comments): change only the place the task is about, with enough of its line that it occurs once")
    assert ws.embedded_replace_all("replace", {**everywhere, "old_string": "S"}) is None  # a rename
    assert ws.embedded_replace_all("replace", {**everywhere, "path": "s.txt"}) is None
    assert "set replace_all" in ws.run("replace", {"path": "s.txt", "old_string": "decimal",
                                                   "new_string": "binary"}).output
    assert ws.run("replace", everywhere).ok  # the tool itself (a user's edit) still does it


def test_a_quote_in_the_other_string_quotes_is_matched_once_and_written_in_the_file_s_quotes(ws: Workspace) -> None:
    """The 1.5B model quoted `__version__ = '0.14.2'` seven times where the file has "0.14.2" (dev split)."""
    (ws.root / "v.py").write_text('__version__ = "0.14.2"\nname = "x"\n')
    res = ws.run("replace", {"path": "v.py", "old_string": "__version__ = '0.14.2'",
                             "new_string": "__version__ = '0.14.3'"})
    assert res.ok and "(matched with the file's quotes)" in res.output, res.output
    assert (ws.root / "v.py").read_text() == '__version__ = "0.14.3"\nname = "x"\n'
    (ws.root / "w.py").write_text("a = 'x'\nb = 'x'\n")  # found twice so: refused as not there
    res = ws.run("replace", {"path": "w.py", "old_string": 'a = "x"\nb = "x"\nc', "new_string": "y"})
    assert not res.ok and "old_string is not in w.py" in res.output
    res = ws.run("replace", {"path": "w.py", "old_string": '"x"', "new_string": '"y"'})
    assert not res.ok and "old_string is not in w.py" in res.output  # 'x' twice: no guess
    res = ws.run("replace", {"path": "w.py", "old_string": "a = \"x'", "new_string": "a = 1"})
    assert not res.ok  # both kinds of quote: not swapped
