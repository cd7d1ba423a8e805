"""Speculative prefill: the next prompt's KV computed while the user reads a proposal.

Boundary: one background job per proposal, and the narrow protocol of a backend that can do it
(`Warmable.warm`: put a prompt's prefix into the KV store ahead of the sample that will ask for it).
What the next prompt is, is handed in as a callable; this module knows nothing of tools or messages.

Why: after an approval the next proposal first prefills what is new, the call's result (a read of
40-200 lines is 600-1,300 tokens: ~4 s for the 1.5B model on 2 cores) and, with int8 decode steps,
the proposal itself (its KV from int8 steps is never kept).  The user spends seconds reading the
proposal; for a read-only call the result is known before the approval (reading has no effect), so
that time can do the prefill.  The speculation changes nothing the model sees: the sample after an
approval renders its prompt as always, and the KV store reuses the longest common prefix, so a file
that changed meanwhile, or a speculation cut short, only costs the part that no longer matches.

Then, when the job was given the proposal's own prompt (`reference`), the frozen base's KV of that prompt: a
denial's update scores the denied call under the base (its KL reference), and once the adapter has moved, that
needs the base's own prefill of the whole conversation — 17 s of a 26 s correction at a 3k-token prompt (1.5B
model, one thread), the first correction of any later task.  Prefilled while the user reads, a turn at a time,
it is only the turn's new tokens.  Nothing while the adapter is a no-op (the base then shares the sampler's KV).

Settling: `finish()` (an approval) waits for the next prompt's prefill and stops the base's at its next chunk
(BASE_CHUNK tokens, ~1 s); `cancel()` (a denial, an edit, an abort) stops both at the next chunk boundary and
waits for that.  The backend is never used by two threads at once:
the session settles the job before it samples or learns again.  An error in the job is dropped (the
store keeps the entries of the forwards that completed, and the sample computes what is missing).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class Warmable(Protocol):
    def warm(self, prompt_ids: Sequence[int], *, stop: threading.Event | None = None, base: bool = False) -> int:
        """Prefill the prefix of `prompt_ids` that `sample(prompt_ids)` would ask the KV store for (`base`: that
        the frozen base's `score` of a completion after it would), in chunks, returning at the first chunk
        boundary after `stop` is set; the tokens it prefilled."""
        ...


class Speculation:
    """One background prefill of the prompt `next_prompt()` builds, then of the base's KV of `reference` (the
    proposal's own prompt), when given (run in the job's thread)."""

    def __init__(self, backend: Warmable, next_prompt: Callable[[], Sequence[int]],
                 reference: Sequence[int] | None = None) -> None:
        self._backend = backend
        self._next_prompt = next_prompt
        self._reference = reference
        self._stop = threading.Event()
        self._stop_base = threading.Event()
        self.prefilled = 0  # tokens the job prefilled for the next prompt
        self.prefilled_base = 0  # and for the base's reference
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="continualcode-speculate", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            ids = self._next_prompt()
            if not self._stop.is_set():
                self.prefilled = self._backend.warm(ids, stop=self._stop)
            if self._reference is not None and not self._stop_base.is_set():
                self.prefilled_base = self._backend.warm(self._reference, stop=self._stop_base, base=True)
        except Exception as e:  # never fatal: the next sample computes what the job did not
            self.error = f"{type(e).__name__}: {e}"

    def finish(self) -> None:
        """Wait for the next prompt's prefill (it is the next sample's); stop the base's at its next chunk."""
        self._stop_base.set()
        self._thread.join()

    def cancel(self) -> None:
        """Stop the job at its next chunk boundary and wait for it."""
        self._stop.set()
        self._stop_base.set()
        self._thread.join()
