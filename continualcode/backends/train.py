"""One training step of the local backend: per-example forward, loss and backward, then one clipped
optimizer step on the LoRA parameters.

The loss is `learn.losses.sdpo_loss` on the completion's [T, V] log-distribution; examples are
weighted (weights normalised to sum to 1).  A step whose loss or gradient norm is not finite is not
taken (`stepped=0`, weights untouched); a step that leaves a non-finite weight is reported
`stepped=0`, `nonfinite_weights=1`, so that the caller restores its snapshot.  Timings per phase are
in the metrics (`sec_student_fwd`, `sec_backward`, `sec_optimizer`, `sec_train`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import torch

from continualcode.backends.adapter import AdapterState
from continualcode.learn.types import LossSpec, StepResult, TrainExample


def optimizer_step(batch: Sequence[TrainExample], spec: LossSpec, *, lr: float, adapter: AdapterState,
                   grad_clip: float, device: torch.device,
                   logits: Callable[[TrainExample], torch.Tensor]) -> StepResult:
    """`logits(ex)`: the student's [T, V] logits at ex's completion positions, with grad."""
    from continualcode.learn.losses import sdpo_loss

    t0 = time.perf_counter()
    optimizer = adapter.optimizer
    for g in optimizer.param_groups:
        g["lr"] = lr
    optimizer.zero_grad(set_to_none=True)
    total_w = sum(ex.weight for ex in batch)
    sums: dict[str, float] = {}
    t_fwd = t_bwd = 0.0
    finite = True
    logps: list[torch.Tensor] = []
    for ex in batch:
        # 1) the student's forward over the completion positions, and the loss
        t1 = time.perf_counter()
        logp_TV = torch.log_softmax(logits(ex), dim=-1)  # (T, V)
        ids_T = torch.tensor(ex.completion_ids, device=device)
        logp_T = logp_TV.detach().gather(1, ids_T.unsqueeze(1)).squeeze(1)
        logps.append(logp_T)
        old_T = logp_T if ex.old_logprobs is None else ex.old_logprobs.to(device)
        out = sdpo_loss(spec, student_logp_TV=logp_TV, completion_ids=ids_T, old_logp_T=old_T,
                        teacher=ex.teacher, ref=ex.ref)
        t2 = time.perf_counter()
        # 2) backward, weighted
        w = ex.weight / total_w
        if not torch.isfinite(out.loss):
            finite = False
        else:
            (out.loss * w).backward()
        t3 = time.perf_counter()
        t_fwd += t2 - t1
        t_bwd += t3 - t2
        for k, v in out.metrics.items():
            sums[k] = sums.get(k, 0.0) + w * float(v)
    # 3) clip and step, unless something was not finite
    t4 = time.perf_counter()
    grad_norm = float(torch.nn.utils.clip_grad_norm_(adapter.params, grad_clip)) if finite else float("nan")
    stepped, bad_weights = 0.0, 0.0
    if finite and torch.isfinite(torch.tensor(grad_norm)):
        optimizer.step()
        adapter.stepped()
        stepped = 1.0
        if not adapter.finite():
            stepped, bad_weights = 0.0, 1.0
    optimizer.zero_grad(set_to_none=True)
    t5 = time.perf_counter()
    sums.update(grad_norm=grad_norm, stepped=stepped, lr=lr, nonfinite=0.0 if finite else 1.0,
                nonfinite_weights=bad_weights, sec_student_fwd=t_fwd, sec_backward=t_bwd,
                sec_optimizer=t5 - t4, sec_train=t5 - t0)
    if not finite:
        sums["loss"] = float("nan")
    return StepResult(sums, logps)
