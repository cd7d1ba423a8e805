"""What of the conversation the model sees (context.compact): pure functions on messages."""

from __future__ import annotations

from continualcode.context import RECAP_CHARS, RECAP_HEAD, compact, current, recap, task_meta
from continualcode.records import FRESH, NOTES, TASK, Message, ToolCall

BIG = "\n".join(f"{i:6}\tline {i} of a long file" for i in range(1, 301))


def _convo(n_results: int) -> list[Message]:
    msgs = [Message("user", "task")]
    for k in range(n_results):
        msgs += [Message("assistant", f"<call {k}>"), Message("tool", BIG + f"\nresult {k}", {"tool": "read"})]
    return msgs


def _whole(out: list[Message]) -> list[bool]:
    return [t.content.endswith(f"result {k}") for k, t in enumerate(m for m in out if m.role == "tool")]


def test_long_results_past_the_last_two_are_shortened_four_at_a_time():
    """Elided in batches of four (so the rendered prefix changes once every four turns, not every turn),
    never one of the last two."""
    assert _whole(compact(_convo(5))) == [True] * 5  # 3 old results: no batch of four yet
    out = compact(_convo(6))
    assert _whole(out) == [False] * 4 + [True] * 2
    assert _whole(compact(_convo(9))) == [False] * 4 + [True] * 5
    assert _whole(compact(_convo(10))) == [False] * 8 + [True] * 2
    tools = [m for m in out if m.role == "tool"]
    assert all("more lines elided" in t.content and len(t.content) < 700 for t in tools[:4])
    assert tools[0].content.startswith("     1\tline 1")  # the head stays
    assert [m.role for m in out] == [m.role for m in _convo(6)]  # the shape stays


def test_short_results_and_recent_ones_are_never_touched():
    msgs = [Message("user", "t"), Message("assistant", "a"), Message("tool", "ok"), Message("assistant", "b"),
            Message("tool", "fine"), Message("assistant", "c"), Message("tool", BIG)]
    assert compact(msgs) == msgs


def test_a_result_once_shortened_stays_the_same_as_the_conversation_grows():
    """The rendered prefix changes only where a result is elided: later growth leaves it as it was."""
    a, b = compact(_convo(6)), compact(_convo(9))
    assert b[: len(a)] == a  # three turns later, the whole earlier prompt is still its prefix
    c = compact(_convo(10))
    assert c[: 2 * 4 + 1] == a[: 2 * 4 + 1]  # the next batch changes only what comes after the first


def test_a_superseded_malformed_reply_is_dropped_but_not_the_last_one():
    bad = [Message("user", "t"), Message("assistant", "```json {}```"), Message("user", "error: bad. Try again.")]
    assert compact(bad) == bad  # nothing later yet: the model must see its error
    later = [*bad, Message("assistant", "<call>"), Message("tool", "ok")]
    assert compact(later) == [later[0], later[3], later[4]]


def test_corrections_are_kept():
    msgs = [Message("user", "t"), Message("assistant", "<w>"), Message("user", "Denied. use edit_lines"),
            Message("assistant", "<e>"), Message("tool", "ok")]
    assert compact(msgs) == msgs


def _task(text: str, **meta) -> Message:
    return Message("user", text, {TASK: True, **meta})


def test_a_fresh_task_starts_the_context_with_the_system_text_just_before_it():
    call = ToolCall("read", {"path": "a.py"}).to_text()
    msgs = [Message("system", "Files: a.py"), _task("first"), Message("assistant", call), Message("tool", "x"),
            Message("assistant", "done"), Message("system", "Files: a.py b.py"), _task("second", fresh=True),
            Message("assistant", call)]
    assert current(msgs) == msgs[5:]
    assert compact(msgs) == msgs[5:]
    assert current(msgs[:5]) == msgs[:5]  # no fresh task: all of it
    assert current([msgs[0], msgs[6]]) == [msgs[0], msgs[6]]  # the session's first listing, when just before


def test_recap_is_each_earlier_task_with_its_answer_or_none():
    call = ToolCall("read", {"path": "a.py"}).to_text()
    long = "word " * 60
    msgs = [_task("first"), Message("assistant", call), Message("tool", "x"), Message("assistant", "It is\nx."),
            _task(long), Message("assistant", call), Message("tool", "y")]
    lines = recap(msgs).split("\n")
    assert lines[0] == RECAP_HEAD
    assert lines[1] == "- first -> It is x."
    assert lines[2].endswith("\u2026 -> (no answer)")
    assert len(lines[2]) == len("- ") + RECAP_CHARS + len(" -> (no answer)")
    assert recap([Message("user", "untagged"), Message("assistant", "a")]) == ""


def test_task_meta_marks_fresh_only_after_an_earlier_task_and_never_when_whole():
    first = [_task("first"), Message("assistant", "ok")]
    assert task_meta([], "none", "") == {TASK: True}
    assert task_meta(first, "whole", "- rule") == {TASK: True, NOTES: "- rule"}
    assert task_meta(first, "none", "") == {TASK: True, FRESH: True}
    assert task_meta(first, "recap", "- rule") == {TASK: True, FRESH: True,
                                                   NOTES: f"{RECAP_HEAD}\n- first -> ok\n\n- rule"}
