"""Tests for continualcode.tools: the six tools, their edge cases, confinement and crash safety."""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from continualcode.tools import (
    TEMP_PREFIX,
    TOOL_NAMES,
    TOOL_SCHEMAS,
    ToolError,
    ToolResult,
    Workspace,
    cap_text,
    validate_args,
)
from continualcode.tools.base import quote

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def ws(tmp_path: Path) -> Workspace:
    root = tmp_path / "ws"
    root.mkdir()
    return Workspace(root)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    d = tmp_path / "outside"
    d.mkdir()
    (d / "secret.txt").write_text("TOP SECRET\n")
    return d


def ok(ws: Workspace, name: str, **args: object) -> str:
    res = ws.run(name, args)
    assert res.ok, res.output
    return res.output


def err(ws: Workspace, name: str, **args: object) -> str:
    res = ws.run(name, args)
    assert not res.ok, res.output
    assert res.output.startswith("error: ") and "\n" not in res.output, res.output
    return res.output


def alive(pid: int) -> bool:
    """Running (zombies count as dead: pid 1 in a container may never reap them)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def wait_pid(pidfile: Path) -> int:
    for _ in range(200):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.01)
    raise AssertionError(f"{pidfile} never written")


# ----------------------------------------------------------------------------------------------- schemas


def test_schemas_are_well_formed() -> None:
    assert [s["function"]["name"] for s in TOOL_SCHEMAS] == list(TOOL_NAMES)
    for s in TOOL_SCHEMAS:
        assert s["type"] == "function"
        params = s["function"]["parameters"]
        assert params["type"] == "object" and params["additionalProperties"] is False
        assert set(params["required"]) <= set(params["properties"])
        assert len(s["function"]["description"]) < 160  # a 135M model reads these
        for spec in params["properties"].values():
            assert spec["type"] in ("string", "integer", "boolean")


def test_validate_args_checks_and_fills_defaults() -> None:
    assert validate_args("read", {"path": "a"}) == {"path": "a", "offset": 1, "limit": 400}
    assert validate_args("grep", {"pattern": "x"}) == {"pattern": "x", "path": ".", "include": None}
    assert validate_args("bash", {"command": "ls", "timeout": None})["timeout"] is None
    assert validate_args("replace", {"path": "a", "old_string": "x", "new_string": "y"})["replace_all"] is False
    with pytest.raises(ToolError, match="argument 'replace_all' of replace must be true or false, got integer"):
        validate_args("replace", {"path": "a", "old_string": "x", "new_string": "y", "replace_all": 1})
    cases: list[tuple[str, object, str]] = [
        ("nope", {}, "unknown tool 'nope'"),
        ("read", {}, "missing required argument 'path'"),
        ("read", {"path": "a", "x": 1}, "unexpected argument 'x' for read"),
        ("read", {"path": "a", "offset": True}, "must be an integer, got boolean"),
        ("read", {"path": "a", "offset": "3"}, "must be an integer, got string"),
        ("read", {"path": "a", "offset": 0}, "must be >= 1, got 0"),
        ("write", {"path": "a", "content": 3}, "'content' of write must be a string, got integer"),
        ("bash", {"command": "ls", "timeout": 10**6}, "must be <= 3600"),
        ("glob", ["*"], "must be a JSON object"),
    ]
    for name, args, expected in cases:
        with pytest.raises(ToolError, match=re.escape(expected)):
            validate_args(name, args)


def test_run_never_raises_on_bad_calls(ws: Workspace) -> None:
    for name, args in [("nope", {}), ("read", None), ("read", {"path": ["a"]}), (None, {}), ("bash", 5)]:
        res = ws.run(name, args)  # type: ignore[arg-type]
        assert isinstance(res, ToolResult) and not res.ok and res.output.startswith("error: ")


# -------------------------------------------------------------------------------------------------- read


def test_read_numbers_lines_like_cat_n(ws: Workspace) -> None:
    (ws.root / "f.py").write_text("a\nb\nc\n")
    assert ok(ws, "read", path="f.py") == "     1\ta\n     2\tb\n     3\tc"


def test_read_offset_limit_and_remaining_note(ws: Workspace) -> None:
    """A window of `limit` lines from `offset`, at least MIN_READ_LINES (40) of them (the 0.5B model paged
    through files 10 lines a turn), and a note with the offset to continue from."""
    (ws.root / "f.txt").write_text("".join(f"l{i}\n" for i in range(1, 101)))
    out = ok(ws, "read", path="f.txt", offset=3, limit=50).splitlines()
    assert out[:2] == ["     3\tl3", "     4\tl4"] and out[-2] == "    52\tl52"
    assert out[-1] == "[48 more lines; use offset=53 to continue]"
    small = ok(ws, "read", path="f.txt", offset=3, limit=4).splitlines()
    assert len(small) == 41 and small[-2] == "    42\tl42" and small[-1] == "[58 more lines; use offset=43 to continue]"
    assert ok(ws, "read", path="f.txt", offset=97, limit=4).splitlines()[-1] == "   100\tl100"
    assert "offset 101 is past the end: f.txt has 100 lines" in err(ws, "read", path="f.txt", offset=101)
    assert ws.preview("read", {"path": "f.txt", "offset": 3, "limit": 4}) == "read f.txt (lines 3-42 of 100)"
    # the preview says what the read will show: the output cap's cut, the file's end, or the tool's refusal
    assert ws.preview("read", {"path": "f.txt", "offset": 97}) == "read f.txt (lines 97-100 of 100)"
    capped = Workspace(ws.root, read_cap=260)
    assert capped.preview("read", {"path": "f.txt"}) == "read f.txt (lines 1-6 of 100)"
    assert ws.preview("read", {"path": "f.txt", "offset": 101}) == ("read f.txt: offset 101 is past the end: f.txt "
                                                                    "has 100 lines")  # asked about: not "error: …"
    (ws.root / "e.txt").write_text("")
    assert ws.preview("read", {"path": "e.txt"}) == "read e.txt (empty)"


def test_read_default_limit_is_400(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("x\n" * 1000)
    out = ok(ws, "read", path="big.txt").splitlines()
    assert len(out) == 401 and out[-1] == "[600 more lines; use offset=401 to continue]"


def test_read_counts_last_line_without_newline_and_keeps_cr_out(ws: Workspace) -> None:
    (ws.root / "f").write_bytes(b"a\r\n" + b"x\n" * 39 + b"b\x0cc\nlast")  # a form feed splits no line
    out = ok(ws, "read", path="f", limit=1).splitlines()
    assert out[0] == "     1\ta" and out[-1] == "[2 more lines; use offset=41 to continue]"
    assert ok(ws, "read", path="f", offset=42) == "    42\tlast"


def test_read_empty_binary_directory_missing(ws: Workspace) -> None:
    (ws.root / "empty").write_text("")
    assert "is empty" in ok(ws, "read", path="empty")
    (ws.root / "bin").write_bytes(b"abc\x00def")
    assert "binary" in err(ws, "read", path="bin")
    (ws.root / "d").mkdir()
    assert "d is a directory" in err(ws, "read", path="d")
    assert "nope.txt does not exist" in err(ws, "read", path="nope.txt")
    os.mkfifo(ws.root / "fifo")
    assert "not a regular file" in err(ws, "read", path="fifo")


def test_missing_path_names_the_files_it_probably_meant(ws: Workspace) -> None:
    """A guessed module path (`pkg.py` for `pkg/__init__.py`, a wrong directory) gets the project's
    real candidates in its one-line error; nothing close gets none; packaging metadata is no candidate."""
    (ws.root / "inflection").mkdir()
    (ws.root / "inflection" / "__init__.py").write_text("def pluralize(w): return w + 's'\n")
    (ws.root / "tests").mkdir()
    (ws.root / "tests" / "test_core.py").write_text("")
    (ws.root / "inflection.egg-info").mkdir()
    (ws.root / "inflection.egg-info" / "inflection.py").write_text("pluralize\n")
    assert err(ws, "read", path="inflection.py").endswith("does not exist; did you mean inflection/__init__.py?")
    assert "did you mean tests/test_core.py?" in err(ws, "read", path="test_core.py")
    assert "did you mean tests/test_core.py?" in err(ws, "grep", pattern="x", path="src/test_cores.py")
    assert err(ws, "read", path="zzz_unrelated.txt").endswith("zzz_unrelated.txt does not exist")
    # a module or package spelled close to the missing name (the model read `scheduler` for `schedule`)
    assert err(ws, "read", path="inflections").endswith("did you mean inflection/__init__.py?")
    # grep and glob do not walk into *.egg-info (copies of names, never the code)
    assert "egg-info" not in ok(ws, "grep", pattern="pluralize", path=".")
    assert "egg-info" not in ok(ws, "glob", pattern="**/*.py")


def test_read_non_utf8_is_replaced(ws: Workspace) -> None:
    (ws.root / "latin1.txt").write_bytes(b"caf\xe9\n")
    assert ok(ws, "read", path="latin1.txt") == "     1\tcaf\ufffd"


def test_read_stops_at_the_result_cap_and_says_where_to_continue(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, result_cap=2000)
    (tmp_path / "wide.txt").write_text(("y" * 300 + "\n") * 50)
    out = ws.run("read", {"path": "wide.txt"}).output
    assert len(out) <= 2000
    last = out.splitlines()[-1]
    assert last.startswith("[output cap reached;") and "use offset=" in last
    (tmp_path / "oneline.txt").write_text("z" * 100_000)
    out = ws.run("read", {"path": "oneline.txt"}).output
    assert len(out) <= 2000 and "line cut" in out


def test_read_cap_bounds_a_read_alone_and_never_above_the_result_cap(tmp_path: Path) -> None:
    (tmp_path / "long.py").write_text("".join(f"x{i} = {i}\n" for i in range(1000)))  # 9-10 characters a line
    (tmp_path / "hits.py").write_text("a = 1\n" * 1000)
    ws = Workspace(tmp_path, result_cap=12000, read_cap=1000)
    out = ws.run("read", {"path": "long.py"}).output
    shown = [line for line in out.splitlines() if not line.startswith("[")]
    # 800 characters of lines (the cap less 200 for the note): 10 lines of 14 and 41 of 16
    assert len(out) <= 1000 and len(shown) == 51 and out.endswith("[output cap reached; 949 more lines; use offset=52 "
                                                                   "to continue]")
    assert len(ws.run("grep", {"pattern": "a", "path": "hits.py"}).output) > 1000  # other tools: result_cap
    assert Workspace(tmp_path, result_cap=800, read_cap=5000).read_cap == 800
    assert Workspace(tmp_path, result_cap=800).read_cap == 800  # 0: the result cap


def test_read_cap_auto_is_small_for_a_local_model_on_a_cpu_only() -> None:
    from continualcode.build import CPU_READ_CAP, read_cap
    from continualcode.config import parse_config

    assert read_cap(parse_config(["device=cpu"])) == CPU_READ_CAP == 4000
    assert read_cap(parse_config(["device=cpu", "read_cap=6000"])) == 6000
    assert read_cap(parse_config(["device=cpu", "read_cap=20000"])) == 12000  # never above result_cap
    assert read_cap(parse_config(["device=cuda"])) == read_cap(parse_config(["backend=tinker"])) == 12000


def test_a_read_from_the_top_of_a_long_python_file_ends_with_its_definitions(tmp_path: Path) -> None:
    """The map of classes and functions (`outline.py`) follows the lines when the read cannot show the whole
    file, takes its room from the lines (the note's offset still names the first line not shown), and is
    left out for a later window, a file shown whole, a non-Python file and with read_outline off."""
    ws = Workspace(tmp_path, result_cap=3000, read_outline=True)
    body = "".join(f"X{i} = {i}\n" for i in range(300))
    src = body + 'def underscore(word):\n    """Make an underscored, lowercase form."""\n    return word\n'
    (tmp_path / "m.py").write_text(src)
    out = ws.run("read", {"path": "m.py"}).output
    lines, _, outline = out.partition("\nClasses and functions in m.py")
    assert outline.endswith("  301: def underscore(word) \u2014 Make an underscored, lowercase form.")
    note = lines.splitlines()[-1]
    first_hidden = int(note.rsplit("offset=", 1)[1].split()[0])
    assert lines.splitlines()[-2].startswith(f"{first_hidden - 1:6}\t") and len(out) <= 3000
    assert f"{303 - first_hidden + 1} more lines" in note
    assert "Classes and functions" not in ws.run("read", {"path": "m.py", "offset": 2}).output
    (tmp_path / "m.txt").write_text(src)
    assert "Classes and functions" not in ws.run("read", {"path": "m.txt"}).output
    (tmp_path / "short.py").write_text('def f():\n    """F."""\n')
    assert "Classes and functions" not in ws.run("read", {"path": "short.py"}).output
    off = Workspace(tmp_path, result_cap=3000)  # the default: off
    assert "Classes and functions" not in off.run("read", {"path": "m.py"}).output


# ------------------------------------------------------------------------------------------------- write


def test_write_creates_parents_and_reports_lines(ws: Workspace) -> None:
    assert ok(ws, "write", path="a/b/c.py", content="x\ny\n") == "wrote 2 lines to a/b/c.py (new file)"
    assert (ws.root / "a/b/c.py").read_text() == "x\ny\n"
    assert ok(ws, "write", path="a/b/c.py", content="z") == "wrote 1 line to a/b/c.py"
    assert (ws.root / "a/b/c.py").read_text() == "z"


def test_write_keeps_mode_and_new_files_follow_umask(ws: Workspace) -> None:
    script = ws.root / "run.sh"
    script.write_text("echo old\n")
    script.chmod(0o751)
    ok(ws, "write", path="run.sh", content="echo new\n")
    assert stat.S_IMODE(script.stat().st_mode) == 0o751
    old = os.umask(0o027)
    try:
        ok(ws, "write", path="new.txt", content="n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((ws.root / "new.txt").stat().st_mode) == 0o640


def test_write_leaves_no_temp_file_and_keeps_symlink(ws: Workspace) -> None:
    (ws.root / "real.txt").write_text("old")
    (ws.root / "link.txt").symlink_to("real.txt")
    ok(ws, "write", path="link.txt", content="new")
    assert (ws.root / "link.txt").is_symlink() and (ws.root / "real.txt").read_text() == "new"
    assert sorted(p.name for p in ws.root.iterdir()) == ["link.txt", "real.txt"]


def test_write_refuses_directory(ws: Workspace) -> None:
    (ws.root / "d").mkdir()
    assert "d is a directory" in err(ws, "write", path="d", content="x")
    assert "ends with '/'" in err(ws, "write", path="new/", content="x")


def test_write_removes_temp_files_orphaned_by_dead_writers(ws: Workspace) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    orphan = ws.root / f"{TEMP_PREFIX}{int(dead.stdout)}.abc123"
    orphan.write_text("half")
    mine = ws.root / f"{TEMP_PREFIX}{os.getpid()}.abc123"  # a live writer's temp file is left alone
    mine.write_text("busy")
    assert ok(ws, "glob", pattern="*") == "no files match '*' in ."  # hidden from glob
    ok(ws, "write", path="f.txt", content="x")
    assert not orphan.exists() and mine.exists()


def test_write_refuses_a_fifo_as_its_preview_does(ws: Workspace) -> None:
    fifo = ws.root / "pipe"
    os.mkfifo(fifo)
    assert "pipe is not a regular file" in ws.preview("write", {"path": "pipe", "content": "x\n"})
    assert "pipe is not a regular file" in err(ws, "write", path="pipe", content="x\n")
    assert stat.S_ISFIFO(fifo.lstat().st_mode), "the FIFO must still be there"


def test_write_preview_is_a_diff_and_touches_nothing(ws: Workspace) -> None:
    f = ws.root / "f.py"
    f.write_text("a\nb\n")
    before = f.stat().st_mtime_ns
    diff = ws.preview("write", {"path": "f.py", "content": "a\nc\n"})
    assert diff.splitlines() == ["--- a/f.py", "+++ b/f.py", "@@ -1,2 +1,2 @@", " a", "-b", "+c"]
    assert f.read_text() == "a\nb\n" and f.stat().st_mtime_ns == before
    assert ws.preview("write", {"path": "sub/new.py", "content": "x\n"}).splitlines()[-1] == "+x"
    assert not (ws.root / "sub").exists()
    assert ws.preview("write", {"path": "../x", "content": ""}).startswith("error: path '../x' is outside")


# -------------------------------------------------------------------------------------------- edit_lines


@pytest.fixture
def five(ws: Workspace) -> Path:
    f = ws.root / "f.py"
    f.write_text("1\n2\n3\n4\n5\n")
    return f


def edit(ws: Workspace, start: int, end: int, content: str, path: str = "f.py") -> str:
    return ok(ws, "edit_lines", path=path, start_line=start, end_line=end, content=content)


def test_edit_replace(ws: Workspace, five: Path) -> None:
    out = edit(ws, 2, 3, "two\nthree\nthree.5")
    assert five.read_text() == "1\ntwo\nthree\nthree.5\n4\n5\n"
    assert out.splitlines()[0] == "replaced lines 2-3 of f.py with 3 lines (now 6 lines)"
    assert "     2\ttwo" in out and "     5\t4" in out  # numbered context around the change


def test_edit_insert_before_a_line_and_at_the_top(ws: Workspace, five: Path) -> None:
    assert "inserted before line 3" in edit(ws, 3, 2, "2.5")
    assert five.read_text() == "1\n2\n2.5\n3\n4\n5\n"
    edit(ws, 1, 0, "0\n")
    assert five.read_text() == "0\n1\n2\n2.5\n3\n4\n5\n"


def test_edit_append_and_delete(ws: Workspace, five: Path) -> None:
    assert "appended" in edit(ws, 6, 5, "6")
    assert five.read_text() == "1\n2\n3\n4\n5\n6\n"
    out = edit(ws, 2, 4, "")
    assert five.read_text() == "1\n5\n6\n" and "deleted lines 2-4 of f.py (now 3 lines)" in out
    assert "(file is now empty)" in edit(ws, 1, 3, "")
    assert five.read_text() == ""
    edit(ws, 1, 0, "first")  # an empty file gets a final newline
    assert five.read_text() == "first\n"


def test_edit_file_without_trailing_newline_never_merges_lines(ws: Workspace) -> None:
    f = ws.root / "f"
    f.write_text("a\nb")
    edit(ws, 3, 2, "c\n", path="f")
    assert f.read_text() == "a\nb\nc\n"
    f.write_text("a\nb")
    edit(ws, 3, 2, "c", path="f")
    assert f.read_text() == "a\nb\nc"  # the file's missing final newline is kept, lines stay apart
    f.write_text("a\nb")
    edit(ws, 2, 2, "B", path="f")
    assert f.read_text() == "a\nB"
    f.write_text("a\nb")
    edit(ws, 1, 1, "A", path="f")
    assert f.read_text() == "A\nb"


def test_edit_content_without_newline_gets_one_before_other_lines(ws: Workspace, five: Path) -> None:
    edit(ws, 5, 5, "five")
    assert five.read_text().endswith("4\nfive\n")  # file ended with a newline: kept
    edit(ws, 1, 2, "x")
    assert five.read_text() == "x\n3\n4\nfive\n"


def test_edit_out_of_range_messages_tell_the_length(ws: Workspace) -> None:
    (ws.root / "f.py").write_text("x\n" * 10)
    msg = err(ws, "edit_lines", path="f.py", start_line=12, end_line=12, content="y")
    assert msg == (
        "error: start_line 12 is past the end: f.py has 10 lines (use start_line=11, end_line=10 to append)"
    )
    msg = err(ws, "edit_lines", path="f.py", start_line=9, end_line=11, content="y")
    assert "end_line 11 is past the end: f.py has 10 lines" in msg
    msg = err(ws, "edit_lines", path="f.py", start_line=5, end_line=2, content="y")
    assert "use end_line=4 to insert before line 5" in msg and "10 lines" in msg
    missing = err(ws, "edit_lines", path="no.py", start_line=1, end_line=0, content="")
    assert "no.py does not exist (use write" in missing
    assert (ws.root / "f.py").read_text() == "x\n" * 10


def test_edit_keeps_mode_crlf_and_foreign_bytes(ws: Workspace) -> None:
    f = ws.root / "w.txt"
    f.write_bytes(b"caf\xe9\r\nb\r\nc\r\n")
    f.chmod(0o700)
    edit(ws, 2, 2, "B\nBB", path="w.txt")
    assert f.read_bytes() == b"caf\xe9\r\nB\r\nBB\r\nc\r\n"
    assert stat.S_IMODE(f.stat().st_mode) == 0o700
    (ws.root / "bin").write_bytes(b"\x00\x01")
    assert "binary" in err(ws, "edit_lines", path="bin", start_line=1, end_line=1, content="")


def test_edit_keeps_a_utf8_bom_when_line_1_is_replaced(ws: Workspace) -> None:
    f = ws.root / "bom.py"
    f.write_bytes(b"\xef\xbb\xbfx = 1\r\ny = 2\r\n")
    edit(ws, 1, 1, "x = 10\n", path="bom.py")
    assert f.read_bytes() == b"\xef\xbb\xbfx = 10\r\ny = 2\r\n"
    edit(ws, 1, 0, "# top\n", path="bom.py")  # insert before line 1
    assert f.read_bytes() == b"\xef\xbb\xbf# top\r\nx = 10\r\ny = 2\r\n"
    edit(ws, 1, 1, "\ufeff# one BOM only\n", path="bom.py")  # a BOM in the content is not doubled
    assert f.read_bytes().startswith(b"\xef\xbb\xbf# one BOM only\r\n")
    edit(ws, 1, 3, "", path="bom.py")  # deleting every line keeps the file's BOM
    assert f.read_bytes() == b"\xef\xbb\xbf"
    assert "(no changes" not in ws.preview("edit_lines", {"path": "bom.py", "start_line": 1, "end_line": 0,
                                                          "content": "z\n"})


def test_edit_preview_matches_the_edit_without_touching_disk(ws: Workspace, five: Path) -> None:
    args = {"path": "f.py", "start_line": 2, "end_line": 2, "content": "TWO"}
    diff = ws.preview("edit_lines", args)
    assert five.read_text() == "1\n2\n3\n4\n5\n"
    assert "-2\n+TWO" in diff and diff.startswith("--- a/f.py\n+++ b/f.py")
    bad = ws.preview("edit_lines", {**args, "start_line": 9, "end_line": 9})
    assert bad.startswith("error: start_line 9 is past the end: f.py has 5 lines")


# -------------------------------------------------------------------------------------------- glob, grep


@pytest.fixture
def tree(ws: Workspace) -> Workspace:
    files = ["a.py", "b.txt", "src/m.py", "src/deep/n.py", "src/deep/data.bin", ".hidden.py"]
    skipped = [
        ".git/x.py",
        "node_modules/y.py",
        "src/__pycache__/z.py",
        ".venv/v.py",
        "venv/w.py",
        "env1/pyvenv.cfg",
        "env1/lib/site.py",
    ]
    for name in files + skipped:
        (ws.root / name).parent.mkdir(parents=True, exist_ok=True)
        (ws.root / name).write_text(f"# {name}\nimport os\n")
    (ws.root / "src/deep/data.bin").write_bytes(b"import os\x00")
    return ws


def test_glob_recursive_relative_sorted_and_skipping(tree: Workspace) -> None:
    every_py = [".hidden.py", "a.py", "src/deep/n.py", "src/m.py"]
    assert ok(tree, "glob", pattern="**/*.py").splitlines() == every_py
    assert ok(tree, "glob", pattern="*.py").splitlines() == [".hidden.py", "a.py"]
    assert ok(tree, "glob", pattern="*.py", path="src").splitlines() == ["src/m.py"]
    assert ok(tree, "glob", pattern="deep/*", path="src").splitlines() == [
        "src/deep/data.bin",
        "src/deep/n.py",
    ]
    assert "src" not in ok(tree, "glob", pattern="*").splitlines()  # files only
    assert ok(tree, "glob", pattern="*.py", path="node_modules") == "node_modules/y.py"  # asked for: shown


def test_glob_cap_and_refusals(ws: Workspace, outside: Path) -> None:
    for i in range(250):
        (ws.root / f"f{i:03}.txt").write_text("")
    out = ok(ws, "glob", pattern="**/*.txt").splitlines()
    assert len(out) == 201 and out[0] == "f000.txt" and out[-1] == "… and 50 more"
    assert "must not contain '..'" in err(ws, "glob", pattern="../*")
    assert "must be relative" in err(ws, "glob", pattern="/etc/*")
    assert "outside the workspace" in err(ws, "glob", pattern="*", path="..")
    (ws.root / "out.txt").symlink_to(outside / "secret.txt")
    (ws.root / "outdir").symlink_to(outside)
    listed = ok(ws, "glob", pattern="**/*")
    assert "out.txt" not in listed and "secret" not in listed
    assert "no files match" in ok(ws, "glob", pattern="*.nothing")


def test_grep_format_sorting_include_and_skipping(tree: Workspace) -> None:
    out = ok(tree, "grep", pattern=r"^import").splitlines()
    # the code first (by name), then the rest: text files, docs (kinds.listing_rank)
    assert out == [f"{p}:2: import os" for p in [".hidden.py", "a.py", "src/deep/n.py", "src/m.py", "b.txt"]]
    assert ok(tree, "grep", pattern="os", include="*.txt") == "b.txt:2: import os"
    one_file = ok(tree, "grep", pattern="import|#", path="src/m.py")
    assert one_file == "src/m.py:1: # src/m.py\nsrc/m.py:2: import os"
    assert "no matches" in ok(tree, "grep", pattern="zzz")
    # an include that matches no file is dropped, and said so (the model passed a file path, or `.*`, as include)
    note = "[no file in . matches include {} (a file-name glob such as *.py): every file was searched]"
    widened = ok(tree, "grep", pattern="^import", include="src/py.typed").splitlines()
    assert widened == [*out, note.format("'src/py.typed'")]
    assert ok(tree, "grep", pattern="zzz", include="") == "no matches for 'zzz' in .\n" + note.format("''")
    assert "no matches" in ok(tree, "grep", pattern="zzz", include="*.py")  # files matched, no line did


def test_grep_shows_the_code_first_then_tests_and_set_up_then_docs(ws: Workspace) -> None:
    """Grepping `xmltodict.unparse`, the 1.5B model was shown its uses in PKG-INFO and README.md first (sorted
    by name) and edited README.md; with 200 hits shown at most, docs could also hide the code altogether."""
    for rel in ("PKG-INFO", "README.md", "tests/test_pkg.py", "setup.py", "pkg/core.py", "docs/conf.py"):
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (ws.root / rel).write_text("unparse()\n")
    hits = [line.split(":")[0] for line in ok(ws, "grep", pattern="unparse").splitlines()]
    assert hits == ["pkg/core.py", "docs/conf.py", "setup.py", "tests/test_pkg.py", "PKG-INFO", "README.md"]


def test_an_empty_grep_says_where_the_pattern_matches_in_the_whole_project_or_as_plain_text(ws: Workspace) -> None:
    """The 0.5B model grepped the wrong file, or the text of a call full of regex characters, and repeated
    the empty search until its turns ran out: an empty result now shows the wider hits, said as such."""
    (ws.root / "lib.py").write_text("def search(s):\n    return parse(s)\n")
    (ws.root / "tests").mkdir()
    (ws.root / "tests/test_lib.py").write_text("x = parse('{name}', 'bob')\n")
    assert ok(ws, "grep", pattern="search", path="tests/test_lib.py") == (
        "no matches for 'search' in tests/test_lib.py\nin the whole project it matches:\nlib.py:1: def search(s):")
    assert ok(ws, "grep", pattern="def search", include="test_*.py") == (
        "no matches for 'def search' in .\nin the whole project it matches:\nlib.py:1: def search(s):")
    assert ok(ws, "grep", pattern="parse('{name}', 'bob')") == (
        "no matches for \"parse('{name}', 'bob')\" in .\nas plain text, in the whole project it matches:\n"
        "tests/test_lib.py:1: x = parse('{name}', 'bob')")
    assert ok(ws, "grep", pattern="zzz", path="tests") == "no matches for 'zzz' in tests"  # nowhere: nothing added
    # a pattern that is a file's path: said so (the model grepped for the file the task named)
    assert ok(ws, "grep", pattern="tests/test_lib.py", include="test_lib.py") == (
        "no matches for 'tests/test_lib.py' in .\n"
        "(tests/test_lib.py is a file of the project: read it to see its lines)")
    assert ok(ws, "grep", pattern="../etc/passwd") == "no matches for '../etc/passwd' in ."
    for i in range(12):
        (ws.root / f"m{i:02}.py").write_text("needle\n")
    wide = ok(ws, "grep", pattern="needle", path="tests").splitlines()
    assert wide[1] == "in the whole project it matches:" and wide[2] == "m00.py:1: needle"
    assert len(wide) == 13 and wide[-1] == "… and 2 more"


def test_an_empty_grep_tries_either_quote_and_the_definition_of_a_dotted_names_last_part(ws: Workspace) -> None:
    """The 1.5B model grepped `pluralize\\('sheep'\\)` where the code says `pluralize("sheep")`, and
    `Job.until` for a method written `def until`, then repeated the empty search: the wider search now tries
    the pattern with either quote, and for a dotted name the definition of its last part (first: grepping
    `xmltodict.unparse` in *.py, the 1.5B model was shown its use in PKG-INFO and rewrote PKG-INFO)."""
    (ws.root / "pkg").mkdir()
    (ws.root / "pkg/core.py").write_text(
        'class Job:\n    def until(self, t):\n        return t\n\nx = pluralize("sheep")\n')
    assert ok(ws, "grep", pattern=r"pluralize\('sheep'\)", path="pkg/core.py") == (
        "no matches for \"pluralize\\('sheep'\\)\" in pkg/core.py\n"
        "with either quote, in the whole project it matches:\n"
        'pkg/core.py:5: x = pluralize("sheep")')
    assert ok(ws, "grep", pattern="pluralize('sheep')") == (
        "no matches for \"pluralize('sheep')\" in .\nwith either quote, in the whole project it matches:\n"
        'pkg/core.py:5: x = pluralize("sheep")')
    for dotted in ("Job.until", r"Job\.until", "pkg.core.Job.until()", "every(2).until", "s.every(2).until(t)"):
        assert ok(ws, "grep", pattern=dotted, path="pkg") == (
            f"no matches for {quote(dotted)} in pkg\nthe definition of 'until', in the whole project it matches:\n"
            "pkg/core.py:2:     def until(self, t):")
    (ws.root / "README.md").write_text("Use it as pkg.until(t) or Job.until(t).\n")
    assert ok(ws, "grep", pattern="Job.until", include="*.py") == (  # the definition before the docs' use
        "no matches for 'Job.until' in .\nthe definition of 'until', in the whole project it matches:\n"
        "pkg/core.py:2:     def until(self, t):")
    assert ok(ws, "grep", pattern="Job.since") == "no matches for 'Job.since' in ."  # nowhere: nothing added
    assert ok(ws, "grep", pattern="1.2.3") == "no matches for '1.2.3' in ."  # a version is not a dotted name


def test_a_grep_of_a_dotted_name_that_found_only_its_uses_goes_on_to_its_definition(ws: Workspace) -> None:
    """Grepping `xmltodict.unparse`, the 1.5B model was shown its uses in the docs, answered from those and
    repeated the search: a dotted name's search whose hits hold no definition of its last name goes on to
    that definition (the whole project); one whose hits hold it, or a plain name, is left as it is."""
    (ws.root / "pkg").mkdir()
    (ws.root / "pkg/core.py").write_text("def unparse(d):\n    return str(d)\n")
    (ws.root / "README.md").write_text(">>> print(xmltodict.unparse(doc))\n")
    assert ok(ws, "grep", pattern="xmltodict.unparse") == (
        "README.md:1: >>> print(xmltodict.unparse(doc))\n"
        "its definition ('unparse'), in the whole project:\npkg/core.py:1: def unparse(d):")
    assert ok(ws, "grep", pattern="xmltodict.unparse", path="README.md").endswith("pkg/core.py:1: def unparse(d):")
    (ws.root / "pkg/use.py").write_text("core.unparse(x)\n")
    assert ok(ws, "grep", pattern="unparse") == (  # a plain name: its own hits, nothing added
        "pkg/core.py:1: def unparse(d):\npkg/use.py:1: core.unparse(x)\nREADME.md:1: >>> print(xmltodict.unparse(doc))")
    (ws.root / "pkg/core.py").write_text("def unparse_all(d):\n    return core.unparse(d)\n")
    assert ok(ws, "grep", pattern="core.unparse") == (  # defined nowhere (unparse_all is another name)
        "pkg/core.py:2:     return core.unparse(d)\npkg/use.py:1: core.unparse(x)")
    (ws.root / "pkg/core.py").write_text("class unparse:\n    pass\n")
    assert ok(ws, "grep", pattern=r"(core|pkg)\.unparse") == "pkg/use.py:1: core.unparse(x)"  # not a dotted name
    assert ok(ws, "grep", pattern="core.unparse").endswith("in the whole project:\npkg/core.py:1: class unparse:")


def test_grep_dollar_matches_at_the_end_of_crlf_lines(ws: Workspace) -> None:
    (ws.root / "dos.txt").write_bytes(b"alpha\r\nbeta;\r\ngamma\r\n")
    out = ok(ws, "grep", pattern=r";$", path="dos.txt")
    assert out == "dos.txt:2: beta;"
    assert ok(ws, "grep", pattern=r"^gamma$") == "dos.txt:3: gamma"


def test_grep_invalid_regex_cap_and_refusals(ws: Workspace, outside: Path) -> None:
    (ws.root / "code.py").write_text('word = re.sub(r"_id$", "", word)\n')
    assert ok(ws, "grep", pattern='re.sub(r"_id$') == (  # the 1.5B model's grep for code it had seen
        'code.py:1: word = re.sub(r"_id$", "", word)\n'
        "[not a valid regex (missing ), unterminated subpattern at position 6): searched as plain text]")
    assert ok(ws, "grep", pattern="[").startswith("no matches for '[' in .\n[not a valid regex (")
    (ws.root / "many.txt").write_text("hit\n" * 300)
    out = ok(ws, "grep", pattern="hit").splitlines()
    assert len(out) == 201 and out[0] == "many.txt:1: hit" and out[-1] == "… and 100 more matches"
    assert "outside the workspace" in err(ws, "grep", pattern="x", path=str(outside))
    (ws.root / "link").symlink_to(outside)
    assert "no matches" in ok(ws, "grep", pattern="SECRET")


# -------------------------------------------------------------------------------------------------- bash


def test_bash_exit_code_merged_output_and_cwd(ws: Workspace) -> None:
    res = ws.run("bash", {"command": "echo out; echo err >&2; pwd; exit 3"})
    assert not res.ok and res.output == f"out\nerr\n{ws.root}\n[exit code 3]"
    assert ok(ws, "bash", command="true") == "(no output)\n[exit code 0]"
    assert ok(ws, "bash", command="cat") == "(no output)\n[exit code 0]"  # stdin is /dev/null


def test_bash_timeout_kills_children_that_ignore_sigterm(ws: Workspace) -> None:
    pidfile = ws.root / "pid"
    cmd = "trap '' TERM; bash -c 'trap \"\" TERM; echo $$ > pid; while :; do sleep 0.05; done'"
    start = time.monotonic()
    res = ws.run("bash", {"command": cmd, "timeout": 1})
    assert time.monotonic() - start < 4
    assert not res.ok and res.output.endswith("[timed out after 1s, killed]")
    assert not alive(wait_pid(pidfile))


def test_bash_kills_background_leftovers_and_setsid_daemons(ws: Workspace) -> None:
    cmd = "sleep 60 & echo $! > bg; setsid sleep 60 & echo $! > sd; "
    cmd += "setsid bash -c 'sleep 60 & echo $! > df' & sleep 0.2"
    start = time.monotonic()
    ok(ws, "bash", command=cmd)
    assert time.monotonic() - start < 3
    for name in ("bg", "sd", "df"):
        assert not alive(wait_pid(ws.root / name)), name


def test_bash_limitation_daemon_that_drops_the_marker_escapes(ws: Workspace) -> None:
    """Documented limitation: a process that leaves the process group AND clears its environment
    (so the CONTINUALCODE_BASH_ID marker is gone) cannot be found without cgroups."""
    ok(ws, "bash", command="env -i setsid sleep 60 > /dev/null 2>&1 & echo $! > pid; sleep 0.3")
    pid = wait_pid(ws.root / "pid")
    try:
        assert alive(pid)
    finally:
        os.kill(pid, signal.SIGKILL)


def test_bash_endless_output_is_capped_and_prompt(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, result_cap=3000)
    start = time.monotonic()
    res = ws.run("bash", {"command": "yes"})
    assert time.monotonic() - start < 5
    assert len(res.output) <= 3000 and "bytes elided" in res.output
    assert res.output.startswith("y\ny\n") and res.output.endswith("killed]") and not res.ok


def test_bash_long_output_keeps_head_and_tail(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, result_cap=2000)
    out = ws.run("bash", {"command": "seq 1 100000"}).output
    assert out.startswith("1\n2\n") and out.endswith("99999\n100000\n[exit code 0]") and len(out) <= 2000
    assert "bytes elided …]" in out


def test_bash_output_loses_its_terminal_escapes_also_across_chunks(ws: Workspace) -> None:
    """A project's pytest set to `--color=yes` (humanize) gave the model `\\x1b[31m` around its lines (a user
    trial); colours, titles and charset switches are dropped, an escape split between two reads too, and an
    escape never closed leaves its text."""
    from continualcode.tools.bash import _HeadTail, strip_escapes

    out = ok(ws, "bash", command=r"printf '\033[31m\033[1mFAILED\033[0m t.py\n\033]0;title\007\033(Bdone\n'")
    assert out == "FAILED t.py\ndone\n[exit code 0]", out
    buf = _HeadTail(100, 100)
    for chunk in (b"a\x1b[3", b"1mred\x1b", b"[0m b\x1b", b"[2"):
        buf.feed(chunk)
    assert buf.text() == "ared b[2" and buf.raw == 18 and buf.total == 8
    assert strip_escapes(b"x\x1b[1") == (b"x", b"\x1b[1") and strip_escapes(b"\x1b[1;32mok") == (b"ok", b"")

def test_bash_binary_output(ws: Workspace) -> None:
    out = ok(ws, "bash", command=r"printf 'a\xff\xfeb'")
    assert out.startswith("a\ufffd\ufffdb")


def test_bash_hides_secrets_unless_asked(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "TINKER_API_KEY": "tk-1",
        "HF_TOKEN": "hf-2",
        "MY_API_KEY": "k-3",
        "DB_PASSWORD": "p-4",
        "GH_TOKEN": "g-5",
        "APP_SECRET": "s-6",
        "OPENAI_API_KEY": "o-7",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("CC_VISIBLE", "plain-8")
    out = ok(ws, "bash", command="env")
    assert "plain-8" in out and not any(v in out for v in secrets.values())
    out = ok(Workspace(ws.root, pass_secrets=True), "bash", command="env")
    assert all(v in out for v in secrets.values())


def test_bash_hides_secrets_by_any_name_and_url_passwords(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    secrets = {
        "AWS_SECRET_ACCESS_KEY": "aws-1",
        "API_KEY": "api-2",
        "SECRET_KEY": "sk-3",
        "PASSWORD": "pw-4",
        "GH_PAT": "pat-5",
        "OPENAI_KEY": "oai-6",
        "MYSQL_PASSWD": "my-7",
        "GOOGLE_APPLICATION_CREDENTIALS": "cred-8",
        "slack_bot_token": "lower-9",
        "APIKEY": "ak-10",
        "MYSQL_PWD": "mypwd-11",
    }
    for k, v in secrets.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DATABASE_URL", "postgres://bob:db-pass-11@db.example:5432/app")
    monkeypatch.setenv("HTTPS_PROXY", "http://proxyuser:proxy-pass-12@proxy:3128")
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.example/simple")  # no password: passes unchanged
    out = ok(ws, "bash", command="env")
    assert not any(v in out for v in secrets.values()), out
    assert "db-pass-11" not in out and "postgres://bob:***@db.example:5432/app" in out
    assert "proxy-pass-12" not in out and "http://proxyuser:***@proxy:3128" in out
    assert "PIP_INDEX_URL=https://pypi.example/simple" in out
    assert f"\nPWD={ws.root}\n" in f"\n{out}"  # the working directory is no secret
    out = ok(Workspace(ws.root, pass_secrets=True), "bash", command="env")
    assert all(v in out for v in secrets.values()) and "db-pass-11" in out


AGENT_CHILD = textwrap.dedent(
    """
    import os, sys
    from pathlib import Path
    from continualcode.tools import Workspace
    os.environ["CC_AGENT_ONLY_SECRET"] = "agent-env-7f3a"  # set after start: only the agent has it
    res = Workspace(Path(sys.argv[1])).run("bash", {"command": "cat /proc/$PPID/environ; echo; echo ppid=$PPID"})
    print(res.output)
    print("agent", os.getpid())
    """
)


def world_runnable_python() -> str | None:
    """A python that a process running as nobody can start (a root-only pyenv cannot): sys.executable,
    else a python3 on PATH. Only the standard library is needed (continualcode.tools imports no more)."""

    def runnable(p: str) -> bool:
        real = os.path.realpath(p)
        parts = Path(real).parents
        return os.path.isfile(real) and os.stat(real).st_mode & 0o001 and all(
            os.stat(d).st_mode & 0o001 for d in parts)

    candidates = [sys.executable] + [os.path.join(d, "python3") for d in os.environ.get("PATH", "").split(os.pathsep)]
    return next((c for c in candidates if os.path.exists(c) and runnable(c)), None)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl and /proc are Linux")
def test_an_unconfined_command_cannot_read_the_agents_environment() -> None:
    """/proc/$PPID/environ is the agent's: PR_SET_DUMPABLE=0 closes it to processes of the same user.
    Root keeps CAP_SYS_PTRACE and still reads it, so as root the agent runs as nobody here."""
    as_nobody = os.getuid() == 0
    python = world_runnable_python() if as_nobody else sys.executable
    if python is None or (as_nobody and not all(os.stat(d).st_mode & 0o001 for d in (REPO, *REPO.parents))):
        pytest.skip("no python and checkout that the user nobody can run")
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    def demote() -> None:
        os.setgid(65534)
        os.setuid(65534)

    root = Path(tempfile.mkdtemp(prefix="cc-undumpable-"))
    try:
        root.chmod(0o777)
        r = subprocess.run([python, "-c", AGENT_CHILD, str(root)], env=env, capture_output=True, text=True,
                           timeout=60, preexec_fn=demote if as_nobody else None, cwd=root)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    assert r.returncode == 0, r.stderr
    agent = int(r.stdout.rsplit("agent ", 1)[1])
    assert f"ppid={agent}" in r.stdout, r.stdout  # the command's parent is the agent
    assert "agent-env-7f3a" not in r.stdout
    assert "Permission denied" in r.stdout


def test_the_agent_is_made_undumpable_only_when_bash_runs_unconfined(ws: Workspace) -> None:
    import ctypes

    ok(ws, "bash", command="true")
    libc = ctypes.CDLL(None)
    assert libc.prctl(3, 0, 0, 0, 0) == 0  # PR_GET_DUMPABLE


def test_bash_timeout_is_clamped_to_the_configured_one(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, bash_timeout=1)
    assert ws.preview("bash", {"command": "sleep 5", "timeout": 3600}) == "$ sleep 5  (timeout 1s, asked 3600s)"
    start = time.monotonic()
    res = ws.run("bash", {"command": "sleep 5", "timeout": 3600})
    assert time.monotonic() - start < 4
    assert res.output.endswith("[timed out after 1s, killed]")
    assert ws.preview("bash", {"command": "ls"}) == "$ ls"


def test_bash_preview() -> None:
    ws = Workspace(Path("/"))
    assert ws.preview("bash", {"command": "ls -la"}) == "$ ls -la"
    assert ws.preview("bash", {"command": "make", "timeout": 5}) == "$ make  (timeout 5s)"


@pytest.mark.parametrize(
    ("name", "args", "says"),
    [
        ("bash", {"command": "echo a\x00b"}, "command holds a NUL byte at position 6; bash cannot run it"),
        ("bash", {"command": "echo \ud800"}, "argument 'command' of bash holds a lone surrogate (\\ud800 at"),
        ("read", {"path": "\ud800.py"}, "argument 'path' of read holds a lone surrogate (\\ud800 at position 0)"),
        ("write", {"path": "a\udfff", "content": "x"}, "argument 'path' of write holds a lone surrogate"),
        ("write", {"path": "a.txt", "content": "x\ud83d"}, "argument 'content' of write holds a lone surrogate"),
        ("glob", {"pattern": "*", "path": "\ud800"}, "argument 'path' of glob holds a lone surrogate"),
        ("grep", {"pattern": "\ud800"}, "argument 'pattern' of grep holds a lone surrogate"),
    ],
)
def test_nul_and_lone_surrogates_are_one_clear_line_in_run_and_preview(ws: Workspace, name: str, args: dict,
                                                                       says: str) -> None:
    for text in (err(ws, name, **args), ws.preview(name, args)):
        assert says in text and "\n" not in text and "Error" not in text, text
    assert not (ws.root / "a.txt").exists()


# ----------------------------------------------------------------------------------------- confinement

PATH_TOOLS = {
    "read": lambda p: {"path": p},
    "write": lambda p: {"path": p, "content": "pwned"},
    "edit_lines": lambda p: {"path": p, "start_line": 1, "end_line": 1, "content": "pwned"},
    "glob": lambda p: {"pattern": "*", "path": p},
    "grep": lambda p: {"pattern": "SECRET", "path": p},
}


@pytest.mark.parametrize("tool", list(PATH_TOOLS))
def test_every_path_tool_refuses_escapes(ws: Workspace, outside: Path, tool: str) -> None:
    (ws.root / "file_link").symlink_to(outside / "secret.txt")
    (ws.root / "dir_link").symlink_to(outside)
    (ws.root / "inner").mkdir()
    (ws.root / "inner/up").symlink_to("../..")
    attacks = {
        "../outside/secret.txt": "outside the workspace",
        str(outside / "secret.txt"): "outside the workspace",
        "file_link": "outside the workspace (through a symlink)",
        "dir_link/secret.txt": "outside the workspace (through a symlink)",
        "dir_link": "outside the workspace",
        "inner/up/outside/secret.txt": "outside the workspace",
        f"/proc/self/root{outside}/secret.txt": "under /proc",
        "/proc/self/environ": "under /proc",
        "~": "outside the workspace",
        "ok\x00/../../x": "NUL byte",
        "a" * 256: "is too long (256 bytes",
        "/".join(["d" * 200] * 21): "path is too long",
        "../" + os.fsdecode(b"caf\xe9"): "outside the workspace",
        "": "path is empty",
    }
    for path, expected in attacks.items():
        msg = err(ws, tool, **PATH_TOOLS[tool](path))
        assert expected in msg, (path, msg)
        assert "TOP SECRET" not in msg
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert (outside / "secret.txt").read_text() == "TOP SECRET\n"


def test_outside_message_format(ws: Workspace) -> None:
    assert err(ws, "read", path="../x") == "error: path '../x' is outside the workspace"


def test_paths_inside_are_allowed_however_spelled(ws: Workspace) -> None:
    (ws.root / "d").mkdir()
    (ws.root / "d/f.txt").write_text("hi\n")
    (ws.root / "alias").symlink_to("d")
    for spelling in ["d/f.txt", "./d/../d/f.txt", str(ws.root / "d/f.txt"), "alias/f.txt", "d//f.txt"]:
        assert ok(ws, "read", path=spelling) == "     1\thi", spelling
    assert ws.resolve("alias/f.txt") == ws.root / "d/f.txt"
    assert ws.resolve(".") == ws.root


def test_non_utf8_filenames_work_and_print_safely(ws: Workspace) -> None:
    name = os.fsdecode(b"caf\xe9.txt")
    assert "wrote 1 line" in ok(ws, "write", path=name, content="x\n")
    assert os.listdir(os.fsencode(ws.root)) == [b"caf\xe9.txt"]
    assert ok(ws, "read", path=name) == "     1\tx"
    listed = ok(ws, "glob", pattern="*")
    listed.encode("utf-8")  # no lone surrogates reach the model
    assert listed == "caf\\udce9.txt"
    assert ok(ws, "grep", pattern="x").endswith(".txt:1: x")


# ------------------------------------------------------------------------------------------------- caps


def test_cap_text_keeps_head_and_tail() -> None:
    text = "".join(f"{i}\n" for i in range(10_000))
    out = cap_text(text, 1000)
    assert len(out) <= 1000 and out.startswith("0\n1\n") and out.endswith("9999\n") and "chars elided" in out
    assert cap_text("short", 1000) == "short"


def test_every_result_respects_the_cap(tmp_path: Path) -> None:
    ws = Workspace(tmp_path, result_cap=1000)
    (tmp_path / "long.txt").write_text(("w" * 250 + "\n") * 50)
    for name, args in [
        ("grep", {"pattern": "w"}),
        ("read", {"path": "long.txt"}),
        ("bash", {"command": "cat long.txt"}),
        ("read", {"path": "x" * 3000}),
    ]:
        assert len(ws.run(name, args).output) <= 1000, name
    assert len(ws.preview("write", {"path": "n.txt", "content": "v\n" * 5000})) <= 1000


# ---------------------------------------------------------------------------------- never raises (fuzz)

ARG_KEYS = sorted({k for s in TOOL_SCHEMAS for k in s["function"]["parameters"]["properties"]})
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.text(max_size=30),
    st.sampled_from(["a.txt", "../x", "/etc/passwd", ".", "**/*", "d/e.py", "*.py", "(", "~"]),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=3),
)
ARGS = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(ARG_KEYS), st.text(max_size=8)), VALUES, max_size=5),
    st.none(),
    st.integers(),
    st.lists(st.text(max_size=3), max_size=2),
)


@pytest.fixture(scope="module")
def fuzz_ws(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    root = tmp_path_factory.mktemp("fuzz")
    (root / "a.txt").write_text("one\ntwo\n")
    (root / "d").mkdir()
    return Workspace(root, result_cap=2000)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.one_of(st.sampled_from(TOOL_NAMES[:-1]), st.text(max_size=10)), args=ARGS)  # no random bash
def test_run_and_preview_never_raise(fuzz_ws: Workspace, name: str, args: object) -> None:
    res = fuzz_ws.run(name, args)  # type: ignore[arg-type]
    assert isinstance(res, ToolResult) and len(res.output) <= 2000
    res.output.encode("utf-8")
    if not res.ok:
        assert res.output.startswith("error: ") and "\n" not in res.output
    assert isinstance(fuzz_ws.preview(name, args), str)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ kill -9 atomicity

CHILD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from continualcode.tools import Workspace

    root, tool = Path(sys.argv[1]), sys.argv[2]
    versions = [{versions}]
    ws = Workspace(root)
    target = root / "data.txt"
    print("ready", flush=True)
    i = 0
    while True:
        new = versions[i % 2]
        print(i % 2, flush=True)  # the version about to be written
        if tool == "write":
            args = {{"path": "data.txt", "content": new}}
        else:
            n = target.read_text().count("\\n")
            args = {{"path": "data.txt", "start_line": 1, "end_line": n, "content": new}}
        res = ws.run(tool, args)
        assert res.ok, res.output
        i += 1
    """
)
VERSION_EXPRS = [
    '"".join(f"alpha {i:07}\\n" for i in range(150_000))',
    '"".join(f"b{i}\\n" for i in range(90_000))',
]


@pytest.mark.slow
@pytest.mark.parametrize("tool", ["write", "edit_lines"])
def test_kill_9_never_leaves_a_partial_file(tmp_path: Path, tool: str) -> None:
    versions = [eval(v) for v in VERSION_EXPRS]
    target = tmp_path / "data.txt"
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    script = CHILD.format(versions=", ".join(VERSION_EXPRS))
    outcomes = {"old": 0, "new": 0}
    window = 0.05 if tool == "write" else 0.3  # about two calls' worth of time
    for _ in range(20):
        target.write_text(versions[1])
        child = subprocess.Popen(
            [sys.executable, "-c", script, str(tmp_path), tool], stdout=subprocess.PIPE, env=env, text=True
        )
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, window))
        child.send_signal(signal.SIGKILL)
        lines = child.stdout.read().split()
        assert child.wait() == -signal.SIGKILL
        writing = int(lines[-1]) if lines else 0
        content = target.read_text()
        assert content in versions, f"partial file after kill ({len(content)} chars)"
        outcomes["new" if content == versions[writing] else "old"] += 1
        shown = Workspace(tmp_path).run("glob", {"pattern": "**/*"}).output
        assert shown == "data.txt", shown
    assert sum(outcomes.values()) == 20
    ok(Workspace(tmp_path), "write", path="data.txt", content="done\n")
    assert [p.name for p in tmp_path.iterdir()] == ["data.txt"]  # orphaned temp files were cleaned


def test_a_python_edit_that_breaks_the_syntax_says_so_in_preview_and_result(ws: Workspace) -> None:
    (ws.root / "m.py").write_text("def f():\n    return 1\n")
    args = {"path": "m.py", "start_line": 1, "end_line": 1, "content": "def f(:"}
    assert "no longer parses as Python (line 1" in ws.preview("edit_lines", args)
    out = ws.run("edit_lines", args)
    assert out.ok and "warning: after this change the file no longer parses as Python" in out.output
    # already broken: the next change is not blamed; other files are not checked
    assert "warning" not in ws.run("edit_lines", {**args, "content": "def f(: # still"}).output
    (ws.root / "notes.txt").write_text("a\n")
    assert "warning" not in ws.run("write", {"path": "notes.txt", "content": "def f(:"}).output
    good = ws.run("write", {"path": "new.py", "content": "x = 1\n"})
    assert good.ok and "warning" not in good.output
    assert "no longer parses" in ws.run("write", {"path": "new2.py", "content": "x = (\n"}).output


def test_redefined_names_the_first_function_or_class_a_change_defines_twice_in_one_scope() -> None:
    from continualcode.tools.syntax import redefined
    pad = "def _padleft(w, s):\n    return 1\n\n\ndef _padright(w, s):\n    return 2\n\nx = _padleft(1, 2)\n"
    assert redefined(pad, pad.replace("_padleft", "_padright"), "t.py") == "_padright at lines 1 and 5"
    assert redefined(pad, pad + "\nclass _padleft:\n    pass\n", "t.py") == "_padleft at lines 1 and 10"
    assert redefined(pad, pad + "y = 2\n", "t.py") is None  # nothing defined twice
    assert redefined(pad, pad.replace("_padleft", "_padright"), "t.txt") is None  # not Python
    assert redefined(pad, pad + "def (:\n", "t.py") is None  # does not parse after: the syntax warning's
    twice = pad + "def f():\n    pass\n\ndef f():\n    pass\n"
    assert redefined(twice, twice + "z = 3\n", "t.py") is None  # already twice before: not this change's doing
    cls = "class A:\n    @property\n    def x(self):\n        return 1\n"
    assert redefined(cls, cls + "\n    @x.setter\n    def x(self, v):\n        pass\n", "t.py") is None  # a setter
    assert redefined(cls, cls + "\n    def x(self):\n        return 2\n", "t.py") == "x at lines 3 and 6"
    assert redefined(cls, cls + "\n\ndef x():\n    pass\n", "t.py") is None  # another scope: the module's
    branches = "if a:\n    def g():\n        pass\nelse:\n    def g():\n        pass\n"
    assert redefined("", branches, "t.py") is None  # conditional definitions are not one scope's


def test_docstrings_only_is_a_syntax_tree_that_differs_only_in_docstrings() -> None:
    from continualcode.tools.syntax import docstrings_only
    src = ('"""Mod."""\n\n\nclass C:\n    """C."""\n\n    def f(self, n):\n'
           '        """>>> C().f(1)\n        \'1st\'\n        """\n        return str(n) + "rd"  # suffix\n')
    assert docstrings_only(src, src.replace(">>> C().f(1)", ">>> C().f('1')"), "m.py")  # a docstring's example
    assert docstrings_only(src, src.replace('"""C."""', '"""The C."""').replace("# suffix", "# the suffix"), "m.py")
    assert docstrings_only(src, src.replace('"""Mod."""\n', ""), "m.py")  # the module's docstring taken out
    assert not docstrings_only(src, src.replace("# suffix", "# the suffix\n        # more"), "m.py")  # comments
    assert not docstrings_only(src, src.replace('"rd"', '"th"'), "m.py")  # a string that is code: a fix
    assert not docstrings_only(src, src.replace('"rd"', '"th"').replace('"""C."""', '"""D."""'), "m.py")  # both
    assert not docstrings_only(src, src, "m.py")  # no change at all is not this
    assert not docstrings_only(src, src.replace('"""C."""', '"""D."""'), "m.txt")  # not Python
    assert not docstrings_only(src, src.replace("# suffix", "(:"), "m.py")  # does not parse after


def test_touches_only_docstrings_plans_the_change_on_the_file(ws: Workspace) -> None:
    (ws.root / "m.py").write_text('def f(n):\n    """>>> f(1)"""\n    return n + 1\n')
    assert ws.touches_only_docstrings("replace", {"path": "m.py", "old_string": ">>> f(1)", "new_string": ">>> f(2)"})
    assert ws.touches_only_docstrings("edit_lines", {"path": "m.py", "start_line": 2, "end_line": 2,
                                                     "content": '    """Add one: >>> f(1)"""'})
    assert not ws.touches_only_docstrings("edit_lines", {"path": "m.py", "start_line": 3, "end_line": 3,
                                                         "content": "    return n + 2"})
    absent = {"path": "m.py", "old_string": "absent", "new_string": "x"}
    assert not ws.touches_only_docstrings("replace", absent)  # the tool would refuse it
    assert not ws.touches_only_docstrings("write", {"path": "new.py", "content": '"""A new module."""\n'})  # new file
    assert not ws.touches_only_docstrings("read", {"path": "m.py"})


def test_a_change_that_defines_a_name_twice_says_so_in_preview_and_result(ws: Workspace) -> None:
    """A rename of `_padleft` to the existing `_padright` (a user trial on tabulate) leaves a file that parses,
    with the later definition replacing the earlier: the preview and the result say so."""
    (ws.root / "t.py").write_text("def _padleft(w):\n    return 1\n\n\ndef _padright(w):\n    return 2\n")
    args = {"path": "t.py", "old_string": "_padleft", "new_string": "_padright", "replace_all": True}
    warning = "warning: after this change a name is defined twice, the later one replacing the earlier: " \
              "_padright at lines 1 and 5"
    assert warning in ws.preview("replace", args) and ws.warns("replace", args)
    edit = {"path": "t.py", "start_line": 6, "end_line": 6, "content": "    return 2\n\n\ndef _padleft(w):\n    pass"}
    assert "_padleft at lines 1 and 9" in ws.preview("edit_lines", edit)
    assert not ws.warns("read", {"path": "t.py"}) and not ws.warns("edit_lines", {**edit, "content": "    return 3"})
    out = ws.run("replace", args)
    assert out.ok and warning in out.output
    assert "defined twice" not in ws.run("write", {"path": "t.py", "content": "def a():\n    pass\n"}).output


def test_a_write_that_drops_most_of_a_file_says_so(ws: Workspace) -> None:
    (ws.root / "big.txt").write_text("".join(f"line {i}\n" for i in range(40)))
    out = ws.run("write", {"path": "big.txt", "content": "x\n"})
    assert out.ok and "warning: big.txt went from 40 lines to 1" in out.output
    assert "warning" not in ws.run("write", {"path": "big.txt", "content": "".join(f"l{i}\n" for i in range(3))}).output
