"""The static-KV decode steps (backends/graphs.py) on CPU, run eagerly: the same numbers as the model's own
forward, drafted runs and cuts, the KV handed back, and the sampler's path through it.  The recorded CUDA
graphs themselves are tested in tests/test_cuda.py (skipped without a GPU)."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from continualcode.backends.graphs import Graphs, StaticKV, cache_pairs, decoder_parts

PROMPT = [1, 504, 3458, 282, 253, 1345, 314, 1017, 28, 2]


def _prefill(b, ids):
    with torch.no_grad():
        out = b.model(input_ids=torch.tensor([ids]), use_cache=True)
    return getattr(out, b._cache_kw)


def _reference(b, cache, tokens):
    """The model's own forward over `tokens` after `cache` (a copy): logits [n, V] and the extended cache."""
    cache = copy.deepcopy(cache)
    with torch.no_grad():
        out = b.model(input_ids=torch.tensor([tokens]), use_cache=True, logits_to_keep=len(tokens),
                      **{b._cache_kw: cache})
    return out.logits[0], getattr(out, b._cache_kw)


def test_one_token_steps_and_a_drafted_run_match_the_model_forward(lora_on, one_thread):
    b = lora_on
    g = Graphs(*decoder_parts(b.model), capture=False)
    cache = _prefill(b, PROMPT)
    stream = g.stream(cache, 16)
    assert stream is not None and g.kv is not None and g.kv.capacity == 1024
    want, ref_cache = _reference(b, cache, [42, 77, 9, 310])
    got = [stream([42]), stream([77]), stream([9, 310])]  # two decode steps, then a two-token drafted run
    assert [t.shape[0] for t in got] == [1, 1, 2]
    assert torch.allclose(torch.cat(got).float(), want.float(), atol=1e-4, rtol=0)
    assert stream.length == len(PROMPT) + 4
    for (k, v), (rk, rv) in zip(cache_pairs(stream.cache), cache_pairs(ref_cache), strict=True):
        assert torch.allclose(k, rk, atol=1e-5) and torch.allclose(v, rv, atol=1e-5)


def test_a_cut_forgets_the_dropped_positions(lora_on, one_thread):
    """Tokens [a, b, c], cut 2, then d: the logits after d are those after [a, d], not after [a, b, c, d]."""
    b = lora_on
    g = Graphs(*decoder_parts(b.model), capture=False)
    cache = _prefill(b, PROMPT)
    stream = g.stream(cache, 16)
    stream([5, 6, 7])
    stream.cut(2)
    got = stream([8])
    want, _ = _reference(b, cache, [5, 8])
    assert torch.allclose(got[0].float(), want[1].float(), atol=1e-4, rtol=0)
    wrong, _ = _reference(b, cache, [5, 6, 7, 8])
    assert not torch.allclose(got[0].float(), wrong[3].float(), atol=1e-2)
    assert stream.cache.get_seq_length() == len(PROMPT) + 2


def test_the_buffers_grow_for_a_longer_need_and_refuse_past_capacity(lora_on, one_thread):
    b = lora_on
    g = Graphs(*decoder_parts(b.model), capture=False)
    cache = _prefill(b, PROMPT)
    small = g.stream(cache, 8)
    assert g.kv is not None and g.kv.capacity == 1024
    big = g.stream(cache, 1500)
    assert g.kv.capacity == 2048 and big is not None and small is not None
    big.length = g.kv.capacity - 1
    with pytest.raises(RuntimeError, match="static KV cache full"):
        big([1, 2])


def test_static_kv_writes_at_its_positions():
    """A hand-checked write: keys for positions 1 and 3 land there; the handed-back view stops at `limit`."""
    like = [(torch.zeros(1, 2, 1, 4), torch.zeros(1, 2, 1, 4))]
    kv = StaticKV(like, 6)
    kv.positions = torch.tensor([1, 3])
    k_new = torch.arange(16.0).view(1, 2, 2, 4)
    kv.limit = 4
    k, v = kv.update(k_new, -k_new, 0)
    assert k.shape == v.shape == (1, 2, 4, 4)
    assert torch.equal(kv.keys[0][:, :, 1], k_new[:, :, 0]) and torch.equal(kv.keys[0][:, :, 3], k_new[:, :, 1])
    assert torch.equal(kv.values[0][:, :, 3], -k_new[:, :, 1])
    assert kv.keys[0][:, :, [0, 2, 4, 5]].abs().sum() == 0


def test_graphs_are_for_cuda_and_the_supported_decoders_only(backend):
    assert Graphs.for_model(backend.model, torch.device("cpu")) is None
    assert decoder_parts(backend.model) is not None  # SmolLM2 is llama-shaped
    other = SimpleNamespace(config=SimpleNamespace(model_type="gemma2"), model=backend.model.get_base_model().model,
                            lm_head=None)
    assert decoder_parts(other) is None
    sliding = SimpleNamespace(config=SimpleNamespace(model_type="qwen2", layer_types=["sliding_attention"]),
                              model=backend.model.get_base_model().model, lm_head=None)
    assert decoder_parts(sliding) is None


def test_the_adapter_state_is_read_from_the_lora_layers(backend):
    g = Graphs(*decoder_parts(backend.model), capture=False)
    assert g.adapter_on()
    with backend.model.disable_adapter():
        assert not g.adapter_on()
    assert g.adapter_on()


def test_the_sampler_through_the_static_cache_gives_the_same_sample_and_kv(lora_on, one_thread):
    """LocalBackend.sample with its `graphs` set (eager steps on CPU) = without: tokens, log-probabilities,
    and the KV it leaves in the prefix store (a score afterwards agrees with a cold one)."""
    b = lora_on
    kw = dict(max_tokens=12, temperature=0.0, stop=())
    plain = b.sample(PROMPT, **kw)
    b.clear_cache()
    b.graphs = Graphs(*decoder_parts(b.model), capture=False)
    try:
        lean = b.sample(PROMPT, **kw)
        warm = b.score(PROMPT + lean.tokens[:4], lean.tokens[4:8]).logprobs
    finally:
        b.graphs = None
    assert lean.tokens == plain.tokens
    assert max(abs(x - y) for x, y in zip(lean.logprobs, plain.logprobs, strict=True)) < 1e-3
    b.clear_cache()
    cold = b.score(PROMPT + lean.tokens[:4], lean.tokens[4:8]).logprobs
    assert torch.allclose(warm, cold, atol=1e-4)
