"""The token-choosing loop of local sampling: grammar mask, temperature, top-p, stop rules.

Boundary: given the first next-token logits and a `step(token) -> next logits` callable (the
model's one-token decode with its KV cache), produce the completion.  It knows nothing of models,
caches or adapters.  The log-probability recorded for each token is the model's own, unmasked, at
temperature 1 (π_old for importance sampling, equal to what scoring returns); the mask, the
temperature and top-p change only which token is chosen.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any, Literal

import torch

Finish = Literal["stop", "length", "constraint"]


@dataclass
class Decoded:
    tokens: list[int]
    logprobs: list[float]
    finish: Finish


def decode(
    logits_V: torch.Tensor,
    step: Callable[[int], torch.Tensor],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: Collection[int],
    state: Any,
    gen: torch.Generator,
) -> Decoded:
    """Choose up to `max_tokens` tokens; `state` is a grammar state (constrain.GrammarState) or None."""
    out = Decoded([], [], "length")
    for _ in range(max_tokens):
        # 1) the model's own log-probs, then the grammar mask, temperature and top-p
        logp_V = torch.log_softmax(logits_V, dim=-1)
        masked_V = state.mask(logits_V) if state is not None else logits_V
        tok = choose(masked_V, temperature, top_p, gen)
        out.tokens.append(tok)
        out.logprobs.append(float(logp_V[tok]))
        # 2) the stop rules: a token the grammar rejects, a stop token, a finished grammar
        if state is not None and not state.accept(tok):
            out.finish = "constraint"
            break
        if tok in stop or (state is not None and state.terminated()):
            out.finish = "stop"
            break
        # 3) one decode step
        logits_V = step(tok)
    return out


def choose(logits_V: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits_V))
    probs_V = torch.softmax(logits_V / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, sorted_i = probs_V.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        return int(sorted_i[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])
    return int(torch.multinomial(probs_V, 1, generator=gen))
