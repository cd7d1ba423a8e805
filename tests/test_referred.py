"""The lines a correction names (`referred.py`): which words are references, which lines they find, what is shown."""

from __future__ import annotations

from pathlib import Path

from continualcode.records import ToolCall
from continualcode.referred import (
    BODY_LINES,
    HEAD,
    MAX_LINES,
    candidates,
    copies,
    line_numbers,
    named_lines,
    names,
    note,
    quoted,
)
from continualcode.tools import Workspace

TIMEPARSE = (
    "import re\n"  # 1
    "\n"  # 2
    "WEEKS = r'(?P<weeks>[\\d.]+)\\s*(?:w|wks?|weeks?)'\n"  # 3
    "SECS = r'(?P<secs>\\d+)\\s*(?:s|secs?|seconds?)'\n"  # 4
    "\n"  # 5
    "def timeparse(sval):\n"  # 6
    "    if SECS == sval:\n"  # 7
    "        return None\n"  # 8
    "class Parser:\n"  # 9
    "    pass\n"  # 10
)


def test_names_are_the_words_that_read_as_code():
    said = "SECS is wrong; the `timeparse` helper and parse_all() and getLogger( call, not the Word or a line"
    assert names(said) == ["timeparse", "SECS", "parse_all", "getLogger"]
    assert names("please use the read tool, not cat; fix it") == []
    assert names("`if value is None: return x`") == ["value"]  # keywords are left out, a single letter too
    # a dunder method named in prose (a user trial on isodate); not a bare run of underscores
    assert names("negation is done by the __neg__ method of Duration; not by ____ or __ or _____") == ["__neg__"]


def test_a_method_named_with_its_class_is_looked_up_in_that_class():
    """Every class of cachetools defines `__setitem__`: "in Cache.__setitem__ …" means Cache's, not the first."""
    text = ("class Sizer:\n    def __setitem__(self, k, v):\n        pass\n"
            "class Cache:\n    def __setitem__(self, k, v):\n        size = 1\n")
    assert [n for _, n, _ in quoted("in Cache.__setitem__ the size is wrong", [("c.py", text)])] == [5, 6]
    assert [n for _, n, _ in quoted("the __setitem__ method is wrong", [("c.py", text)])] == [2, 3]
    assert [n for _, n, _ in quoted("Other.__setitem__ is wrong", [("c.py", text)])] == [2, 3]  # no such class


def test_names_the_correction_says_to_leave_alone_are_not_quoted():
    assert names("leave _func_ends_with alone; the bug is in _func_abs") == ["_func_abs"]
    assert names("don't touch `clear_screen`; add clear_code() at the end") == ["clear_code"]
    assert names("Do not change the function parse_date, the bug isn't in parse_date but in parse_timezone") \
        == ["parse_timezone"]
    assert names("the bug is not in SECS, it is in HOURS") == ["HOURS"]
    assert names("use bump_patch() in bump_minor, and change VERSION too") == ["bump_patch", "bump_minor", "VERSION"]


def test_line_numbers_single_ranges_and_pairs():
    assert line_numbers("SECS on line 43 is wrong") == [43]
    assert line_numbers("lines 10-12, and Line 3 to 4; also line 7 and 9") == [10, 11, 12, 3, 4, 7, 9]
    assert line_numbers("lines 1-100") == list(range(1, 1 + MAX_LINES))  # a long range: its first lines
    assert line_numbers("line 0 and line 5 and line 5") == [5]
    assert line_numbers("lines 9-7") == []
    assert line_numbers("the outline is fine; deadline 4") == []


def test_quoted_finds_the_named_line_and_the_names_definitions():
    files = [("t.py", TIMEPARSE)]
    got = quoted("SECS on line 4 uses \\d+; make it [\\d.]+ like WEEKS", files)
    assert got == [("t.py", 4, "SECS = r'(?P<secs>\\d+)\\s*(?:s|secs?|seconds?)'"),
                   ("t.py", 3, "WEEKS = r'(?P<weeks>[\\d.]+)\\s*(?:w|wks?|weeks?)'")]  # line 4 once, not twice
    # a definition, not a use (`SECS == sval` on line 7 is a comparison); a class and a def with their bodies
    assert [n for _, n, _ in quoted("`Parser` and timeparse() and SECS", files)] == [9, 10, 6, 7, 8, 4]


def test_a_named_function_is_quoted_with_the_first_lines_of_its_body():
    """The definition line alone told the 1.5B model where the name is, and it renamed the function (a user
    trial on jmespath): the body's first lines (`BODY_LINES` in all) come with it, blank lines inside kept,
    trailing ones and the next definition not."""
    text = "def ab():\n    x = 1\n\n    return x\n\n\ndef cd():\n" + "".join(f"    y{i} = {i}\n" for i in range(9))
    assert [n for _, n, _ in quoted("ab() is wrong", [("m.py", text)])] == [1, 2, 4]
    assert [n for _, n, _ in quoted("cd() is wrong", [("m.py", text)])] == list(range(7, 7 + BODY_LINES))
    assert quoted("`ab` again", [("m.py", "ab = 1\ndef f():\n    ab = 2\n")]) == [("m.py", 1, "ab = 1")]


def test_a_line_number_is_looked_up_in_the_file_whose_line_fits_the_correction():
    """semver in the named-lines probe: "bump_patch adds 2 ... on line 306" meant version.py while the model was
    changing _deprecated.py; both define `bump_patch` around line 306, only one line 306 adds 2 to the patch."""
    deprecated = 'def bump_patch(version):\n    """Raise the patch part of the version string.\n\n    :rtype: str\n'
    version = "class Version:\n    def bump_patch(self):\n        x = 1\n        return cls(self._patch + 2)\n"
    said = "bump_patch adds 2 to the patch number on line 4; it must add 1"
    got = quoted(said, [("_deprecated.py", deprecated), ("version.py", version)])
    assert got[0] == ("version.py", 4, "        return cls(self._patch + 2)")
    assert got[1] == ("version.py", 2, "    def bump_patch(self):")  # the name too: from the line's file first
    # nothing fits better: the first file long enough, as before; inside a named definition beats outside
    assert quoted("line 1 please", [("a.py", "x = 1\n"), ("b.py", "y = 2\n")])[0][0] == "a.py"
    assert quoted("in parse() line 2", [("a.py", "x = 1\ny = 2\n"), ("b.py", "def parse():\n    y = 2\n")])[0] \
        == ("b.py", 2, "    y = 2")


def test_a_named_functions_docstring_is_not_quoted():
    text = 'def bump():\n    """Raise the patch.\n\n    More.\n    """\n    n = 1\n    return n + 2\n'
    assert [n for _, n, _ in quoted("bump() is wrong", [("v.py", text)])] == [1, 6, 7]
    one = "def fx():\n    r'''One line.'''\n    return 3\n"
    assert [n for _, n, _ in quoted("fx() is wrong", [("v.py", one)])] == [1, 3]


def test_quoted_leaves_out_what_the_correction_already_says_blank_lines_and_files_too_short():
    files = [("short.py", "x = 1\n"), ("t.py", TIMEPARSE)]
    assert quoted("line 4 is `SECS = r'(?P<secs>\\d+)\\s*(?:s|secs?|seconds?)'`; fix it", files) == []
    assert quoted("line 2 and line 5", files) == []  # blank lines
    assert quoted("line 1", files) == [("short.py", 1, "x = 1")]  # the first file long enough
    assert quoted("line 6", files) == [("t.py", 6, "def timeparse(sval):")]
    assert quoted("line 60", files) == [] and quoted("NOPE_NAME", files) == []
    assert len(quoted("lines 1-4, line 6 and 7, line 9, `Parser`, timeparse()", [("t.py", TIMEPARSE)])) == MAX_LINES


ENCODER = "unicode = str\n\nclass TomlEncoder:\n    def __init__(self):\n        self.dump_funcs = {\n" \
    "            str: _dump_str,\n            bool: lambda v: unicode(v),\n        }\n"


def test_a_line_the_correction_gives_a_near_copy_of_is_quoted_and_the_names_inside_the_copy_are_not():
    """A user trial on toml: "the line should … : bool: lambda v: unicode(v).lower()," quoted the definition of
    `unicode` (a name inside the copy) and the retry replaced `unicode` by `str`; the line to change is line 7."""
    said = "that still writes True; the line should lowercase the text: bool: lambda v: unicode(v).lower(),"
    assert quoted(said, [("toml/encoder.py", ENCODER)]) == [
        ("toml/encoder.py", 7, "            bool: lambda v: unicode(v),")]
    assert names(said, [(said.index("bool"), len(said))]) == []  # every name of it is inside the copy
    assert names(said) == ["unicode", "lower"]
    at = said.index("bool: lambda")
    assert copies(said, [("toml/encoder.py", ENCODER.splitlines())]) == [("toml/encoder.py", 7, at, at + 26)]
    # a name with its call's `(` is no copy of the line that defines it (iso8601's `def parse_timezone(`)
    text = "def parse_timezone(matches):\n    sign = 1\n    return sign\n"
    assert copies("parse_timezone negates the offset", [("i.py", text.splitlines())]) == []
    assert [n for _, n, _ in quoted("parse_timezone( negates the offset", [("i.py", text)])] == [1, 2, 3]


def test_near_copies_need_most_of_the_line_in_order_and_the_best_one_wins():
    """The runs of 4 characters or more must hold 80% of the line, close together; a line that shares only a
    shorter run (`for job in self.jobs[:]:`) is left out when a better copy holds far more characters."""
    lines = ["for job in self.jobs[:]:", "return [job for job in self.jobs if tag in job.tags]", "x = 1"]
    said = "it should be: return [job for job in self.jobs if job.tags and tag in job.tags]"
    assert [n for _, n, _, _ in copies(said, [("s.py", lines)])] == [2]
    assert [n for _, n, _, _ in copies("loop: for job in self.jobs please", [("s.py", lines)])] == [1]
    assert copies("return job tags and self jobs", [("s.py", lines)]) == []  # words alone, no runs
    far = "return [job for job in " + "x " * 80 + "self.jobs if tag in job.tags]"  # its runs too far apart
    assert copies(far, [("s.py", lines)]) == []


def test_note_reads_like_a_search_result():
    assert note([]) == ""
    assert note([("a.py", 3, "x = 1"), ("b.py", 9, "def f():")]) == HEAD + "a.py:3: x = 1\nb.py:9: def f():"


def test_candidates_put_the_files_the_correction_names_first_then_the_calls_in_order():
    calls = [ToolCall("edit_lines", {"path": "a.py"}), ToolCall("bash", {"command": "ls"}),
             ToolCall("read", {"path": "b.py"}), ToolCall("read", {"path": "a.py"})]
    assert candidates("line 3 of pkg/c.py, not a.py", calls) == ["pkg/c.py", "a.py", "b.py"]


def test_named_lines_reads_the_workspace_and_skips_what_it_cannot_read(tmp_path: Path):
    ws = Workspace(tmp_path)
    (tmp_path / "t.py").write_text(TIMEPARSE)
    calls = [ToolCall("replace", {"path": "../outside.py"}), ToolCall("read", {"path": "missing.py"}),
             ToolCall("read", {"path": "."}), ToolCall("read", {"path": "t.py"})]
    assert named_lines(ws, "SECS on line 4 is wrong", calls) == HEAD + "t.py:4: " + TIMEPARSE.splitlines()[3]
    assert named_lines(ws, "use the read tool", calls) == ""
    assert named_lines(ws, "line 4", [ToolCall("bash", {"command": "ls"})]) == ""  # no file to look in
