"""Deferred learning on a background thread (continualcode/settle.py) and the app's use of it: the job runs
after a task ends, and it is finished (its updates journaled) before the next task, a slash command, or
closing.  The learner here is a scripted stand-in (the real `Learner.settle` is tested in
tests/test_learn_step.py); the app, its journal and the real embedded backend are real."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from continualcode.agent import TaskResult
from continualcode.settle import Settling


class SlowLearner:
    """`settle` blocks until released, then reports one update per pending correction (or raises)."""

    def __init__(self, *, fail: bool = False) -> None:
        self.pending: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()
        self.fail = fail
        self.settled_at: list[int] = []

    def settle(self, stop=None):
        self.started.set()
        while not self.release.wait(0.01):  # as the real learner: a pause before any update keeps the work
            if stop is not None and stop():
                return []
        if self.fail:
            raise RuntimeError("learning step failed and was rolled back: boom\nmore")
        done, self.pending = self.pending, []
        return [{"step": 7, "kind": "deny", "loss": 0.1, "kl_after": 0.01, "deferred": True, "rolled_back": ""}
                for _ in done]


def test_a_job_runs_on_its_own_thread_and_finish_waits_for_it():
    learner = SlowLearner()
    learner.pending = ["c1"]
    job = Settling(learner)
    assert learner.started.wait(5) and job.reports == [] and job.running()
    learner.release.set()
    reports, error = job.finish()
    assert error is None and len(reports) == 1 and reports[0]["deferred"] and not job.running()


def test_a_paused_job_ends_without_reports_and_keeps_its_work():
    learner = SlowLearner()
    learner.pending = ["c1"]
    job = Settling(learner)
    assert learner.started.wait(5)
    job.pause()
    assert job.finish() == ([], None) and learner.pending == ["c1"] and not job.running()


def test_a_failed_job_reports_its_first_line():
    learner = SlowLearner(fail=True)
    learner.release.set()
    assert Settling(learner).finish() == ([], "learning step failed and was rolled back: boom")


@pytest.mark.slow
def test_scripted_tasks_the_app_settles_in_the_background_and_finishes_before_the_next_task(
        tmp_path: Path, backend, monkeypatch):
    from continualcode.app import App
    from continualcode.config import parse_config
    from continualcode.journal import read_events
    from continualcode.ui.terminal import Display

    class Lines:
        def __init__(self, lines):
            self.lines = list(lines)

        def read_task(self):
            return self.lines.pop(0) if self.lines else None

        def decide(self, call, preview):
            raise AssertionError("not asked")

    ws = tmp_path / "ws"
    ws.mkdir()
    cfg = parse_config([f"workspace={ws}", f"state_home={tmp_path / 'state'}", "save_every=0"])
    learner = SlowLearner()
    order: list[str] = []
    app = App.build(cfg, Lines(["first task", "second task"]), Display(), backend=backend)
    app.session.learner = learner

    def scripted_task(task):  # a task whose denial left a correction to distil; records what the job was doing
        order.append(f"{task} (job running: {app.settling is not None})")
        if task == "first task":
            learner.pending.append("c1")
        return TaskResult(status="answered", text="ok")

    monkeypatch.setattr(app.session, "_run_task", scripted_task)
    real_finish = Settling.finish

    def finish(job):  # the job is still blocked when the second task comes; released only when the app closes
        order.append("finish")
        if len(order) > 3:
            learner.release.set()
        return real_finish(job)

    monkeypatch.setattr(Settling, "finish", finish)
    import io

    from rich.console import Console

    app.display.console = Console(file=io.StringIO(), width=200, color_system=None)
    app.run(app.session.approver)  # type: ignore[arg-type]
    # the second task came while the job was blocked: paused (not waited for), the work kept, run after the
    # task, and finished (waited for) when the app closes
    assert order == ["first task (job running: False)", "finish", "second task (job running: False)", "finish"]
    said = app.display.console.file.getvalue()
    assert "pausing the background learning for this task" in said
    assert "the background learning goes on when this task ends" in said
    assert "finishing the learning update before exit" in said
    assert learner.started.is_set() and not learner.pending and app.settling is None
    learned = [e for e in read_events(app.journal.session_dir / "journal.jsonl") if e.get("type") == "learn"]
    assert len(learned) == 1 and learned[0]["deferred"] is True


def test_the_terminal_says_a_deferred_update_replaces_the_interim_one():
    import io

    from rich.console import Console

    from continualcode.ui.terminal import Display

    d = Display()
    d.console = Console(file=io.StringIO(), width=200, color_system=None)
    d.learn_summary({"step": 1, "loss": 0.1, "kl_after": 0.01, "sec_total": 19.0})
    d.learn_summary({"step": 1, "loss": 0.1, "kl_after": 0.01, "sec_total": 40.0, "deferred": True,
                     "distill_examples": 3})
    first, second = d.console.file.getvalue().splitlines()
    assert "interim" not in first and second.endswith("replaces the interim update, with 3 more prompts")
