"""Between tasks, on a background thread: the learner's deferred `settle`, then the next task's prompt prefix
prefilled, while the user reads the answer and types.

Boundary: one job per ended task, started by the app when the session has deferred learning pending
(`pending`: the distillation of a correction, `distill_deferred`), and the narrow protocol
of what it runs (`Settleable`).  It knows nothing of learning.

Why: a correction's distillation (paraphrases of its task, a short sample for each, their teacher and
reference scores, the update) took ~27 s of a 44 s correction on a 2-core AVX2 host
(bench/results/speed/).  The retry after a denial does not need it (it waits only for an interim update
on the denied call); later tasks do.  The time between a task's answer and the next task (reading the answer,
typing) is idle for the machine, so the job runs there.

Then (`then`, the app's: the local backend's `warm`) the start of the next task's prompt is prefilled: after
any update every stored KV is out of date, and a task's prompt opens with ~1,300 tokens that are known before
it is typed (the system text, the tools, the worked example; the whole conversation when tasks continue it):
~20 s of prefill for the 1.5B model on 2 cores before the first proposal.  When nothing changed, they are in the
KV store already and it computes nothing.  `finish()` stops it at its next chunk (what it computed is the next
prompt's, and is reused).

Elsewhere (the benchmarks, `task=`): `settle_now` runs the same work at once on the caller's thread.

Settling: `finish()` waits for the job and hands back its reports (or its error); the app calls it
before it runs a task or a slash command and before it closes, so the backend is never used by two
threads at once and a checkpoint is never saved mid-update.  The job's events are emitted by the main
thread at `finish()` (the display and the journal are not shared with the job's thread; a prompt is
open while it runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from continualcode.events import ErrorShown, Event, Learned, LearnStarted
from continualcode.heap import release


class Settleable(Protocol):
    def settle(self) -> list[dict[str, Any]]:
        """Do the deferred learning; one report per update taken."""
        ...


def pending(learner: Any) -> bool:
    """Whether `learner` has deferred work (learn/step.py `Learner.settle`: a correction's distillation)."""
    return callable(getattr(learner, "settle", None)) and bool(getattr(learner, "pending", None))


def settle_now(learner: Any, emit: Callable[[Event], None]) -> None:
    """The learner's deferred updates, now, on this thread, if any are pending; their events to `emit`."""
    if not pending(learner):
        return
    emit(LearnStarted("correction on more prompts"))
    try:
        reports = learner.settle()
    except RuntimeError as e:  # the learner restored the adapter; the session goes on
        emit(ErrorShown(str(e).splitlines()[0]))
        return
    show(emit, reports)


def show(emit: Callable[[Event], None], reports: Sequence[dict[str, Any]], error: str | None = None) -> None:
    """Show and journal deferred updates (a job's, on the main thread), or the error that undid one."""
    if error:
        emit(ErrorShown(error))
    for report in reports:
        emit(Learned.from_report(report))


class Settling:
    """One background run of `learner.settle()` (None: nothing to learn), then of `then(stop)`."""

    def __init__(self, learner: Settleable | None, then: Callable[[threading.Event], object] | None = None) -> None:
        self.learner = learner
        self._then = then
        self._stop = threading.Event()
        self.reports: list[dict[str, Any]] = []
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="continualcode-settle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            if self.learner is not None:
                self.reports = self.learner.settle()
        except Exception as e:  # the learner restored its snapshot; the session goes on
            self.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        try:
            if self._then is not None and not self._stop.is_set():
                self._then(self._stop)
        except Exception:  # a prefill that failed only leaves the next sample more to compute
            pass
        finally:
            release()  # what the update freed, this thread's arena included (heap.py)

    def finish(self) -> tuple[list[dict[str, Any]], str | None]:
        """Stop `then` at its next chunk, wait for the job; (the update's reports, its error or None)."""
        self._stop.set()
        self._thread.join()
        return self.reports, self.error
