"""`continualcode replay`: a recorded session's learning events, re-run offline on a fresh adapter
with the same seed and config, give the same step count and the same adapter (real model)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from continualcode.commands import replay
from continualcode.config import parse_config
from continualcode.journal import Journal
from continualcode.learn.step import Learner
from continualcode.records import Correction, Message, Sample, ToolCall

pytestmark = pytest.mark.slow


def test_replay_reproduces_steps_and_adapter(tmp_path: Path, cache_dir: Path, renderer) -> None:
    from continualcode.build import build_backend

    # the original is built from the config exactly as replay builds its backend: with distillation prompts
    # (the default) the learner samples, and the sampler's settings (int8 decode steps, threads) must match.
    # draft=off: draft sizes follow measured timings, and a drafted run's rows sum in another order than a
    # one-row step's, so with drafts two runs of the same seed can sample other tokens (an AVX2 host's clean-clone
    # CI run differed so; the same run alone passed)
    cfg = parse_config(["dtype=fp32", f"cache_dir={cache_dir}", "seed=0", "model_name=smollm2-135m", "draft=off"])
    original = build_backend(cfg)
    learner = Learner(original, renderer, cfg.learn_config())
    journal = Journal.create(tmp_path / "state", meta={"model": "smollm2-135m"})
    for task, path in [("show me notes.txt", "notes.txt"), ("show me todo.md", "todo.md")]:
        msgs = (Message("user", task),)
        toks = [*renderer.tok.encode(ToolCall("write", {"path": path, "content": ""}).to_text(),
                                     add_special_tokens=False), renderer.stop_ids[0]]
        c = Correction("deny", msgs, renderer.prompt_ids(msgs), Sample(toks, [0.0] * len(toks), "stop"),
                       renderer.decode(toks), f"use read on {path}, never write")
        journal.append("correction", **c.to_dict())
        assert not learner(c)["rolled_back"]
        assert all(not r["rolled_back"] for r in learner.settle())  # the task's end: the deferred update
    journal.close()
    original.save(tmp_path / "original")

    out = tmp_path / "replayed"
    args = [str(journal.session_dir), f"out={out}", "dtype=fp32", f"cache_dir={cache_dir}", "seed=0", "draft=off"]
    assert replay(args) == 0
    a = load_file(str(tmp_path / "original" / "adapter_model.safetensors"))
    b = load_file(str(out / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and len(a) > 0
    assert all(torch.equal(a[k], b[k]) for k in a)
    import json

    assert json.loads((out / "continualcode_state.json").read_text())["step"] == 2
