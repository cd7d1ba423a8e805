"""How many tokens the sampler guesses before a forward (decode.DraftBudget): hand-computed choices, and the
decode loop with a scripted fake model and a fake clock (control flow only: the tokens chosen never depend
on the budget)."""

from __future__ import annotations

import torch

from continualcode.backends.decode import DraftBudget, RowCosts, decode

V = 16
TARGET = [3, 5, 7, 9, 11, 13, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13]


def test_before_any_timing_the_first_forward_runs_alone_and_the_next_drafts_in_full():
    b = DraftBudget(8)
    assert b.k() == 0
    b.record(0, 1.0, 0, False)
    assert b.k() == 8


def test_the_choice_is_the_most_expected_tokens_per_second():
    # rows cost as much as the first (beta = 1 s), guesses held 0 of 3 checked: a = 1/5.
    # k = 0: 1 / 1 = 1;  k = 1: (1 + 1/5) / 2 = 0.6  -> no guess
    b = DraftBudget(8)
    b.record(0, 1.0, 0, False)
    b.record(1, 2.0, 0, True)
    b.record(0, 1.0, 0, False)
    b.record(3, 4.0, 0, True)
    b.record(0, 1.0, 0, False)
    b.record(0, 1.0, 0, False)
    b.record(2, 3.0, 0, True)
    assert (b.held, b.checked) == (0, 3) and b.k() == 0
    # cheap rows (beta = 0.1 s) and guesses that held 8 of 10: a = 9/12 = 0.75; expected tokens
    # (1 - a^(k+1)) / (1 - a) over 1 + 0.1 k seconds: k=3 2.103, k=4 2.179, k=5 2.192, k=6 2.166 -> 5
    c = DraftBudget(8)
    c.record(0, 1.0, 0, False)
    c.record(4, 1.4, 4, False)
    c.record(6, 1.6, 4, True)
    assert (c.held, c.checked) == (8, 9)
    c.record(2, 1.2, 0, True)
    assert (c.held, c.checked) == (8, 10)
    assert c.k() == 5


class _FakeModel:
    """A scripted fake model: after n tokens its logits pick TARGET[n]; each forward advances a fake clock by
    `first + per_row * (rows - 1)` seconds."""

    def __init__(self, first: float, per_row: float) -> None:
        self.n, self.now, self.first, self.per_row = 0, 0.0, first, per_row
        self.rows: list[int] = []

    def logits(self, n: int) -> torch.Tensor:
        out = torch.zeros(V)
        out[TARGET[n % len(TARGET)]] = 5.0
        return out

    def forward(self, tokens: list[int]) -> torch.Tensor:
        self.rows.append(len(tokens))
        self.now += self.first + self.per_row * (len(tokens) - 1)
        start = self.n + 1  # tokens[0] is the n+1-th token
        self.n += len(tokens)
        return torch.stack([self.logits(start + i) for i in range(len(tokens))])

    def cut(self, k: int) -> None:
        self.n -= k


def _run(model: _FakeModel, drafter) -> tuple[list[int], list[int]]:
    out = decode(model.logits(0), model.forward, max_tokens=18, temperature=0.0, top_p=1.0, stop=(), state=None,
                 gen=torch.Generator().manual_seed(0), drafter=drafter, truncate=model.cut, clock=lambda: model.now)
    return out.tokens, model.rows


def test_expensive_rows_and_wrong_guesses_stop_the_drafting():
    wrong = lambda ctx, k: [0] * k  # noqa: E731 - never right
    tokens, rows = _run(_FakeModel(1.0, 1.0), wrong)
    assert tokens == TARGET[:18]
    assert rows[:2] == [1, 9]  # timed alone, then with the full guess
    assert set(rows[2:]) == {1}  # from then on no guess pays


def test_cheap_rows_and_right_guesses_keep_drafting_and_the_tokens_are_the_same():
    right = lambda ctx, k: [TARGET[(len(ctx) + i) % len(TARGET)] for i in range(k)]  # noqa: E731
    plain_tokens, plain_rows = _run(_FakeModel(1.0, 0.05), None)
    tokens, rows = _run(_FakeModel(1.0, 0.05), right)
    assert tokens == plain_tokens == TARGET[:18]
    assert len(plain_rows) == 17 and rows[0] == 1 and max(rows[1:]) > 1
    assert len(rows) < 6  # 17 tokens after the first in a few forwards


def test_guesses_checked_while_not_run_bring_the_drafting_back():
    """Wrong guesses at first stop the drafting; the guesses made meanwhile (checked against the chosen
    tokens, not run) start to hold, and drafted forwards come back."""
    def late(ctx, k):
        if len(ctx) < 4:
            return [0] * k
        return [TARGET[(len(ctx) + i) % len(TARGET)] for i in range(k)]

    tokens, rows = _run(_FakeModel(1.0, 0.5), late)
    assert tokens == TARGET[:18]
    assert rows[:3] == [1, 9, 1]  # timed alone, drafted in full and wrong, then not worth a guess
    assert max(rows[3:]) > 1  # the shadow guesses held: drafting again


def test_the_forwards_costs_carry_to_the_next_decode_and_spare_it_the_full_guess():
    """Costs measured in one decode (expensive rows) start the next: it never runs the full 9-row guess again,
    while a decode with fresh costs does.  How often guesses hold is each decode's own."""
    from continualcode.backends.decode import RowCosts

    wrong = lambda ctx, k: [0] * k  # noqa: E731
    costs = RowCosts()
    first = _FakeModel(1.0, 1.0)
    decode(first.logits(0), first.forward, max_tokens=18, temperature=0.0, top_p=1.0, stop=(), state=None,
           gen=torch.Generator().manual_seed(0), drafter=wrong, truncate=first.cut, clock=lambda: first.now,
           costs=costs)
    assert first.rows[:2] == [1, 9] and costs.ones > 0 and costs.count[8] == 1
    assert abs(costs.mean[0] - 1.0) < 1e-9 and abs(costs.mean[8] - 9.0) < 1e-9
    second = _FakeModel(1.0, 1.0)
    out = decode(second.logits(0), second.forward, max_tokens=18, temperature=0.0, top_p=1.0, stop=(), state=None,
                 gen=torch.Generator().manual_seed(0), drafter=wrong, truncate=second.cut, clock=lambda: second.now,
                 costs=costs)
    assert out.tokens == TARGET[:18] and set(second.rows) == {1}  # no guess pays at these costs


def test_row_costs_are_running_means_per_size_and_fill_the_sizes_not_run():
    from continualcode.backends.decode import RowCosts

    c = RowCosts(window=4)
    for s in (1.0, 3.0):
        c.add(0, s)
    assert c.mean[0] == 2.0 and c.ones == 2  # the plain mean while fewer than `window`
    for _ in range(40):
        c.add(0, 1.0)
    assert abs(c.cost(0) - 1.0) < 1e-3  # old timings fade: the machine's load or the context changed
    c.add(4, 1.8)  # 4 guessed rows: 0.2 s a row over one row
    assert abs(c.cost(2) - 1.4) < 1e-3 and abs(c.cost(8) - 2.6) < 1e-3  # between: interpolated; beyond: the slope
    c.add(1, 1.7)  # a 2-row run costs nearly a 5-row one (rows share a weight group's conversion)
    assert abs(c.cost(1) - 1.7) < 1e-9 and abs(c.cost(3) - (1.7 + 0.1 * 2 / 3 * 1)) < 1e-3
    assert abs(c.cost(2) - (1.7 + (1.8 - 1.7) / 3)) < 1e-9


def test_a_cost_that_is_not_linear_in_the_rows_is_judged_per_size():
    """Measured: one row 1 s, two rows 1.9 s, nine rows 2.2 s (rows share work in groups).  With guesses holding
    80% the best is the full guess; a line through (0, 1) and (1, 1.9) would have said one row at most."""
    from continualcode.backends.decode import RowCosts

    c = RowCosts()
    c.add(0, 1.0)
    c.add(1, 1.9)
    c.add(8, 2.2)
    b = DraftBudget(8, c)
    b.held, b.checked = 78, 98  # a = 79/100
    assert b.k() == 8


def test_costs_that_slope_downwards_never_extrapolate_to_nothing():
    """Under a changing load two rows can time faster than one; extrapolated along that slope a long guess
    would cost nothing (or less), and the choice would divide by it.  The floor is the cheapest forward seen."""
    from continualcode.backends.decode import RowCosts

    c = RowCosts()
    c.add(0, 1.0)
    c.add(1, 0.5)
    assert c.cost(8) == 0.5
    b = DraftBudget(8, c)
    assert 0 <= b.k() <= 8  # no division by zero


def test_forced_rows_count_in_the_cost_and_raise_the_worth_of_a_guess():
    """k(sure): the most expected tokens per second when `sure` rows hold for certain.  Rows cost 1 + 0.5 k s,
    guesses hold a = 1/2: alone, k = 0 gives 1/1, k = 1 gives 1.5/1.5 = 1, k = 2 1.75/2 -> 0 (first max).
    After 4 sure rows (3 s): k = 0 gives 5/3 = 1.667, k = 1 5.5/3.5 = 1.571 -> 0; with a = 0.89 the guess pays:
    k = 0 5/3 = 1.667, k = 1 5.89/3.5 = 1.683, k = 2 6.68/4 = 1.670 -> 1."""
    c = RowCosts()
    c.add(0, 1.0)
    c.add(8, 5.0)
    b = DraftBudget(8, c)
    b.held, b.checked = 0, 0  # a = 1/2
    assert b.k() == 0 and b.k(4) == 0
    b.held, b.checked = 88, 98  # a = 89/100
    assert b.k(4) == 1
    # record: the forced rows time the forward, but only the drafter's guesses count as held or not
    b.record(6, 4.0, 6, True, sure=4)
    assert (b.held, b.checked) == (90, 101) and c.count[6] == 1
    b.record(6, 4.0, 2, True, sure=4)  # the forced text split otherwise: the drafter's guess never checked
    assert (b.held, b.checked) == (90, 101)


class _ForcedState:
    """A scripted grammar state (control flow only): it forces TARGET's tokens at positions 2..5 and 9..10
    (as text: one letter a token, `encode` maps them back), allows everything, never ends."""

    FORCED = set(range(2, 6)) | {9, 10}

    def __init__(self) -> None:
        self.n = 0

    def mask(self, logits_V: torch.Tensor) -> torch.Tensor:
        return logits_V

    def accept(self, token: int) -> bool:
        self.n += 1
        return True

    def terminated(self) -> bool:
        return False

    def forced(self) -> str:
        n = self.n
        out = []
        while n in self.FORCED:
            out.append(chr(ord("a") + TARGET[n]))
            n += 1
        return "".join(out)


def _encode(text: str) -> list[int]:
    return [ord(ch) - ord("a") for ch in text]


def test_what_the_grammar_forces_is_drafted_first_and_the_tokens_are_the_same():
    """Rows so dear that no guess of the drafter's pays: the forced tokens still go ahead of it, for sure,
    in the forwards after positions 1 and 8; the tokens are plain decoding's."""
    wrong = lambda ctx, k: [0] * k  # noqa: E731 - never right
    model = _FakeModel(1.0, 1.0)
    costs = RowCosts()
    costs.add(0, 1.0)
    costs.add(8, 9.0)  # measured before: a guess never pays
    out = decode(model.logits(0), model.forward, max_tokens=18, temperature=0.0, top_p=1.0, stop=(),
                 state=_ForcedState(), gen=torch.Generator().manual_seed(0), drafter=wrong, truncate=model.cut,
                 clock=lambda: model.now, costs=costs, encode=_encode)
    assert out.tokens == TARGET[:18]
    # the forwards run token 0 alone, then token 1 with 2..5, then 6 and 7 alone, 8 with 9 and 10, then one each
    assert model.rows[:5] == [1, 5, 1, 1, 3] and set(model.rows[5:]) == {1}
    assert out.accepted == 6 and out.drafted == 6
    # without a drafter nothing is guessed: the forced drafting goes with drafting (draft=off turns both off)
    plain = _FakeModel(1.0, 1.0)
    off = decode(plain.logits(0), plain.forward, max_tokens=18, temperature=0.0, top_p=1.0, stop=(),
                 state=_ForcedState(), gen=torch.Generator().manual_seed(0), drafter=None, truncate=plain.cut,
                 clock=lambda: plain.now, encode=_encode)
    assert off.tokens == out.tokens and set(plain.rows) == {1}
