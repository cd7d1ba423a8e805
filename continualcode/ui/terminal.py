"""The terminal: what the user sees (rich) and how they answer (prompt_toolkit, or stdin lines).

`Display` renders the session's events: a spinner with elapsed seconds while generating and
while learning, each proposed call with its preview (a unified diff for write/edit_lines/replace, the
command for bash), tool results, and a one-line summary plus a token heatmap after each update.
Every string that comes from a file, a command or the model goes through `visible` (ui/visible.py)
before it is printed: control characters are shown (ESC as \x1b), never obeyed by the terminal.

Two ways to answer, one `Approver` protocol:
- `KeyInput`: one key per decision, like Claude Code / Codex CLI — y approve, a approve and always
  allow this tool, n deny (then type the correction; Enter on empty = deny without learning),
  e edit the arguments ($EDITOR when set, else inline JSON), f feedback, Esc / Ctrl-C abort.
- `LineInput` (non-interactive, for scripts and tests): one line per answer on stdin —
  `y`, `a`, `n`, `n CORRECTION`, `e {JSON ARGUMENTS}`, `f FEEDBACK`, `q`; tasks and slash commands
  are lines too (a slash command where a decision is expected aborts that call first); each
  proposal ends with a line listing those answers (`LINE_HELP`), the sign that it waits; end of
  input quits.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.syntax import Syntax

from continualcode.agent import Abort, Approve, Decision, Deny, Edit, Feedback
from continualcode.events import (
    AssistantText,
    ErrorShown,
    Event,
    Info,
    Learned,
    LearnStarted,
    Proposal,
    Thinking,
    ToolOutput,
)
from continualcode.records import ToolCall, loads_call_json
from continualcode.ui.visible import visible

KEYS_HELP = "y approve · a always · n deny+correct · e edit · f feedback · esc abort"
# shown by `LineInput` when it waits for an answer: piped, the session gave no sign that it was waiting (a user trial)
LINE_HELP = "answer (one line): y · a · n [correction] · f [feedback] · e {json arguments} · q"


class Display:
    """Renders session events; owns the spinner."""

    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        self._progress: Progress | None = None

    def spin(self, label: str) -> None:
        self.stop()
        if not self.console.is_terminal:
            return
        self._progress = Progress(SpinnerColumn(), TextColumn(label), TimeElapsedColumn(),
                                  console=self.console, transient=True)
        self._progress.add_task(label, total=None)
        self._progress.start()

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def proposal(self, call: ToolCall, preview: str) -> None:
        self.stop()
        body: Any
        shown = visible(preview)
        if call.name in ("write", "edit_lines", "replace") and not preview.startswith("error"):
            body = Syntax(shown, "diff", theme="ansi_dark", word_wrap=True)
        else:
            body = escape(shown)
        self.console.print(Panel(body, title=f"[bold]{escape(visible(call.name))}[/]", title_align="left",
                                 border_style="cyan"))

    def show(self, ev: Event) -> None:
        """Render one session event (kinds with nothing to show are ignored)."""
        c = self.console
        match ev:
            case Thinking():
                self.spin("generating")
            case LearnStarted(kind=kind):
                self.spin(f"learning from the {kind or 'correction'}")
            case Proposal(error=error):
                self.stop()
                if error:  # a repeat is sampled again; anything else goes back to the model as an error
                    what = "sampling again" if error.startswith("the model ") else "asking again"
                    c.print(f"[yellow]{escape(visible(error))}; {what}[/]")
            case ToolOutput(ok=ok, output=out):
                lines = visible(out).splitlines()
                shown = "\n".join(lines[:20]) + (f"\n… {len(lines) - 20} more lines" if len(lines) > 20 else "")
                c.print(Panel(escape(shown), border_style="green" if ok else "red", title="result",
                              title_align="left"))
            case AssistantText(text=text):
                c.print(f"[bold]assistant:[/] {escape(visible(text))}")
            case Learned():
                self.stop()
                self.learn_summary({**ev.metrics, **ev.heatmap})
            case ErrorShown(text=text):
                self.stop()
                c.print(f"[red]{escape(visible(text))}[/]")
            case Info(text=text):
                c.print(f"[dim]{escape(visible(text))}[/]")
            case _:
                pass

    def learn_summary(self, m: dict[str, Any]) -> None:
        from continualcode.ui.heatmap import render_terminal

        if m.get("rolled_back"):
            self.console.print(f"[red]update rolled back: {escape(visible(str(m['rolled_back'])))}[/]")
            return
        self.console.print(
            f"[magenta]update #{m.get('step')}[/] loss {m.get('loss', 0):.3f} · KL→base {m.get('kl_after', 0):.4f} · "
            f"Δlogp reinforced {m.get('logp_shift_pos_adv', 0):+.3f} / suppressed {m.get('logp_shift_neg_adv', 0):+.3f}"
            f" · {m.get('sec_total', 0):.1f}s"
            + (f" · replaces the interim update, with {m.get('distill_examples', 0)} more prompts"
               if m.get("deferred") else "")
            + (" · interim update again (the rest when this task ends)" if m.get("interim") else "")
        )
        if m.get("tokens"):
            self.console.print(render_terminal(m["tokens"], m["advantage"]))


class KeyInput:
    """Interactive answers: one key per decision (prompt_toolkit)."""

    def __init__(self, display: Display, history_path: str | None = None) -> None:
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, InMemoryHistory

        self.display = display
        self._session: PromptSession[str] = PromptSession(
            history=FileHistory(history_path) if history_path else InMemoryHistory()
        )

    def read_task(self) -> str | None:
        try:
            return self._session.prompt("› ")
        except (EOFError, KeyboardInterrupt):
            return None

    def _key(self) -> str:
        from prompt_toolkit.application import Application
        from prompt_toolkit.key_binding import KeyBindings
        from prompt_toolkit.layout import Layout
        from prompt_toolkit.layout.containers import Window
        from prompt_toolkit.layout.controls import FormattedTextControl

        kb = KeyBindings()
        for k in "yanef":
            kb.add(k)(lambda e, k=k: e.app.exit(result=k))
        for k in ("escape", "c-c", "q"):
            kb.add(k, eager=True)(lambda e: e.app.exit(result="q"))
        app: Application[str] = Application(
            layout=Layout(Window(FormattedTextControl(KEYS_HELP), height=1)), key_bindings=kb, full_screen=False
        )
        return app.run()

    def decide(self, call: ToolCall, preview: str) -> Decision:
        self.display.proposal(call, preview)
        key = self._key()
        if key == "y":
            return Approve()
        if key == "a":
            return Approve(always=True)
        if key == "n":
            try:
                return Deny(self._session.prompt("correction (Enter = just deny) › "))
            except (EOFError, KeyboardInterrupt):
                return Abort()
        if key == "f":
            try:
                return Feedback(self._session.prompt("feedback › "))
            except (EOFError, KeyboardInterrupt):
                return Feedback("")
        if key == "e":
            return self._edit(call)
        return Abort()

    def _edit(self, call: ToolCall) -> Decision:
        text = json.dumps(call.arguments, indent=2)
        editor = os.environ.get("EDITOR")
        try:
            if editor:
                with tempfile.NamedTemporaryFile("w+", suffix=".json", delete=False) as f:
                    f.write(text)
                subprocess.run([*shlex.split(editor), f.name], check=False)
                with open(f.name) as fh:
                    text = fh.read()
                os.unlink(f.name)
            else:
                text = self._session.prompt("arguments (JSON) › ", default=json.dumps(call.arguments))
            args = loads_call_json(text)
            if not isinstance(args, dict):
                raise ValueError("not an object")
        except (ValueError, OSError, EOFError, KeyboardInterrupt) as e:
            self.display.console.print(f"[red]edit discarded: {escape(visible(str(e)))}[/]")
            return self.decide(call, "")
        return Edit(args)


class LineInput:
    """Non-interactive answers, one per stdin line (see the module docstring)."""

    def __init__(self, display: Display, stream: IO[str]) -> None:
        self.display = display
        self._lines: Iterator[str] = iter(stream)
        self._pushed: list[str] = []

    def _next(self) -> str | None:
        if self._pushed:
            return self._pushed.pop()
        try:
            return next(self._lines).rstrip("\n")
        except StopIteration:
            return None

    def read_task(self) -> str | None:
        while (line := self._next()) is not None:
            if line.strip():
                return line.strip()
        return None

    def decide(self, call: ToolCall, preview: str) -> Decision:
        self.display.proposal(call, preview)
        self.display.console.print(f"[dim]{escape(LINE_HELP)}[/]")
        while (line := self._next()) is not None:
            cmd, _, rest = line.strip().partition(" ")
            rest = rest.strip()
            if cmd.startswith("/"):  # a slash command aborts the pending call, then runs
                self._pushed.append(line)
                return Abort()
            if cmd == "y":
                return Approve()
            if cmd == "a":
                return Approve(always=True)
            if cmd == "n":
                return Deny(rest)
            if cmd == "f":
                return Feedback(rest)
            if cmd == "q":
                return Abort()
            if cmd == "e":
                try:
                    args = loads_call_json(rest)
                    if isinstance(args, dict):
                        return Edit(args)
                except ValueError:
                    pass
                self.display.console.print("[red]e needs a JSON object of arguments[/]")
                continue
            self.display.console.print(f"[red]unknown answer {escape(visible(repr(line)))}: {KEYS_HELP}[/]")
        return Abort()
