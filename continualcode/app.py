"""The composition root: builds backend, renderer, workspace, learner, journal and session from a
`Config`, and runs the read-task loop with slash commands.

It is the only module that knows all the parts.  Side effects of learning live here: every
session event goes to the journal (fsynced), every step's metrics to metrics.jsonl, its heatmap
to heatmaps/step-N.html and .png, and the adapter to the project's state directory every
`save_every` steps (atomically; `resume=true` picks it up together with the conversation).
"""

from __future__ import annotations

import itertools
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from continualcode.agent import Approver, SamplingConfig, Session
from continualcode.backends.base import Backend, BackendError
from continualcode.config import Config
from continualcode.journal import Journal, latest_session, read_events, read_metrics, state_dir
from continualcode.render import Message, Renderer
from continualcode.tools import Workspace
from continualcode.ui.terminal import Display

HELP = """/help      this list
/metrics   the last learning step and running totals, with sparklines
/heatmap N the token heatmap of learning step N (default: the last)
/plot      write a PNG of the training curves and print its path
/undo      revert the last learning step
/clear     forget the conversation (the adapter keeps what it learned)
/save      save the adapter now
/quit      save and leave"""


class Input(Approver, Protocol):
    def read_task(self) -> str | None: ...


class ConfigError(ValueError):
    """A configuration problem, reported as one line."""


def build_backend(cfg: Config) -> Backend:
    if cfg.backend == "tinker":
        from continualcode.backends.tinker import TinkerBackend

        return TinkerBackend(cfg.model_name, lora_rank=cfg.lora_rank, seed=cfg.seed)
    from continualcode.backends.local import LocalBackend

    return LocalBackend(
        cfg.model_name, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets,
        device=cfg.device, dtype=cfg.dtype, grad_clip=cfg.grad_clip, prefix_grad=cfg.prefix_grad,
        seed=cfg.seed, threads=cfg.threads, cache=Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None,
    )


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
class App:
    """A running agent: the parts, the journal, and the slash commands."""

    cfg: Config
    backend: Backend
    session: Session
    journal: Journal
    state: Path
    display: Display
    learner: Any = None
    steps_since_save: int = 0
    heatmaps: dict[int, dict[str, Any]] = field(default_factory=dict)

    # --- construction -----------------------------------------------------------------------------

    @classmethod
    def build(cls, cfg: Config, make_input: Any, display: Display, backend: Backend | None = None) -> App:
        state = project_state(cfg)
        backend = backend or build_backend(cfg)
        renderer = Renderer(backend.tokenizer, vocab_size=getattr(backend, "vocab_size", None))
        workspace = Workspace(Path(cfg.workspace).expanduser(), result_cap=cfg.result_cap,
                              bash_timeout=cfg.bash_timeout, pass_secrets=cfg.pass_secrets)
        learner = None
        if cfg.enable_training:
            from continualcode.learn.step import Learner

            learner = Learner(backend, renderer, cfg.learn_config())
        resumed: list[Message] = []
        prev = latest_session(state) if cfg.resume else None
        if cfg.load_checkpoint_path:
            backend.load(Path(cfg.load_checkpoint_path).expanduser())
        elif cfg.resume and (state / "adapter").is_dir():
            backend.load(state / "adapter")
        if prev is not None:
            resumed = [Message(e["role"], e["content"], e.get("meta") or {})
                       for e in read_events(prev / "journal.jsonl") if e.get("type") == "message"]
            journal = Journal.open(prev)
        else:
            journal = Journal.create(state, meta={"model": backend.model_id, "workspace": str(workspace.root),
                                                  "config": _config_dict(cfg)})
        app = cls(cfg=cfg, backend=backend, session=None, journal=journal, state=state,  # type: ignore[arg-type]
                  display=display, learner=learner)
        sampling = SamplingConfig(temperature=cfg.temperature, top_p=cfg.top_p, max_tokens=cfg.max_tokens,
                                  constrained=cfg.constrained, max_turns=cfg.max_turns)
        app.session = Session(
            backend, renderer, workspace, make_input(app), learner=learner, sampling=sampling,
            auto_approve=[t.strip() for t in cfg.auto_approve.split(",") if t.strip()],
            on_event=app.on_event, seed=cfg.seed, learn_from_approved_retry=cfg.learn_from_approved_retry,
        )
        app.session.messages.extend(resumed)
        if prev is not None:
            journal.append("resume", messages=len(resumed), step=backend.step)
            display.event("info", {"text": f"resumed session {prev.name}: {len(resumed)} messages, "
                                           f"adapter at step {backend.step}"})
        return app

    # --- events -----------------------------------------------------------------------------------

    def on_event(self, type_: str, data: dict[str, Any]) -> None:
        self.display.event(type_, data)
        if type_ in ("thinking", "learn_start"):
            return
        if type_ != "learn":
            self.journal.append(type_, **data)
            return
        step = int(data.get("step", 0))
        heat = {k: data.get(k) for k in ("tokens", "student_lp", "teacher_lp", "advantage")}
        metrics = {k: v for k, v in data.items() if k not in heat}
        self.journal.append("learn", **metrics, heatmap=heat)
        self.journal.log_metrics(metrics)
        self.heatmaps[step] = heat
        self._write_heatmap(step, heat)
        if not data.get("rolled_back"):
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
        self.backend.save(path)  # type: ignore[call-arg]
        self.steps_since_save = 0
        self.journal.append("checkpoint", path=str(path), step=self.backend.step)
        return path

    # --- the loop ---------------------------------------------------------------------------------

    def run(self, inp: Input, first: str | None = None) -> int:
        """Tasks and slash commands until /quit or end of input; `first` was read before the model loaded."""
        c = self.display.console
        if self.cfg.task:
            self.session.run_task(self.cfg.task)
        for line in itertools.chain([first] if first is not None else [], iter(inp.read_task, None)):
            line = line.strip()
            if not line:
                continue
            if line.startswith("/"):
                if self.command(line) == "quit":
                    break
                continue
            try:
                self.session.run_task(line)
            except KeyboardInterrupt:
                self.display.stop()
                c.print("[yellow]interrupted[/]")
                self.journal.append("decision", kind="abort")
        self.close()
        return 0

    def close(self) -> None:
        self.display.stop()
        if self.steps_since_save:
            self.save()
        self.journal.append("session_end", step=self.backend.step)
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

            steps = sorted(self.heatmaps)
            step = int(arg) if arg.strip().isdigit() else (steps[-1] if steps else None)
            heat = self.heatmaps.get(step) if step is not None else None
            if not heat:
                c.print("no heatmap for that step in this session")
            else:
                c.print(render_terminal(heat["tokens"], heat["advantage"]))
                c.print(f"[dim]{self.journal.session_dir / 'heatmaps' / f'step-{step}.html'}[/]")
        elif cmd == "/plot":
            from continualcode.ui.plots import plot_curves

            d = self.journal.session_dir
            path = plot_curves(read_metrics(d), d / "plots" / "curves.png")
            c.print(str(path))
        elif cmd == "/undo":
            if self.learner is not None and self.learner.undo():
                self.journal.append("undo", step=self.backend.step)
                c.print(f"reverted the last learning step (adapter at step {self.backend.step})")
            else:
                c.print("nothing to undo")
        elif cmd == "/clear":
            self.session.messages.clear()
            self.journal.append("clear")
            c.print("conversation cleared")
        elif cmd == "/save":
            c.print(f"saved to {self.save()}")
        else:
            c.print(f"unknown command {cmd}; /help lists them")
        return None


def _config_dict(cfg: Config) -> dict[str, Any]:
    import chz

    return chz.asdict(cfg)


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
    from continualcode.ui.terminal import KeyInput, LineInput

    display = Display()
    interactive = cfg.interactive == "true" or (cfg.interactive == "auto" and sys.stdin.isatty())
    holder: dict[str, Any] = {}
    first: str | None = None

    def make_input(app: App) -> Any:
        if "inp" not in holder:
            holder["inp"] = KeyInput(display, str(app.state / "history")) if interactive else LineInput(display,
                                                                                                         sys.stdin)
        return holder["inp"]

    try:
        state = project_state(cfg)  # a bad workspace or state_home fails before anything loads
        loader = BackgroundBackend(cfg)
        cache = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None
        if interactive and not cfg.task and not (cfg.backend == "local" and needs_setup(cfg.model_name, cache=cache)):
            holder["inp"] = KeyInput(display, str(state / "history"))
            display.console.print(f"[bold]continualcode[/] · loading {cfg.model_name} · type a task, /help for "
                                  "commands, Ctrl-D to leave")
            first = holder["inp"].read_task()
            if first is None:
                return 0
        app = App.build(cfg, make_input, display, backend=loader.result())
    except (BackendError, ConfigError) as e:
        display.stop()
        print(f"continualcode: {e}", file=sys.stderr)
        return 1
    display.console.print(f"[bold]continualcode[/] · {app.backend.model_id} · workspace {app.session.workspace.root}"
                          f" · training {'on' if cfg.enable_training else 'off'} · /help for commands")
    return app.run(holder["inp"], first)
