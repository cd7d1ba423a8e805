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


def _one_prompt(**kw) -> LearnConfig:
    """A learn config that distils on the denied prompt alone (`distill_prompts=0`): these tests are about
    one step; the distillation prompts (the default, 3) have their own tests."""
    return LearnConfig(**{"distill_prompts": 0, **kw})


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
        Learner(fresh_backend, renderer, _one_prompt())(c)
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
        leftovers = [f.name for f in tmp_path.iterdir() if f.name not in ("adapter", "adapter.prev")]
        assert all(f.startswith(".adapter.") for f in leftovers), leftovers


# ---------------------------------------------------------------------------------------------------
# Non-finite weights: rolled back, never saved, never resumed (the critical hardening item)


def _lora(b) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lr", [float("nan"), float("inf")])
def test_a_step_that_makes_weights_non_finite_is_rolled_back(fresh_backend, renderer, lr) -> None:
    c = _correction(renderer)
    before, step = _lora(fresh_backend), fresh_backend.step
    report = Learner(fresh_backend, renderer, _one_prompt(learning_rate=lr))(c)
    assert report is not None and report["rolled_back"], report
    assert fresh_backend.step == step
    after = _lora(fresh_backend)
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert all(bool(torch.isfinite(v).all()) for v in after.values())


def test_the_kl_guard_rejects_nan(monkeypatch, fresh_backend, renderer) -> None:
    import continualcode.learn.step as step_mod

    monkeypatch.setattr(step_mod, "_kl_after", lambda after, ref: float("nan"))
    report = Learner(fresh_backend, renderer, _one_prompt(learning_rate=1e-4))(_correction(renderer))
    assert report is not None and report["rolled_back"].startswith("KL to the base nan")


def test_a_non_finite_adapter_is_never_saved_or_loaded(fresh_backend, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from continualcode.backends.base import BackendError

    good = tmp_path / "adapter"
    fresh_backend.save(good)
    with torch.no_grad():
        fresh_backend.params[0][0, 0] = float("nan")
    with pytest.raises(BackendError, match="refusing to save a non-finite adapter"):
        fresh_backend.save(good)
    assert not (tmp_path / "adapter.prev").exists()  # nothing was replaced
    # a NaN written by hand (an older version, a damaged disk) is refused at load, all or nothing
    w = load_file(str(good / "adapter_model.safetensors"))
    k = next(iter(w))
    w[k][0] = float("nan")
    save_file(w, str(good / "adapter_model.safetensors"))
    with torch.no_grad():
        fresh_backend.params[0][0, 0] = 0.0
    live = _lora(fresh_backend)
    with pytest.raises(BackendError, match="non-finite values"):
        fresh_backend.load(good)
    assert all(torch.equal(_lora(fresh_backend)[n], v) for n, v in live.items())


def test_resume_falls_back_to_the_last_good_adapter(fresh_backend, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    from continualcode.build import load_last_good

    adapter = tmp_path / "adapter"
    fresh_backend.adapter.step = 3
    fresh_backend.save(adapter)
    fresh_backend.adapter.step = 4
    fresh_backend.save(adapter)  # step 3 is now adapter.prev
    w = load_file(str(adapter / "adapter_model.safetensors"))
    w[next(iter(w))].fill_(float("inf"))
    save_file(w, str(adapter / "adapter_model.safetensors"))
    fresh_backend.adapter.step = 0
    shown = load_last_good(fresh_backend, adapter)
    assert fresh_backend.step == 3
    texts = [e.text for e in shown]
    assert any("non-finite" in t and "not resumed" in t for t in texts) and any("previous adapter" in t for t in texts)
    assert all("\n" not in t for t in texts)
