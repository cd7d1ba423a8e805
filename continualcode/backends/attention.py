"""The attention of the sampler's decode steps on CPU: a grouped-query kernel for a few query rows.

Why: torch's CPU `scaled_dot_product_attention` (its flash kernel, which transformers' `sdpa`
attention calls) is built for blocks of queries.  For the one query row of a decode step it took
~1 ms per layer against a 300-token cache, ~3 ms against 1.1k and ~9 ms against 3k tokens (torch
2.13, one thread, the 0.5B model's 14 query / 2 KV heads of 64): 24 layers of it are 20–200 ms a
step, as much as reading all the weights.  For a few query rows attention is two small matrix
products per KV head, ~0.15–0.3 ms here for the same shapes.

What it computes: softmax(q·kᵀ·scale + mask)·v, each KV head serving its group of query heads
(the query heads of KV head j are j·G … j·G+G−1, as transformers' `repeat_kv` lays them out),
the products and the softmax in float32, the result cast to the query's dtype.  That is the same
function as the flash kernel (which also accumulates in float32), so tokens and log-probabilities
agree to bf16 rounding (test: identical greedy tokens, logits within bf16 noise).

Where: only inside `quant.decoding()` (the sampler's decode loop), without grad, on CPU, for at most
`MAX_QUERY_ROWS` query rows (a decode step, a short drafted run), and for more than one row only with a
mask (several rows without one are a cache-less prefill, which sdpa runs causally).  Every other forward — prefill,
scoring, every forward with grad, and every model on another device — goes to transformers' `sdpa`
unchanged.  `use(model)` registers the kernel with transformers' attention interface and selects it.
"""

from __future__ import annotations

from typing import Any

import torch

from continualcode.backends import quant

NAME = "continualcode_decode"
MAX_QUERY_ROWS = 16  # a decode step (1), or a drafted run; a longer forward is a prefill: sdpa


def grouped_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor | None,
                      scale: float) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask)·v in float32 with grouped KV heads.  query [B, Hq, q, D], key and value
    [B, Hkv, L, D] (Hq a multiple of Hkv), mask None, bool [.., q, L] (True = attend) or additive float
    [.., q, L] broadcastable to [B, 1, q, L].  Returns [B, q, Hq, Dv] in the query's dtype (the layout
    transformers' attention functions return)."""
    b, hq, q, d = query.shape
    hkv, length = key.shape[1], key.shape[2]
    g = hq // hkv
    q32 = query.float().reshape(b, hkv, g * q, d)  # KV head j's query heads j·G … j·G+G−1, rows (head, position)
    scores = torch.matmul(q32, key.float().transpose(-1, -2)).mul_(scale)  # [B, Hkv, G·q, L]
    if mask is not None:
        m = mask[..., -q:, -length:]  # [B|1, 1|Hq, q, L]
        m = m.expand(b, m.shape[1], q, length)
        if m.shape[1] == 1:
            m = m.unsqueeze(2).expand(b, 1, g, q, length).reshape(b, 1, g * q, length)
        else:
            m = m.reshape(b, hkv, g * q, length)
        scores = scores.masked_fill(~m, float("-inf")) if m.dtype == torch.bool else scores + m.float()
    probs = torch.softmax(scores, dim=-1)
    out = torch.matmul(probs, value.float())  # [B, Hkv, G·q, Dv]
    return out.reshape(b, hq, q, -1).transpose(1, 2).contiguous().to(query.dtype)


_SDPA = [False]  # set inside `sdpa_only()`: every forward takes transformers' sdpa


def sdpa_only() -> Any:
    """Inside it, the decode steps take transformers' `sdpa` too (a benchmark alternates both kernels)."""
    return quant._flag(_SDPA)


def _forward(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
             **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: the grouped kernel in the decode loop, `sdpa` elsewhere."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if (quant.in_decode_loop() and not _SDPA[0] and not torch.is_grad_enabled() and query.device.type == "cpu"
            and query.shape[2] <= MAX_QUERY_ROWS and (attention_mask is not None or query.shape[2] == 1)
            and dropout == 0.0 and kwargs.get("softcap") is None
            and kwargs.get("position_bias") is None and query.shape[1] % key.shape[1] == 0):
        scale = scaling if scaling is not None else query.shape[-1] ** -0.5
        return grouped_attention(query, key, value, attention_mask, scale), None
    return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                  **kwargs)


def use(model: Any) -> bool:
    """Select the decode kernel for `model` where it runs on transformers' `sdpa` (True when selected);
    a model on another attention implementation (eager, flash, one a user chose) is left as it is."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface

    config = getattr(model, "config", None)
    if config is None or getattr(config, "_attn_implementation", None) not in ("sdpa", NAME):
        return False
    AttentionInterface.register(NAME, _forward)
    AttentionMaskInterface.register(NAME, ALL_MASK_ATTENTION_FUNCTIONS["sdpa"])  # the masks sdpa is given
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, AttributeError, TypeError):
        return False
    return getattr(config, "_attn_implementation", None) == NAME
