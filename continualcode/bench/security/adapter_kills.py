"""kill -9 during learning: the real small model (smollm2-135m, one thread) saves and learns in a
forked child (every second step poisoned with learning_rate=nan), SIGKILLed at random moments (half
of them inside a checkpoint write); each time the parent resumes as the app does
(`build.load_last_good`) and checks that what it resumed is finite and is exactly a state the child
announced (step and a hash of the LoRA weights) before saving it.

The child is a fork of this process, so the parent and child share the loaded model and the
learner's code is the app's; only the prompt renderer is a plain one (short inputs). Imports torch.
"""

from __future__ import annotations

import hashlib
import os
import random
import select
import signal
import time
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import CACHE_MODEL

ADAPTER_CHILD_SEED = 1234


def adapter_kill_trials(root: Path, kills: int, *, seed: int = 0) -> dict[str, Any]:
    """SIGKILL a forked child that saves and learns in a loop with the real small model, `kills` times;
    after each, resume as the app does and check what was resumed (see the module docstring)."""
    if kills <= 0:
        return {"kills": 0, "skipped": "adapter_kills=0"}
    if not hasattr(os, "fork"):
        return {"kills": 0, "skipped": "needs os.fork"}
    import torch

    from continualcode.backends.local import LocalBackend
    from continualcode.build import load_last_good
    from continualcode.learn.step import Learner
    from continualcode.learn.types import LearnConfig
    from continualcode.records import Correction, Message, Sample, ToolCall

    root.mkdir(parents=True)
    backend = LocalBackend(CACHE_MODEL, dtype="fp32", warmup=False, threads=1, seed=0)  # one thread: fork-safe
    tok = backend.tokenizer

    class PlainRenderer:
        """Short prompts (no system prompt, no tools): the step's code is the app's, its inputs small."""

        def prompt_ids(self, msgs: Any) -> list[int]:
            text = "".join(f"{m.role}: {m.content}\n" for m in msgs) + "assistant:"
            return list(tok.encode(text, add_special_tokens=False))

        def token_pieces(self, ids: Any) -> list[str]:
            return [tok.decode([t]) for t in ids]

    renderer = PlainRenderer()
    msgs = (Message("user", "show me what is in notes.txt"),)
    call = list(tok.encode(ToolCall("read", {"path": "notes.txt"}).to_text(), add_special_tokens=False))
    c = Correction("deny", msgs, renderer.prompt_ids(msgs), Sample(call, [0.0] * len(call), "stop"),
                   tok.decode(call), "use the read tool on notes.txt")
    adapter = root / "adapter"

    def lora_hash() -> str:
        h = hashlib.sha256()
        for p in backend.params:
            h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()[:16]

    def child(w: int, trial: int) -> None:
        """Save, then learn (every second step poisoned with learning_rate=nan: the first one in every
        other child), forever; each state is announced before it is saved."""
        good = Learner(backend, renderer, LearnConfig())
        poison = Learner(backend, renderer, LearnConfig(learning_rate=float("nan")))
        os.write(w, f"ready {backend.step} {lora_hash()}\n".encode())
        i = 0
        while True:
            os.write(w, f"saving {backend.step} {lora_hash()}\n".encode())
            backend.save(adapter)
            os.write(w, b"saved\n")
            poisoned = (i + trial) % 2 == 1
            report = (poison if poisoned else good)(c)
            rolled_back = bool(report and report["rolled_back"])
            os.write(w, f"learned {'poison' if poisoned else 'good'} {rolled_back}\n".encode())
            i += 1

    def spawn(trial: int) -> tuple[int, _ChildLines]:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: save and learn until killed; never returns
            os.close(r)
            try:
                torch.manual_seed(ADAPTER_CHILD_SEED + trial)
                child(w, trial)
            finally:
                os._exit(1)
        os.close(w)
        return pid, _ChildLines(r)

    def kill(pid: int, lines: _ChildLines) -> list[str]:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        rest = lines.rest()
        os.close(lines.fd)
        return [*lines.seen, *rest]

    # 1) calibrate: how long one save and one step take
    pid, lines = spawn(-1)
    stamps: list[float] = []
    while len(stamps) < 3 and (line := lines.next(timeout=120)):
        if line == "saved":
            stamps.append(time.monotonic())
    seen = kill(pid, lines)
    period = (stamps[-1] - stamps[0]) / (len(stamps) - 1) if len(stamps) > 1 else 3.0
    announced: set[tuple[int, str]] = set()

    def note(saw: list[str]) -> None:
        for line in saw:
            parts = line.split()
            if parts and parts[0] in ("ready", "saving") and len(parts) == 3:
                announced.add((int(parts[1]), parts[2]))

    note(seen)
    # 2) the kills: even trials inside a checkpoint write, odd ones anywhere in the saves and steps
    rng = random.Random(seed)
    counts: dict[str, Any] = {"kills": 0, "in_save_window": 0, "resumed_adapter": 0, "resumed_previous": 0,
                              "unloadable": 0, "nonfinite_resumed": 0, "corrupt_resumed": 0, "child_errors": 0,
                              "saves_completed": 0, "steps_completed": 0, "poisoned_steps": 0,
                              "poisoned_steps_rolled_back": 0}
    for trial in range(kills):
        pid, lines = spawn(trial)
        if not lines.next(timeout=120).startswith("ready"):
            counts["child_errors"] += 1
            kill(pid, lines)
            continue
        if trial % 2 == 0:  # inside a checkpoint write: the first save, or the one after a learning step
            for _ in range(1 if trial % 4 == 0 else 2):
                while (line := lines.next(timeout=120)) and not line.startswith("saving"):
                    pass
            time.sleep(rng.uniform(0.0, 0.3))
            counts["in_save_window"] += 1
        else:  # anywhere in the first save, the two steps after it (one of them poisoned) and their saves
            time.sleep(rng.uniform(0.0, 2.2 * period))
        saw = kill(pid, lines)
        counts["kills"] += 1
        note(saw)
        counts["saves_completed"] += saw.count("saved")
        learned = [ln.split() for ln in saw if ln.startswith("learned")]
        counts["steps_completed"] += len(learned)
        counts["poisoned_steps"] += sum(p[1] == "poison" for p in learned)
        counts["poisoned_steps_rolled_back"] += sum(p[1] == "poison" and p[2] == "True" for p in learned)
        # resume as the app does, then judge what was resumed
        lines = [ev.text for ev in load_last_good(backend, adapter)]
        if any("previous adapter" in t for t in lines):
            counts["resumed_previous"] += 1
        elif any("not resumed" in t or "no loadable" in t for t in lines):
            counts["unloadable"] += 1
        else:
            counts["resumed_adapter"] += 1
        if not all(bool(torch.isfinite(p).all()) for p in backend.params):
            counts["nonfinite_resumed"] += 1
        if (backend.step, lora_hash()) not in announced:
            counts["corrupt_resumed"] += 1
    counts["seconds_per_save_and_step"] = round(period, 2)
    counts["states_announced"] = len(announced)
    counts["final_step"] = backend.step
    return counts


class _ChildLines:
    """Lines from a child's pipe, read as they come (with a timeout)."""

    def __init__(self, fd: int) -> None:
        self.fd, self.buf, self.seen = fd, b"", []

    def next(self, timeout: float) -> str:
        end = time.monotonic() + timeout
        while b"\n" not in self.buf:
            left = end - time.monotonic()
            if left <= 0 or not select.select([self.fd], [], [], left)[0]:
                return ""
            chunk = os.read(self.fd, 65536)
            if not chunk:
                return ""
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        self.seen.append(line.decode())
        return line.decode()

    def rest(self) -> list[str]:
        while chunk := os.read(self.fd, 65536):
            self.buf += chunk
        lines = [x.decode() for x in self.buf.split(b"\n") if x]
        self.buf = b""
        return lines
