"""A benchmark's output directory: the lock and identity of a run, its resumable units file, and
its progress reporter.  Shared by `bench learn` and `bench tasks`.

DIR/.lock is held for the whole run (a second writer is refused); DIR/run.json holds the run's
signature (a resume with another configuration is refused); DIR/units.jsonl gets one fsynced line
per finished unit, so an interrupted run resumes from it.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
from pathlib import Path
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from continualcode.fsio import atomic_write

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID


def key_values(args: list[str]) -> dict[str, str]:
    """A benchmark's `key=value` overrides as a dict (checked by `parse_config` later)."""
    base: dict[str, str] = {}
    for a in args:
        if "=" not in a:
            raise ValueError(f"expected key=value, got {a!r}")
        k, v = a.split("=", 1)
        base[k] = v
    return base


def claim(out: Path, signature: dict[str, Any]) -> IO[str]:
    """Take OUT/.lock and check (or write) OUT/run.json; the open lock file, held for the whole run."""
    out.mkdir(parents=True, exist_ok=True)
    lock = open(out / ".lock", "w")  # noqa: SIM115 - held for the whole run
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        raise ValueError(f"another run is writing to {out}") from None
    sig_path = out / "run.json"
    if sig_path.exists() and json.loads(sig_path.read_text()).get("signature") != signature:
        lock.close()
        raise ValueError(f"{out} holds a run with another configuration (see run.json): use another --out")
    atomic_write(sig_path, json.dumps({"signature": signature}, indent=1) + "\n")
    return lock


class Units:
    """DIR/units.jsonl: append-only, one fsynced line per finished unit; a torn line is ignored and a
    repeated key keeps its first row."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: list[dict[str, Any]] = []
        self.done: set[tuple[Any, ...]] = set()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if tuple(row["key"]) not in self.done:
                    self.rows.append(row)
                    self.done.add(tuple(row["key"]))

    def add(self, row: dict[str, Any]) -> None:
        data = (json.dumps(row, ensure_ascii=False) + "\n").encode()
        with open(self.path, "a+b") as f:
            if f.seek(0, os.SEEK_END) > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":  # a line torn by a crash: start on a new one
                    data = b"\n" + data
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        self.rows.append(row)
        self.done.add(tuple(row["key"]))


class Reporter:
    """A run's progress: a bar on a terminal; otherwise (logs, CI) only one line per finished unit."""

    def __init__(self, console: Console | None = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=self.console, transient=False,
                                 disable=not self.console.is_terminal)
        self._bar: TaskID | None = None

    def __enter__(self) -> Reporter:
        self.progress.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.progress.stop()

    def start(self, total: int, label: str = "bench") -> None:
        self._bar = self.progress.add_task(label, total=total)

    def describe(self, text: str) -> None:
        if self._bar is not None:
            self.progress.update(self._bar, description=text)

    def advance(self, n: int = 1) -> None:
        if self._bar is not None:
            self.progress.advance(self._bar, n)

    def line(self, text: str) -> None:
        """One line above the bar (the only output when not a terminal), and one step of the bar."""
        if self.console.is_terminal:
            self.progress.console.print(text, highlight=False, markup=False)
        else:
            print(text, file=sys.stderr, flush=True)
        self.advance()

    def note(self, text: str) -> None:
        self.console.print(text)
