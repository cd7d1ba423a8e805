"""The tool-call parser fuzzed: generated replies (random text, mutated and truncated valid calls,
wrong argument types) through `render.parse`; it must never raise and never return a multi-line
error. Pure and seeded; needs only `continualcode.render` and `continualcode.records`.
"""

from __future__ import annotations

import json
import random
from typing import Any


def parser_fuzz(n: int, *, seed: int = 0) -> dict[str, Any]:
    """Feed `n` generated replies (random text, mutated and truncated valid calls, wrong types) to the
    tool-call parser and argument validation; count crashes (must be 0) and outcome kinds."""
    from continualcode.records import ToolCall
    from continualcode.render import parse
    from continualcode.tools import TOOL_NAMES

    rng = random.Random(seed)
    atoms: list[Any] = [None, True, 0, -1, 2**70, 1.5, float("nan"), "", "x", "../../etc/passwd", [], {}, [1], {"a": 1}]
    valid = [ToolCall("read", {"path": "a.py"}).to_text(),
             ToolCall("edit_lines", {"path": "a", "start_line": 1, "end_line": 1, "content": "x"}).to_text(),
             ToolCall("bash", {"command": "ls"}).to_text()]
    alphabet = '<>{}[]":,\\n tool_call/abcxyz0123456789\x00\u00e9\ud800'
    counts = {"call": 0, "text": 0, "error": 0, "crash": 0, "multiline_error": 0}
    crashes: list[str] = []
    for _ in range(n):
        kind = rng.randrange(4)
        if kind == 0:  # random text
            s = "".join(rng.choice(alphabet) for _ in range(rng.randrange(60)))
        elif kind == 1:  # a valid call with a few characters changed or dropped
            v = list(rng.choice(valid))
            for _ in range(rng.randrange(1, 4)):
                i = rng.randrange(len(v))
                v[i] = rng.choice(alphabet) if rng.random() < 0.7 else ""
            s = "".join(v)
        elif kind == 2:  # a valid call cut short
            v = rng.choice(valid)
            s = v[: rng.randrange(len(v))]
        else:  # well-formed JSON, wrong names and argument types
            name = rng.choice([*TOOL_NAMES, "nope"])
            args = {rng.choice(["path", "content", "start_line", "end_line", "command", "pattern", "zzz"]):
                    rng.choice(atoms) for _ in range(rng.randrange(5))}
            s = "<tool_call>\n" + json.dumps({"name": name, "arguments": args}) + "\n</tool_call>"
        try:
            p = parse(s)
        except Exception as e:  # the parser promises never to raise
            counts["crash"] += 1
            crashes.append(f"{type(e).__name__}: {s[:80]!r}")
            continue
        key = "call" if p.call else "text" if p.text is not None else "error"
        counts[key] += 1
        if p.error is not None and "\n" in p.error:
            counts["multiline_error"] += 1
    return {"inputs": n, **counts, "crash_examples": crashes[:10]}
