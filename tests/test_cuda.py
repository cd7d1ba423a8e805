"""The local backend on a CUDA GPU: the path real users with a GPU take (skipped on a machine without one).

CI has no GPU, so these tests skip there; they are run by hand on a GPU machine.  The model is the
SmolLM2-135M built-in, or $CONTINUALCODE_CUDA_MODEL: a model directory (config.json and tokenizer).
A directory without weights gets random ones from its config (`from_config`), so a GPU machine with
no network and no model cache still checks the device path: the numbers below compare the backend
with itself (sample vs score, CUDA vs CPU, before vs after a step), never with what a trained model
would say.

What is checked: the auto dtype on CUDA is bf16 with fp32 LoRA weights, all on the GPU; sampled
log-probs agree with `score` (the bf16 bound of the CPU test); fp32 scores on CUDA equal fp32 scores
on CPU; a grammar-constrained sample is accepted token by token by the grammar; a positive-advantage
step raises the completion and touches only LoRA; the product's SDPO step (`Learner` on a denial)
takes its step; a checkpoint saved on the GPU loads back exactly; the decode steps replay a recorded
CUDA graph with the eager steps' numbers, and it reads the LoRA weights as they are after a change.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from continualcode.backends.kv import lcp
from continualcode.learn.types import LossSpec, Scores, TrainExample

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU on this machine")]

WEIGHT_GLOBS = ("*.safetensors", "*.bin")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> str:
    """A model directory with weights: $CONTINUALCODE_CUDA_MODEL (random weights from its config when it
    has none), else the SmolLM2-135M built-in."""
    src = os.environ.get("CONTINUALCODE_CUDA_MODEL")
    if not src:
        from continualcode.models import resolve

        return resolve("smollm2-135m", cache=cache_dir).path
    d = Path(src)
    if any(next(d.glob(g), None) for g in WEIGHT_GLOBS):
        return str(d)
    import transformers

    out = tmp_path_factory.mktemp("random-model")
    for f in d.iterdir():
        if f.is_file():
            shutil.copy(f, out / f.name)
    torch.manual_seed(0)
    config = transformers.AutoConfig.from_pretrained(d)
    transformers.AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16).save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def gpu(model_dir: str):
    from continualcode.backends.local import LocalBackend

    return LocalBackend(model_dir, device="cuda", seed=0)


@pytest.fixture(scope="module")
def prompt(gpu) -> list[int]:
    return list(gpu.tokenizer.encode("def fibonacci(n):\n    ", add_special_tokens=False))


def lora(b) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}


def test_auto_dtype_on_cuda_is_bf16_with_fp32_lora_all_on_the_gpu(gpu):
    assert gpu.device.type == "cuda" and gpu.dtype == torch.bfloat16
    params = dict(gpu.model.named_parameters())
    assert all(p.device.type == "cuda" for p in params.values())
    assert gpu.params and all(p.dtype == torch.float32 and p.requires_grad for p in gpu.params)
    assert {p.dtype for n, p in params.items() if not p.requires_grad} == {torch.bfloat16}


def test_sampled_logprobs_agree_with_score_on_cuda(gpu, prompt):
    s = gpu.sample(prompt, max_tokens=32, temperature=0.0)
    assert len(s.tokens) > 0
    gpu.clear_cache()
    diff = (gpu.score(prompt, s.tokens).logprobs.cpu() - torch.tensor(s.logprobs)).abs()
    assert float(diff.mean()) <= 3e-2 and float(diff.max()) <= 0.3, diff  # the CPU bf16 test's bounds


def test_fp32_scores_on_cuda_equal_fp32_scores_on_cpu(model_dir, prompt):
    from continualcode.backends.local import LocalBackend

    completion = prompt[-6:] + prompt[:6]
    got = {}
    for device in ("cuda", "cpu"):
        b = LocalBackend(model_dir, device=device, dtype="fp32", seed=0, warmup=False)
        got[device] = b.score(prompt, completion).logprobs.cpu()
        del b
    assert torch.allclose(got["cuda"], got["cpu"], atol=2e-3), (got["cuda"] - got["cpu"]).abs().max()


def test_a_grammar_constrained_sample_on_cuda_is_accepted_by_the_grammar(gpu, prompt):
    from continualcode.records import Message
    from continualcode.render import Renderer

    renderer = Renderer(gpu.tokenizer, vocab_size=gpu.vocab_size)
    ids = renderer.prompt_ids([Message("user", "List the Python files here.")])
    calls_only = renderer.constraint(allow_text=False)
    s = gpu.sample(ids, max_tokens=48, temperature=1.0, seed=3, constraint=calls_only)
    assert s.allowed_mass is not None and 0.0 < s.allowed_mass <= 1.0
    state = calls_only.start()
    body = s.tokens[:-1] if s.finish_reason == "stop" else s.tokens  # the stop token ends, the grammar allows it
    assert all(state.accept(t) for t in body), renderer.decode(s.tokens)


def test_a_positive_advantage_step_on_cuda_raises_the_completion_and_touches_only_lora(gpu, prompt):
    completion = gpu.sample(prompt, max_tokens=16, temperature=1.0, seed=7).tokens
    snap = gpu.snapshot()
    frozen = {n: p.detach().clone() for n, p in gpu.model.named_parameters() if not p.requires_grad}
    before_lora = lora(gpu)
    before = gpu.score(prompt, completion).logprobs
    ex = TrainExample(prompt, completion, old_logprobs=None, teacher=Scores(logprobs=before + 1.0))
    m = gpu.train_step([ex], LossSpec(kind="sampled_token", beta=0.0), lr=1e-3).metrics
    assert m["stepped"] == 1.0 and m["nonfinite"] == 0.0 and m["grad_norm"] > 0
    after = gpu.score(prompt, completion).logprobs
    assert float(after.sum()) > float(before.sum()) + 0.1
    now = dict(gpu.model.named_parameters())
    assert all(torch.equal(now[n], w) for n, w in frozen.items())
    assert any(not torch.equal(now[n], w) for n, w in before_lora.items())
    gpu.restore(snap)


def test_the_products_sdpo_step_on_a_denial_steps_on_cuda(gpu):
    from continualcode.config import Config
    from continualcode.learn.step import Learner
    from continualcode.records import Correction, Message
    from continualcode.render import Renderer

    renderer = Renderer(gpu.tokenizer, vocab_size=gpu.vocab_size)
    msgs = (Message("user", "Show me the version in setup.py."),)
    ids = renderer.prompt_ids(list(msgs))
    s = gpu.sample(ids, max_tokens=24, temperature=1.0, seed=11)
    snap = gpu.snapshot()
    before = lora(gpu)
    c = Correction("deny", msgs, ids, s, renderer.decode(s.tokens), "use grep to find the version line first")
    m = Learner(gpu, renderer, Config().learn_config())(c)
    assert m is not None and m["steps_taken"] == 1 and not m["rolled_back"], m
    assert all(torch.isfinite(torch.tensor(m[k])) for k in ("loss", "kl_after", "seq_logp_after")), m
    assert any(not torch.equal(p, before[n]) for n, p in lora(gpu).items())
    gpu.restore(snap)


def test_a_checkpoint_saved_on_cuda_loads_back_exactly(gpu, prompt, tmp_path: Path):
    completion = prompt[:5]
    snap = gpu.snapshot()
    ex = TrainExample(prompt, completion, old_logprobs=None,
                      teacher=Scores(logprobs=gpu.score(prompt, completion).logprobs + 1.0))
    spec = LossSpec(kind="sampled_token", beta=0.0)
    gpu.train_step([ex], spec, lr=1e-3)
    gpu.clear_cache()
    saved = gpu.score(prompt, completion).logprobs
    gpu.save(tmp_path / "ckpt")
    gpu.train_step([ex], spec, lr=1e-3)
    gpu.load(tmp_path / "ckpt")
    gpu.clear_cache()
    assert torch.equal(gpu.score(prompt, completion).logprobs, saved)
    gpu.restore(snap)


def test_decode_steps_replay_a_recorded_cuda_graph_with_the_eager_numbers(gpu, prompt):
    """The sampler's one-token steps replay a CUDA graph (backends/graphs.py); tokens and log-probabilities
    are those of the eager steps (greedy, compared up to the first bf16 near-tie)."""
    assert gpu.graphs is not None
    gpu.clear_cache()
    g = gpu.sample(prompt, max_tokens=32, temperature=0.0, stop=())
    assert gpu.graphs.failed is None and gpu.graphs.graphs, gpu.graphs.failed
    graphs, gpu.graphs = gpu.graphs, None
    try:
        gpu.clear_cache()
        e = gpu.sample(prompt, max_tokens=32, temperature=0.0, stop=())
    finally:
        gpu.graphs = graphs
    n = lcp(g.tokens, e.tokens)
    assert n >= 4, (g.tokens, e.tokens)
    diff = (torch.tensor(g.logprobs[:n]) - torch.tensor(e.logprobs[:n])).abs()
    assert float(diff.max()) < 0.2, diff


def test_a_recorded_graph_reads_the_adapter_as_it_is_now(gpu, prompt):
    """LoRA weights changed in place after the graph was recorded (as an optimizer step changes them): the
    replayed steps' log-probabilities are the new weights' (they agree with `score`), not the old ones'."""
    snap = gpu.snapshot()
    gpu.clear_cache()
    before = gpu.sample(prompt, max_tokens=24, temperature=0.0, stop=())
    assert gpu.graphs is not None and gpu.graphs.graphs
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in gpu.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen).to(p.device) * 0.05)
    gpu.clear_cache()
    s = gpu.sample(prompt, max_tokens=24, temperature=0.0, stop=())
    gpu.clear_cache()
    scored = gpu.score(prompt, s.tokens).logprobs.cpu()
    diff = (scored - torch.tensor(s.logprobs)).abs()
    assert float(diff.mean()) <= 3e-2 and float(diff.max()) <= 0.3, diff
    moved = gpu.score(prompt, before.tokens).logprobs.cpu() - torch.tensor(before.logprobs)
    assert float(moved.abs().max()) > 0.05  # the new weights do change these numbers
    gpu.restore(snap)
    gpu.clear_cache()
