"""The fused native decode step (backends/fused.py, backends/step.c): the same logits and KV as the model's own
forward — LoRA on and off, fp32, bf16 and int8 weights, llama/qwen2/qwen3 shapes, drafted runs and cuts — the
self-check that keeps a wrong step out, and the sampler's path through it."""

from __future__ import annotations

import contextlib
import copy
import ctypes
import shutil

import pytest
import torch

from continualcode.backends import fused, native
from continualcode.backends.graphs import cache_pairs, decoder_parts
from continualcode.backends.quant import decoding, prepare_for_decode

pytestmark = pytest.mark.skipif(not (shutil.which("cc") or shutil.which("gcc")), reason="no C compiler here")

PROMPT = [1, 504, 3458, 282, 253, 1345, 314, 1017, 28, 2]


@pytest.fixture(scope="module")
def kernels(backend):
    k = native.kernels()  # loaded by the backend
    if k is None:
        pytest.skip(f"native kernels unavailable: {native.why_not()}")
    return k


def _cache_of(out):
    return getattr(out, "cache", None) or out.past_key_values


def _prefill(model, ids):
    with torch.no_grad():
        return _cache_of(model(input_ids=torch.tensor([ids]), use_cache=True))


def _reference(model, cache, tokens):
    """The model's own forward over `tokens` after a copy of `cache`: logits [n, V] (fp32) and the new cache."""
    cache = copy.deepcopy(cache)
    with torch.no_grad():
        out = model(input_ids=torch.tensor([tokens]), use_cache=True, past_key_values=cache)
    return out.logits[0].float(), _cache_of(out)


# A whole model with bf16-rounded linear inputs against torch's forward with the same rounding: the C step's fp32
# activations differ from torch's by ~1e-5 (other sums, exp), enough to round a few of the thousand inputs the
# other way (some sit within 1e-4 of a bf16 ulp from a tie), each moving the logits by ~1e-4.  The products
# themselves are checked exactly (test_one_layers_products_for_every_group_of_rows).
FLIPS = 5e-3


@contextlib.contextmanager
def _linear_inputs_in_bf16(model):
    """What lin.h does for bf16 and int8 weights: each base linear layer's input rounded to bf16 (fp32 otherwise;
    LoRA's own layers keep fp32)."""
    hooks = [m.register_forward_pre_hook(lambda _m, args: (args[0].bfloat16().float(), *args[1:]))
             for name, m in model.named_modules() if type(m) is torch.nn.Linear and "lora_" not in name]
    try:
        yield
    finally:
        for h in hooks:
            h.remove()


def _tiny(family: str, dtype=torch.float32, lora: bool = True, head_dim: int = 16, inter: int = 96):
    """A two-layer random model of `family` (qwen2: q/k/v biases; qwen3: per-head q/k norms), LoRA-wrapped
    with non-zero B weights, frozen layers ready for decode.  head_dim 64 (a multiple of 64) takes step.c's
    vector attention loops (eight positions' scores at once), 16 the plain ones."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, hidden_size=64, intermediate_size=inter, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, head_dim=head_dim, vocab_size=300,
                                  tie_word_embeddings=False, pad_token_id=0)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif p.dim() == 1:
                p.normal_(0, 0.2)
    if lora:
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"]))
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.1)
        model.eval()
    return model


def test_steps_and_a_drafted_run_match_the_model_forward_with_lora(lora_on, kernels, one_thread):
    b = lora_on
    f = fused.Fused.for_model(b.model, b.device)
    assert f is not None, fused.why_not()
    cache = _prefill(b.model, PROMPT)
    stream = f.stream(cache, 16)
    want, ref_cache = _reference(b.model, cache, [42, 77, 9, 310])
    got = torch.cat([stream([42]), stream([77]), stream([9, 310])])  # two steps, then a two-token drafted run
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-4, rtol=0)
    assert stream.length == len(PROMPT) + 4
    for (k, v), (rk, rv) in zip(cache_pairs(stream.cache), cache_pairs(ref_cache), strict=True):
        assert torch.allclose(k, rk, atol=1e-5) and torch.allclose(v, rv, atol=1e-5)
    # the LoRA pairs are in those numbers: without the adapter the model says something else
    with b.model.disable_adapter():
        base, _ = _reference(b.model, cache, [42])
        plain = f.stream(cache, 4)([42])
    assert torch.allclose(plain, base, atol=1e-4, rtol=0)
    assert (base - want[:1]).abs().max() > 1e-2


def test_a_cut_forgets_the_dropped_positions(lora_on, kernels, one_thread):
    b = lora_on
    f = fused.Fused.for_model(b.model, b.device)
    cache = _prefill(b.model, PROMPT)
    stream = f.stream(cache, 16)
    stream([5, 6, 7])
    stream.cut(2)
    got = stream([8])
    want, _ = _reference(b.model, cache, [5, 8])
    assert torch.allclose(got[0], want[1], atol=1e-4, rtol=0)
    assert stream.cache.get_seq_length() == len(PROMPT) + 2
    with pytest.raises(RuntimeError, match="static KV cache full"):
        stream([1] * stream.plan[0].capacity)


@pytest.mark.parametrize("head_dim", [16, 64])
@pytest.mark.parametrize("family", ["llama", "qwen2", "qwen3"])
def test_each_family_matches_its_forward_fp32(family, head_dim, kernels):
    model = _tiny(family, head_dim=head_dim)
    lm, dec = decoder_parts(model)
    f = fused.Fused(lm, dec, kernels)
    prompt = [3, 17, 99, 4, 56, 7, 21, 60, 5, 11, 90, 42, 8, 77, 30, 6, 101]  # two blocks of 8 scores and a tail
    cache = _prefill(model, prompt)
    want, _ = _reference(model, cache, [11, 12, 13])
    stream = f.stream(cache, 8)
    got = torch.cat([stream([11]), stream([12, 13])])
    assert torch.allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("head_dim", [16, 64])
def test_a_drafted_run_attends_alike_with_its_rows_as_one_item_or_one_each(head_dim, threads, kernels):
    """step.c's attention takes a drafted run's rows of a KV head as one work item where there are at least as
    many KV heads (2 here) as threads, else one row an item: both give the forward's numbers, each row seeing
    only the positions before it (a prompt of 17: blocks of 8 positions and a tail)."""
    model = _tiny("qwen2", head_dim=head_dim)
    lm, dec = decoder_parts(model)
    f = fused.Fused(lm, dec, kernels)
    prompt = [3, 17, 99, 4, 56, 7, 21, 60, 5, 11, 90, 42, 8, 77, 30, 6, 101]
    cache = _prefill(model, prompt)
    want, _ = _reference(model, cache, [11, 12, 13, 14, 15])
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = f.stream(cache, 8)([11, 12, 13, 14, 15])
    finally:
        torch.set_num_threads(old)
    assert torch.allclose(got, want, atol=1e-4, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_drafted_run_over_rows_longer_than_two_chunks_matches_the_forward(dtype, kernels):
    """A drafted run's products go over K in chunks of 1024 weights in blocks of 8 weight rows (step.c): an MLP of
    3100 (down's rows: chunks 0-1024, 1024-2048 and a last one of 1052 with a scalar tail; gate's 3100 rows end in
    a block of 4) over a run of five rows (groups of three and two) gives the forward's numbers, with LoRA (fp32);
    bf16 weights (no adapter) against the fp32 forward of the same rounded weights, inputs rounded as lin.h
    rounds them (a dropped chunk or tail shows: the test fails when the last chunk stops a weight short)."""
    model = _tiny("qwen2", inter=3100, lora=dtype == torch.float32)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(dtype).float())
    prompt = [3, 17, 99, 4, 56, 21, 60, 5, 11]
    cache = _prefill(model, prompt)
    with _linear_inputs_in_bf16(model) if dtype == torch.bfloat16 else contextlib.nullcontext():
        want, _ = _reference(model, cache, [11, 12, 13, 14, 15])
    lm, dec = decoder_parts(copy.deepcopy(model).to(dtype))
    got = fused.Fused(lm, dec, kernels).stream(cache, 8)([11, 12, 13, 14, 15])
    assert float((got - want).abs().max()) < (1e-4 if dtype == torch.float32 else FLIPS) * float(want.abs().max())


@pytest.mark.parametrize("kind", [fused.F32, fused.BF16, fused.INT8])
def test_one_layers_products_for_every_group_of_rows(kind, kernels):
    """lin.h's products (cc_linear) against float64: bf16 and int8 weights take x rounded to bf16, fp32 weights x
    as it is, LoRA fp32 x; rows 1..12 (every group size up to ten, then two groups), 37 weight rows (blocks of
    8 and a last of 5), K of 64 and 3100 (chunks of 1024 and a last of 1052 whose scalar tail is 28 long)."""
    gen = torch.Generator().manual_seed(1)
    for K in (64, 3100):
        w = torch.randn(37, K, generator=gen)
        bias, a, b = torch.randn(37, generator=gen), torch.randn(3, K, generator=gen), torch.randn(37, 3, generator=gen)
        if kind == fused.INT8:
            stored = torch.randint(-127, 128, (37, K), generator=gen, dtype=torch.int8)
            scale = torch.rand(37, generator=gen)
            w = stored.double() * scale.double()[:, None]
        else:
            stored, scale = (w.bfloat16() if kind == fused.BF16 else w).contiguous(), None
            w = stored.double()
        lin = fused._Lin(w=stored.data_ptr(), scale=None if scale is None else scale.data_ptr(), bias=bias.data_ptr(),
                         lora_a=a.data_ptr(), lora_b=b.data_ptr(), lora_scale=0.5, kind=kind, rank=3, n=37, k=K)
        for rows in range(1, 13):
            x = torch.randn(rows, K, generator=gen)
            y = torch.empty(rows, 37)
            assert kernels.linear(ctypes.addressof(lin), x.data_ptr(), y.data_ptr(), rows) == 0
            xw = x.bfloat16().double() if kind != fused.F32 else x.double()
            want = xw @ w.T + bias.double() + 0.5 * (x.double() @ a.double().T) @ b.double().T
            tol = 1e-5 * float(want.abs().max())
            assert float((y.double() - want).abs().max()) < tol, (K, rows)
            if kind != fused.F32:  # the rounding is there: x as it is gives other numbers
                unrounded = x.double() @ w.T + bias.double() + 0.5 * (x.double() @ a.double().T) @ b.double().T
                assert float((y.double() - unrounded).abs().max()) > 10 * tol


def test_int8_copies_give_the_eager_int8_steps_numbers(kernels):
    """With int8 copies the fused step reads what `DecodeLinear` reads in the decode loop (its int8 kernel)."""
    model = _tiny("qwen2")
    prepare_for_decode(model, int8=True)
    lm, dec = decoder_parts(model)
    f = fused.Fused(lm, dec, kernels)
    cache = _prefill(model, [3, 17, 99, 4])
    with decoding():
        want, _ = _reference(model, cache, [11])
    full, _ = _reference(model, cache, [11])
    got = f.stream(cache, 4)([11])
    assert torch.allclose(got, want, atol=1e-3, rtol=0)
    assert (full - want).abs().max() > 1e-5  # the int8 rounding shows: these are not the full weights' numbers


def test_bf16_weights_and_kv_within_bf16_noise(kernels):
    model = _tiny("qwen2", dtype=torch.bfloat16, lora=False, head_dim=64)
    lm, dec = decoder_parts(model)
    f = fused.Fused(lm, dec, kernels)
    cache = _prefill(model, [3, 17, 99, 4, 56, 21, 60, 5, 11, 90, 42])
    assert cache_pairs(cache)[0][0].dtype == torch.bfloat16
    want, ref_cache = _reference(model, cache, [11, 12])
    stream = f.stream(cache, 4)
    got = torch.cat([stream([11]), stream([12])])
    assert (got - want).abs().max() < 0.05 * want.abs().max()
    assert torch.equal(got.argmax(-1), want.argmax(-1))
    k, rk = cache_pairs(stream.cache)[1][0], cache_pairs(ref_cache)[1][0]
    assert k.dtype == torch.bfloat16 and torch.allclose(k.float(), rk.float(), atol=0.05, rtol=0.02)


def test_the_self_check_passes_each_family_and_catches_a_wrong_step(kernels, monkeypatch):
    for family, head_dim in (("llama", 16), ("qwen2", 64), ("qwen3", 64)):
        lm, _ = decoder_parts(_tiny(family, lora=False, head_dim=head_dim))
        assert fused._self_check(lm, kernels) == ""
    original = fused.Fused.__init__

    def wrong_scale(self, *a, **kw):
        original(self, *a, **kw)
        self.attn_scale *= 1.5

    monkeypatch.setattr(fused.Fused, "__init__", wrong_scale)
    problem = fused._self_check(lm, kernels)
    assert problem.startswith("max logit difference")


def test_an_unsupported_model_is_refused_in_one_line(kernels, monkeypatch):
    model = _tiny("llama", lora=False)
    model.config.hidden_act = "gelu"
    monkeypatch.setattr(fused, "_STATE", {"why_not": ""})
    assert fused.Fused.for_model(model, torch.device("cpu")) is None
    assert fused.why_not() == "unsupported model: activation gelu"


def test_the_sampler_through_the_fused_step_gives_the_eager_tokens(lora_on, kernels, one_thread):
    b = lora_on
    assert b.fused is not None
    prompt = PROMPT * 3
    b.clear_cache()
    b.sample(prompt, max_tokens=1, temperature=0.0, seed=0)  # the prompt's prefix now in the KV store
    got = b.sample(prompt, max_tokens=12, temperature=0.0, seed=0, stop=())
    seen = prompt + got.tokens[:-1]
    kept = b._kv.prefix(seen, "live", b.adapter.version)
    reused = b._kv.last_reused
    fz, b.fused = b.fused, None
    try:
        b.clear_cache()
        b.sample(prompt, max_tokens=1, temperature=0.0, seed=0)
        want = b.sample(prompt, max_tokens=12, temperature=0.0, seed=0, stop=())
    finally:
        b.fused = fz
    assert got.tokens == want.tokens
    assert max(abs(x - y) for x, y in zip(got.logprobs, want.logprobs, strict=True)) < 1e-3
    assert kept is not None and kept.get_seq_length() == reused == len(seen)  # the next turn reuses it all


def test_bf16_weights_steps_and_drafted_runs_match_the_forward_of_those_weights_in_fp32(kernels):
    """bf16 weights against the fp32 forward of the same bf16-rounded weights with each linear layer's input
    rounded to bf16 (as lin.h does; every other activation stays fp32), so only the order of the sums separates
    them; a drafted run of six rows gives the steps' numbers."""
    model = _tiny("qwen2", lora=False, head_dim=64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.bfloat16().float())
    ids = [3, 17, 99, 4, 56, 21, 60, 5, 11, 90, 42]
    cache = _prefill(model, ids)
    with _linear_inputs_in_bf16(model):
        want, _ = _reference(model, cache, [11, 12, 13, 14, 15, 16])
    bf = copy.deepcopy(model).to(torch.bfloat16)
    lm, dec = decoder_parts(bf)
    f = fused.Fused(lm, dec, kernels)
    run = f.stream(cache, 8)([11, 12, 13, 14, 15, 16])
    step = f.stream(cache, 8)
    steps = torch.cat([step([t]) for t in [11, 12, 13, 14, 15, 16]])
    scale = float(want.abs().max())
    assert float((run - want).abs().max()) < FLIPS * scale
    assert float((steps - run).abs().max()) < 1e-5 * scale
