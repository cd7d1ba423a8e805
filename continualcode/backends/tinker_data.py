"""What crosses the wire to Tinker, as pure functions: log-prob alignment, datums, the top-K loss.

No network here (tested without one).  Two losses map onto the service:

- sampled-token SDPO → the built-in "importance_sampling" loss (`build_datum`): the advantage
  teacher − π_old and the k1 KL-to-reference term are folded into per-token advantages.
- top-K distillation (the local default) → `forward_backward_custom` (`build_topk_datum`,
  `TopkLoss`).  Each datum's `target_tokens` is [N, K+1]: at completion position t the teacher's
  top-K ids, then the sampled token.  The service returns the student's log-probs at exactly those
  ids; `TopkLoss` computes `learn.losses.topk_divergence` on them (the local loss's own code: teacher
  top-K + tail bucket, the same alpha) plus β·k1 on the sampled token, and the SDK sends the gradient
  back as cross-entropy weights.  Only `target_tokens` and `weights` go to the service; the other
  `loss_fn_inputs` (teacher log-probs, mask, row scales, reference) stay on the client.

Alignment, the one convention everywhere: a service log-prob or top-K row i describes the
distribution that PREDICTS token i of its input (row 0 has none).  A datum's row j predicts
token j+1, so completion token t is datum row P−1+t and teacher row P_teacher+t.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from continualcode.learn.losses import advantage, topk_divergence

try:  # an optional extra: `pip install 'continualcode[tinker]'`
    from tinker import types as ttypes
except ImportError:  # pragma: no cover - exercised only without the extra
    ttypes = None  # type: ignore[assignment]

MASK_LOGPROB = -99999.0  # what the service pads a short top-K row with (token id 0)
MAX_TOPK = 20  # the service's cap on topk_prompt_logprobs


def completion_logprobs(all_logprobs: Sequence[float | None], n_prompt: int, n_completion: int) -> list[float]:
    """The completion's log-probs out of the service's per-position log-probs of prompt + completion.

    Entry i is log π(x_i | x_<i), None at position 0 and, under `prompt_logprobs_last_n`, before the
    scored suffix.  The completion's T tokens sit at positions n_prompt … n_prompt+T−1, so entry t of
    the result is log π(completion[t] | prompt + completion[:t]), the index convention of `Scores`.
    """
    if n_prompt < 1:
        raise ValueError("scoring needs a non-empty prompt (position 0 has no log-prob)")
    if n_completion < 0:
        raise ValueError(f"n_completion={n_completion} < 0")
    if len(all_logprobs) != n_prompt + n_completion:
        raise ValueError(
            f"the service returned {len(all_logprobs)} log-probs for {n_prompt} prompt + "
            f"{n_completion} completion tokens"
        )
    out = list(all_logprobs[n_prompt : n_prompt + n_completion])
    bad = [t for t, x in enumerate(out) if x is None or math.isnan(x)]
    if bad:
        raise ValueError(f"the service returned no log-prob for completion token {bad[0]}")
    return [float(x) for x in out]  # type: ignore[arg-type]


def completion_topk(
    rows: Sequence[Sequence[tuple[int, float]] | None], n_prompt: int, n_completion: int, k: int,
    *, vocab_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The teacher's top-K at the completion positions: (ids [T, K], log-probs [T, K], mask [T, K]).

    `rows` are the service's `topk_prompt_logprobs` of prompt + completion (row i: the pairs
    predicting token i).  A row with fewer than k pairs, a padding pair (id 0, MASK_LOGPROB) and an
    id outside the vocabulary are masked out (mask False, id 0, log-prob MASK_LOGPROB).
    """
    if len(rows) != n_prompt + n_completion:
        raise ValueError(f"the service returned {len(rows)} top-K rows for {n_prompt} prompt + "
                         f"{n_completion} completion tokens")
    ids_TK = torch.zeros(n_completion, k, dtype=torch.int64)
    lp_TK = torch.full((n_completion, k), MASK_LOGPROB, dtype=torch.float32)
    mask_TK = torch.zeros(n_completion, k, dtype=torch.bool)
    for t in range(n_completion):
        row = rows[n_prompt + t]
        if not row:
            raise ValueError(f"the service returned no top-K for completion token {t}")
        for j, (tok, lp) in enumerate(list(row)[:k]):
            padded = lp is None or float(lp) <= MASK_LOGPROB or math.isnan(float(lp))
            if padded or (vocab_size is not None and not 0 <= int(tok) < vocab_size):
                continue
            ids_TK[t, j], lp_TK[t, j], mask_TK[t, j] = int(tok), float(lp), True
    return ids_TK, lp_TK, mask_TK


def build_datum(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    old_lp: Sequence[float] | torch.Tensor,
    teacher_lp: Sequence[float] | torch.Tensor,
    ref_lp: Sequence[float] | torch.Tensor | None,
    *,
    beta: float,
    scale: float,
) -> Any:
    """One `tinker.types.Datum` for the service's "importance_sampling" loss.

    Standard shifted layout over N = P + T − 1 positions: model_input = (prompt + completion)[:-1],
    target_tokens = (prompt + completion)[1:], so input position j predicts token j+1 and completion
    token t is the target at position P−1+t. On those T positions:
        logprobs[t]   = old_lp[t]                                    (π_old, the sampler's log-probs)
        advantages[t] = scale · (teacher_lp − old_lp − β·(old_lp − ref_lp))[t]
    and 0 on the P−1 prompt positions (advantage 0 removes them from the loss). The KL-to-reference
    is folded in as a per-token advantage (its k1 estimate at π_old), since the service sees no full
    distributions; ref_lp None drops the term. `scale` = example weight / Σ weights / T makes the
    service's SUM over tokens and examples the local backend's weighted per-token MEAN.
    """
    prompt, completion, P, T = _shape(prompt_ids, completion_ids)
    old_T = vector(old_lp, T, "old_lp")
    adv_T = advantage(vector(teacher_lp, T, "teacher_lp"), old_T)  # [T]
    if ref_lp is not None:
        adv_T = adv_T - beta * (old_T - vector(ref_lp, T, "ref_lp"))
    tokens = prompt + completion
    logprobs_N = torch.zeros(P + T - 1, dtype=torch.float64)
    advantages_N = torch.zeros(P + T - 1, dtype=torch.float64)
    logprobs_N[P - 1 :] = old_T
    advantages_N[P - 1 :] = scale * adv_T
    return ttypes.Datum(
        model_input=ttypes.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": ttypes.TensorData.from_torch(torch.tensor(tokens[1:], dtype=torch.int64)),
            "logprobs": ttypes.TensorData.from_torch(logprobs_N.float()),
            "advantages": ttypes.TensorData.from_torch(advantages_N.float()),
        },
    )


def build_topk_datum(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    teacher_ids_TK: torch.Tensor,
    teacher_lp_TK: torch.Tensor,
    mask_TK: torch.Tensor | None,
    ref_lp: Sequence[float] | torch.Tensor | None,
    *,
    scale: float,
) -> Any:
    """One datum for `TopkLoss` (see the module docstring for the layout).

    target_tokens [N, K+1]: rows P−1+t hold the teacher's top-K ids of completion token t, then the
    token itself; prompt rows hold the next token repeated (their row_scale is 0: no loss).
    teacher_lp [N, K], mask [N, K] (1.0 = a real cell), row_scale [N] (= example weight / Σ weights
    / T on completion rows, so the sum over rows and datums is the local weighted per-token mean),
    ref_lp [N] (the base's log-prob of the sampled token; absent = no KL term).
    """
    prompt, completion, P, T = _shape(prompt_ids, completion_ids)
    K = int(teacher_ids_TK.shape[-1])
    if tuple(teacher_ids_TK.shape) != (T, K) or tuple(teacher_lp_TK.shape) != (T, K):
        raise ValueError(f"teacher top-K {tuple(teacher_ids_TK.shape)} / {tuple(teacher_lp_TK.shape)} "
                         f"for {T} completion tokens")
    tokens = prompt + completion
    N = P + T - 1
    targets_NK1 = torch.tensor(tokens[1:], dtype=torch.int64).unsqueeze(1).repeat(1, K + 1)
    targets_NK1[P - 1 :, :K] = teacher_ids_TK.to(torch.int64)
    teacher_NK = torch.zeros(N, K, dtype=torch.float32)
    teacher_NK[P - 1 :] = teacher_lp_TK.float()
    mask_NK = torch.zeros(N, K, dtype=torch.float32)
    mask_NK[P - 1 :] = 1.0 if mask_TK is None else mask_TK.float()
    scale_N = torch.zeros(N, dtype=torch.float32)
    scale_N[P - 1 :] = scale
    inputs = {
        "target_tokens": ttypes.TensorData.from_torch(targets_NK1),
        "teacher_lp": ttypes.TensorData.from_torch(teacher_NK),
        "mask": ttypes.TensorData.from_torch(mask_NK),
        "row_scale": ttypes.TensorData.from_torch(scale_N),
    }
    if ref_lp is not None:
        ref_N = torch.zeros(N, dtype=torch.float32)
        ref_N[P - 1 :] = vector(ref_lp, T, "ref_lp").float()
        inputs["ref_lp"] = ttypes.TensorData.from_torch(ref_N)
    return ttypes.Datum(model_input=ttypes.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


class TopkLoss:
    """The custom loss `forward_backward_custom` runs on the client: (data, logprobs) → (loss, metrics).

    `logprobs[i]` [N, K+1] are the student's log-probs (differentiable) at datum i's target ids.
    Per completion row: topk_divergence(student top-K, teacher top-K; tail, alpha) + β·k1·(logπ − sg)
    + β·sg(k1) on the sampled token (k1 = sg(logπ) − ref), each times row_scale: the same value and
    gradient as `learn.losses.sdpo_loss` for kind "topk" with a sampled-token reference.
    """

    def __init__(self, *, alpha: float, beta: float) -> None:
        self.alpha, self.beta = alpha, beta

    def __call__(self, data: Sequence[Any], logprobs: Sequence[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        total = torch.zeros((), dtype=torch.float64)
        div_sum = kl_sum = 0.0
        for d, lp_NK1 in zip(data, logprobs, strict=True):
            inputs = d.loss_fn_inputs
            lp_NK1 = lp_NK1.double()
            K = lp_NK1.shape[-1] - 1
            scale_N = tensor_of(inputs["row_scale"]).double()
            div_N = topk_divergence(lp_NK1[:, :K], teacher_logp_TK=tensor_of(inputs["teacher_lp"]),
                                    alpha=self.alpha, mask_TK=tensor_of(inputs["mask"]) > 0.5)  # [N]
            loss = (scale_N * div_N).sum()
            div_sum += float(loss.detach())
            if "ref_lp" in inputs and self.beta != 0:
                s_N = lp_NK1[:, K]
                k1_N = s_N.detach() - tensor_of(inputs["ref_lp"]).double()
                kl = (scale_N * self.beta * (k1_N + k1_N * (s_N - s_N.detach()))).sum()
                kl_sum += float(kl.detach())
                loss = loss + kl
            total = total + loss
        return total, {"pg_loss": div_sum, "kl_loss": kl_sum}


def vector(x: Sequence[float] | torch.Tensor, T: int, name: str) -> torch.Tensor:
    v = torch.as_tensor(x, dtype=torch.float64).detach().cpu().reshape(-1)
    if v.numel() != T:
        raise ValueError(f"{name} has {v.numel()} entries for {T} completion tokens")
    return v


def tensor_of(td: Any) -> torch.Tensor:
    """A `tinker.types.TensorData` (or a tensor) as a tensor, keeping its shape (SDK-version independent)."""
    if isinstance(td, torch.Tensor):
        return td
    if hasattr(td, "to_torch"):
        return td.to_torch()
    return torch.tensor(td.tolist() if hasattr(td, "tolist") else td.data)


def _shape(prompt_ids: Sequence[int], completion_ids: Sequence[int]) -> tuple[list[int], list[int], int, int]:
    if ttypes is None:
        raise RuntimeError("the Tinker SDK is not installed: pip install 'continualcode[tinker]'")
    prompt, completion = [int(t) for t in prompt_ids], [int(t) for t in completion_ids]
    if not prompt or not completion:
        raise ValueError(f"a datum needs a prompt and a completion (got P={len(prompt)}, T={len(completion)})")
    return prompt, completion, len(prompt), len(completion)
