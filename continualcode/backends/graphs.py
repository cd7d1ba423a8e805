"""Decode steps as one CUDA graph each: a static KV cache and the decoder's modules called directly.

Why: on a GPU the sampler's eager decode step is launch-bound.  Measured on an H200
(bench/results/speed/cuda-h200/): ~50 ms a token for the 1.5B shape and for the 4B shape alike, the same
as `model.generate`, where reading the weights takes ~2 ms: each token launches a few thousand small
kernels (every layer's projections, their LoRA pairs, norms, rotary, attention), each one a Python
call away from the last.  A CUDA graph records one token's kernels once and replays them with one
launch, so a token costs what the GPU's work costs.

What, in three parts:
- `StaticKV`: KV buffers of a fixed capacity, written at given positions by the model's own attention
  layers (it is the object they are handed as their cache: transformers' `update(keys, values, layer)`).
- `lean_forward`: the decoder's forward for tokens at given positions: the model's own modules
  (embeddings, rotary embedding, every layer with its LoRA, final norm, LM head) called in order, with a
  boolean mask built on the device from the positions.  transformers' own forward builds its mask and
  positions from host-side values (not capturable) and grows a dynamic cache by concatenation (new
  shapes every token: not capturable either).
- `GraphStream`: the sampler's stream (`decode.py`: called with new tokens, returns their next-token
  logits; `cut(n)` drops the last n).  One token replays the captured graph; several (a drafted run) run
  `lean_forward` eagerly over the same buffers.  At the end `cache` hands the filled positions back as a
  transformers `DynamicCache`, which the prefix store keeps for the next turn and the step's scoring.

Exactness: the same modules over the same keys and values (the buffer's unfilled tail is masked), so the
same distribution up to the rounding of the attention kernel sdpa picks (tests: `lean_forward` against
the model's forward on CPU in fp32; the replayed graph against eager steps on a GPU, tests/test_cuda.py).

Where: CUDA (`Graphs.for_model` returns None elsewhere, and for a decoder that is not llama-, qwen2- or
qwen3-shaped with full attention in every layer); plain sampling only (the guided retry keeps the eager
stream), without drafts (a drafted run is an eager forward, ~5 graphed steps' time).  The LoRA weights
change in place (optimizer steps, `load_state`'s `copy_`), so a captured graph always reads the current
adapter; `disable_adapter()` changes which kernels run, so a graph is recorded per adapter state.  A
failed capture (a model whose modules read device values on the host) turns graphs off for the process
and the sampler goes on eagerly.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

FAMILIES = ("llama", "qwen2", "qwen3")  # decoders whose layers take (hidden, mask, positions, cache, rotary)
MIN_CAPACITY = 1024  # buffers grow in powers of two from here (a graph is recorded per capacity)
MARGIN = 64  # room past max_tokens for a drafted run's guesses


class StaticKV:
    """Per-layer key and value buffers [1, kv_heads, capacity, head_dim]; `positions` (set before each
    forward) says where `update` writes; `limit` (eager forwards only) how much of them it hands back."""

    def __init__(self, like: list[tuple[torch.Tensor, torch.Tensor]], capacity: int) -> None:
        self.capacity = capacity
        self.keys = [torch.zeros(*k.shape[:2], capacity, k.shape[3], dtype=k.dtype, device=k.device) for k, _ in like]
        self.values = [torch.zeros(*v.shape[:2], capacity, v.shape[3], dtype=v.dtype, device=v.device)
                       for _, v in like]
        self.positions: torch.Tensor | None = None
        self.limit = capacity

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, layer_idx: int, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """transformers' cache hook: store the new positions' keys and values, return the layer's whole KV."""
        k, v = self.keys[layer_idx], self.values[layer_idx]
        k.index_copy_(2, self.positions, key_states.to(k.dtype))  # type: ignore[arg-type]
        v.index_copy_(2, self.positions, value_states.to(v.dtype))  # type: ignore[arg-type]
        return k[:, :, : self.limit], v[:, :, : self.limit]

    def load(self, pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> int:
        """Copy a cache's keys and values into the first positions; the positions filled."""
        n = pairs[0][0].shape[2]
        for i, (k, v) in enumerate(pairs):
            self.keys[i][:, :, :n].copy_(k)
            self.values[i][:, :, :n].copy_(v)
        return n

    def pairs(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Copies of the first n positions' keys and values, layer by layer."""
        return [(k[:, :, :n].clone(), v[:, :, :n].clone()) for k, v in zip(self.keys, self.values, strict=True)]


def cache_pairs(cache: Any) -> list[tuple[torch.Tensor, torch.Tensor]] | None:
    """(keys, values) per layer of a transformers DynamicCache (None for a cache of another kind)."""
    layers = getattr(cache, "layers", None)
    if not layers or not all(hasattr(la, "keys") and isinstance(la.keys, torch.Tensor) for la in layers):
        return None
    return [(la.keys, la.values) for la in layers]


def dynamic_cache(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> Any:
    from transformers import DynamicCache

    return DynamicCache(ddp_cache_data=pairs)


def decoder_parts(model: Any) -> tuple[Any, Any] | None:
    """(causal LM, its decoder) when `model` (a PEFT model or a transformers causal LM) is of a supported
    family with full attention in every layer; None otherwise."""
    lm = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(lm, "config", None)
    dec = getattr(lm, "model", None)
    if config is None or dec is None or getattr(config, "model_type", None) not in FAMILIES:
        return None
    if not all(hasattr(dec, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")) or not hasattr(lm, "lm_head"):
        return None
    if any(t != "full_attention" for t in (getattr(config, "layer_types", None) or ["full_attention"])):
        return None
    if getattr(config, "final_logit_softcapping", None):
        return None
    return lm, dec


def _cache_kw(layer: Any) -> str:
    return "cache" if "cache" in inspect.signature(layer.forward).parameters else "past_key_values"


def lean_forward(lm: Any, dec: Any, ids: torch.Tensor, positions: torch.Tensor, kv: StaticKV,
                 cache_kw: str = "cache") -> torch.Tensor:
    """Next-token logits [n, V] after tokens `ids` [1, n] at `positions` [n] (their keys and values go into
    `kv` there); each row attends to the buffer's positions up to its own."""
    kv.positions = positions
    h = dec.embed_tokens(ids)
    pos_1n = positions.unsqueeze(0)
    rotary = dec.rotary_emb(h, pos_1n)
    cols = torch.arange(kv.limit, device=ids.device)
    mask = (cols.unsqueeze(0) <= positions.unsqueeze(1)).unsqueeze(0).unsqueeze(0)  # [1, 1, n, L] True = attend
    for layer in dec.layers:
        out = layer(h, attention_mask=mask, position_ids=pos_1n, use_cache=True, position_embeddings=rotary,
                    **{cache_kw: kv})
        h = out[0] if isinstance(out, tuple) else out
    return lm.lm_head(dec.norm(h))[0]


class Graphs:
    """A model's recorded decode steps: one static KV cache (the largest capacity asked for so far) and a
    graph per adapter state for it.  `capture=False` runs every step eagerly (CPU, tests)."""

    def __init__(self, lm: Any, dec: Any, *, capture: bool = True) -> None:
        self.lm, self.dec, self.capture = lm, dec, capture
        self.cache_kw = _cache_kw(dec.layers[0])
        self.kv: StaticKV | None = None
        self.graphs: dict[bool, tuple[Any, torch.Tensor, torch.Tensor, torch.Tensor]] = {}
        self.failed: str | None = None  # why capturing was given up (then every step is eager)
        self._lora = next((m for m in lm.modules() if hasattr(m, "disable_adapters") and hasattr(m, "lora_A")), None)

    @classmethod
    def for_model(cls, model: Any, device: torch.device) -> Graphs | None:
        parts = decoder_parts(model)
        if device.type != "cuda" or parts is None:
            return None
        return cls(*parts)

    def stream(self, cache: Any, need: int) -> GraphStream | None:
        """A stream continuing `cache` (a DynamicCache) with room for `need` more positions; None where the
        cache is not one this can copy."""
        pairs = cache_pairs(cache)
        if pairs is None:
            return None
        n = pairs[0][0].shape[2]
        cap = MIN_CAPACITY
        while cap < n + need + MARGIN:
            cap *= 2
        if self.kv is None or self.kv.capacity < cap or len(self.kv.keys) != len(pairs):
            self.kv, self.graphs = None, {}
            try:
                self.kv = StaticKV(pairs, cap)
            except torch.OutOfMemoryError:  # a long context on a small GPU: this sample decodes eagerly
                return None
        self.kv.load(pairs)
        return GraphStream(self, n)

    def adapter_on(self) -> bool:
        """Whether the LoRA layers currently add their update (False inside `disable_adapter()`)."""
        return self._lora is None or not self._lora.disable_adapters

    def step(self, token: int, position: int) -> torch.Tensor:
        """The next-token logits [1, V] after `token` at `position`: the recorded graph where there is one."""
        assert self.kv is not None
        key = self.adapter_on()
        if self.capture and self.failed is None and key not in self.graphs:
            self._record(key, position)
        if key in self.graphs:
            graph, ids, pos, out = self.graphs[key]
            ids.fill_(token)
            pos.fill_(position)
            graph.replay()
            return out.clone()
        return self.eager([token], position)

    def eager(self, tokens: list[int], start: int) -> torch.Tensor:
        assert self.kv is not None
        dev = self.kv.keys[0].device
        ids = torch.tensor([tokens], dtype=torch.long, device=dev)
        positions = torch.arange(start, start + len(tokens), device=dev)
        self.kv.limit = start + len(tokens)
        try:
            return lean_forward(self.lm, self.dec, ids, positions, self.kv, self.cache_kw)
        finally:
            self.kv.limit = self.kv.capacity

    def _record(self, key: bool, position: int) -> None:
        """Record one token's step for this adapter state.  The warm-up runs write keys and values at
        `position`, the next position to be filled, which the real step overwrites."""
        assert self.kv is not None
        dev = self.kv.keys[0].device
        ids = torch.zeros(1, 1, dtype=torch.long, device=dev)
        pos = torch.full((1,), position, dtype=torch.long, device=dev)
        try:
            side = torch.cuda.Stream(device=dev)
            side.wait_stream(torch.cuda.current_stream(dev))
            with torch.cuda.stream(side):
                for _ in range(2):
                    lean_forward(self.lm, self.dec, ids, pos, self.kv, self.cache_kw)
            torch.cuda.current_stream(dev).wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                out = lean_forward(self.lm, self.dec, ids, pos, self.kv, self.cache_kw)
        except Exception as e:
            self.failed = f"{type(e).__name__}: {e}".splitlines()[0][:200]
            torch.cuda.synchronize(dev)
            return
        self.graphs[key] = (graph, ids, pos, out)


class StaticStream:
    """decode.py's stream over an owner's `StaticKV` (`owner.kv`): called with new tokens, their next-token
    logits [n, V] (a subclass's `_run`); `cut(n)` drops the last n; `cache` hands the filled positions back."""

    drafts = False  # whether the sampler may draft on it

    def __init__(self, owner: Any, length: int) -> None:
        self.owner, self.length = owner, length
        self._cache: Any = None

    def __call__(self, tokens: list[int]) -> torch.Tensor:
        kv = self.owner.kv
        assert kv is not None
        if self.length + len(tokens) > kv.capacity:
            raise RuntimeError(f"static KV cache full ({kv.capacity} positions)")
        logits = self._run(tokens)
        self.length += len(tokens)
        self._cache = None
        return logits

    def _run(self, tokens: list[int]) -> torch.Tensor:
        raise NotImplementedError

    def cut(self, n: int) -> None:
        """Drop the last `n` positions (their buffer slots are overwritten by the next tokens)."""
        self.length -= n
        self._cache = None

    @property
    def cache(self) -> Any:
        """The filled positions as a transformers DynamicCache (a copy: the buffers are reused)."""
        if self._cache is None:
            assert self.owner.kv is not None
            self._cache = dynamic_cache(self.owner.kv.pairs(self.length))
        return self._cache


class GraphStream(StaticStream):
    """The stream over a `Graphs` static cache (see the module docstring); no drafts: a drafted run would be an
    eager forward."""

    def _run(self, tokens: list[int]) -> torch.Tensor:
        if len(tokens) == 1:
            return self.owner.step(tokens[0], self.length)
        return self.owner.eager(tokens, self.length)
