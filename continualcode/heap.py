"""Giving freed memory back to the system between the agent's phases.

Why: the CPU tensors of a prefill, an update or a deferred update come from glibc's malloc, which keeps what
they free for reuse, and every thread that allocates keeps its own arena: the app runs the deferred update and
the speculative prefill on threads of their own (settle.py, speculate.py), so each phase's high-water mark
stays resident beside the others'.  Four tasks with a correction each (the 1.5B model, 1.5k–4.5k-token prompts)
peaked at 8.4 GiB on threads as the app runs them and 7.2 GiB on one thread; user trials' sessions, at 7.8–9.7
GB.  `release` asks malloc to return every arena's free pages (`malloc_trim(0)`; tens of milliseconds) and is
called where a phase ends: after a task, and after the deferred update.  The same four tasks then peaked at 7.5
GiB, with 5.7 GiB resident between tasks (bench/results/speed/qwen2.5-coder-1.5b/memory/).  It is a no-op where
there is no glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Callable


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return getattr(libc, "malloc_trim", None)


def release() -> bool:
    """Return the free pages of every malloc arena to the system; False where that cannot be done."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
