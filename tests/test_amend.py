"""A retry that edits the change the user denied (amend.py): composed with it, on hand-made cases."""

from __future__ import annotations

from continualcode.amend import amended
from continualcode.records import ToolCall

FILES = {"strings.py": "# string helpers\n"}


def holds(call: ToolCall, text: str) -> bool:
    return text in FILES.get(call.arguments["path"], "")


def same(a: ToolCall, b: ToolCall) -> bool:
    return a.arguments["path"] == b.arguments["path"]


def compose(call: ToolCall, denied: list[ToolCall]) -> ToolCall | None:
    return amended(call, denied, holds=holds, same=same)


DENIED = ToolCall("replace", {"path": "strings.py", "old_string": "# string helpers",
                              "new_string": "# string helpers\ndef shout(text):\n    return text.upper() + '!'"})
RETRY = ToolCall("replace", {"path": "strings.py", "old_string": "def shout(text):",
                             "new_string": "def shout(text: str) -> str:"})


def test_a_replace_of_text_only_the_denied_change_writes_is_made_to_that_change():
    assert compose(RETRY, [DENIED]) == ToolCall("replace", {
        "path": "strings.py", "old_string": "# string helpers",
        "new_string": "# string helpers\ndef shout(text: str) -> str:\n    return text.upper() + '!'"})


def test_a_denied_write_or_edit_lines_takes_the_edit_in_its_content():
    write = ToolCall("write", {"path": "new.py", "content": "def shout(text):\n    return text\n"})
    assert compose(ToolCall("replace", {**RETRY.arguments, "path": "new.py"}), [write]) == ToolCall(
        "write", {"path": "new.py", "content": "def shout(text: str) -> str:\n    return text\n"})
    lines = ToolCall("edit_lines", {"path": "strings.py", "start_line": 2, "end_line": 1,
                                    "content": "def shout(text):\n    return text\n"})
    got = compose(RETRY, [lines])
    assert got is not None and got.name == "edit_lines" and got.arguments["start_line"] == 2
    assert got.arguments["content"] == "def shout(text: str) -> str:\n    return text\n"


def test_the_latest_denied_change_that_holds_the_text_is_the_one_amended():
    later = ToolCall("replace", {**DENIED.arguments, "new_string": "def shout(text):\n    return text.upper()"})
    other = ToolCall("replace", {**DENIED.arguments, "new_string": "x = 1"})  # later still, without the text
    got = compose(RETRY, [DENIED, later, other])
    assert got is not None and got.arguments["new_string"] == "def shout(text: str) -> str:\n    return text.upper()"


def test_no_composition_where_the_retry_is_not_an_edit_of_a_denied_change():
    assert compose(RETRY, []) is None  # nothing denied
    in_file = ToolCall("replace", {**RETRY.arguments, "old_string": "# string"})
    assert compose(in_file, [DENIED]) is None  # the file holds it: an edit of the file, not of the denied change
    assert compose(ToolCall("replace", {**RETRY.arguments, "path": "other.py"}), [DENIED]) is None  # another file
    assert compose(ToolCall("replace", {**RETRY.arguments, "old_string": "not there"}), [DENIED]) is None
    assert compose(ToolCall("replace", {**RETRY.arguments, "replace_all": True}), [DENIED]) is None
    assert compose(ToolCall("replace", {**RETRY.arguments, "old_string": ""}), [DENIED]) is None
    assert compose(ToolCall("edit_lines", {"path": "strings.py", "start_line": 2, "end_line": 2,
                                           "content": "def shout(text: str) -> str:"}), [DENIED]) is None
    assert compose(ToolCall("bash", {"command": "ls"}), [ToolCall("bash", {"command": "ls -l"})]) is None
