"""The Backend protocol: the only view of a model that the agent and the learner have.

A backend is token-level. It knows nothing of tools, chat templates or corrections: it samples
completions for prompt ids, scores given completions (under the LoRA adapter or the frozen base),
and takes one optimizer step on the adapter for a batch of `TrainExample`s under a `LossSpec`.

Two contracts matter for learning:
- `Sample.logprobs` are the model's own log-probabilities of the sampled tokens at temperature 1
  and without any decoding constraint, so they equal what `score` returns for the same tokens
  (to rounding: KV-cached decoding in bf16 differs from a full forward by ~0.04 nats on average,
  which is why a first training step on a fresh sample may use the on-policy π_old instead).
- `score(...).logprobs[t]` is log π(completion[t] | prompt + completion[:t]).  Teacher and
  student are scored over the same completion tokens, so index t means the same token in both.

The loss is data, not code, at this seam: `LossSpec` names a pure function of
`continualcode.learn.losses`, which the local backend evaluates on full next-token distributions
and the Tinker backend maps onto the service's importance-sampling loss (sampled-token only).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:  # annotations only: the agent and UI import this module before torch has loaded
    import torch

DistillKind = Literal["sampled_token", "topk", "full"]


class BackendError(RuntimeError):
    """A backend failure with a one-line message meant for the user."""


class CapabilityError(BackendError):
    """The backend cannot do what the configuration asks (e.g. full-distribution KL on Tinker)."""


@dataclass(frozen=True)
class Sample:
    """One sampled completion. `logprobs[i]` = log π(tokens[i]) at temperature 1, unconstrained."""

    tokens: list[int]
    logprobs: list[float]
    finish_reason: Literal["stop", "length", "constraint"]


@dataclass(frozen=True)
class Scores:
    """Per-token scores of a completion (T tokens).

    logprobs:       [T]     log-prob of each completion token.
    topk_ids:       [T, K]  ids of the K most likely next tokens at each position (when topk > 0).
    topk_logprobs:  [T, K]  their log-probs (sorted descending).
    full_logprobs:  [T, V]  the whole next-token log-distribution (when full=True; local only).
    """

    logprobs: torch.Tensor
    topk_ids: torch.Tensor | None = None
    topk_logprobs: torch.Tensor | None = None
    full_logprobs: torch.Tensor | None = None


@dataclass(frozen=True)
class LossSpec:
    """Which loss one training step optimises; every field is a hyperparameter of learn/losses.py.

    kind:         "sampled_token" (the seed's SDPO: advantage = teacher_lp − student_lp on the
                  sampled tokens), "topk" (divergence over the teacher's top-K + a tail bucket),
                  or "full" (divergence over the whole vocabulary).
    alpha:        for topk/full: 0 = forward KL(teacher‖student), 1 = reverse KL(student‖teacher),
                  in between = generalized JSD with mixture α·teacher + (1−α)·student.
    topk:         K for kind="topk".
    beta:         weight of KL(π_θ‖π_ref) to the frozen base (0 removes the term exactly).
    ratio_clamp:  clamp of the (detached) importance ratio π_θ/π_old, sampled_token only.
    """

    kind: DistillKind = "sampled_token"
    alpha: float = 0.0
    topk: int = 20
    beta: float = 0.04
    ratio_clamp: tuple[float, float] = (0.5, 2.0)


@dataclass
class TrainExample:
    """One completion to learn on, with everything the loss needs precomputed (no grad).

    prompt_ids / completion_ids: the student's exact context and its own sampled tokens.
    old_logprobs [T] | None:     π_old(y_t) for the importance ratio.  None = on-policy: π_old is the
                                 student's own detached log-prob in this step's forward (ratio 1),
                                 exact for the first step on a fresh sample in any dtype.  The
                                 backend stores that forward's log-probs in info["logp_T"], the π_old
                                 of later steps on the same example.
    teacher: Scores              the teacher's scores of the same tokens (topk/full as the spec needs).
    ref:     Scores | None       the frozen base's scores (None when beta == 0).
    weight:                      relative weight of this example in the batch mean.
    """

    prompt_ids: list[int]
    completion_ids: list[int]
    old_logprobs: torch.Tensor | None
    teacher: Scores
    ref: Scores | None = None
    weight: float = 1.0
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Snapshot:
    """An in-memory copy of the adapter (and optimizer) state; opaque to callers."""

    step: int
    state: Any


CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")


def stop_token_ids(tok: Any) -> list[int]:
    """The ids that end an assistant turn for this tokenizer: chat end tokens it has, then its eos."""
    ids: list[int] = []
    convert = getattr(tok, "convert_tokens_to_ids", None)  # absent on minimal (service) tokenizers
    for t in CHAT_END_TOKENS if convert is not None else ():
        i = convert(t)
        if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None) and i not in ids:
            ids.append(i)
    eos = getattr(tok, "eos_token_id", None)
    for e in eos if isinstance(eos, list | tuple) else [] if eos is None else [eos]:
        if int(e) not in ids:
            ids.append(int(e))
    return ids


@runtime_checkable
class Backend(Protocol):
    """What the agent and the learner may ask of a model."""

    @property
    def tokenizer(self) -> Any:
        """A HF tokenizer (chat template, encode/decode, eos ids) for the renderer."""
        ...

    @property
    def model_id(self) -> str:
        """The base model's identity; checkpoints of another base are refused."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """Subset of {"full_distribution", "ema_teacher", "snapshot"}."""
        ...

    @property
    def step(self) -> int:
        """Number of optimizer steps taken on the adapter."""
        ...

    def sample(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        stop: Sequence[int] = (),
        constraint: Any = None,
        seed: int | None = None,
    ) -> Sample: ...

    def score(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        topk: int = 0,
        full: bool = False,
        adapter: bool | str = True,
    ) -> Scores:
        """adapter=True: the live LoRA; False: the frozen base; a string: that named adapter (e.g. "ema")."""
        ...

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float) -> dict[str, float]:
        """One optimizer step on the adapter; returns metrics (loss, pg_loss, kl_loss, grad_norm, …)."""
        ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def restore(self, snap: Snapshot) -> None: ...
