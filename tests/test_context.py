"""What of the conversation the model sees (context.compact): pure functions on messages."""

from __future__ import annotations

from continualcode.context import compact
from continualcode.records import Message

BIG = "\n".join(f"{i:6}\tline {i} of a long file" for i in range(1, 301))


def _convo(n_results: int) -> list[Message]:
    msgs = [Message("user", "task")]
    for k in range(n_results):
        msgs += [Message("assistant", f"<call {k}>"), Message("tool", BIG + f"\nresult {k}", {"tool": "read"})]
    return msgs


def test_all_but_the_last_two_long_results_are_shortened():
    out = compact(_convo(4))
    tools = [m for m in out if m.role == "tool"]
    assert [t.content.endswith(f"result {k}") for k, t in enumerate(tools)] == [False, False, True, True]
    assert all("more lines elided" in t.content and len(t.content) < 700 for t in tools[:2])
    assert tools[0].content.startswith("     1\tline 1")  # the head stays
    assert [m.role for m in out] == [m.role for m in _convo(4)]  # the shape stays


def test_short_results_and_recent_ones_are_never_touched():
    msgs = [Message("user", "t"), Message("assistant", "a"), Message("tool", "ok"), Message("assistant", "b"),
            Message("tool", "fine"), Message("assistant", "c"), Message("tool", BIG)]
    assert compact(msgs) == msgs


def test_a_result_once_shortened_stays_the_same_as_the_conversation_grows():
    """The rendered prefix changes only where a result is elided: later growth leaves it as it was."""
    a, b = compact(_convo(3)), compact(_convo(5))
    assert b[: len(a) - 4] == a[: len(a) - 4]


def test_a_superseded_malformed_reply_is_dropped_but_not_the_last_one():
    bad = [Message("user", "t"), Message("assistant", "```json {}```"), Message("user", "error: bad. Try again.")]
    assert compact(bad) == bad  # nothing later yet: the model must see its error
    later = [*bad, Message("assistant", "<call>"), Message("tool", "ok")]
    assert compact(later) == [later[0], later[3], later[4]]


def test_corrections_are_kept():
    msgs = [Message("user", "t"), Message("assistant", "<w>"), Message("user", "Denied. use edit_lines"),
            Message("assistant", "<e>"), Message("tool", "ok")]
    assert compact(msgs) == msgs
