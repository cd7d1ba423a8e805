"""The session journal: an append-only, crash-safe record of everything a session did.

State lives per project, outside the workspace: `state_dir(workspace)` is
`<base>/projects/<name>-<sha256(resolved path)[:12]>`, where base is `$CONTINUALCODE_HOME`,
else `$XDG_STATE_HOME/continualcode`, else `~/.local/state/continualcode`.  Each session is a
directory `<state>/sessions/<session_id>/` (id = UTC `%Y%m%d-%H%M%S` + 4 random hex) holding

    journal.jsonl   one JSON event per line: {"type", "t" (unix time), "seq" (0, 1, ...), ...}
    metrics.jsonl   one JSON object per learning step (the learner's metrics dict, plus "t")
    heatmaps/       per-step token heatmaps (written by continualcode.ui.heatmap)
    plots/          learning curves (written by continualcode.ui.plots)

The journal stores dicts and accepts any event type; what a session writes is the typed vocabulary
of `continualcode/events.py` (its table lists every kind and its fields): session_start, user,
proposal, message, decision, tool_result, assistant_text, correction, learn, error, resume,
checkpoint, undo, clear, session_end.  `events.from_record` reads a line back into its class.

Crash safety: a file is opened once with O_APPEND and each event is ONE `os.write` of a complete
line followed by `os.fsync`, so a `kill -9` can at worst lose or tear the event being written,
never an earlier one.  `read_events` therefore skips a torn last line but treats a bad line
anywhere else as corruption (ValueError naming the line).  `Journal.open` (resume) cuts a torn
tail off before appending, so a crash never turns into mid-file corruption.

This module knows nothing of the agent, the model or the terminal; it only stores dicts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Self

from continualcode.fsio import fsync_dir

JOURNAL_FILE = "journal.jsonl"
METRICS_FILE = "metrics.jsonl"
_RESERVED = frozenset({"type", "t", "seq"})


# ---------------------------------------------------------------------------------------------
# Where state lives


def default_base() -> Path:
    """The root of all continualcode state: $CONTINUALCODE_HOME, $XDG_STATE_HOME/…, or ~/.local/…."""
    if home := os.environ.get("CONTINUALCODE_HOME"):
        return Path(home).expanduser()
    if xdg := os.environ.get("XDG_STATE_HOME"):
        return Path(xdg).expanduser() / "continualcode"
    return Path.home() / ".local" / "state" / "continualcode"


def state_dir(workspace: Path, base: Path | None = None) -> Path:
    """The per-project state directory for `workspace` (not created here)."""
    resolved = str(Path(workspace).expanduser().resolve())
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(resolved).name).strip("-.") or "root"
    digest = hashlib.sha256(resolved.encode("utf-8")).hexdigest()[:12]
    return (base if base is not None else default_base()) / "projects" / f"{name}-{digest}"


# ---------------------------------------------------------------------------------------------
# Low-level durable writes


def _json_default(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.asdict(obj)
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, set | frozenset | tuple):
        return list(obj)
    if hasattr(obj, "tolist"):  # numpy arrays/scalars, torch tensors
        return obj.tolist()
    raise TypeError(f"journal cannot store {type(obj).__name__}: {obj!r}")


def _encode_line(obj: dict) -> bytes:
    return (json.dumps(obj, ensure_ascii=False, default=_json_default) + "\n").encode("utf-8")


def _write_all(fd: int, data: bytes) -> None:
    """One os.write of the whole line; loops only if the kernel wrote short (disk full, signal)."""
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _open_append(path: Path) -> int:
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)


def _cut_torn_tail(path: Path) -> None:
    """If the file does not end with a newline (a write torn by a crash), drop the partial line."""
    if not path.exists():
        return
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return
    keep = data.rfind(b"\n") + 1
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


# ---------------------------------------------------------------------------------------------
# Reading


def _parse_lines(path: Path, *, strict: bool) -> list[dict]:
    """Parse a JSONL file. A bad last line is skipped; a bad earlier one raises if `strict`."""
    lines = Path(path).read_bytes().split(b"\n")
    numbered = [(i + 1, raw) for i, raw in enumerate(lines) if raw.strip(b" \t\r\x00")]
    out: list[dict] = []
    for k, (lineno, raw) in enumerate(numbered):
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                raise ValueError("not a JSON object")
        except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            if k == len(numbered) - 1 or not strict:
                continue  # a write torn by a crash (last line), or lenient scanning
            raise ValueError(f"{path}: line {lineno} is corrupt ({e})") from e
        out.append(obj)
    return out


def read_events(path: Path) -> list[dict]:
    """All events of a journal file; a torn last line is skipped, a corrupt earlier line raises."""
    return _parse_lines(path, strict=True)


def read_metrics(session_dir: Path) -> list[dict]:
    """The per-step metrics of a session, oldest first ([] when it has not learned yet)."""
    path = Path(session_dir) / METRICS_FILE
    return _parse_lines(path, strict=True) if path.exists() else []


@dataclass(frozen=True)
class SessionInfo:
    """A one-line summary of a stored session, for listing and resuming."""

    session_id: str
    path: Path
    started: float  # unix time
    n_events: int
    n_steps: int  # number of "learn" events
    first_task: str | None  # text of the first "user" event


def _session_info(session_dir: Path) -> SessionInfo | None:
    journal = session_dir / JOURNAL_FILE
    if not journal.is_file():
        return None
    try:
        events = _parse_lines(journal, strict=False)  # list even a damaged session
    except OSError:
        return None
    start = next((e for e in events if e.get("type") == "session_start"), events[0] if events else None)
    started = start.get("t") if start else None
    if not isinstance(started, int | float):
        started = journal.stat().st_mtime
    first_task = next((e.get("text") for e in events if e.get("type") == "user"), None)
    return SessionInfo(
        session_id=session_dir.name,
        path=session_dir,
        started=float(started),
        n_events=len(events),
        n_steps=sum(1 for e in events if e.get("type") == "learn"),
        first_task=first_task if isinstance(first_task, str) else None,
    )


def list_sessions(state: Path) -> list[SessionInfo]:
    """The sessions stored under a project state directory, newest first."""
    root = Path(state) / "sessions"
    if not root.is_dir():
        return []
    infos = [info for d in root.iterdir() if d.is_dir() and (info := _session_info(d)) is not None]
    return sorted(infos, key=lambda s: (s.started, s.session_id), reverse=True)


def latest_session(state: Path) -> Path | None:
    """The directory of the most recently started session, or None."""
    sessions = list_sessions(state)
    return sessions[0].path if sessions else None


# ---------------------------------------------------------------------------------------------
# Writing


class Journal:
    """An open session: appends events to journal.jsonl and metrics to metrics.jsonl, durably."""

    def __init__(self, session_dir: Path, *, next_seq: int = 0) -> None:
        self.session_dir = Path(session_dir)
        self.session_id = self.session_dir.name
        self._seq = next_seq
        self._lock = threading.Lock()
        self._fd: int | None = _open_append(self.session_dir / JOURNAL_FILE)
        self._metrics_fd: int | None = None

    @classmethod
    def create(cls, state: Path, *, meta: dict) -> Self:
        """Start a new session under `state` and record its `session_start` event."""
        sessions = Path(state) / "sessions"
        sessions.mkdir(parents=True, exist_ok=True)
        while True:
            stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
            session_dir = sessions / f"{stamp}-{secrets.token_hex(2)}"
            try:
                session_dir.mkdir()
                break
            except FileExistsError:
                continue
        (session_dir / "heatmaps").mkdir()
        (session_dir / "plots").mkdir()
        journal = cls(session_dir)
        fsync_dir(session_dir)
        fsync_dir(sessions)
        journal.append("session_start", **meta)
        return journal

    @classmethod
    def open(cls, session_dir: Path) -> Self:
        """Reopen an existing session for appending (resume); seq continues after the last event."""
        session_dir = Path(session_dir)
        path = session_dir / JOURNAL_FILE
        if not path.is_file():
            raise FileNotFoundError(f"no journal in {session_dir}")
        _cut_torn_tail(path)
        _cut_torn_tail(session_dir / METRICS_FILE)
        seqs = [e["seq"] for e in _parse_lines(path, strict=False) if isinstance(e.get("seq"), int)]
        for sub in ("heatmaps", "plots"):
            (session_dir / sub).mkdir(exist_ok=True)
        return cls(session_dir, next_seq=max(seqs, default=-1) + 1)

    @property
    def path(self) -> Path:
        return self.session_dir / JOURNAL_FILE

    def append(self, type: str, **data: Any) -> dict:
        """Durably append one event; returns it (with its "t" and "seq")."""
        if clash := _RESERVED & data.keys():
            raise ValueError(f"event fields {sorted(clash)} are reserved")
        with self._lock:
            if self._fd is None:
                raise ValueError("journal is closed")
            event = {"type": type, "t": time.time(), "seq": self._seq, **data}
            line = _encode_line(event)  # may raise before anything is written
            _write_all(self._fd, line)
            os.fsync(self._fd)
            self._seq += 1
        return event

    def log_metrics(self, metrics: dict) -> None:
        """Durably append one learning step's metrics to metrics.jsonl ("t" added if absent)."""
        line = _encode_line({"t": time.time(), **metrics})
        with self._lock:
            if self._fd is None:
                raise ValueError("journal is closed")
            if self._metrics_fd is None:
                self._metrics_fd = _open_append(self.session_dir / METRICS_FILE)
            _write_all(self._metrics_fd, line)
            os.fsync(self._metrics_fd)

    def close(self) -> None:
        with self._lock:
            for fd in (self._fd, self._metrics_fd):
                if fd is not None:
                    os.close(fd)
            self._fd = self._metrics_fd = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()
