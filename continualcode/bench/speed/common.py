"""Shared pieces of the speed benchmark: timing, summary statistics, prompts of a given length."""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

CODE_LINE = "    total = compute_total(items, tax_rate=0.2, discount=None)  # keep the running sum\n"


def machine() -> str:
    """The host in one line: architecture, cores and CPU model (runs on two hosts differ in their ratios too:
    a draft's extra rows cost more where the weights stream faster)."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        model = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                      if ln.startswith("model name")), model)
    return f"{platform.machine()}, {os.cpu_count()} cores" + (f", {model}" if model else "")


def stats(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def messages_of_length(renderer: Any, n_tokens: int) -> list[Any]:
    """A user message with a code file long enough that the rendered prompt has ≈ n_tokens."""
    from continualcode.records import Message

    def msgs(k: int) -> list[Any]:
        body = "".join(CODE_LINE for _ in range(k))
        return [Message("user", f"Here is billing.py:\n{body}\nAdd a divide helper to billing.py.")]

    lo, hi = 0, max(1, n_tokens // 4)
    while len(renderer.prompt_ids(msgs(hi))) < n_tokens:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if len(renderer.prompt_ids(msgs(mid))) < n_tokens:
            lo = mid + 1
        else:
            hi = mid
    return msgs(lo)


def completion_of_length(renderer: Any, n_tokens: int) -> list[int]:
    from continualcode.records import ToolCall

    content = "def divide(a, b):\n    if b == 0:\n        raise ZeroDivisionError('b is zero')\n    return a / b\n"
    call = ToolCall("edit_lines", {"path": "billing.py", "start_line": 40, "end_line": 39, "content": content})
    toks = renderer.tok.encode(call.to_text(), add_special_tokens=False)
    while len(toks) < n_tokens - 1:
        content += "# checked\n"
        call = ToolCall("edit_lines", {"path": "billing.py", "start_line": 40, "end_line": 39, "content": content})
        toks = renderer.tok.encode(call.to_text(), add_special_tokens=False)
    return [*toks, renderer.stop_ids[0]]


