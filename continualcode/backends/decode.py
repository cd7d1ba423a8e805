"""The token-choosing loop of local sampling: grammar mask, temperature, top-p, stop rules, drafts.

Boundary: given the first next-token logits and a `forward(tokens) -> logits [n, V]` callable (the
model run over new tokens after its KV cache, returning the next-token logits after each of
them), produce the completion.  It knows nothing of models or adapters; `truncate(n)` tells the
caller to drop the last n tokens from its cache.  The log-probability recorded for each token is
the model's own, unmasked, at temperature 1 (π_old for importance sampling, equal to what scoring
returns); the mask, the temperature and top-p change only which token is chosen.

Draft decoding, lossless: a `Drafter` guesses the tokens that follow (e.g. by copying from the
context: an edit's content mostly repeats lines of a file that was read).  The guess is run
through the model in the same forward as the token before it, so one pass over the weights — the
cost of a decode step on a CPU, where a step reads every weight once — yields the next-token
logits at every guessed position.  Each token is still chosen from the model's own (masked,
tempered) distribution at its position, with one random draw per token as without drafts; a
guess only decides whose logits are computed ahead.  Where the chosen token differs from the
guess, the logits after it are discarded and the cache is cut back.  Same distribution, same
random draws: the same tokens as plain decoding for the same seed, up to the float rounding of a
multi-token forward.  In bf16 that rounding can flip a near-tie: in the speed benchmark 1 of 6
greedy 0.5B runs took another token partway (fp32 runs in the tests are identical).

How many tokens to guess (`DraftBudget`): a guess costs a forward over more rows, and what a row costs
depends on the machine and the kernel (on a 2-core AVX2 CPU an int8 fused step over 9 rows took 4.3x one
row's time: the products become compute-bound; on a GPU or with a matrix kernel rows are nearly free).
So each decode measures it: its first forward runs alone, its first drafted one with the drafter's full
length, and from then on the guess length is the one with the most expected tokens per second under the
forwards' measured cost (linear in the rows) and the share of guessed tokens that held so far.  It
changes only how many logits are computed ahead, never which token is chosen.

What the grammar forces is drafted first, and for sure: a call's JSON keys, punctuation and closing are the
only text the grammar allows at their places (`GrammarState.forced`, xgrammar's jump-forward string), so
they are guessed, tokenized afresh, ahead of the drafter's guess (from where they end) and whatever the
budget says; they hold unless the model splits that text into other tokens.  Of a `bash` call's 28 tokens
18 are forced, of a 67-token `write` 18 (`bench speed --parts drafts` reports what that gains).

Guided decoding (a `Guide`): the same model over a second, contrasting context runs beside the first
over the same tokens, and each token is chosen from  log p + w·(log p − log p_contrast)  (masked,
tempered), which amplifies what the first context adds over the second (context-aware decoding,
Shi et al. 2023).  The session uses it for the retry after a correction: the contrast is the prompt
that produced the denied call, so what the correction changes is weighed 1 + w times.  The recorded
log-probabilities stay the model's own over the first context.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch

Finish = Literal["stop", "length", "constraint"]


class Drafter(Protocol):
    def __call__(self, context: Sequence[int], k: int) -> list[int]:
        """Up to k tokens guessed to follow `context` ([] for no guess)."""
        ...


@dataclass
class Guide:
    """A contrasting context for guided decoding: its next-token logits before the first token, a
    forward over new tokens like `decode`'s (sharing its `truncate`), and the weight w."""

    first_V: torch.Tensor
    forward: Callable[[list[int]], torch.Tensor]
    weight: float


@dataclass
class Decoded:
    tokens: list[int]
    logprobs: list[float]
    finish: Finish
    drafted: int = 0  # guessed tokens run through the model
    accepted: int = 0  # guessed tokens that were then chosen
    forwards: int = 0  # model forwards after the first logits
    allowed_mass: float | None = None  # the share of the first token's distribution the grammar allowed


class RowCosts:
    """What a forward over 1 + k rows costs on one decode path, per k: running means over the last `window`
    forwards of each size, carried from one decode to the next (the backend keeps one per path).  They are the
    machine's and the kernel's, unlike how often guesses hold, which each decode measures afresh; carried, a
    decode need not spend a forward with a full guess to learn them again (with int8 steps on a 2-core AVX2 CPU
    that forward cost ~4 steps, and short calls decoded 0.90-0.98x as fast as without).  Kept per size, not as
    a line: there a run of 2 rows cost nearly what 5 did (four rows share each weight group's conversion), so
    a slope measured at one size misjudged the others.  A size not yet run is interpolated between the
    measured ones, or beyond the largest along the slope from one row to it."""

    def __init__(self, window: int = 32) -> None:
        self.window = window
        self.mean: dict[int, float] = {}  # guessed rows -> mean seconds of the forward
        self.count: dict[int, int] = {}

    @property
    def ones(self) -> int:
        """How many one-row forwards were timed."""
        return self.count.get(0, 0)

    def add(self, guessed: int, seconds: float) -> None:
        n = self.count[guessed] = self.count.get(guessed, 0) + 1
        m = self.mean.get(guessed, seconds)
        self.mean[guessed] = m + (seconds - m) / min(n, self.window)

    def cost(self, k: int) -> float:
        """Expected seconds of a forward with k guessed rows (one-row forwards must have been timed); never
        below the cheapest measured forward (timings under a changing load can slope downwards)."""
        if k in self.mean:
            return self.mean[k]
        lo = max(g for g in self.mean if g < k)  # 0 at least
        hi = min((g for g in self.mean if g > k), default=None)
        if hi is None:
            t1 = self.mean[0]
            guess = t1 + (self.mean[lo] - t1) / lo * k if lo else t1
        else:
            guess = self.mean[lo] + (self.mean[hi] - self.mean[lo]) * (k - lo) / (hi - lo)
        return max(guess, min(self.mean.values()))


class DraftBudget:
    """The guess length before each forward (module docstring): `k()` to ask, `record` after each forward.

    A forward over 1 + k rows costs what `RowCosts` says (measured per size, possibly in earlier decodes;
    sizes not yet run interpolated, so a full guess and a single row measured make the cost linear); each
    guessed token holds with probability a (held over checked in this decode, Laplace-smoothed: a token is
    checked when it held or was the one that did not), so k guesses yield 1 + a + ... + a^k tokens in
    expectation.  `k()` is the k <= max_k with the most expected tokens per second; 0 before any one-row
    forward was timed, max_k before a drafted one was.  While it says 0, guesses are still made and checked
    against the tokens chosen (`shadow`, `observe`: a guess is cheap to make, only running it costs), so that
    drafting resumes when the guesses start to hold."""

    def __init__(self, max_k: int, costs: RowCosts | None = None) -> None:
        self.max_k = max_k
        self.costs = costs if costs is not None else RowCosts()
        self.held = self.checked = 0
        self.shadow: list[int] = []  # a guess not run, checked token by token as the tokens are chosen

    @property
    def ones(self) -> int:
        return self.costs.ones

    def observe(self, token: int) -> None:
        """The next chosen token, against the shadow guess (if any)."""
        if not self.shadow:
            return
        if token == self.shadow[0]:
            self.held += 1
            self.checked += 1
            self.shadow = self.shadow[1:]
        else:
            self.checked += 1
            self.shadow = []

    def k(self, sure: int = 0) -> int:
        """The guess length after `sure` rows that hold for certain (the grammar's forced tokens)."""
        c = self.costs
        if not c.ones:
            return 0
        if len(c.mean) == 1:
            return self.max_k
        a = (self.held + 1) / (self.checked + 2)
        return max(range(self.max_k + 1), key=lambda k: (sure + sum(a**i for i in range(k + 1))) / c.cost(sure + k))

    def record(self, guessed: int, seconds: float, held: int, rejected: bool, sure: int = 0) -> None:
        """One forward over 1 + `guessed` rows took `seconds`; `held` of its guesses were chosen, and one more
        was checked and not chosen if `rejected`.  The first `sure` guesses (forced) count for the cost only."""
        if guessed == 0 or self.costs.ones:
            self.costs.add(guessed, seconds)
        if held < sure:  # the forced text was split into other tokens: the drafter's guess was not checked
            return
        self.held += held - sure
        self.checked += held - sure + int(rejected)


class _Chooser:
    """Chooses one token from next-token logits and applies the stop rules; records what it chose."""

    def __init__(self, out: Decoded, *, temperature: float, top_p: float, stop: Collection[int], state: Any,
                 gen: torch.Generator, weight: float = 0.0) -> None:
        self.out, self.temperature, self.top_p = out, temperature, top_p
        self.stop, self.state, self.gen, self.weight = stop, state, gen, weight

    def __call__(self, logits_V: torch.Tensor, contrast_V: torch.Tensor | None = None) -> tuple[int, bool]:
        """(token, done): `done` when the token ends the completion."""
        # 1) the model's own log-probs (guided: shifted away from the contrast's), then the grammar mask,
        # temperature and top-p
        logp_V = torch.log_softmax(logits_V.float(), dim=-1)
        if contrast_V is not None:
            logits_V = logp_V + self.weight * (logp_V - torch.log_softmax(contrast_V.float(), dim=-1))
        masked_V = self.state.mask(logits_V) if self.state is not None else logits_V
        if self.state is not None and not self.out.tokens:  # how much of what the model wanted was allowed
            self.out.allowed_mass = float(logp_V[torch.isfinite(masked_V)].exp().sum())
        tok = choose(masked_V, self.temperature, self.top_p, self.gen)
        self.out.tokens.append(tok)
        self.out.logprobs.append(float(logp_V[tok]))
        # 2) the stop rules: a token the grammar rejects, a stop token, a finished grammar
        if self.state is not None and not self.state.accept(tok):
            self.out.finish = "constraint"
            return tok, True
        if tok in self.stop or (self.state is not None and self.state.terminated()):
            self.out.finish = "stop"
            return tok, True
        return tok, False


def decode(
    logits_V: torch.Tensor,
    forward: Callable[[list[int]], torch.Tensor],
    *,
    max_tokens: int,
    temperature: float,
    top_p: float,
    stop: Collection[int],
    state: Any,
    gen: torch.Generator,
    context: Sequence[int] = (),
    drafter: Drafter | None = None,
    draft_len: int = 8,
    truncate: Callable[[int], None] | None = None,
    guide: Guide | None = None,
    clock: Callable[[], float] = time.perf_counter,
    costs: RowCosts | None = None,
    encode: Callable[[str], list[int]] | None = None,
) -> Decoded:
    """Choose up to `max_tokens` tokens; `state` is a grammar state (constrain.GrammarState) or None.

    `forward(tokens)` appends `tokens` to the caller's cache and returns [len(tokens), V] logits;
    with a `drafter` (which sees `context` + the tokens so far) `truncate` must be given, and it
    cuts the guide's cache too; how many tokens it may guess is `DraftBudget`'s (at most `draft_len`),
    timed with `clock`, starting from the forwards' `costs` measured in earlier decodes on the same path;
    with `encode` (text -> tokens) as well, what the grammar `state` forces is guessed first.
    """
    out = Decoded([], [], "length")
    pick = _Chooser(out, temperature=temperature, top_p=top_p, stop=stop, state=state, gen=gen,
                    weight=guide.weight if guide is not None else 0.0)
    ctx = list(context)
    budget = DraftBudget(draft_len, costs)
    tok, done = pick(logits_V, guide.first_V if guide is not None else None)
    while not done and len(out.tokens) < max_tokens:
        # 1) a guess of what follows `tok`: what the grammar forces, then the drafter's, within the token
        # budget and the draft budget
        room = max_tokens - len(out.tokens) - 1
        sure = _forced(state, encode)[:room] if drafter is not None else []
        k = min(budget.k(len(sure)), room - len(sure))
        guess = [*sure, *(drafter([*ctx, *out.tokens, *sure], k) if drafter is not None and k > 0 else [])]
        if drafter is not None and k == 0 and not guess and not budget.shadow and budget.ones:
            budget.shadow = drafter([*ctx, *out.tokens], draft_len)  # checked, not run
        elif guess:
            budget.shadow = []
        # 2) one forward over the chosen token and the guess
        t0 = clock()
        logits_NV = forward([tok, *guess])
        contrast_NV = guide.forward([tok, *guess]) if guide is not None else None
        seconds = clock() - t0
        out.forwards += 1
        out.drafted += len(guess)
        # 3) choose at each position while the choices follow the guess
        tok, done = pick(logits_NV[0], contrast_NV[0] if contrast_NV is not None else None)
        budget.observe(tok)
        held, rejected = 0, False
        for j, g in enumerate(guess):
            if done or len(out.tokens) >= max_tokens:
                if truncate is not None:
                    truncate(len(guess) - j)  # the cache holds guesses that are not in the completion
                break
            if tok != g:
                assert truncate is not None
                truncate(len(guess) - j)
                rejected = True
                break
            held += 1
            tok, done = pick(logits_NV[j + 1], contrast_NV[j + 1] if contrast_NV is not None else None)
        out.accepted += held
        budget.record(len(guess), seconds, held, rejected, len(sure))
    return out


def _forced(state: Any, encode: Callable[[str], list[int]] | None) -> list[int]:
    """The tokens of the text the grammar `state` forces next ([] without a grammar or an `encode`)."""
    if state is None or encode is None:
        return []
    text = state.forced()
    return encode(text) if text else []


NUCLEUS_K = 64  # the nucleus is sought among this many likeliest tokens first (`choose`)


def choose(logits_V: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling (`top_p` 1: the whole distribution), one uniform draw a
    token (`draw`).  The nucleus is taken from the `NUCLEUS_K` likeliest tokens when they hold `top_p` of the
    mass, as they nearly always do at the session's temperature: no token below them can be in it, so this is
    exact, and it spares what had been most of a token's cost after the forward itself (a sort of the whole
    vocabulary and a draw over it: 21.8 ms a token against 2.5 ms now, alternating in one run on a 2-core
    AVX-512 host, idle: `bench speed --parts sampling`); else the whole vocabulary is sorted."""
    if temperature <= 0:
        return int(torch.argmax(logits_V))
    scaled_V = logits_V.float() / temperature
    logz = torch.logsumexp(scaled_V, dim=-1)
    if top_p >= 1.0:
        return draw((scaled_V - logz).exp(), gen)
    top, index = scaled_V.topk(min(NUCLEUS_K, scaled_V.numel()))  # sorted, likeliest first
    p = (top - logz).exp()
    if float(p.sum()) < top_p and len(p) < scaled_V.numel():  # a flat distribution: the nucleus is wider
        p, index = (scaled_V - logz).exp().sort(descending=True)
    keep = p.cumsum(-1) - p < top_p  # the likeliest tokens until their mass reaches top_p
    return int(index[draw(p * keep, gen)])


def draw(weights: torch.Tensor, gen: torch.Generator) -> int:
    """One index, drawn with probability proportional to `weights` (non-negative, not all 0) by inverting their
    running sum at one uniform draw; an index of weight 0 is never drawn."""
    cum = weights.double().cumsum(-1)
    if not float(cum[-1]) > 0:  # every token barred (or NaN logits): nothing to draw, as multinomial refused
        raise ValueError("no token has any probability to be drawn")
    u = torch.rand((), generator=gen, dtype=torch.float64, device=cum.device) * cum[-1]
    return int(torch.searchsorted(cum, u, right=True).clamp(max=len(cum) - 1))


JUMP = 16  # more new tokens than a decode adds between two calls (1 + a guess of 8): a new prompt

# `read`'s line-number column (`     5\t`): a call's content never carries it
_LINE_NUMBER = re.compile(r"^ *\d+\t", re.MULTILINE)


class TextLookup:
    """Draft by copying text the tokens hide: a call's JSON string holds a file's lines with its newlines and
    quotes escaped (`\\n`, `\\"`) and without `read`'s line numbers, so the copy's tokens differ from the
    read's at every line end and token lookup loses the thread there, a few tokens a line.  This matches the
    context's last characters against the context's own text as a JSON string holds it (line numbers
    dropped, then escaped; built once per prompt) and guesses the tokens of the text that followed
    (tokenized afresh: the model's tokens start at a token boundary, as the tail's end is one)."""

    def __init__(self, tokenizer: Any, *, tail_chars: int = 24, min_chars: int = 12) -> None:
        self.tok, self.tail_chars, self.min_chars = tokenizer, tail_chars, min_chars
        self._ids: list[int] = []  # the context the corpus was built from
        self._corpus = ""
        self._last = 0  # the context's length at the last call

    def _text(self, context: Sequence[int]) -> str:
        """The corpus, rebuilt for a new prompt: one that is not this decode's context grown by the tokens
        chosen since (a next turn's prompt extends the last one with a tool result: a jump in length)."""
        n, grew = len(self._ids), len(context) - self._last
        self._last = len(context)
        if not n or not 0 <= grew <= JUMP or list(context[:n]) != self._ids:
            self._ids = list(context)
            text = _LINE_NUMBER.sub("", self.tok.decode(self._ids, skip_special_tokens=False))
            self._corpus = json.dumps(text, ensure_ascii=False)[1:-1]
        return self._corpus

    def __call__(self, context: Sequence[int], k: int) -> list[int]:
        corpus = self._text(context)
        tail = self.tok.decode(list(context[-12:]), skip_special_tokens=False)[-self.tail_chars:]
        for n in range(len(tail), self.min_chars - 1, -4):
            at = corpus.rfind(tail[-n:])
            if at >= 0 and at + n < len(corpus):
                follow = corpus[at + n : at + n + 8 * k]
                return list(self.tok.encode(follow, add_special_tokens=False))[:k]
        return []


class Lookup:
    """Text lookup (`TextLookup`: twelve characters or more matched inside a JSON string's escaped text), and
    where it finds nothing, token lookup (`PromptLookup`: the call's own JSON, or text copied as it was
    shown): the product's drafter (`draft=lookup`)."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokens, self.text = PromptLookup(), TextLookup(tokenizer)

    def __call__(self, context: Sequence[int], k: int) -> list[int]:
        return self.text(context, k) or self.tokens(context, k)


class PromptLookup:
    """Draft by copying: find the latest earlier occurrence of the context's last n tokens (longest n
    first, `max_ngram` down to `min_ngram`) and guess the tokens that followed it."""

    def __init__(self, *, min_ngram: int = 2, max_ngram: int = 4) -> None:
        self.min_ngram, self.max_ngram = min_ngram, max_ngram

    def __call__(self, context: Sequence[int], k: int) -> list[int]:
        n_ctx = len(context)
        for n in range(min(self.max_ngram, n_ctx - 1), self.min_ngram - 1, -1):
            tail = list(context[n_ctx - n :])
            for start in range(n_ctx - n - 1, -1, -1):  # latest occurrence first
                if context[start] == tail[0] and list(context[start : start + n]) == tail:
                    follow = list(context[start + n : start + n + k])
                    if follow:
                        return follow
        return []
