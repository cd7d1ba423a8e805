"""How one token is chosen from next-token logits (decode.choose, decode.draw): greedy, nucleus and whole-
distribution sampling against hand-computed distributions; the nucleus found among the likeliest tokens and,
for a flat distribution, over the whole vocabulary; barred tokens never chosen; one draw a token."""

from __future__ import annotations

import math
from collections import Counter

import torch

from continualcode.backends.decode import NUCLEUS_K, choose, draw

N = 20_000


def frequencies(logits: torch.Tensor, temperature: float, top_p: float, seed: int = 0) -> dict[int, float]:
    gen = torch.Generator().manual_seed(seed)
    counts = Counter(choose(logits, temperature, top_p, gen) for _ in range(N))
    return {k: v / N for k, v in counts.items()}


def close(freq: dict[int, float], expected: dict[int, float]) -> bool:
    """Within five standard errors of each expected probability, and nothing outside it drawn."""
    return set(freq) <= set(expected) and all(
        abs(freq.get(k, 0.0) - p) <= 5 * math.sqrt(p * (1 - p) / N) + 1e-9 for k, p in expected.items())


def test_greedy_at_temperature_zero():
    assert choose(torch.tensor([0.1, 2.0, 1.9, -5.0]), 0.0, 0.95, torch.Generator()) == 1


def test_the_nucleus_is_the_likeliest_tokens_until_top_p_renormalized():
    # probabilities 0.5, 0.3, 0.15, 0.05; top_p 0.7: the mass before token 1 (0.5) is under 0.7, before token 2
    # (0.8) is not -> tokens 0 and 1, drawn 0.5 / 0.8 = 0.625 and 0.375 of the time
    logits = torch.tensor([0.5, 0.3, 0.15, 0.05]).log()
    assert close(frequencies(logits, 1.0, 0.7), {0: 0.625, 1: 0.375})


def test_temperature_sharpens_before_the_nucleus_is_taken():
    # temperature 0.5 squares the probabilities: 0.6, 0.4 (of 0.36, 0.16 over 0.52), the third's 0.01 / 0.53 out:
    # with top_p 0.95 the nucleus is tokens 0 and 1 only if their mass (0.36 + 0.16) / 0.53 = 0.981 >= 0.95
    logits = torch.tensor([0.6, 0.4, 0.1]).log()
    z = 0.36 + 0.16 + 0.01
    assert (0.36 + 0.16) / z >= 0.95 and 0.36 / z < 0.95
    assert close(frequencies(logits, 0.5, 0.95), {0: 0.36 / 0.52, 1: 0.16 / 0.52})


def test_top_p_one_draws_from_the_whole_distribution_and_never_a_barred_token():
    logits = torch.tensor([1.0, float("-inf"), 0.0, 2.0])
    e = [math.e, 0.0, 1.0, math.e**2]
    expected = {i: w / sum(e) for i, w in enumerate(e) if w}
    freq = frequencies(logits, 1.0, 1.0)
    assert close(freq, expected) and 1 not in freq


def test_a_flat_distribution_takes_its_nucleus_from_the_whole_vocabulary():
    # 1000 equal tokens: the likeliest NUCLEUS_K hold 6.4% of the mass, under top_p 0.5; the nucleus is the first
    # 500 of the sort, each drawn about equally, none of the other 500
    v = 1000
    gen = torch.Generator().manual_seed(1)
    picks = [choose(torch.zeros(v), 1.0, 0.5, gen) for _ in range(4000)]
    assert NUCLEUS_K / v < 0.5
    assert len(set(picks)) > 450  # far beyond the first NUCLEUS_K: the whole sort's nucleus
    first = torch.zeros(v).sort(descending=True).indices[:500].tolist()
    assert set(picks) <= set(first)


def test_a_grammar_that_allows_fewer_tokens_than_the_nucleus_search_still_chooses_among_them():
    logits = torch.full((200,), float("-inf"))
    logits[[7, 150]] = torch.tensor([0.0, 0.0])
    assert close(frequencies(logits, 0.3, 0.95), {7: 0.5, 150: 0.5})


def test_nothing_to_draw_is_an_error_not_a_token():
    import pytest

    with pytest.raises(ValueError, match="no token"):
        choose(torch.full((5,), float("-inf")), 0.3, 0.95, torch.Generator())
    with pytest.raises(ValueError, match="no token"):
        draw(torch.zeros(3), torch.Generator())


def test_draw_is_proportional_to_the_weights_with_one_uniform_draw_each():
    gen = torch.Generator().manual_seed(3)
    w = torch.tensor([0.0, 3.0, 0.0, 1.0])
    counts = Counter(draw(w, gen) for _ in range(N))
    assert set(counts) == {1, 3} and abs(counts[1] / N - 0.75) < 5 * math.sqrt(0.75 * 0.25 / N)
    a, b = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert [draw(w, a) for _ in range(50)] == [draw(w, b) for _ in range(50)]  # the same seed, the same draws
    used, fresh = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    draw(w, used)  # one uniform consumed: the next is a fresh generator's second
    torch.rand((), generator=fresh, dtype=torch.float64)
    assert torch.rand((), generator=used, dtype=torch.float64) == torch.rand((), generator=fresh, dtype=torch.float64)
