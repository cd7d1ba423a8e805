"""A tool call written as text: which replies are not answers, and which calls are recovered from them.

The positive cases are text answers the models gave in committed task-benchmark transcripts (shortened);
the negative ones are answers that name tools or code and must stay answers."""

from __future__ import annotations

import pytest

from continualcode.records import ToolCall
from continualcode.textcall import call_in_text, looks_like_call, quote_keys

# shown as answers by the old detector (bench/results/tasks/*/transcripts)
WRITTEN_CALLS = [
    'Here\'s the JSON response:\n\n```json\n{name: "grep", "arguments": ["next", "schedule/__init__.py"]}\n```',
    'you can use the `edit_lines` function as follows:\n\n```json\n{call: "edit_lines", arguments: {path: '
    '"inflection/__init__.py", start_line: 1, end_line: 1, content: "def kebabize(word):\\n    return word"}}\n```',
    "as follows:\n\n```json\n{\u201cname\u201d: \u201cedit_lines\u201d, \u201carguments\u201d: {\u201cpath\u201d: "
    "\u201cxmltodict.py\u201d, \u201cstart_line\u201d: 20, \u201cend_line\u201d: 20, \u201ccontent\u201d: "
    "\u201c_emit_element = 1\u201d}}\n```",
    'Here\'s how:\n\n```json\n{call: "grep --color \'field_name\' tests/test_bugs.py"}\n```',
    "you can use the `grep` function to search for the class name. Here's how you can do it:\n\n"
    '```json\ngrep -r "class XMLDictParser" xmltodict.py\n```',
    '1. Read it:\n   read("inflection/__init__.py", offset=1, limit=4)',
    "then edit_lines('a.py', 3, 4, 'x')",
    '<tool_call>\n{"name": "read", "arguments": {"path": "a.py"}}\n</tool_call> and then I answer',
]

ANSWERS = [
    "parse() calls read(stream) and returns a dict.",
    "The read() method is lazy.",
    "greet(name) in app/hello.py returns a greeting.",
    "Yes, the code that turns a format string like '{name:d}' into a regular expression is in `tests/test_bugs.py`.",
    "The class that receives the SAX events is `read`.",
    "I used the `edit_lines` function to replace line 91 with the new `kebabize` function.",
    'setup() in setup.py is called with name="schedule" and version=SCHEDULE_VERSION.',
    "Job.do() takes the function to run:\n\n```python\nschedule.every(10).minutes.do(job)\n```",
    'xmltodict.unparse({"name": "a"}) in xmltodict.py turns the dict back into XML.',
]


@pytest.mark.parametrize("text", WRITTEN_CALLS)
def test_a_call_written_as_text_is_not_an_answer(text: str) -> None:
    assert looks_like_call(text)


@pytest.mark.parametrize("text", ANSWERS)
def test_an_answer_that_names_tools_or_code_stays_an_answer(text: str) -> None:
    assert not looks_like_call(text)


def test_the_call_is_recovered_from_loose_json() -> None:
    """Bare keys, typographic quotes and `call` for `name` are read; the content string is kept as written
    (its `\\n` an escape, its `word:` not taken for a key)."""
    kebab = call_in_text(WRITTEN_CALLS[1])
    assert kebab == ToolCall("edit_lines", {"path": "inflection/__init__.py", "start_line": 1, "end_line": 1,
                                            "content": "def kebabize(word):\n    return word"})
    curly = call_in_text(WRITTEN_CALLS[2])
    assert curly is not None and curly.name == "edit_lines" and curly.arguments["content"] == "_emit_element = 1"
    assert call_in_text('{"tool": "glob", "parameters": {"pattern": "**/*.py"}}') == ToolCall(
        "glob", {"pattern": "**/*.py", "path": "."})


@pytest.mark.parametrize("text", [WRITTEN_CALLS[0], WRITTEN_CALLS[3], WRITTEN_CALLS[4],
                                  '{name: "grep", arguments: {regex: "x"}}', '{name: "delete", arguments: {}}'])
def test_no_call_is_recovered_when_the_arguments_or_tool_are_wrong(text: str) -> None:
    """Arguments as a list, a shell command as the tool, an unknown argument or tool: re-asked, never guessed."""
    assert call_in_text(text) is None


def test_quote_keys_leaves_strings_alone() -> None:
    assert quote_keys('{a: 1, b_2: {c: "x, d: y"}}') == '{"a": 1, "b_2": {"c": "x, d: y"}}'
    assert quote_keys('{"a": "say \\"k: v\\"", k: 2}') == '{"a": "say \\"k: v\\"", "k": 2}'
    assert quote_keys('[1, {x: [2, 3]}]') == '[1, {"x": [2, 3]}]'
