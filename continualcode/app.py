"""The composition root: builds the parts from a `Config` and runs the read-task loop with slash commands.

It is the only module that knows all the parts.  Two jobs, two classes:
- `Recorder` is where the session's events go: the display, the journal (fsynced per event),
  metrics.jsonl and the heatmap files of each learning step, and the adapter checkpoint every
  `save_every` steps (atomically; `resume=true` picks it up together with the conversation).
- `App` is the loop: tasks and slash commands until /quit or end of input.
"""

from __future__ import annotations

import itertools
import sys
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.markup import escape

from continualcode.agent import Approver, Session
from continualcode.backends.base import Backend, BackendError
from continualcode.build import Parts, build_backend, build_parts, cache_path, load_last_good, read_cap
from continualcode.config import Config
from continualcode.context import defined_names
from continualcode.events import (
    Checkpoint,
    Cleared,
    Decided,
    Event,
    Info,
    Learned,
    MessageAdded,
    Resumed,
    SessionEnd,
    SessionStart,
    Undone,
    UserTask,
)
from continualcode.heap import release
from continualcode.journal import Journal, latest_session, read_events, read_metrics, state_dir
from continualcode.learn.memory import HEADER as MEMORY_HEADER
from continualcode.learn.memory import (
    MEMORY_FILE,
    NOT_KEPT,
    Memory,
    fleeting,
    project_block,
    prompt_texts,
    workspace_notes,
)
from continualcode.learn.recall import TaskRules
from continualcode.records import Correction, Message
from continualcode.render import SYSTEM_PROMPT
from continualcode.settle import Settling, pending, show
from continualcode.tools import Workspace
from continualcode.ui.terminal import Display
from continualcode.ui.visible import visible

HELP = """/help      this list
/metrics   the last learning step and running totals, with sparklines
/heatmap N the token heatmap of learning step N (default: the last)
/plot      write a PNG of the training curves and print its path
/memory    the project's rules from your corrections (/memory edit opens them in $EDITOR)
/undo      revert the last learning step
/clear     forget the conversation (the adapter keeps what it learned)
/save      save the adapter now
/quit      save and leave"""


class Input(Approver, Protocol):
    def read_task(self) -> str | None: ...


class ConfigError(ValueError):
    """A configuration problem, reported as one line."""


def project_state(cfg: Config) -> Path:
    ws = Path(cfg.workspace).expanduser()
    if not ws.is_dir():
        raise ConfigError(f"workspace {cfg.workspace!r} is not a directory")
    d = state_dir(ws.resolve(), Path(cfg.state_home).expanduser() if cfg.state_home else None)
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / ".writable"
        probe.write_text("")
        probe.unlink()
    except OSError as e:
        raise ConfigError(f"state directory {d} is not writable ({e.strerror}): set state_home=…") from None
    return d


@dataclass
class Recorder:
    """The session's event sink: display, journal, per-step metrics and heatmaps, periodic saves."""

    cfg: Config
    backend: Backend
    journal: Journal
    state: Path
    display: Display
    memory: Memory | None = None
    task: str = ""  # the task at hand: a rule from a correction is kept with it (learn/recall.py matches on it)
    code: Callable[[], Collection[str]] = frozenset  # the names the project's code defines (memory.fleeting)
    steps_since_save: int = 0
    heatmaps: dict[int, dict[str, Any]] = field(default_factory=dict)

    def __call__(self, ev: Event) -> None:
        self.display.show(ev)
        if isinstance(ev, UserTask):
            self.task = ev.text
        if not ev.JOURNALED:
            return
        self.journal.append(ev.TYPE, **ev.record())
        if isinstance(ev, Learned):
            self._learned(ev)
        elif isinstance(ev, Decided) and ev.kind in ("deny", "feedback") and ev.text and self.memory is not None:
            if why := fleeting(ev.text, self.code()):
                self.display.show(Info(NOT_KEPT.format(why=why)))
            else:
                self.memory.add(ev.text, task=self.task)  # for this session's later tasks, and every later session

    def _learned(self, ev: Learned) -> None:
        self.journal.log_metrics(ev.metrics)
        self.heatmaps[ev.step] = ev.heatmap
        self._write_heatmap(ev.step, ev.heatmap)
        if not ev.rolled_back:
            self.steps_since_save += 1
            if self.cfg.save_every and self.steps_since_save >= self.cfg.save_every:
                self.save()

    def _write_heatmap(self, step: int, heat: dict[str, Any]) -> None:
        from continualcode.ui.heatmap import write_html, write_png

        if heat.get("tokens"):
            d = self.journal.session_dir / "heatmaps"
            title = f"continualcode step {step}"
            write_html(d / f"step-{step}.html", heat["tokens"], heat["student_lp"], heat["teacher_lp"],
                       heat["advantage"], title=title)
            write_png(d / f"step-{step}.png", heat["tokens"], heat["advantage"], title=title)

    def save(self) -> Path:
        path = self.state / "adapter"
        self.backend.save(path)
        self.steps_since_save = 0
        self(Checkpoint(str(path), self.backend.step))
        return path


def shown(text: str) -> str:
    """Text for the terminal: control characters visible, rich markup escaped."""
    return escape(visible(text))


def project_tasks(state: Path, c: Correction, limit: int = 16) -> list[str]:
    """The project's earlier tasks, newest first, without the one being corrected (for distillation)."""
    from continualcode.journal import list_sessions
    from continualcode.learn.prompts import task_of

    current, out = task_of(c.messages).strip(), []
    for info in list_sessions(state):
        try:
            events = read_events(info.path / "journal.jsonl")
        except (OSError, ValueError):
            continue
        for e in reversed(events):
            text = str(e.get("text") or "").strip() if e.get("type") == UserTask.TYPE else ""
            if text and text != current and text not in out:
                out.append(text)
        if len(out) >= limit:
            break
    return out[:limit]


def _edit_file(path: Path) -> None:
    """Open `path` in $EDITOR (the file is created with its header first)."""
    import os
    import shlex
    import subprocess

    editor = os.environ.get("EDITOR") or "vi"
    subprocess.run([*shlex.split(editor), str(path)], check=False)


def _open_journal(cfg: Config, state: Path, parts: Parts, workspace: Workspace,
                  display: Display) -> tuple[Journal, list[Message] | None]:
    """The session's journal, adapter loaded: a new one, or the last one and its conversation when resuming."""
    backend = parts.backend
    prev = latest_session(state) if cfg.resume else None
    if cfg.load_checkpoint_path:
        backend.load(Path(cfg.load_checkpoint_path).expanduser())
    elif cfg.resume:
        for ev in load_last_good(backend, state / "adapter"):
            display.show(ev)
    if prev is None:
        import chz

        start = SessionStart(backend.model_id, str(workspace.root), chz.asdict(cfg))
        return Journal.create(state, meta=start.record()), None
    resumed = [MessageAdded.from_record(e).message() for e in read_events(prev / "journal.jsonl")
               if e.get("type") == MessageAdded.TYPE]
    return Journal.open(prev), resumed


@dataclass
class App:
    """A running agent: the session, its recorder, and the slash commands."""

    cfg: Config
    session: Session
    recorder: Recorder
    learner: Any = None
    settling: Settling | None = None  # the background job of the last task's deferred learning

    @classmethod
    def build(cls, cfg: Config, inp: Input, display: Display, *, state: Path | None = None,
              backend: Backend | None = None) -> App:
        state = state if state is not None else project_state(cfg)
        memory = Memory(state / MEMORY_FILE) if cfg.memory else None
        root = Path(cfg.workspace).expanduser()
        # the rules: all of them in the system prompt (memory_at=system), or a task's own opening its turn
        opening = memory.rules if memory is not None and cfg.memory_at == "system" else []
        block = project_block(opening, workspace_notes(root)) if memory is not None else ""
        parts = build_parts(cfg, backend, prompts=lambda c: project_tasks(state, c),
                            **prompt_texts(SYSTEM_PROMPT, block, cfg.memory_at))
        try:
            workspace = Workspace(root, **cfg.tool_settings(), read_cap=read_cap(cfg))
        except ValueError as e:  # sandbox=on where bubblewrap cannot run
            raise ConfigError(str(e)) from None
        journal, resumed = _open_journal(cfg, state, parts, workspace, display)
        recorder = Recorder(cfg, parts.backend, journal, state, display, memory, code=lambda: defined_names(workspace))
        task_rules = TaskRules(cfg.memory_rules, opening)
        session = Session(
            parts.backend, parts.renderer, workspace, inp, learner=parts.learner, sampling=cfg.sampling_config(),
            auto_approve=[t.strip() for t in cfg.auto_approve.split(",") if t.strip()],
            on_event=recorder, seed=cfg.seed, learn_from_approved_retry=cfg.learn_from_approved_retry,
            notes=lambda task: task_rules(recorder.memory, task),
        )
        if resumed is not None:
            session.resume(resumed)
            recorder(Resumed(len(resumed), parts.backend.step))
            display.show(Info(f"resumed session {journal.session_id}: {len(resumed)} messages, "
                              f"adapter at step {parts.backend.step}"))
        return cls(cfg, session, recorder, parts.learner)

    @property
    def backend(self) -> Backend:
        return self.recorder.backend

    @property
    def journal(self) -> Journal:
        return self.recorder.journal

    @property
    def display(self) -> Display:
        return self.recorder.display

    def _memory(self, arg: str) -> None:
        """/memory: the project's rules and where they live; /memory edit: open them in $EDITOR."""
        c, memory = self.display.console, self.recorder.memory
        if memory is None or memory.path is None:
            c.print("memory is off (memory=false)")
            return
        if arg == "edit":
            if not memory.path.exists():
                memory.path.write_text(MEMORY_HEADER)
            _edit_file(memory.path)
            self.recorder.memory = Memory(memory.path)
            later = " (changed or removed ones in the system prompt: from the next session)" \
                if self.cfg.memory_at == "system" else ""
            c.print(f"{len(self.recorder.memory.rules)} rules; they apply from your next task{later}")
            return
        rules = memory.rules
        c.print("\n".join(f"- {shown(r)}" for r in rules) if rules else "no rules yet")
        k = self.cfg.memory_rules
        few = f" · each task gets the {k} that fit it best (memory_rules)" \
            if self.cfg.memory_at == "task" and 0 < k < len(rules) else ""
        c.print(f"[dim]{shown(str(memory.path))} · /memory edit to change · a new rule applies from your next task"
                f"{few}[/]")

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, inp: Input, first: str | None = None) -> int:
        """Tasks and slash commands until /quit or end of input; `first` was read before the model loaded.
        A task's deferred learning runs in the background while the next line is typed (settle.py)."""
        if self.cfg.task:
            self.session.run_task(self.cfg.task)
        for line in itertools.chain([first] if first is not None else [], iter(inp.read_task, None)):
            line = line.strip()
            if not line:
                continue
            self.settle_background(pause=not line.startswith("/"))
            if line.startswith("/"):
                if self.command(line) == "quit":
                    break
                continue
            try:
                self.session.run_task(line, settle=False)
            except KeyboardInterrupt:
                self.display.stop()
                self.display.console.print("[yellow]interrupted[/]")
                self.recorder(Decided("abort"))
            release()  # what the task's prefills and updates freed, the speculative prefill's thread included
            if pending(self.session.learner):
                self.display.show(Info("learning from the correction on more prompts in the background"))
                self.settling = Settling(self.session.learner)  # type: ignore[arg-type]
        self.close()
        return 0

    def settle_background(self, *, pause: bool = False) -> None:
        """Wait for the background learning, if any, and show what it did (saying so first when it is still at
        work: after three corrections the 1.5B model's took ~2.5 min, and a silent wait looks like a hang).
        `pause` (a task is next): a job still sampling is paused instead, and runs again when the task ends."""
        job, self.settling = self.settling, None
        if job is not None and job.running():
            if pause:
                job.pause()
            self.display.show(Info("finishing the background learning from the last task first" if not pause
                                   else "pausing the background learning for this task"))
        while job is not None:
            try:
                show(self.recorder, *job.finish())
                if pause and pending(self.session.learner):
                    self.display.show(Info("the background learning goes on when this task ends"))
                return
            except KeyboardInterrupt:  # an update cannot stop halfway: wait for it
                self.display.console.print("[yellow]finishing the background learning first[/]")

    def close(self) -> None:
        if self.settling is not None:
            self.display.show(Info("finishing the learning update before exit"))
        self.settle_background()
        self.display.stop()
        if self.recorder.steps_since_save:
            self.recorder.save()
        self.recorder(SessionEnd(self.backend.step))
        self.journal.close()

    def command(self, line: str) -> str | None:
        c = self.display.console
        cmd, _, arg = line.partition(" ")
        if cmd in ("/quit", "/exit"):
            return "quit"
        if cmd == "/help":
            c.print(HELP)
        elif cmd == "/metrics":
            from continualcode.ui.metrics_view import metrics_table

            c.print(metrics_table(read_metrics(self.journal.session_dir)))
        elif cmd == "/heatmap":
            from continualcode.ui.heatmap import render_terminal

            heatmaps = self.recorder.heatmaps
            steps = sorted(heatmaps)
            step = int(arg) if arg.strip().isdigit() else (steps[-1] if steps else None)
            heat = heatmaps.get(step) if step is not None else None
            if not heat:
                c.print("no heatmap for that step in this session")
            else:
                c.print(render_terminal(heat["tokens"], heat["advantage"]))
                c.print(f"[dim]{shown(str(self.journal.session_dir / 'heatmaps' / f'step-{step}.html'))}[/]")
        elif cmd == "/plot":
            from continualcode.ui.plots import plot_curves

            d = self.journal.session_dir
            c.print(str(plot_curves(read_metrics(d), d / "plots" / "curves.png")))
        elif cmd == "/undo":
            if self.learner is not None and self.learner.undo():
                self.recorder(Undone(self.backend.step))
                c.print(f"reverted the last learning step (adapter at step {self.backend.step})")
            else:
                c.print("nothing to undo")
        elif cmd == "/clear":
            self.session.messages.clear()
            self.recorder(Cleared())
            c.print("conversation cleared")
        elif cmd == "/memory":
            self._memory(arg.strip())
        elif cmd == "/save":
            c.print(f"saved to {self.recorder.save()}")
        else:
            c.print(f"unknown command {cmd}; /help lists them")
        return None


class BackgroundBackend:
    """`build_backend(cfg)` on a daemon thread, started at once, so the prompt is up while torch,
    transformers and the model load (≈ 4–5 s on a 2-core CPU, most of it imports) and the user's first
    task is typed in the meantime; `result()` waits for it and re-raises a load error."""

    def __init__(self, cfg: Config) -> None:
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._load, args=(cfg,), name="load-backend", daemon=True)
        self._thread.start()

    def _load(self, cfg: Config) -> None:
        try:
            self._out["backend"] = build_backend(cfg)
        except BaseException as e:  # handed to the main thread by result()
            self._out["error"] = e

    def result(self) -> Backend:
        self._thread.join()
        if "error" in self._out:
            raise self._out["error"]
        return self._out["backend"]


def run_agent(cfg: Config) -> int:
    """Build everything and run until /quit or end of input.

    Interactively, the prompt comes first: the backend loads in the background while the first task
    is typed (Claude Code and aider also take input before their first model call) — unless a built-in
    model must first be downloaded and converted, whose progress would garble the prompt."""
    from continualcode.models import needs_setup
    from continualcode.tools.sandbox import unavailable as sandbox_unavailable
    from continualcode.ui.terminal import KeyInput, LineInput

    display = Display()
    interactive = cfg.interactive == "true" or (cfg.interactive == "auto" and sys.stdin.isatty())
    first: str | None = None
    try:
        state = project_state(cfg)  # a bad workspace or state_home fails before anything loads
        if cfg.sandbox == "on" and (why := sandbox_unavailable()) is not None:
            raise ConfigError(f"sandbox=on, but {why}")
        loader = BackgroundBackend(cfg)
        inp: Input = KeyInput(display, str(state / "history")) if interactive else LineInput(display, sys.stdin)
        if interactive and not cfg.task and not (cfg.backend == "local" and needs_setup(cfg.model_name,
                                                                                       cache=cache_path(cfg))):
            display.console.print(f"[bold]continualcode[/] · loading {shown(cfg.model_name)} · type a task, /help for "
                                  "commands, Ctrl-D to leave")
            first = inp.read_task()
            if first is None:
                return 0
        app = App.build(cfg, inp, display, state=state, backend=loader.result())
    except (BackendError, ConfigError) as e:
        display.stop()
        print(f"continualcode: {e}", file=sys.stderr)
        return 1
    display.console.print(f"[bold]continualcode[/] · {shown(app.backend.model_id)} · workspace "
                          f"{shown(str(app.session.workspace.root))}"
                          f" · training {'on' if cfg.enable_training else 'off'} · /help for commands")
    return app.run(inp, first)
