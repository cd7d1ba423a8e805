"""The definitions map (outline.py), the file overview that carries it, and the syntax of a change
(tools/syntax.py, Workspace.breaks_syntax / reindented / restrung): pure text, hand-checked."""

from __future__ import annotations

from pathlib import Path

from continualcode.context import OUTLINE_CHARS, project_overview
from continualcode.outline import Definition, definitions, render
from continualcode.tools import Workspace
from continualcode.tools.syntax import escape_string_breaks, indent_candidates, reindent

SOURCE = '''"""A module."""


def pluralize(word, *rest, strict=False, **kw):
    """Return the plural form of a word.

    More text that is not shown.
    """
    def inner():  # inside a body: not mapped
        pass
    return word + "s"


class Scheduler(Base):
    """Objects that keep jobs."""

    def clear(self, tag=None):
        """Delete scheduled jobs marked with the given tag."""

    def _private(self):
        pass

    class Inner:
        pass
'''


def test_definitions_have_lines_signatures_and_first_doc_lines() -> None:
    got = definitions(SOURCE)
    assert got == [
        Definition(4, "def", "pluralize", 0, "(word, *rest, strict, **kw)", "Return the plural form of a word."),
        Definition(14, "class", "Scheduler", 0, "(Base)", "Objects that keep jobs."),
        Definition(17, "def", "clear", 1, "(tag)", "Delete scheduled jobs marked with the given tag."),
        Definition(20, "def", "_private", 1, "()", ""),
        Definition(23, "class", "Inner", 1, "", ""),
    ]
    assert definitions("def broken(:\n") == []


def test_render_shrinks_in_steps_before_it_cuts() -> None:
    files = [("pkg/mod.py", definitions(SOURCE)), ("empty.py", [])]
    full = render(files, 10_000)
    assert full.split("\n") == [
        "pkg/mod.py",
        "  4: def pluralize(word, *rest, strict, **kw) — Return the plural form of a word.",
        "  14: class Scheduler(Base) — Objects that keep jobs.",
        "    17: def clear(tag) — Delete scheduled jobs marked with the given tag.",
        "    20: def _private()",
        "    23: class Inner",
    ]  # a file without definitions is left out
    lvl1 = render(files, len(full) - 1)  # method docstrings go first
    assert "17: def clear(tag)\n" in lvl1 and "Objects that keep jobs" in lvl1
    lvl4 = render(files, 95)  # no docstrings, no signatures, no private methods
    assert lvl4 == "pkg/mod.py\n  4: def pluralize\n  14: class Scheduler\n    17: def clear\n    23: class Inner"
    cut = render(files, 60)
    assert len(cut) <= 60 + 60 and cut.endswith("more definitions (grep 'def NAME' or 'class NAME' to find one)")
    assert render([("a.py", [])], 100) == ""


def test_overview_maps_the_code_before_the_tests(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text(SOURCE)
    (tmp_path / "test_pkg.py").write_text("def test_plural():\n    pass\n")
    (tmp_path / "setup.py").write_text("def read_file():\n    pass\n")
    text = project_overview(Workspace(tmp_path), outline_chars=OUTLINE_CHARS)
    files, _, defs = text.partition("\n\nClasses and functions")
    assert files.split("\n")[1:] == ["pkg/__init__.py", "setup.py", "test_pkg.py"]
    assert defs.index("pkg/__init__.py") < defs.index("setup.py") and "1: def test_plural()" in defs
    assert "Classes and functions" not in project_overview(Workspace(tmp_path))  # the default: none


def test_overview_lists_the_code_then_tests_and_setup_then_the_rest_each_shallowest_first(tmp_path: Path) -> None:
    """The 0.5B model opened tasks by reading the listing's first file, LICENSE or AUTHORS.rst (root files,
    listed before the package by depth and name): the code now comes first."""
    for rel in ("AUTHORS.rst", "LICENSE", "setup.py", "pkg/__init__.py", "pkg/py.typed", "pkg/sub/deep.py",
                "tests/test_a.py", "docs/conf.py", "run.sh", "web/app.ts"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    listed = project_overview(Workspace(tmp_path)).split("\n")[1:]
    assert listed == ["run.sh", "pkg/__init__.py", "web/app.ts", "pkg/sub/deep.py",
                      "setup.py", "docs/conf.py", "tests/test_a.py",
                      "AUTHORS.rst", "LICENSE", "pkg/py.typed"]


def test_overview_leaves_out_empty_files(tmp_path: Path) -> None:
    """Both built-in models opened inflection's tasks by reading its empty `py.typed` (listed last); the 1.5B
    model then wrote the asked-for function into it.  An empty file has nothing to read: not listed."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "core.py").write_text("def f():\n    return 1\n")
    (tmp_path / "pkg" / "py.typed").write_text("")
    (tmp_path / "pkg" / "__init__.py").write_text("")
    assert project_overview(Workspace(tmp_path)).split("\n")[1:] == ["pkg/core.py"]
    (tmp_path / "pkg" / "core.py").write_text("")
    assert project_overview(Workspace(tmp_path)) == ""  # nothing to show, as for an empty project


def test_reindent_keeps_relative_indentation() -> None:
    assert reindent("if x:\n    y()\n\nz()", "        ") == "        if x:\n            y()\n\n        z()"
    assert reindent("        a\n          b", "    ") == "    a\n      b"
    assert reindent("\n\n", "    ") == "\n\n"


def test_indent_candidates_follow_the_replaced_lines_then_the_block() -> None:
    lines = ["class A:", "    def f(self):", "        return 1", "", "x = 2"]
    assert indent_candidates(lines, 3, 3) == ["        ", ""]  # the replaced line's, then the next line's
    assert indent_candidates(lines, 3, 2) == ["        "]  # insert before line 3: its indent = one below 'def'
    assert indent_candidates(lines, 2, 1) == ["    "]  # before `def f`: its indent, also one below 'class A:'
    assert indent_candidates(["x = 1", "", "y = 2"], 2, 2) == [""]  # a blank line between top-level lines
    assert indent_candidates(lines, 6, 5) == [""]  # append after x = 2


def test_a_change_that_breaks_a_parsing_file_is_seen_and_mended_when_only_indentation_is_off(
        tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    (tmp_path / "m.py").write_text("class A:\n    def f(self):\n        return 1\n")
    edit = {"path": "m.py", "start_line": 3, "end_line": 3, "content": "return 2"}
    assert ws.breaks_syntax("edit_lines", edit) == (
        "line 3: expected an indented block after function definition on line 2")
    assert ws.reindented("edit_lines", edit) == {**edit, "content": "        return 2"}
    fine = {**edit, "content": "        return 2"}
    assert ws.breaks_syntax("edit_lines", fine) is None and ws.reindented("edit_lines", fine) is None
    bad = {**edit, "content": "        return (2"}  # not an indentation fault: nothing mends it
    assert ws.breaks_syntax("edit_lines", bad) is not None and ws.reindented("edit_lines", bad) is None
    assert ws.breaks_syntax("write", {"path": "new.py", "content": "def (:"}) is not None
    assert ws.breaks_syntax("write", {"path": "notes.txt", "content": "def (:"}) is None
    (tmp_path / "broken.py").write_text("def (:\n")  # broken before: not this change's doing
    assert ws.breaks_syntax("write", {"path": "broken.py", "content": "def (:\n"}) is None
    assert ws.breaks_syntax("edit_lines", {**edit, "start_line": 99, "end_line": 99}) is None  # refused by the tool
    assert (tmp_path / "m.py").read_text().endswith("return 1\n")  # judging touches nothing


def test_a_line_break_inside_a_one_line_string_is_written_as_its_escape() -> None:
    """A call's JSON `"'\\n'.join(xs)"` arrives as a line break between two quotes."""
    assert escape_string_breaks("x = '\n'.join(xs)\n") == "x = '\\n'.join(xs)\n"
    assert escape_string_breaks('print("a\nb", \'c\')') == 'print("a\\nb", \'c\')'
    kept = 's = """a\nb"""\n# it\'s\nt = 1\n'  # a triple-quoted string's breaks, a comment's quote
    assert escape_string_breaks(kept) == kept
    assert escape_string_breaks("t = 'it\\'s\n'") == "t = 'it\\'s\\n'"  # an escaped quote does not close it
    assert escape_string_breaks("f(\n    'a',\n    'b')\n") == "f(\n    'a',\n    'b')\n"


def test_a_change_that_breaks_a_file_only_by_a_line_break_in_a_string_is_mended(tmp_path: Path) -> None:
    ws = Workspace(tmp_path)
    (tmp_path / "m.py").write_text("def show(lines):\n    return ' '.join(lines)\n")
    edit = {"path": "m.py", "start_line": 2, "end_line": 2, "content": "    return '\n'.join(lines)"}
    assert ws.breaks_syntax("edit_lines", edit) is not None
    assert ws.restrung("edit_lines", edit) == {**edit, "content": "    return '\\n'.join(lines)"}
    rep = {"path": "m.py", "old_string": "' '", "new_string": "'\n'"}
    assert ws.restrung("replace", rep) == {**rep, "new_string": "'\\n'", "replace_all": False}
    new = {"path": "n.py", "content": "print('a\nb')\n"}
    assert ws.restrung("write", new) == {**new, "content": "print('a\\nb')\n"}
    assert ws.restrung("edit_lines", {**edit, "content": "    return ' '.join(lines)"}) is None  # not broken
    assert ws.restrung("edit_lines", {**edit, "content": "    return ('\n'.join(lines)"}) is None  # still broken
    assert ws.restrung("write", {"path": "n.txt", "content": "'\n'"}) is None  # not Python
    assert (tmp_path / "m.py").read_text().endswith("' '.join(lines)\n") and not (tmp_path / "n.py").exists()
