"""SDPO losses: pure tensor functions of log-probabilities, one example at a time; no model, no I/O.

Shapes ride in the names: T completion tokens, V vocabulary, K teacher top-K (`logp_T`, `logp_TV`,
`teacher_logp_TK`). There is no batch dimension; the batch mean is the caller's. Every input is a
log-probability (log_softmax already applied), and every reduction over tokens is a MEAN, so a long
completion weighs no more than a short one.

Two families of distillation loss, both pulling the student π_θ toward its own teacher (the same model
conditioned on the user's correction):

- `sampled_token_loss` — the seed's SDPO step. Self-distillation as data: advantage
  A_t = teacher_lp_t − student_lp_t on the tokens the student sampled, fed to an importance-sampling
  policy gradient −mean_t(ratio_t·A_t·logπ_t). The ratio is DETACHED: left attached, the gradient is
  A·ratio·(1 + logπ)·∇logπ, which flips sign for p < 1/e and learns the opposite of the correction.
  Cheap and available on every backend, but it only sees the sampled token, so it can raise an
  action that both models find unlikely when the teacher lifts every sensible action.
- `distribution_loss` — a divergence between the teacher's and the student's next-token distributions
  at every position: over the whole vocabulary, or over the teacher's top-K plus one tail bucket
  holding the rest of the mass. `alpha` picks forward KL(teacher‖student) (0), reverse KL (1), or the
  generalized JSD in between. This is what fixed the wrong-action case in the probes.

Both are regularised toward the frozen base π_ref by β·KL(π_θ‖π_ref): exact over V when the reference's
full distribution is at hand (`kl_to_ref_full`), else the k1 estimate logπ − logπ_ref on the sampled
tokens with its score-function gradient k1·∇logπ.

`sdpo_loss` maps a `LossSpec` onto these; the local backend calls it. Teacher, reference and π_old are
constants: gradients flow only into the student. Half-precision inputs are computed in float32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from continualcode.learn.types import LossSpec, Scores

# The top-K mass is clamped to at most exp(−1e-7) so that the tail bucket log(1 − mass) stays finite.
_MAX_TOPK_LOG_MASS = -1e-7
# A top-K cell dropped by a mask gets this log-prob on both sides: exp() is 0 in float32, no inf arithmetic.
_DROPPED_LOGP = -1e4


@dataclass
class LossOut:
    """A loss with its diagnostics.

    loss:         scalar, differentiable w.r.t. the student.
    metrics:      floats for logging; the keys are listed in `sdpo_loss`.
    advantage_T:  detached teacher_lp − student_lp on the sampled tokens (for heatmaps).
    """

    loss: torch.Tensor
    metrics: dict[str, float]
    advantage_T: torch.Tensor


# ---------------------------------------------------------------------------------------------------
# Sampled-token SDPO


def advantage(teacher_logp_T: torch.Tensor, student_logp_T: torch.Tensor) -> torch.Tensor:
    """SDPO's per-token advantage A_t = log π_teacher(y_t) − log π_student(y_t), a constant [T].

    The one definition: the sampled-token loss, the distribution losses' diagnostics, the heatmap
    and the Tinker datums all use it.  Computed in the student's (promoted) dtype and device.
    """
    student_T = student_logp_T.detach()
    if not student_T.is_floating_point() or student_T.dtype in (torch.float16, torch.bfloat16):
        student_T = student_T.float()
    return _const(teacher_logp_T, student_T) - student_T


def sampled_token_loss(
    logp_T: torch.Tensor,
    *,
    old_logp_T: torch.Tensor,
    teacher_logp_T: torch.Tensor,
    ref_logp_T: torch.Tensor | None = None,
    beta: float = LossSpec.beta,
    ratio_clamp: tuple[float, float] = LossSpec.ratio_clamp,
) -> LossOut:
    """The seed's SDPO step: importance-sampled policy gradient on sampled tokens, A = teacher − student.

    logp_T:          [T] student log-probs of the sampled tokens (differentiable).
    old_logp_T:      [T] π_old at sampling time.
    teacher_logp_T:  [T] the teacher's log-probs of the same tokens.
    ref_logp_T:      [T] the frozen base's log-probs, or None (no KL term).
    beta:            weight of KL(π_θ‖π_ref); 0 removes the term exactly.
    ratio_clamp:     bounds of the detached importance ratio π_θ/π_old.
    """
    logp_T = _promote(logp_T)
    _check_T(logp_T, old_logp_T=old_logp_T, teacher_logp_T=teacher_logp_T, ref_logp_T=ref_logp_T)
    lp_T = logp_T.detach()
    advantage_T = advantage(teacher_logp_T, lp_T)  # [T]; = teacher − old at the first step
    ratio_T = torch.exp(lp_T - _const(old_logp_T, lp_T)).clamp(*ratio_clamp)  # [T], detached
    pg_loss = -(ratio_T * advantage_T * logp_T).mean()
    kl_loss, k1_T = _k1_to_ref(logp_T, ref_logp_T, beta=beta)
    loss = pg_loss if kl_loss is None else pg_loss + kl_loss
    metrics = _metrics(
        loss=loss, pg_loss=pg_loss, kl_loss=kl_loss, kl_ref_T=k1_T, advantage_T=advantage_T, ratio_T=ratio_T
    )
    return LossOut(loss=loss, metrics=metrics, advantage_T=advantage_T)


def _k1_to_ref(
    logp_T: torch.Tensor, ref_logp_T: torch.Tensor | None, *, beta: float
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """β·mean_t KL(π_θ‖π_ref) by the k1 estimator on samples → (kl_loss or None, k1_T or None).

    Per token the term is β·(k1 + k1·(logπ − sg(logπ))): its value is β·k1 (the KL estimate) and its
    gradient β·k1·∇logπ, the score-function gradient of KL(π_θ‖π_ref) (E_π[∇logπ] = 0 drops the rest).
    """
    if ref_logp_T is None:
        return None, None
    lp_T = logp_T.detach()
    k1_T = lp_T - _const(ref_logp_T, lp_T)  # [T]
    if beta == 0:
        return None, k1_T
    kl_T = beta * (k1_T + k1_T * (logp_T - lp_T))  # [T]
    return kl_T.mean(), k1_T


# ---------------------------------------------------------------------------------------------------
# Distribution distillation


def distribution_loss(
    student_logp_TV: torch.Tensor,
    *,
    teacher_logp_TK: torch.Tensor,
    teacher_ids_TK: torch.Tensor | None = None,
    alpha: float = 0.0,
    add_tail: bool = True,
) -> torch.Tensor:
    """Per-token divergence [T] between the teacher's and the student's next-token distributions.

    teacher_ids_TK None: `teacher_logp_TK` is the teacher's full [T, V] log-distribution.
    Otherwise top-K: the student's log-probs are gathered at the teacher's top-K ids; with `add_tail`
    both get a (K+1)-th bucket log(1 − Σ_k p_k), so each is a proper distribution over K+1 outcomes
    (a coarse-graining of the full one: the divergence grows with K up to the full-V value); without
    it both are renormalised over the K ids.
    alpha: 0 → KL(teacher‖student), 1 → KL(student‖teacher), in between → the generalized JSD
    α·KL(T‖M) + (1−α)·KL(S‖M) with M = α·T + (1−α)·S (which vanishes at both ends, hence the cases).
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    s_TN = _promote(student_logp_TV)
    t_TN = _const(teacher_logp_TK, s_TN)
    if teacher_ids_TK is None:
        if t_TN.shape != s_TN.shape:
            raise ValueError(
                f"full teacher {tuple(t_TN.shape)} and student {tuple(s_TN.shape)} differ in shape"
            )
    else:
        if teacher_ids_TK.shape != t_TN.shape or t_TN.shape[0] != s_TN.shape[0]:
            raise ValueError(
                f"top-K ids {tuple(teacher_ids_TK.shape)}, log-probs {tuple(t_TN.shape)} and student "
                f"{tuple(s_TN.shape)} disagree"
            )
        s_TK = s_TN.gather(-1, teacher_ids_TK.to(device=s_TN.device, dtype=torch.long))  # [T, K]
        return topk_divergence(s_TK, teacher_logp_TK=t_TN, alpha=alpha, add_tail=add_tail)
    return _divergence(s_TN, t_TN, alpha=alpha)


def topk_divergence(
    student_logp_TK: torch.Tensor,
    *,
    teacher_logp_TK: torch.Tensor,
    alpha: float = 0.0,
    add_tail: bool = True,
    mask_TK: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-token divergence [T] over the teacher's top-K ids, given both sides' log-probs AT those ids.

    `student_logp_TK[t, k]` is the student's log-prob of the teacher's k-th id at position t (what a
    backend that cannot return [T, V] distributions, like Tinker, gives back).  `mask_TK` (bool)
    drops cells from both sides (ids a service padded in); a dropped cell counts as probability 0.
    Tail bucket and alpha as in `distribution_loss`, which calls this after its gather.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha={alpha} must lie in [0, 1]")
    s_TK = _promote(student_logp_TK)
    t_TK = _const(teacher_logp_TK, s_TK)
    if s_TK.shape != t_TK.shape:
        raise ValueError(f"student {tuple(s_TK.shape)} and teacher {tuple(t_TK.shape)} top-K differ in shape")
    if mask_TK is not None:  # a large finite negative, not -inf: exp() = 0 and no 0·inf in the KL
        keep_TK = mask_TK.to(device=s_TK.device, dtype=torch.bool)
        s_TK = torch.where(keep_TK, s_TK, torch.full_like(s_TK, _DROPPED_LOGP))
        t_TK = torch.where(keep_TK, t_TK, torch.full_like(t_TK, _DROPPED_LOGP))
    if add_tail:
        s_TK, t_TK = _with_tail(s_TK), _with_tail(t_TK)  # [T, K+1]
    else:
        s_TK = s_TK - s_TK.logsumexp(-1, keepdim=True)
        t_TK = t_TK - t_TK.logsumexp(-1, keepdim=True)
    return _divergence(s_TK, t_TK, alpha=alpha)


def kl_to_ref_full(student_logp_TV: torch.Tensor, ref_logp_TV: torch.Tensor) -> torch.Tensor:
    """Per-token KL(π_θ‖π_ref) [T], exact over the vocabulary; differentiable in the student only."""
    s_TV = _promote(student_logp_TV)
    r_TV = _const(ref_logp_TV, s_TV)
    if r_TV.shape != s_TV.shape:
        raise ValueError(f"reference {tuple(r_TV.shape)} and student {tuple(s_TV.shape)} differ in shape")
    return _KLFull.apply(s_TV, r_TV)


class _KLFull(torch.autograd.Function):
    """KL(p‖r) [T] = Σ_v e^{s_v}·(s_v − r_v) from log-probs s (differentiable) and r (a constant), keeping only s
    and r for the backward: autograd of the expression keeps e^s and s − r as well, two more [T, V] tensors
    through the step (0.5 GB for a 400-token completion over a 151,936-token vocabulary; the update's peak RSS
    grew ~7 MB a completion token).  ∂/∂s_v = e^{s_v}·(s_v − r_v + 1), as autograd of the expression gives."""

    @staticmethod
    def forward(ctx: Any, s_TV: torch.Tensor, r_TV: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(s_TV, r_TV)
        return _kl(s_TV, r_TV)

    @staticmethod
    def backward(ctx: Any, g_T: torch.Tensor) -> tuple[torch.Tensor, None]:
        s_TV, r_TV = ctx.saved_tensors
        return (s_TV - r_TV).add_(1.0).mul_(s_TV.exp()).mul_(g_T.unsqueeze(-1)), None


def entropy(logp_TV: torch.Tensor) -> torch.Tensor:
    """Per-token entropy [T] (nats) of a log-distribution over the last dimension."""
    logp_TV = _promote(logp_TV)
    return -(logp_TV.exp() * logp_TV).sum(-1)


def _divergence(
    student_logp_TN: torch.Tensor, teacher_logp_TN: torch.Tensor, *, alpha: float
) -> torch.Tensor:
    """[T] divergence over the last dimension (N = V, K or K+1 outcomes); see `distribution_loss`."""
    if alpha == 0.0:
        return _kl(teacher_logp_TN, student_logp_TN)
    if alpha == 1.0:
        return _kl(student_logp_TN, teacher_logp_TN)
    mix_TN = torch.logaddexp(teacher_logp_TN + math.log(alpha), student_logp_TN + math.log1p(-alpha))
    return alpha * _kl(teacher_logp_TN, mix_TN) + (1.0 - alpha) * _kl(student_logp_TN, mix_TN)


def _kl(logp_TN: torch.Tensor, logq_TN: torch.Tensor) -> torch.Tensor:
    """KL(p‖q) [T] = Σ_n p_n·(log p_n − log q_n)."""
    return (logp_TN.exp() * (logp_TN - logq_TN)).sum(-1)


def _with_tail(logp_TK: torch.Tensor) -> torch.Tensor:
    """[T, K] → [T, K+1]: append log(1 − Σ_k p_k), the mass outside the K ids."""
    log_mass_T1 = logp_TK.logsumexp(-1, keepdim=True).clamp(max=_MAX_TOPK_LOG_MASS)
    return torch.cat([logp_TK, _log1mexp(log_mass_T1)], dim=-1)


def _log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 − eˣ) for x < 0, accurate at both ends (both branches are finite there, so grads are too)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


# ---------------------------------------------------------------------------------------------------
# The dispatcher


def sdpo_loss(
    spec: LossSpec,
    *,
    student_logp_TV: torch.Tensor,
    completion_ids: Sequence[int] | torch.Tensor,
    old_logp_T: torch.Tensor,
    teacher: Scores,
    ref: Scores | None,
) -> LossOut:
    """The loss a `LossSpec` names, on one completion: what the local backend calls.

    student_logp_TV [T, V] are the student's next-token log-distributions at the completion positions;
    `completion_ids[t]` is the token sampled there. kind "sampled_token" uses `teacher.logprobs`;
    "topk" the teacher's first `spec.topk` top-K scores (with a tail bucket); "full" its full
    distribution. For topk/full the reference term is β·mean_t KL(π_θ‖π_ref) exact over V when
    `ref.full_logprobs` is there, else the k1 estimate on `ref.logprobs`; ref None means no term.

    Metrics: loss, pg_loss (the distillation part), kl_loss, kl_ref (mean per-token KL estimate to the
    reference, nats; 0.0 without ref), adv_mean, adv_abs_mean, adv_min, adv_max, adv_pos_frac,
    ratio_mean (π_θ/π_old on the sampled tokens: clamped as applied for sampled_token, a raw drift
    diagnostic for topk/full), student_entropy, teacher_entropy (exact from a full teacher, a top-K +
    tail lower bound from a top-K one; absent for a sampled-only teacher), tokens.
    """
    if spec.kind not in ("sampled_token", "topk", "full"):
        raise ValueError(f"unknown spec.kind={spec.kind!r} (expected 'sampled_token', 'topk' or 'full')")
    student_logp_TV = _promote(student_logp_TV)
    if student_logp_TV.ndim != 2:
        raise ValueError(f"student_logp_TV must be [T, V], got {tuple(student_logp_TV.shape)}")
    ids_T = torch.as_tensor(completion_ids, dtype=torch.long, device=student_logp_TV.device)
    if ids_T.shape != student_logp_TV.shape[:1]:
        raise ValueError(f"{ids_T.numel()} completion ids for {student_logp_TV.shape[0]} student positions")
    if ids_T.numel() == 0:
        raise ValueError("empty completion (T=0): nothing to learn from")
    logp_T = student_logp_TV.gather(-1, ids_T[:, None]).squeeze(-1)  # [T]

    if spec.kind == "sampled_token":
        out = sampled_token_loss(
            logp_T,
            old_logp_T=old_logp_T,
            teacher_logp_T=teacher.logprobs,
            ref_logp_T=None if ref is None else ref.logprobs,
            beta=spec.beta,
            ratio_clamp=spec.ratio_clamp,
        )
    else:
        out = _distribution_sdpo(
            spec, student_logp_TV, logp_T, old_logp_T=old_logp_T, teacher=teacher, ref=ref
        )

    out.metrics["student_entropy"] = entropy(student_logp_TV.detach()).mean().item()
    if teacher.full_logprobs is not None:
        out.metrics["teacher_entropy"] = entropy(teacher.full_logprobs.detach()).mean().item()
    elif teacher.topk_logprobs is not None:
        out.metrics["teacher_entropy"] = (
            entropy(_with_tail(_promote(teacher.topk_logprobs.detach()))).mean().item()
        )
    return out


def _distribution_sdpo(
    spec: LossSpec,
    student_logp_TV: torch.Tensor,
    logp_T: torch.Tensor,
    *,
    old_logp_T: torch.Tensor,
    teacher: Scores,
    ref: Scores | None,
) -> LossOut:
    """kind "topk" / "full": mean_t divergence to the teacher + β·KL to the reference."""
    # 1) the distillation term
    if spec.kind == "topk":
        if teacher.topk_logprobs is None or teacher.topk_ids is None:
            raise ValueError("spec.kind='topk' needs teacher top-K scores (score with topk>0)")
        if spec.topk < 1:
            raise ValueError(f"spec.kind='topk' needs spec.topk >= 1, got {spec.topk}")
        if teacher.topk_ids.shape[-1] < spec.topk:
            raise ValueError(
                f"spec.topk={spec.topk} but the teacher was scored with topk={teacher.topk_ids.shape[-1]}"
            )
        div_T = distribution_loss(
            student_logp_TV,
            teacher_logp_TK=teacher.topk_logprobs[:, : spec.topk],
            teacher_ids_TK=teacher.topk_ids[:, : spec.topk],
            alpha=spec.alpha,
        )
    else:
        if teacher.full_logprobs is None:
            raise ValueError("spec.kind='full' needs the teacher's full distribution (score with full=True)")
        div_T = distribution_loss(student_logp_TV, teacher_logp_TK=teacher.full_logprobs, alpha=spec.alpha)
    pg_loss = div_T.mean()

    # 2) the reference term: exact over V when possible, else k1 on the sampled tokens
    kl_loss: torch.Tensor | None
    kl_ref_T: torch.Tensor | None
    if ref is not None and ref.full_logprobs is not None:
        kl_ref_T = kl_to_ref_full(student_logp_TV, ref.full_logprobs)  # [T]
        kl_loss = None if spec.beta == 0 else spec.beta * kl_ref_T.mean()
    else:
        kl_loss, kl_ref_T = _k1_to_ref(logp_T, None if ref is None else ref.logprobs, beta=spec.beta)
    loss = pg_loss if kl_loss is None else pg_loss + kl_loss

    # 3) diagnostics on the sampled tokens
    lp_T = logp_T.detach()
    _check_T(lp_T, old_logp_T=old_logp_T, teacher_logp_T=teacher.logprobs)
    advantage_T = advantage(teacher.logprobs, lp_T)
    ratio_T = torch.exp(lp_T - _const(old_logp_T, lp_T))
    metrics = _metrics(
        loss=loss,
        pg_loss=pg_loss,
        kl_loss=kl_loss,
        kl_ref_T=kl_ref_T,
        advantage_T=advantage_T,
        ratio_T=ratio_T,
    )
    return LossOut(loss=loss, metrics=metrics, advantage_T=advantage_T)


# ---------------------------------------------------------------------------------------------------
# Helpers


def _promote(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (a differentiable cast): bf16 log-probs are too coarse for ratios and tails."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _const(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A detached copy of `x` on `like`'s device and dtype: teacher, reference and π_old are constants."""
    return x.detach().to(device=like.device, dtype=like.dtype)


def _check_T(logp_T: torch.Tensor, **others: torch.Tensor | None) -> None:
    if logp_T.ndim != 1 or logp_T.numel() == 0:
        raise ValueError(f"logp_T must be a non-empty [T] vector, got shape {tuple(logp_T.shape)}")
    for name, x in others.items():
        if x is not None and x.shape != logp_T.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(logp_T.shape)}")


def merge_chunks(parts: Sequence[tuple[float, dict[str, float]]]) -> dict[str, float]:
    """One completion's metrics from those of `sdpo_loss` on its position chunks, each given with its share of
    the tokens: a min of the chunks' `*_min`, a max of their `*_max`, the sum of `tokens`, and a share-weighted
    sum of every other key (all means over tokens, `loss` included: the chunked loss is the whole one)."""
    out: dict[str, float] = {}
    for key in parts[0][1]:
        vals = [m[key] for _, m in parts]
        if key.endswith("_min"):
            out[key] = min(vals)
        elif key.endswith("_max"):
            out[key] = max(vals)
        elif key == "tokens":
            out[key] = sum(vals)
        else:
            out[key] = sum(share * v for (share, _), v in zip(parts, vals, strict=True))
    return out


def _metrics(
    *,
    loss: torch.Tensor,
    pg_loss: torch.Tensor,
    kl_loss: torch.Tensor | None,
    kl_ref_T: torch.Tensor | None,
    advantage_T: torch.Tensor,
    ratio_T: torch.Tensor,
) -> dict[str, float]:
    return {
        "loss": loss.item(),
        "pg_loss": pg_loss.item(),
        "kl_loss": 0.0 if kl_loss is None else kl_loss.item(),
        "kl_ref": 0.0 if kl_ref_T is None else kl_ref_T.detach().mean().item(),
        "adv_mean": advantage_T.mean().item(),
        "adv_abs_mean": advantage_T.abs().mean().item(),
        "adv_min": advantage_T.min().item(),
        "adv_max": advantage_T.max().item(),
        "adv_pos_frac": (advantage_T > 0).float().mean().item(),
        "ratio_mean": ratio_T.mean().item(),
        "tokens": float(advantage_T.numel()),
    }
