"""Deferred learning on a background thread: the learner's `settle` while the user reads and types.

Boundary: one job per ended task, started by the app when the session has deferred learning pending
(`pending`: the distillation of a correction, `distill_deferred`), and the narrow protocol
of what it runs (`Settleable`).  It knows nothing of learning.

Why: a correction's distillation (paraphrases of its task, a short sample for each, their teacher and
reference scores, the update) took ~27 s of a 44 s correction on a 2-core AVX2 host
(bench/results/speed/).  The retry after a denial does not need it (it waits only for an interim update
on the denied call); later tasks do.  The time between a task's answer and the next task (reading the answer,
typing) is idle for the machine, so the job runs there.

Elsewhere (the benchmarks, `task=`): `settle_now` runs the same work at once on the caller's thread.

Settling: `finish()` waits for the job and hands back its reports (or its error); the app calls it
before it runs a task or a slash command and before it closes, so the backend is never used by two
threads at once and a checkpoint is never saved mid-update.  Before a task it first calls `pause()`: a job
still sampling its distillation prompts (about half of it) stops at the next sample, and one in its training
step's forward and backward drops the step before the optimizer changes anything (a user trial on
python-dotenv waited ~38 s for a step and its guard); the interim update stays, and the work waits for the
task's end (the learner's `settle(stop)`).  One whose step has changed the weights finishes that update, and
the corrections after it take their interim updates again and wait for the task's end.  Why: the user who
types the next task within a minute of an answer waited for all of it
(110 s in a user trial on packaging, two benchmarks beside it; 50-72 s alone on jmespath; ~110 s on isodate,
alone, where the second of two corrections' distillations ran after the first one's update).  The job's
events are emitted by the main thread at `finish()` (the display and the journal are not shared with the
job's thread; a prompt is open while it runs).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from continualcode.events import ErrorShown, Event, Learned, LearnStarted
from continualcode.heap import release


class Settleable(Protocol):
    def settle(self, stop: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        """Do the deferred learning; one report per update taken.  `stop()` true: pause where no weights
        have changed yet (between samples, inside a training step before the optimizer's), keep the work
        pending, return []."""
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
    """One background run of `learner.settle()`."""

    def __init__(self, learner: Settleable) -> None:
        self._learner = learner
        self._stop = threading.Event()
        self.reports: list[dict[str, Any]] = []
        self.error: str | None = None
        self._thread = threading.Thread(target=self._run, name="continualcode-settle", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self.reports = self._learner.settle(stop=self._stop.is_set)
        except Exception as e:  # the learner restored its snapshot; the session goes on
            self.error = str(e).splitlines()[0] if str(e) else type(e).__name__
        finally:
            release()  # what the update freed, this thread's arena included (heap.py)

    def running(self) -> bool:
        """Whether the job is still at work (`finish` would wait)."""
        return self._thread.is_alive()

    def pause(self) -> None:
        """Ask the job to stop where no weights have changed yet (it may be past that: then it runs on)."""
        self._stop.set()

    def finish(self) -> tuple[list[dict[str, Any]], str | None]:
        """Wait for the job; (its reports, its error or None)."""
        self._thread.join()
        return self.reports, self.error
