"""What a backend needs to compute a loss, and what the learner is configured with: pure data.

The bottom of the learning stack: `losses.py`, `step.py` and both backends import these; this
module imports nothing from continualcode and needs no torch at import time (tensors appear only
in annotations), so the configuration can name its defaults without loading torch.

`LearnConfig` is the one place where the learning hyperparameters' defaults are written; the
command-line `Config` and `LossSpec` take theirs from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    import torch

Stop = Callable[[], bool]  # asked between pieces of work: true when the background job is to pause (settle.py)


class Paused(Exception):
    """A training step asked to stop (`Stop`) before it changed the weights: nothing was stepped."""


DistillKind = Literal["sampled_token", "topk", "full"]
TeacherKind = Literal["live", "ema", "frozen"]


@dataclass
class LearnConfig:
    """The learning hyperparameters (config.py documents each for the user)."""

    distill_loss: DistillKind = "topk"
    distill_alpha: float = 0.0
    distill_topk: int = 20
    kl_beta: float = 0.04
    learning_rate: float = 5e-4
    steps_per_correction: int = 1
    teacher: TeacherKind = "live"
    ema_rate: float = 0.05
    teacher_sees_attempt: bool = False
    learn_from_approved_retry: bool = False
    max_kl: float = 1.0
    adaptive: bool = False
    step_max_kl: float = float("inf")
    distill_prompts: int = 3  # chosen on the dense dev scenarios (bench/results/learn/dense/): 4 up / 0 down vs 1 / 0
    distill_deferred: bool = True  # the distillation's update when the task ends (Learner.settle), not before the retry
    carry_prefix: bool = True  # the retry reuses the corrected prompt's KV from before the update (kv.py)
    distill_tokens: int = 24
    distill_temperature: float = 0.3
    grad_clip: float = 1.0
    ratio_clamp_low: float = 0.5
    ratio_clamp_high: float = 2.0
    undo_depth: int = 8

    def spec(self) -> LossSpec:
        return LossSpec(kind=self.distill_loss, alpha=self.distill_alpha, topk=self.distill_topk,
                        beta=self.kl_beta, ratio_clamp=(self.ratio_clamp_low, self.ratio_clamp_high))


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
    alpha: float = LearnConfig.distill_alpha
    topk: int = LearnConfig.distill_topk
    beta: float = LearnConfig.kl_beta
    ratio_clamp: tuple[float, float] = (LearnConfig.ratio_clamp_low, LearnConfig.ratio_clamp_high)


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

    def rows(self, start: int, end: int) -> Scores:
        """The scores of positions start..end-1 (views, no copies)."""
        def cut(x: torch.Tensor | None) -> torch.Tensor | None:
            return None if x is None else x[start:end]
        return Scores(self.logprobs[start:end], cut(self.topk_ids), cut(self.topk_logprobs), cut(self.full_logprobs))


@dataclass(frozen=True)
class TrainExample:
    """One completion to learn on, with everything the loss needs precomputed (no grad).

    prompt_ids / completion_ids: the student's exact context and its own sampled tokens.
    old_logprobs [T] | None:     π_old(y_t) for the importance ratio.  None = on-policy: π_old is the
                                 student's own detached log-prob in this step's forward (ratio 1),
                                 exact for the first step on a fresh sample in any dtype; the step
                                 returns those log-probs (`StepResult.logp_T`), the π_old of later
                                 steps on the same example.
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


@dataclass(frozen=True)
class StepResult:
    """What one `train_step` returns to the learner.

    metrics:  floats for logging (loss, pg_loss, kl_loss, grad_norm, stepped, sec_*, …).
    logp_T:   per example, the student's detached log-probs of its completion in this step's
              forward (before the update): π_old for a later step on the same example.
    """

    metrics: dict[str, float]
    logp_T: list[torch.Tensor] = field(default_factory=list)

    @property
    def stepped(self) -> bool:
        return self.metrics.get("stepped", 1.0) != 0.0
