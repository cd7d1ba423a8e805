"""Tests of continualcode.journal: round-trips, tolerance of torn tails, listing, and kill -9 safety.

The crash test runs a real writer process in a tight append loop and SIGKILLs it at a random
moment: every event whose `append` had returned (its seq was printed) must be readable afterwards,
and reading must never raise.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from continualcode import journal as journal_mod
from continualcode.fsio import atomic_write as atomic_write_bytes
from continualcode.journal import (
    Journal,
    latest_session,
    list_sessions,
    read_events,
    read_metrics,
    state_dir,
)

REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------
# state_dir


def test_state_dir_slug_and_base(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ws = tmp_path / "my project!"
    ws.mkdir()
    d = state_dir(ws, base=tmp_path / "base")
    assert d.parent == tmp_path / "base" / "projects"
    name, digest = d.name.rsplit("-", 1)
    assert name == "my-project"
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert state_dir(ws / ".", base=tmp_path / "base") == d  # resolved path decides
    assert state_dir(tmp_path, base=tmp_path / "base") != d

    monkeypatch.setenv("CONTINUALCODE_HOME", str(tmp_path / "home"))
    assert state_dir(ws).parent == tmp_path / "home" / "projects"
    monkeypatch.delenv("CONTINUALCODE_HOME")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir(ws).parent == tmp_path / "xdg" / "continualcode" / "projects"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "h"))
    assert state_dir(ws).parent == tmp_path / "h" / ".local" / "state" / "continualcode" / "projects"


# ---------------------------------------------------------------------------------------------------
# Round trip


def test_create_append_read_round_trip(tmp_path: Path) -> None:
    j = Journal.create(tmp_path, meta={"model": "m", "workspace": "/w"})
    assert j.session_dir.parent == tmp_path / "sessions"
    assert j.session_dir.name == j.session_id
    stamp_date, stamp_time, rand = j.session_id.split("-")
    assert len(stamp_date) == 8 and len(stamp_time) == 6 and len(rand) == 4
    assert (j.session_dir / "heatmaps").is_dir() and (j.session_dir / "plots").is_dir()

    ev = j.append("user", text="fix the bug\nplease ✓")
    j.append("proposal", call={"name": "bash", "arguments": {"cmd": "ls"}}, raw="<tool>", tokens=[1, 2, 3])
    j.append("decision", kind="deny", text="use rg", diff=None)
    j.close()
    assert ev["type"] == "user" and isinstance(ev["t"], float) and ev["seq"] == 1

    events = read_events(j.session_dir / "journal.jsonl")
    assert [e["type"] for e in events] == ["session_start", "user", "proposal", "decision"]
    assert events[0]["model"] == "m" and events[0]["workspace"] == "/w"
    assert events[1] == ev
    assert events[2]["call"] == {"name": "bash", "arguments": {"cmd": "ls"}}
    assert events[3]["diff"] is None
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs) and seqs[0] == 0
    assert all(a["t"] <= b["t"] for a, b in itertools.pairwise(events))
    # one line per event, even with newlines in the data
    assert len((j.session_dir / "journal.jsonl").read_bytes().splitlines()) == 4


def test_reserved_fields_rejected(tmp_path: Path) -> None:
    with Journal.create(tmp_path, meta={}) as j:
        with pytest.raises(ValueError, match="reserved"):
            j.append("user", seq=5)
        with pytest.raises(TypeError):
            j.append("user", obj=object())
        # a failed encode writes nothing and does not burn a seq
        assert j.append("user", text="ok")["seq"] == 1
    assert len(read_events(j.path)) == 2


def test_every_append_fsyncs_the_journal_fd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal.create(tmp_path, meta={})
    synced: list[int] = []
    real = os.fsync

    def spy(fd: int) -> None:
        synced.append(fd)
        real(fd)

    monkeypatch.setattr(journal_mod.os, "fsync", spy)
    for i in range(3):
        j.append("user", text=str(i))
    assert len(synced) == 3 and len(set(synced)) == 1
    j.log_metrics({"loss": 1.0})
    assert len(synced) == 4 and synced[3] != synced[0]
    j.close()


def test_writes_are_one_os_write_per_event(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = Journal.create(tmp_path, meta={})
    writes: list[bytes] = []
    real = os.write

    def spy(fd: int, data: bytes) -> int:
        writes.append(bytes(data))
        return real(fd, data)

    monkeypatch.setattr(journal_mod.os, "write", spy)
    j.append("tool_result", ok=True, output="x" * 100_000)
    assert len(writes) == 1 and writes[0].endswith(b"\n") and writes[0].count(b"\n") == 1
    j.close()


def test_metrics_round_trip(tmp_path: Path) -> None:
    j = Journal.create(tmp_path, meta={})
    assert read_metrics(j.session_dir) == []
    j.log_metrics({"step": 1, "loss": 0.5, "kl_ref": float("nan")})
    j.log_metrics({"step": 2, "loss": 0.25})
    j.close()
    ms = read_metrics(j.session_dir)
    assert [m["step"] for m in ms] == [1, 2]
    assert ms[1]["loss"] == 0.25 and "t" in ms[0]


def test_open_resumes_seq_and_appends(tmp_path: Path) -> None:
    j = Journal.create(tmp_path, meta={})
    j.append("user", text="a")
    j.close()
    j2 = Journal.open(j.session_dir)
    assert j2.session_id == j.session_id
    assert j2.append("user", text="b")["seq"] == 2
    j2.close()
    assert [e["seq"] for e in read_events(j.path)] == [0, 1, 2]
    with pytest.raises(FileNotFoundError):
        Journal.open(tmp_path / "nope")


# ---------------------------------------------------------------------------------------------------
# Tolerance


def test_truncated_last_line_is_skipped(tmp_path: Path) -> None:
    j = Journal.create(tmp_path, meta={})
    j.append("user", text="a")
    j.close()
    with open(j.path, "ab") as f:
        f.write(b'{"type": "user", "t": 1.0, "seq": 2, "text": "tor')
    events = read_events(j.path)
    assert [e["seq"] for e in events] == [0, 1]

    # resuming cuts the torn tail, so the next event does not corrupt the file
    j2 = Journal.open(j.session_dir)
    assert j2.append("user", text="c")["seq"] == 2
    j2.close()
    assert [e["seq"] for e in read_events(j.path)] == [0, 1, 2]


def test_garbled_last_line_with_newline_is_skipped(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    p.write_bytes(b'{"type": "a", "seq": 0}\n\x00\x00garbage\xff\n\n')
    assert read_events(p) == [{"type": "a", "seq": 0}]


def test_corrupt_middle_line_raises_with_line_number(tmp_path: Path) -> None:
    p = tmp_path / "j.jsonl"
    lines = [json.dumps({"type": "a", "seq": i}) for i in range(5)]
    lines[2] = '{"type": "a", "se'
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3\b"):
        read_events(p)
    lines[2] = "[1, 2]"  # valid JSON but not an event
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"line 3\b"):
        read_events(p)


def test_atomic_write_bytes_replaces(tmp_path: Path) -> None:
    p = tmp_path / "sub" / "f.bin"
    atomic_write_bytes(p, b"one")
    atomic_write_bytes(p, b"two")
    assert p.read_bytes() == b"two"
    assert [x.name for x in p.parent.iterdir()] == ["f.bin"]  # no temp files left


# ---------------------------------------------------------------------------------------------------
# Listing


def test_list_sessions_newest_first_with_counts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert list_sessions(tmp_path) == [] and latest_session(tmp_path) is None
    clock = iter([1000.0 + i for i in range(100)])
    monkeypatch.setattr(journal_mod.time, "time", lambda: next(clock))

    old = Journal.create(tmp_path, meta={"n": 0})
    old.append("user", text="first task")
    old.append("learn", metrics={}, snapshot="s1", step=1)
    old.append("user", text="second task")
    old.close()
    new = Journal.create(tmp_path, meta={"n": 1})
    new.append("assistant_text", text="hi")
    new.close()
    (tmp_path / "sessions" / "not-a-session").mkdir()

    infos = list_sessions(tmp_path)
    assert [s.session_id for s in infos] == [new.session_id, old.session_id]
    assert infos[0].started > infos[1].started
    assert (infos[1].n_events, infos[1].n_steps, infos[1].first_task) == (4, 1, "first task")
    assert (infos[0].n_events, infos[0].n_steps, infos[0].first_task) == (2, 0, None)
    assert infos[1].path == old.session_dir
    assert latest_session(tmp_path) == new.session_dir


# ---------------------------------------------------------------------------------------------------
# kill -9

_WRITER = """
import sys
sys.path.insert(0, sys.argv[1])
from pathlib import Path
from continualcode.journal import Journal
j = Journal.create(Path(sys.argv[2]), meta={"task": "kill"})
print("DIR", j.session_dir, flush=True)
i = 0
while True:
    ev = j.append("tool_result", ok=True, output="x" * (i * 37 % 5000), i=i)
    print(ev["seq"], flush=True)
    i += 1
"""


def _kill_once(state: Path, n_lines: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(REPO), str(state)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(10.0, proc.kill)
    watchdog.start()
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("DIR "), proc.stderr.read() if proc.stderr else first
        session_dir = Path(first[4:].strip())
        printed = []
        for _ in range(n_lines):
            line = proc.stdout.readline()
            assert line, "writer died early"
            printed.append(int(line))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        # drain what it printed between our last read and the kill: those appends returned too
        printed += [int(x) for x in proc.stdout.read().split()]
    finally:
        watchdog.cancel()
        proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    assert proc.returncode == -signal.SIGKILL

    events = read_events(session_dir / "journal.jsonl")  # must not raise
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(len(seqs)))
    assert set(printed) <= set(seqs)
    assert events[0]["type"] == "session_start"
    # resuming after the crash keeps the file well-formed
    with Journal.open(session_dir) as j:
        assert j.append("user", text="after crash")["seq"] == len(seqs)
    assert len(read_events(session_dir / "journal.jsonl")) == len(seqs) + 1


@pytest.mark.slow
def test_kill_9_never_loses_acknowledged_events(tmp_path: Path) -> None:
    rng = random.Random(0)
    for k in range(5):
        _kill_once(tmp_path / f"s{k}", rng.randint(1, 300))
