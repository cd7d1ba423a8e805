"""A retry that edits the change the user denied, as if it had been made: the two composed into one call.

A denied call is not run, yet after "always add type hints: annotate every parameter …" denied
`replace('# string helpers' -> 'def shout(text): …')`, the 1.5B model's retry was
`replace('def shout(text): …' -> 'def shout(text: str) -> str: …')`: the change the user asked for, written
against text the file never held.  It failed, the model read the file again and again, and the task ran
out of turns (5 of 17 denied tasks on the dev half of the retry benchmark ended so, type hints, docstrings,
pathlib).  Composed, it is the denied change with the retry's edit applied to the text that change adds:
`replace('# string helpers' -> 'def shout(text: str) -> str: …')`, what the model means, against the file
as it is.

Composed, the call can leave the file as it is (a user trial: the user's own edit had already put the retry's
line in place of the denied change's); the rails then sample again, as for any change that changes nothing.

Pure: the file is seen only through `holds(call, text)` (whether the file a call names holds `text`) and
`same(a, b)` (whether two calls name one file).  Only a `replace` is composed: its old text says where the
edit goes inside the denied change's new text; an `edit_lines` retry counts lines of a file that was not
written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from continualcode.records import ToolCall

NEW_TEXT = {"replace": "new_string", "write": "content", "edit_lines": "content"}  # what a change puts in


def amended(call: ToolCall, denied: Sequence[ToolCall], *, holds: Callable[[ToolCall, str], bool],
            same: Callable[[ToolCall, ToolCall], bool]) -> ToolCall | None:
    """`call` composed with the latest denied change to its file whose new text holds what `call` replaces,
    where the file itself does not hold it; None when `call` is not such a retry."""
    old, new = call.arguments.get("old_string"), call.arguments.get("new_string")
    if call.name != "replace" or call.arguments.get("replace_all") or not isinstance(old, str) or not old \
            or not isinstance(new, str) or holds(call, old):
        return None
    for d in reversed(denied):
        arg = NEW_TEXT.get(d.name, "")
        body = d.arguments.get(arg)
        if isinstance(body, str) and old in body and same(call, d):
            return ToolCall(d.name, {**d.arguments, arg: body.replace(old, new, 1)})
    return None
