"""retrieve.py: chunks, words, ranking and the shown text, on hand-made sources (pure: no model)."""

from __future__ import annotations

from pathlib import Path

from continualcode.context import near_miss, relevant_code
from continualcode.records import ToolCall
from continualcode.retrieve import (
    CHUNK_LINES,
    HEAD,
    NEAREST_HEAD,
    WINDOW,
    Chunk,
    nearest,
    python_chunks,
    rank,
    relevant,
    window_chunks,
    words,
)
from continualcode.tools import Workspace

SOURCE = '''"""A module."""
import re
from os import path

LIMIT = 10


@cache
def pluralize(word):
    """The plural of a word."""
    return word + "s"


class Scheduler:
    """Runs jobs."""
    interval = 1

    def run_pending(self):
        return [j for j in self.jobs]
'''


def test_words_split_identifiers_stem_and_drop_filler() -> None:
    assert words("Which function converts DeviceType to device_type?") == ["conver", "device", "type", "device", "type"]
    assert words("pluralize('sheep') and plurals") == ["plural", "sheep", "plural"]
    assert words("HTTPServer x 42") == ["http", "server", "42"]  # one-letter words dropped


def test_python_chunks_are_definitions_class_heads_and_statements() -> None:
    chunks = python_chunks("m.py", SOURCE)
    got = [(c.name, c.start, c.start + len(c.lines) - 1) for c in chunks]
    # the module docstring is a statement; imports are left out; a decorator opens its function's chunk;
    # a class's head ends before its first method
    assert got == [("", 1, 1), ("LIMIT", 5, 5), ("pluralize", 8, 11), ("Scheduler", 14, 17),
                   ("Scheduler.run_pending", 18, 19)]
    assert chunks[2].lines[0] == "@cache" and chunks[4].lines[-1].endswith("self.jobs]")


def test_unparsable_python_and_other_sources_are_cut_into_windows() -> None:
    text = "\n".join(f"line {i}" for i in range(1, WINDOW + 6))
    for chunks in (python_chunks("bad.py", "def (:\n" + text), window_chunks("a.js", text)):
        assert [c.start for c in chunks] == [1, WINDOW + 1] and all(c.name == "" for c in chunks)
    assert window_chunks("a.js", text, secondary=True)[0].secondary


def test_rank_prefers_the_name_the_task_writes_and_code_over_tests() -> None:
    ordinal = Chunk("inf.py", 1, ("def ordinal(number):", "    '''The suffix for an ordinal number.'''",
                                  "    return 'th'  # ordinal ordinal"), "ordinal")
    ordinalize = Chunk("inf.py", 5, ("def ordinalize(number):", "    return str(number) + ordinal(number)"),
                       "ordinalize")
    assert [c.name for _, c in rank("ordinalize(13) returns '13rd'", [ordinal, ordinalize])] == \
        ["ordinalize", "ordinal"]
    # the same lines in a test file weigh half
    code = Chunk("pkg/x.py", 1, ("def humanize(w):", "    return w"), "humanize")
    test = Chunk("tests/test_x.py", 1, code.lines, "humanize", secondary=True)
    (s_test, c1), (s_code, c2) = sorted(rank("what does humanize do?", [test, code]), key=lambda r: r[0])
    assert (c1, c2) == (test, code) and abs(s_test - s_code / 2) < 1e-9
    assert rank("nothing in common", [code]) == [] and rank("", [code]) == []


def test_rank_scores_are_bm25_plus_the_name_weighted() -> None:
    """Two chunks, the query word in one of them once: idf = ln(1 + (2 - 1 + .5) / (1 + .5)) = ln 2; the chunk
    is 2 words long as the average is 1.5 (1 and 2); tf part = 1 * 2.2 / (1 + 1.2 * (.25 + .75 * 2 / 1.5))."""
    import math

    a = Chunk("a.py", 1, ("zebra stripes",), "")
    b = Chunk("b.py", 1, ("horse",), "")
    [(score, c)] = rank("zebra", [a, b])
    assert c is a and abs(score - math.log(2) * 2.2 / (1 + 1.2 * (0.25 + 0.75 * 2 / 1.5))) < 1e-12
    named = Chunk("a.py", 1, ("zebra stripes",), "zebra")  # + NAME_WEIGHT * idf, then times EXACT_FACTOR
    [(score2, _)] = rank("zebra", [named, b])
    assert abs(score2 - 2 * (score + 2 * math.log(2))) < 1e-12


def test_relevant_shows_numbered_lines_cut_and_within_the_budget() -> None:
    body = [f"    x{i} = {i}" for i in range(60)]
    long = Chunk("pkg/big.py", 10, ("def big_function():", *body), "big_function")
    text = relevant("what does big_function do?", [long], 5000)
    lines = text.splitlines()
    assert lines[0] == HEAD and lines[1] == "pkg/big.py, lines 10-70:" and lines[2] == "    10\tdef big_function():"
    assert len(lines) == 2 + CHUNK_LINES + 1 and lines[-1] == "[21 more lines; read pkg/big.py with offset=50]"
    small = relevant("what does big_function do?", [long], 400)
    assert len(small) <= 400 and small.startswith(HEAD) and small.splitlines()[-1].startswith("[")
    assert relevant("what does big_function do?", [long], 0) == "" and relevant("unrelated words", [long], 5000) == ""


def test_relevant_shows_only_chunks_near_the_best() -> None:
    best = Chunk("a.py", 1, ("def parse_all(): pass",), "parse_all")
    weak = Chunk("b.py", 1, ("# all of it", "x = 1", "y = 2", "z = 3", "w = 4"), "")
    text = relevant("add parse_all", [best, weak], 5000)
    assert "a.py, lines 1-1" in text and "b.py" not in text


def test_relevant_code_reads_source_files_of_the_workspace(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "core.py").write_text(SOURCE)
    (tmp_path / "README.md").write_text("pluralize pluralize pluralize\n")  # not code: never shown
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "p.py").write_text("def pluralize(): pass\n")
    text = relevant_code(Workspace(tmp_path), "What does pluralize do?", 2000)
    assert text.splitlines()[1] == "pkg/core.py, lines 8-11:" and "README" not in text and ".hidden" not in text
    assert relevant_code(Workspace(tmp_path), "What does pluralize do?", 0) == ""


def test_nearest_lists_definitions_as_grep_hits_with_their_docstrings_first_line() -> None:
    source = SOURCE + '''

def get_next_run(
    tag=None,
):
    r"""
    When the next job runs.
    """
'''
    test = "def test_run_pending():\n    pass\n"
    chunks = python_chunks("pkg/core.py", source) + python_chunks("tests/test_core.py", test, secondary=True)
    # the decorated function's own line, not its decorator's; a method named with its class; a docstring opened on
    # the line after a signature that spans lines; the words of `def` and `self` count for nothing
    assert nearest("def run_pending when next plural", chunks) == [
        "pkg/core.py:18: def run_pending(self):  # Scheduler.run_pending",
        "pkg/core.py:22: def get_next_run(  # When the next job runs.",
        "pkg/core.py:9: def pluralize(word):  # The plural of a word.",
        "tests/test_core.py:1: def test_run_pending():",
    ]
    assert nearest("run", chunks, n=1) == ["pkg/core.py:18: def run_pending(self):  # Scheduler.run_pending"]
    assert nearest("def self", chunks) == [] and nearest("LIMIT", chunks) == []  # statements are no definitions


def test_near_miss_follows_only_a_grep_that_found_nothing_anywhere(tmp_path: Path) -> None:
    (tmp_path / "core.py").write_text(SOURCE)
    ws = Workspace(tmp_path)
    grep = ToolCall("grep", {"pattern": "def make_plural", "path": "."})
    empty = "no matches for 'def make_plural' in ."
    assert near_miss(ws, grep, True, empty, "where is the plural made?") == \
        NEAREST_HEAD + "core.py:9: def pluralize(word):  # The plural of a word."
    total = ToolCall("grep", {"pattern": "def total", "path": "."})
    assert near_miss(ws, total, True, "no matches for 'def total' in .", "where is the sum?") == ""  # no shared word
    wider = empty + "\nin the whole project it matches:\ncore.py:9: def pluralize(word):"
    assert near_miss(ws, grep, True, wider, "plural") == ""
    assert near_miss(ws, grep, False, empty, "plural") == ""
    assert near_miss(ws, ToolCall("glob", {"pattern": "plural*"}), True, "no files match 'plural*'", "plural") == ""


def test_a_files_chunks_are_parsed_once_until_the_file_changes(tmp_path: Path, monkeypatch) -> None:
    """context._file_chunks keeps each file's chunks by (path, mtime, size): an unchanged project is not parsed
    again for the next empty grep, and a changed file is (its new definition is found)."""
    import os

    import continualcode.retrieve as retrieve

    parsed: list[str] = []
    real = retrieve.python_chunks

    def counting(path: str, source: str, secondary: bool = False) -> list[Chunk]:
        parsed.append(path)
        return real(path, source, secondary)

    monkeypatch.setattr(retrieve, "python_chunks", counting)
    (tmp_path / "core.py").write_text(SOURCE)
    ws = Workspace(tmp_path)
    grep = ToolCall("grep", {"pattern": "def make_plural", "path": "."})
    empty = "no matches for 'def make_plural' in ."
    first = near_miss(ws, grep, True, empty, "where is the plural made?")
    assert near_miss(ws, grep, True, empty, "where is the plural made?") == first and parsed == ["core.py"]
    (tmp_path / "core.py").write_text(SOURCE + "\n\ndef make_plurals(words):\n    return words\n")
    os.utime(tmp_path / "core.py", ns=(1, 1))  # a different mtime even on a coarse clock
    assert "core.py:22: def make_plurals(words):" in near_miss(ws, grep, True, empty, "plural")
    assert parsed == ["core.py", "core.py"]


def test_a_failed_replace_of_the_tasks_own_words_is_told_they_are_the_symptom_not_the_code(tmp_path: Path) -> None:
    """context.symptom_note: a replace refused because its old text is not in the file, when that text is in the
    task (the reported wrong output), gets a note to find the code that makes it; nothing otherwise."""
    from continualcode.context import symptom_note

    (tmp_path / "core.py").write_text(SOURCE)
    ws = Workspace(tmp_path)

    def run(c: ToolCall) -> tuple[bool, str]:
        r = ws.run(c.name, c.arguments)
        return r.ok, r.output

    task = "ordinalize(13) returns '13rd' instead of '13th'. Fix it and run the tests."
    call = ToolCall("replace", {"path": "core.py", "old_string": "13rd", "new_string": "13th"})
    ok, out = run(call)
    assert not ok and out.startswith("error: old_string is not in core.py")
    note = symptom_note(call, ok, out, task)
    assert note.startswith("\n'13rd' is the task's own words") and "not text of core.py" in note
    assert "grep for the definition" in note
    other = ToolCall("replace", {"path": "core.py", "old_string": "13st", "new_string": "13th"})
    assert symptom_note(other, *run(other), task) == ""  # not the task's words
    short = ToolCall("replace", {"path": "core.py", "old_string": "13", "new_string": "14"})
    assert symptom_note(short, False, out, task) == ""  # too short to say
    found = ToolCall("replace", {"path": "core.py", "old_string": "LIMIT = 10", "new_string": "LIMIT = 13"})
    assert symptom_note(found, *run(found), "set LIMIT = 10 to 13") == ""  # it was there: changed
    assert symptom_note(ToolCall("read", {"path": "core.py"}), False, out, task) == ""
