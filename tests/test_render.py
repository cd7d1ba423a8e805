"""Rendering and tool-call parsing: the parser never raises (property-based), every failure is a
clear message, and the grammar constraint only lets valid calls (or plain text) through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from continualcode.records import loads_call_json
from continualcode.render import Message, Parsed, Renderer, ToolCall, parse
from continualcode.tools import TOOL_NAMES, tool_schemas

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


def _one_of_three(p: Parsed) -> bool:
    return sum(x is not None for x in (p.call, p.text, p.error)) == 1


@settings(max_examples=1500, deadline=None)
@given(st.text(max_size=300))
def test_parse_never_raises_on_any_text(text: str) -> None:
    assert _one_of_three(parse(text))


@settings(max_examples=1500, deadline=None)
@given(st.sampled_from([*TOOL_NAMES, "nope", ""]), JSONISH, st.sampled_from(["", "x", "<tool_call>", "\n"]))
def test_parse_never_raises_on_near_calls(name: str, args: object, junk: str) -> None:
    body = json.dumps({"name": name, "arguments": args}) if name else json.dumps(args)
    p = parse(f"{junk}<tool_call>\n{body}\n</tool_call>{junk}")
    assert _one_of_three(p)
    if p.error is not None:
        assert p.error and "\n" not in p.error


def test_parse_cases() -> None:
    good = ToolCall("read", {"path": "a.py"}).to_text()
    assert parse(good).call == ToolCall("read", {"path": "a.py", "offset": 1, "limit": 400})
    assert parse("All done.").text == "All done."
    assert "exactly one call" in parse(good + good).error
    assert "not closed" in parse("<tool_call>\n{").error
    assert "not valid JSON" in parse("<tool_call>\n{nope}\n</tool_call>").error
    assert "unknown tool" in parse('<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>').error
    assert parse('<tool_call>\n{"name": "read", "arguments": {}}\n</tool_call>').error
    assert parse("   ").error
    # arguments given as a JSON string are accepted
    assert parse('<tool_call>\n{"name": "read", "arguments": "{\\"path\\": \\"x\\"}"}\n</tool_call>').call


@pytest.fixture(scope="module")
def tok(cache_dir: Path):
    import transformers

    from continualcode.models import BUILTINS, ensure_converted

    return transformers.AutoTokenizer.from_pretrained(str(ensure_converted(BUILTINS["smollm2-135m"], cache_dir)))


def test_fallback_template_has_tools_example_and_no_default_system(tok) -> None:
    r = Renderer(tok)
    assert r.style == "fallback"
    text = r.prompt_text([Message("user", "hi"), Message("assistant", "ok"), Message("tool", "out", {"tool": "bash"})])
    assert "named SmolLM" not in text  # our system prompt replaces the template's default
    assert "edit_lines(path, start_line, end_line, content)" in text
    assert "Tool result (bash):\nout" in text
    assert text.endswith("<|im_start|>assistant\n")
    ids = r.prompt_ids([Message("user", "hi")])
    assert r.decode(ids[-3:]) == tok.decode(ids[-3:])


def test_grammar_admits_valid_calls_and_rejects_invalid(tok) -> None:
    r = Renderer(tok)
    c = r.constraint(allow_text=True)

    def accepts(text: str) -> bool:
        s = c.start()
        for t in tok.encode(text, add_special_tokens=False):
            if not s.accept(t):
                return False
        return s.accept(r.stop_ids[0]) and s.terminated()

    assert accepts(ToolCall("read", {"path": "a.py"}).to_text())
    assert accepts(ToolCall("edit_lines", {"path": "a", "start_line": 1, "end_line": 0, "content": "x\n"}).to_text())
    assert accepts("The task is done.")
    assert accepts("Done: {x} is set.")  # braces are fine inside text …
    assert not accepts('{"name": "read", "arguments": {"path": "a.py"}}')  # … but a bare JSON call is not text
    assert not accepts('\n{"name": "read"}')
    for fake in ('```json\n{"name": "read", "arguments": {"path": "a.py"}}\n```',  # what Qwen 0.5B wrote
                 '>{"name": "read", "arguments": {"path": "a.py"}}', '({"name": "read"})',
                 'Calling it: { "name": "read" }', 'Calling it: {"name": "read"}'):
        assert not accepts(fake), fake
    assert accepts("Done. The result is {} and f(x) = {x, y}.")
    assert not accepts('<tool_call>\n{"name": "rm", "arguments": {}}\n</tool_call>')
    assert not accepts('<tool_call>\n{"name": "read", "arguments": {"path": "a", "evil": 1}}\n</tool_call>')
    assert not accepts('<tool_call>\n{"name": "read", "arguments": {}}\n</tool_call>')  # path is required
    assert not accepts(ToolCall("replace", {"path": "a", "old_string": "x", "new_string": "y"}).to_text())  # not shown
    both = Renderer(tok, tools=tool_schemas("both")).constraint()
    for call in (ToolCall("replace", {"path": "a", "old_string": "x", "new_string": "y"}),
                 ToolCall("replace", {"path": "a", "old_string": "x", "new_string": "y", "replace_all": True})):
        s = both.start()
        assert all(s.accept(t) for t in tok.encode(call.to_text(), add_special_tokens=False)), call
    no_text = r.constraint(allow_text=False)
    s = no_text.start()
    assert not s.accept(tok.encode("The", add_special_tokens=False)[0])
    text_only = r.constraint(allow_calls=False)  # an answer asked for (answer.py): words, never a call
    s = text_only.start()
    assert not s.accept(tok.encode("<tool_call>", add_special_tokens=False)[0])
    assert text_only.start().accept(tok.encode("The", add_special_tokens=False)[0])
    with pytest.raises(ValueError, match="neither a call nor text"):
        r.constraint(allow_text=False, allow_calls=False)


def test_a_call_keeps_the_backslashes_of_code_and_json_escapes_keep_their_meaning() -> None:
    r"""The model writes code into a call's strings unescaped: `\d`, `\x00`, `\'` and a regex's `\b` reach the
    tool as written; `\n`, `\t`, `\"`, `\\`, `\/` and `\uXXXX` are JSON's."""
    def content(body: str) -> str:
        return loads_call_json('{"content": "' + body + '"}')["content"]

    assert content(r"m = re.match(r'\d+', s)") == r"m = re.match(r'\d+', s)"
    assert content(r"b'\x00'") == r"b'\x00'" and len(content(r"\x00")) == 4
    assert content(r"it\'s") == r"it\'s"
    assert content(r"re.compile(r'\bword\b')") == r"re.compile(r'\bword\b')"  # no backspace characters
    assert content(r"\f") == r"\f"
    assert content(r"a\nb\tc") == "a\nb\tc"
    assert content(r"say \"hi\"") == 'say "hi"'
    assert content(r"r'\\d'") == r"r'\d'"  # escaped as JSON: the same text
    assert content(r"\\\\") == "\\\\"  # two backslashes
    assert content(r"a\/b \u0041") == "a/b A"
    assert content(r"C:\users") == r"C:\users"  # no four hex digits: not JSON's \u
    with pytest.raises(json.JSONDecodeError):
        loads_call_json('{"content": "a\\')


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_characters="\x08\x0c"), max_size=40))
def test_strict_json_means_what_it_meant_to_the_call_parser(text: str) -> None:
    assert loads_call_json(json.dumps({"c": text}))["c"] == text
    assert loads_call_json(json.dumps({"c": text}, ensure_ascii=False))["c"] == text


def test_the_grammar_admits_the_backslashes_of_code_and_the_call_says_what_the_model_meant(tok) -> None:
    r"""Held to JSON's escapes, the 1.5B model wrote `\d` as `\b` (a backspace) and `\x00` as `\n` in every
    call that needed one (bench/results/tasks/escapes-probe/): the grammar takes any printable character after
    a backslash but `u` (JSON's `\uXXXX`), and the parsed call holds the code as written."""
    r = Renderer(tok)
    c = r.constraint(allow_text=True)

    def accepts(text: str) -> bool:
        s = c.start()
        return all(s.accept(t) for t in tok.encode(text, add_special_tokens=False)) \
            and s.accept(r.stop_ids[0]) and s.terminated()

    code = r"n = int(re.match(r'\d+', s).group()) or b'\x00'"
    call = '<tool_call>\n{"name": "write", "arguments": {"path": "a.py", "content": "' + code + '\\n"}}\n</tool_call>'
    assert accepts(call)
    assert parse(call).call == ToolCall("write", {"path": "a.py", "content": code + "\n"})
    assert accepts(ToolCall("write", {"path": "a.py", "content": "x = '\\t'\n"}).to_text())
    for bad in ("\\u12zz", "\\\t", "\\\n", "\t"):  # JSON's \u wants hex; no raw control character
        assert not accepts(call.replace("b'\\x00'", bad)), bad


def test_the_grammar_says_what_text_it_forces(tok) -> None:
    """`GrammarState.forced`: the text the grammar allows alone from here (drafted for sure: decode.py).  At
    the start a call or words may come (nothing forced); after `<tool_call>` the JSON up to the tool's name;
    after the name `bash` the first argument's key; inside a free string nothing; once ended nothing."""
    r = Renderer(tok)
    s = r.constraint().start()
    assert s.forced() == ""

    def feed(text: str) -> None:
        assert all(s.accept(t) for t in tok.encode(text, add_special_tokens=False))

    feed("<tool_call>")
    assert s.forced() == '\n{"name": "'
    feed('\n{"name": "bash')
    assert s.forced() == '", "arguments": {"command": "'
    feed('", "arguments": {"command": "ls')
    assert s.forced() == ""
    feed('"}}\n</tool_call>')
    assert s.accept(r.stop_ids[0]) and s.terminated() and s.forced() == ""


def test_native_template_has_one_worked_exchange_before_the_conversation(tmp_path) -> None:
    """Qwen's native tool template: the example search and its direct answer come before the user's task,
    until the session's first tool result."""
    from continualcode.render import NATIVE_EXAMPLE

    class NativeTok:  # the smallest tokenizer with a native tools template, enough for to_template_messages
        chat_template = "{{ tools }} <tool_call>"

        def __len__(self) -> int:
            return 10

    r = Renderer(NativeTok())
    assert r.style == "native"
    msgs = r.to_template_messages([Message("user", "task")])
    assert [m["role"] for m in msgs] == ["system", *(role for role, _ in NATIVE_EXAMPLE), "user"]
    assert msgs[-1]["content"] == "task" and '"app/hello.py"' in msgs[2]["content"]
    # the session's overview (a system message) opens the next user turn, as in the example
    first = r.to_template_messages([Message("system", "Files in the project: a.py"), Message("user", "task")])
    assert first[-1] == {"role": "user", "content": "Files in the project: a.py\n\ntask"}
    assert "Files in the project: a.py" not in first[0]["content"]
    alone = r.to_template_messages([Message("system", "note")])  # no user turn after it: system text
    assert alone[0]["content"].endswith("\n\nnote") and len(alone) == 1 + len(NATIVE_EXAMPLE)
    # once the conversation has a tool result the example is gone (the model copied its answer)
    later = r.to_template_messages([Message("user", "task"), Message("assistant", "<tool_call>x</tool_call>"),
                                    Message("tool", "1\tx = 1")])
    assert [m["role"] for m in later] == ["system", "user", "assistant", "tool"]
    assert not any("greet" in m["content"] for m in later)


def test_task_notes_open_the_first_user_turn_only(tmp_path) -> None:
    """`memory_at=task`: the project's rules sit between the file listing and the first task, never in the
    system prompt, the worked example or a later task's turn."""

    class NativeTok:
        chat_template = "{{ tools }} <tool_call>"

        def __len__(self) -> int:
            return 10

    r = Renderer(NativeTok(), task_notes="Rules from the user:\n- grep first")
    msgs = r.to_template_messages([Message("system", "Files: a.py"), Message("user", "find f"),
                                   Message("assistant", "f is in a.py"), Message("user", "and g?")])
    users = [m["content"] for m in msgs if m["role"] == "user"]
    assert users[-2] == "Files: a.py\n\nRules from the user:\n- grep first\n\nfind f"
    assert users[-1] == "and g?"
    assert sum("grep first" in m["content"] for m in msgs) == 1
    plain = Renderer(NativeTok()).to_template_messages([Message("user", "find f")])
    assert plain[-1]["content"] == "find f" and msgs[0] == plain[0]


def test_the_grep_example_searches_the_whole_project_then_reads_at_the_hit_and_goes_after_a_tool_result() -> None:
    """`worked_example=grep`: the example answers by a search for the definition over the whole project (`.`),
    then the read at its line; like the read example it is gone once the conversation has a tool result."""
    from continualcode.render import GREP_EXAMPLE

    class NativeTok:
        chat_template = "{{ tools }} <tool_call>"

        def __len__(self) -> int:
            return 10

    r = Renderer(NativeTok(), example="grep")
    msgs = r.to_template_messages([Message("user", "task")])
    assert [m["role"] for m in msgs] == ["system", *(role for role, _ in GREP_EXAMPLE), "user"]
    calls = [m["content"] for m in msgs if m["role"] == "assistant" and "<tool_call>" in m["content"]]
    assert [c.split('"name": "')[1].split('"')[0] for c in calls] == ["grep", "read"]
    assert '"path": "."' in calls[0] and '"offset": 3' in calls[1]  # the whole project, then the hit's line
    assert "tests/test_hello.py" in msgs[1]["content"] and "Classes and functions" not in msgs[1]["content"]
    later = r.to_template_messages([Message("user", "task"), Message("assistant", "<tool_call>x</tool_call>"),
                                    Message("tool", "1\tx = 1")])
    assert not any("greet" in m["content"] for m in later)
    with pytest.raises(KeyError):
        Renderer(NativeTok(), example="none")


def test_a_task_that_asks_for_a_change_sees_the_worked_fix_for_the_whole_task_and_a_question_does_not() -> None:
    """`change_example`: a change task is shown the worked fix (search, read, change, tests, report) in place of
    the question example, and still after its first tool result; a question keeps the question example, gone
    after a result; off, a change task gets the question example.  The fix uses the change tool shown."""
    from continualcode.records import TASK
    from continualcode.render import GREP_EXAMPLE, change_example
    from continualcode.tools import DEFAULT_SCHEMAS, tool_schemas

    class NativeTok:
        chat_template = "{{ tools }} <tool_call>"

        def __len__(self) -> int:
            return 10

    fix = Message("user", "add() drops its second number. Fix it and run the tests.", {TASK: True})
    ask = Message("user", "What does add() return?", {TASK: True})
    after = [Message("assistant", "<tool_call>x</tool_call>"), Message("tool", "1\tx = 1")]
    r = Renderer(NativeTok(), example="grep", change=True, tools=tool_schemas("both"))

    def names(msgs: list[dict[str, str]]) -> list[str]:
        calls = [m["content"] for m in msgs if m["role"] == "assistant" and '"name": "' in m["content"]]
        return [c.split('"name": "')[1].split('"')[0] for c in calls]

    assert names(r.to_template_messages([fix])) == ["grep", "read", "replace", "bash"]
    later = r.to_template_messages([fix, *after])
    assert names(later) == ["grep", "read", "replace", "bash"] and len(later) == 1 + 10 + 3  # still in view
    assert names(r.to_template_messages([ask])) == ["grep", "read"]  # the question example
    assert r.to_template_messages([ask])[1]["content"] == GREP_EXAMPLE[0][1]
    assert not any("greet" in m["content"] for m in r.to_template_messages([ask, *after]))
    assert names(Renderer(NativeTok(), example="grep").to_template_messages([fix])) == ["grep", "read"]
    lines = Renderer(NativeTok(), example="grep", change=True)  # the default set: edit_lines, no replace
    assert names(lines.to_template_messages([fix])) == ["grep", "read", "edit_lines", "bash"]
    # every call of the worked fix is a valid call of the tools it is shown with
    from continualcode.render import parse

    for tools in (DEFAULT_SCHEMAS, tool_schemas("lines"), tool_schemas("both")):
        shown = change_example([t["function"]["name"] for t in tools])
        for role, text in shown:
            if role == "assistant" and "<tool_call>" in text:
                assert parse(text, tools).call is not None, text


@pytest.mark.parametrize(("model", "setting", "shown"), [
    ("qwen2.5-coder-0.5b", "auto", "read"), ("smollm2-135m", "auto", "read"),
    ("qwen2.5-coder-1.5b", "auto", "grep"), ("Qwen/Qwen3-4B-Instruct-2507", "auto", "grep"),
    ("qwen2.5-coder-0.5b", "grep", "grep"), ("qwen2.5-coder-1.5b", "read", "read")])
def test_auto_keeps_the_read_example_for_the_models_measured_with_it_and_searches_first_for_others(
        model: str, setting: str, shown: str) -> None:
    from continualcode.build import worked_example
    from continualcode.config import UsageError, parse_config

    assert worked_example(parse_config([f"model_name={model}", f"worked_example={setting}"])) == shown
    with pytest.raises(UsageError, match="worked_example"):
        parse_config(["worked_example=map"])
