"""Learning faults with the real embedded model: an exception mid-step, and kill -9 while a
checkpoint is being written — the adapter in use is the last good one, the checkpoint on disk is
always loadable, and the session goes on."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from continualcode.learn.step import Learner, StepError
from continualcode.learn.types import LearnConfig
from continualcode.records import Correction, Message, Sample, ToolCall

pytestmark = pytest.mark.slow


def _correction(renderer) -> Correction:
    msgs = (Message("user", "show me what is in notes.txt"),)
    toks = [*renderer.tok.encode(ToolCall("read", {"path": "notes.txt"}).to_text(), add_special_tokens=False),
            renderer.stop_ids[0]]
    return Correction("deny", msgs, renderer.prompt_ids(msgs), Sample(toks, [0.0] * len(toks), "stop"),
                      renderer.decode(toks), "use the read tool on notes.txt")


def test_exception_mid_step_restores_adapter(fresh_backend, renderer, monkeypatch) -> None:
    c = _correction(renderer)
    fresh_backend.clear_cache()
    before = fresh_backend.score(c.prompt_ids, c.sample.tokens).logprobs
    step = fresh_backend.step
    import continualcode.learn.losses as losses

    def boom(*a, **k):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(losses, "sdpo_loss", boom)
    with pytest.raises(StepError, match="rolled back: RuntimeError: injected failure"):
        Learner(fresh_backend, renderer, LearnConfig())(c)
    assert fresh_backend.step == step
    fresh_backend.clear_cache()
    assert torch.equal(fresh_backend.score(c.prompt_ids, c.sample.tokens).logprobs, before)


CHILD = """
import sys, torch
from pathlib import Path
from continualcode.backends.local import LocalBackend
b = LocalBackend("smollm2-135m", dtype="fp32", warmup=False)
out = Path(sys.argv[1])
i = 0
while True:
    with torch.no_grad():
        for p in b.params:
            p.add_(0.001)
    b.adapter.step = i
    b.save(out)
    print(i, flush=True)
    i += 1
"""


def test_kill_9_during_checkpoint_writes_leaves_a_loadable_checkpoint(fresh_backend, tmp_path: Path) -> None:
    out = tmp_path / "adapter"
    rng = random.Random(0)
    for _ in range(3):
        p = subprocess.Popen([sys.executable, "-c", CHILD, str(out)], stdout=subprocess.PIPE, text=True,
                             env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert p.stdout is not None
        saved = [int(p.stdout.readline())]  # at least one complete save
        time.sleep(rng.uniform(0.0, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        saved += [int(x) for x in p.stdout.read().split()]
        fresh_backend.load(out)  # always loadable
        assert fresh_backend.step in range(saved[-1], saved[-1] + 2)  # the last reported save, or the one after
        leftovers = [f.name for f in tmp_path.iterdir() if f.name != "adapter"]
        assert all(f.startswith(".adapter.") for f in leftovers), leftovers
