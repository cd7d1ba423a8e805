"""One task, run: the simulated user drives a real `Session` on a fresh copy of the package.

The real model and tools; only the user is simulated.  It approves every call that stays in the
workspace (the file tools are confined by the workspace itself) and denies, without a correction,
a bash command that could reach outside it (`continualcode.bench.learn.scenario.unsafe`); a
denial without correction ends the task, so nothing outside is ever run and nothing is learned.
Approved bash runs as configured (`sandbox=auto`: in the bubblewrap sandbox where there is one).
The session's typed events are kept, time-stamped, as the transcript; the row is the checker's
verdict plus the measures computed from the transcript (`metrics.task_measures`).
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from continualcode.agent import Approve, Decision, Deny, Session
from continualcode.backends.base import Backend
from continualcode.bench.learn.scenario import unsafe
from continualcode.bench.learn.tasks import task_seed
from continualcode.bench.tasks.checks import check, outcome_of
from continualcode.bench.tasks.metrics import task_measures
from continualcode.bench.tasks.packages import copy_tree
from continualcode.bench.tasks.taskfile import Task, apply_ops
from continualcode.build import read_cap
from continualcode.config import Config
from continualcode.events import Event
from continualcode.records import Sample, ToolCall
from continualcode.render import Renderer
from continualcode.tools import Workspace

ANSWER_SNIPPET = 600  # characters of the final answer kept in the row (the transcript has it all)


class _Session(Session):
    """A Session that records the prompt length (tokens) of every query."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, **kw)
        self.prompt_tokens: list[int] = []

    def query(self, **kw: Any) -> tuple[list[int], Sample, str]:
        prompt_ids, sample, text = super().query(**kw)
        self.prompt_tokens.append(len(prompt_ids))
        return prompt_ids, sample, text


class SimUser:
    """Approve what stays in the workspace; deny (no correction: the task ends) what could leave it."""

    def __init__(self) -> None:
        self.denied: list[dict[str, Any]] = []

    def decide(self, call: ToolCall, preview: str) -> Decision:
        if unsafe(call):
            self.denied.append({"name": call.name, "arguments": call.arguments})
            return Deny("")
        return Approve()


class Transcript:
    """The event sink: every journaled event as its record, stamped with seconds since the start."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()
        self.records: list[dict[str, Any]] = []

    def __call__(self, ev: Event) -> None:
        if ev.JOURNALED:
            self.records.append({"type": ev.TYPE, "t": round(time.perf_counter() - self.t0, 3), **ev.record()})


@dataclass
class Ctx:
    """A loaded model and the configuration the sessions run with."""

    backend: Backend
    renderer: Renderer
    cfg: Config

    def workspace(self, root: Path) -> Workspace:
        return Workspace(root, **{**self.cfg.tool_settings(), "pass_secrets": False}, read_cap=read_cap(self.cfg))


def run_task(ctx: Ctx, task: Task, source: Path, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Run one task with the simulated user and check it; (the unit row, the transcript)."""
    t0 = time.perf_counter()
    user, transcript = SimUser(), Transcript()
    with tempfile.TemporaryDirectory(prefix="cc-tasks-") as tmp:
        # 1) a fresh copy of the package, with the task's setup (a planted bug) applied
        root = copy_tree(source, Path(tmp) / source.name)
        apply_ops(root, task.setup)
        # 2) the session, seeded per (run seed, task)
        sampling_seed = task_seed(seed, task.id, "task", 0)
        s = _Session(ctx.backend, ctx.renderer, ctx.workspace(root), user, sampling=ctx.cfg.sampling_config(),
                     on_event=transcript, seed=sampling_seed)
        result = s.run_task(task.task)
        sec = time.perf_counter() - t0
        # 3) the checker, on what the session left
        verdict = check(task, outcome_of(transcript.records), root)
    row = {
        "key": [task.id, seed], "task": task.id, "package": task.package, "kind": task.kind, "split": task.split,
        "seed": seed, "sampling_seed": sampling_seed, "status": result.status, "success": verdict.passed,
        "check": verdict.to_dict(), "denied": user.denied, "answer": result.text[:ANSWER_SNIPPET],
        **task_measures(transcript.records), "prompt_tokens": s.prompt_tokens, "sec": round(sec, 2),
        "check_sec": round(time.perf_counter() - t0 - sec, 2),
    }
    doc = {"task": task.id, "package": task.package, "kind": task.kind, "split": task.split, "seed": seed,
           "text": task.task, "status": result.status, "success": verdict.passed, "check": verdict.to_dict(),
           "prompt_tokens": s.prompt_tokens, "events": transcript.records}
    return row, doc
