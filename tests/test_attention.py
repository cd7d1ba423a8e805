"""The decode steps' attention kernel (backends/attention.py): the function it computes, where it runs,
and that a real model's sampling keeps its tokens and its agreement with scoring."""

from __future__ import annotations

import math

import pytest
import torch

from continualcode.backends import attention, quant
from continualcode.backends.attention import grouped_attention, sdpa_only
from continualcode.backends.quant import decoding


def _reference(q, k, v, mask, scale):
    """The textbook definition in float64: KV heads repeated for their query heads, additive mask."""
    g = q.shape[1] // k.shape[1]
    k64 = k.double().repeat_interleave(g, dim=1)
    v64 = v.double().repeat_interleave(g, dim=1)
    s = q.double() @ k64.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.double()
    return (torch.softmax(s, dim=-1) @ v64).transpose(1, 2)  # [B, q, Hq, D]


def test_a_hand_computed_case():
    """One query head, one KV head, two keys: weights softmax(q·k) = (e/(e+1), 1/(e+1))."""
    q = torch.tensor([1.0, 0.0]).view(1, 1, 1, 2)
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    v = torch.tensor([[1.0, 2.0], [3.0, 4.0]]).view(1, 1, 2, 2)
    w = math.e / (math.e + 1)
    want = torch.tensor([w * 1 + (1 - w) * 3, w * 2 + (1 - w) * 4])
    out = grouped_attention(q, k, v, None, 1.0)
    assert out.shape == (1, 1, 1, 2)
    assert torch.allclose(out.view(2), want, atol=1e-6)
    masked = grouped_attention(q, k, v, torch.tensor([[[[False, True]]]]), 1.0)  # the first key hidden
    assert torch.allclose(masked.view(2), torch.tensor([3.0, 4.0]))


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("mask_kind", ["none", "bool", "float"])
def test_grouped_heads_match_the_definition(rows, mask_kind):
    """14 query heads on 2 KV heads (the 0.5B model's layout); a causal mask over the last `rows` keys."""
    gen = torch.Generator().manual_seed(0)
    b, hq, hkv, length, d = 1, 14, 2, 37, 16
    q = torch.randn(b, hq, rows, d, generator=gen)
    k = torch.randn(b, hkv, length, d, generator=gen)
    v = torch.randn(b, hkv, length, d, generator=gen)
    causal = torch.ones(rows, length, dtype=torch.bool).tril(length - rows).view(1, 1, rows, length)
    mask = {"none": None, "bool": causal,
            "float": torch.zeros(1, 1, rows, length).masked_fill(~causal, float("-inf"))}[mask_kind]
    out = grouped_attention(q, k, v, mask, d**-0.5)
    assert out.shape == (b, rows, hq, d)
    assert torch.allclose(out.double(), _reference(q, k, v, mask, d**-0.5), atol=1e-5)
    if mask_kind == "bool" and rows > 1:  # the mask matters: without it the earlier rows see later keys
        assert not torch.allclose(out, grouped_attention(q, k, v, None, d**-0.5), atol=1e-3)


def test_it_runs_only_for_no_grad_decode_steps(monkeypatch):
    """Inside the decode loop, without grad, a few rows: the grouped kernel; a prefill, a forward with grad,
    `sdpa_only()` or anything outside the loop: transformers' sdpa."""
    import transformers.integrations.sdpa_attention as sdpa_mod

    used: list[str] = []
    monkeypatch.setattr(attention, "grouped_attention",
                        lambda *a: used.append("grouped") or torch.zeros(1, a[0].shape[2], 4, 8))
    monkeypatch.setattr(sdpa_mod, "sdpa_attention_forward", lambda *a, **kw: used.append("sdpa") or (None, None))

    class Module:
        num_key_value_groups = 2

    def call(rows: int, mask: bool = False) -> str:
        q, kv = torch.zeros(1, 4, rows, 8), torch.zeros(1, 2, 20, 8)
        attention._forward(Module(), q, kv, kv, torch.ones(1, 1, rows, 20, dtype=torch.bool) if mask else None,
                           scaling=0.1)
        return used.pop()

    with torch.no_grad():
        assert call(1) == "sdpa"  # outside the decode loop
        with decoding():
            assert call(1) == "grouped"
            with quant.plain():  # the benchmark's reference path
                assert call(1) == "sdpa"
            assert call(attention.MAX_QUERY_ROWS, mask=True) == "grouped"  # a drafted run, with its causal mask
            assert call(attention.MAX_QUERY_ROWS + 1, mask=True) == "sdpa"  # a prefill-sized forward
            assert call(3) == "sdpa"  # several rows and no mask: a cache-less prefill, causal in sdpa
            with sdpa_only():
                assert call(1) == "sdpa"
    with decoding(), torch.enable_grad():
        assert call(1) == "sdpa"


def test_a_real_model_samples_the_same_tokens_and_still_agrees_with_scoring(cache_dir):
    """SmolLM2 (9 query / 3 KV heads) in bf16: `use` selected the kernel; greedy decoding picks the same
    tokens as with sdpa (until a bf16 near-tie), with logprobs within bf16 noise; scoring (a prefill, sdpa,
    with the masks sdpa is given) still agrees with what sampling recorded."""
    from continualcode.backends.local import LocalBackend

    b = LocalBackend("smollm2-135m", dtype="bf16", cache=cache_dir, seed=0, warmup=False, threads=1)
    assert b.model.get_base_model().config._attn_implementation == attention.NAME
    b.drafter = None
    prompt = list(range(200, 260))
    with sdpa_only():
        b.clear_cache()
        want = b.sample(prompt, max_tokens=16, temperature=0.0, stop=())
    b.clear_cache()
    got = b.sample(prompt, max_tokens=16, temperature=0.0, stop=())
    # Greedy picks the same tokens until a near-tie that bf16 rounding breaks either way (on this nonsense
    # prompt, seen on CPUs without native bf16, where torch emulates it); up to there the logprobs agree
    # within bf16 noise, compounding through the K/V the steps write (0.12 seen).
    pairs = list(zip(got.tokens, want.tokens, strict=False))
    same = next((i for i, (x, y) in enumerate(pairs) if x != y), len(pairs))  # tokens alike up to here
    assert same >= 4, (got.tokens, want.tokens)
    assert (torch.tensor(got.logprobs[:same]) - torch.tensor(want.logprobs[:same])).abs().max() < 0.2
    b.clear_cache()
    scored = b.score(prompt, got.tokens).logprobs
    diff = (scored - torch.tensor(got.logprobs)).abs()
    # a wrong kernel or mask is off by whole nats; bf16 noise is 0.02-0.03 on average (0.032 where emulated)
    assert float(diff.mean()) < 6e-2 and float(diff.max()) < 0.3


def test_a_model_on_another_attention_is_left_alone(cache_dir):
    from continualcode.backends.loading import load_base

    _, _, model = load_base("smollm2-135m", dtype=torch.float32, cache=cache_dir)
    model.set_attn_implementation("eager")
    assert attention.use(model) is False
    assert model.config._attn_implementation == "eager"
