"""One training step of the local backend: per-example forward, loss and backward, then one clipped
optimizer step on the LoRA parameters.

The loss is `learn.losses.sdpo_loss` on the completion's [T, V] log-distribution, taken VOCAB_ROWS positions
at a time (`_loss_grad`: the float32 [T, V] work never lies in memory whole); examples are
weighted (weights normalised to sum to 1).  A step whose loss or gradient norm is not finite is not
taken (`stepped=0`, weights untouched); a step that leaves a non-finite weight is reported
`stepped=0`, `nonfinite_weights=1`, so that the caller restores its snapshot.  Timings per phase are
in the metrics (`sec_student_fwd`, `sec_backward`, `sec_optimizer`, `sec_train`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial

import torch
from torch.utils.checkpoint import checkpoint

from continualcode.backends.adapter import AdapterState
from continualcode.learn.types import LossSpec, Paused, StepResult, Stop, TrainExample

VOCAB_ROWS = 64  # completion positions whose float32 [C, V] work is in memory at once (`_loss_grad`, `score`)


def checkpoint_layers(model: torch.nn.Module, on: bool) -> int:
    """Turn layer checkpointing of `model`'s decoder layers on or off; the layers it applies to (0 where the
    installed transformers cannot keep a layer's cache under checkpointing: no `_can_checkpoint_with_cache`).

    On, a forward with grad keeps only each layer's input, and the backward replays the layer to get the
    rest: a long denied completion's step kept ~7 MB a token of activations (28 layers of the 1.5B model).
    transformers' own switch (`gradient_checkpointing_enable`) drops the KV cache, the prompt's prefix that
    the step's forward reads; here the layers keep it (`_can_checkpoint_with_cache`), which is right only
    because that forward is handed a read-only view of it (`kv.read_only`): the replay must not append the
    completion again."""
    try:
        from transformers.modeling_layers import GradientCheckpointingLayer
    except ImportError:  # transformers 4.x before the class: no checkpointing
        return 0
    if not hasattr(GradientCheckpointingLayer, "_can_checkpoint_with_cache"):  # it would drop the prefix's KV
        return 0
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    for m in layers:
        m.gradient_checkpointing = on
        m._can_checkpoint_with_cache = on
        m._gradient_checkpointing_func = partial(checkpoint, use_reentrant=False)
    return len(layers)


def optimizer_step(batch: Sequence[TrainExample], spec: LossSpec, *, lr: float, adapter: AdapterState,
                   grad_clip: float, device: torch.device,
                   logits: Callable[[TrainExample], torch.Tensor], stop: Stop | None = None) -> StepResult:
    """`logits(ex)`: the student's [T, V] logits at ex's completion positions, with grad, in any float dtype.
    `stop`: asked before each example's forward and before the optimizer step; true: the gradients are
    dropped and `Paused` is raised, the weights and the optimizer's state untouched (a distillation's four
    examples took 23.6 s of the 1.5B model's forward and backward on 2 cores: the user who typed the next
    task waited for them)."""
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

    def paused() -> None:  # before each example's forward and before the optimizer step
        if stop is not None and stop():
            optimizer.zero_grad(set_to_none=True)
            raise Paused("the training step was asked to stop before it changed the weights")

    for ex in batch:
        paused()
        # 1) the student's forward over the completion positions
        t1 = time.perf_counter()
        logits_TV = logits(ex)
        t2 = time.perf_counter()
        # 2) the loss in chunks of positions, and the backward, weighted
        w = ex.weight / total_w
        grad_TV, logp_T, metrics = _loss_grad(ex, spec, logits_TV, w, device)
        logps.append(logp_T)
        if grad_TV is None:
            finite = False
        else:
            logits_TV.backward(grad_TV)
        del logits_TV, grad_TV
        t3 = time.perf_counter()
        t_fwd += t2 - t1
        t_bwd += t3 - t2
        for k, v in metrics.items():
            sums[k] = sums.get(k, 0.0) + w * float(v)
    paused()
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


def _loss_grad(ex: TrainExample, spec: LossSpec, logits_TV: torch.Tensor, w: float,
               device: torch.device) -> tuple[torch.Tensor | None, torch.Tensor, dict[str, float]]:
    """`w` × the example's loss, VOCAB_ROWS positions at a time → (its gradient w.r.t. `logits_TV`, None where a
    chunk's loss is not finite; the student's detached log-probs of the completion [T]; the loss's metrics).

    The loss is a mean over positions (`learn.losses`), so the chunks' losses weighted by their share of the
    positions sum to it, and so do their gradients; only one chunk's float32 [C, V] work (log-softmax, the
    divergences, their gradients) is in memory at a time, not the [T, V] one's (~1 GB for 400 tokens of a
    152k vocabulary).  Each chunk is its own leaf, so its gradient is written into its rows of one buffer."""
    from continualcode.learn.losses import merge_chunks, sdpo_loss

    n = logits_TV.shape[0]
    ids_T = torch.tensor(ex.completion_ids, device=device)
    grad_TV = torch.empty_like(logits_TV)
    logp_T = torch.empty(n, device=device)
    parts: list[tuple[float, dict[str, float]]] = []
    finite = True
    for s in range(0, n, VOCAB_ROWS):
        e = min(n, s + VOCAB_ROWS)
        leaf = logits_TV[s:e].detach().requires_grad_()
        logp_CV = torch.log_softmax(leaf, dim=-1, dtype=torch.float32)
        lp = logp_CV.detach().gather(1, ids_T[s:e, None]).squeeze(1)
        logp_T[s:e] = lp
        old = lp if ex.old_logprobs is None else ex.old_logprobs[s:e].to(device)
        out = sdpo_loss(spec, student_logp_TV=logp_CV, completion_ids=ids_T[s:e], old_logp_T=old,
                        teacher=ex.teacher.rows(s, e), ref=None if ex.ref is None else ex.ref.rows(s, e))
        share = (e - s) / n
        parts.append((share, out.metrics))
        finite = finite and bool(torch.isfinite(out.loss))
        if finite:
            grad_TV[s:e] = torch.autograd.grad(out.loss * (share * w), leaf)[0]
    return grad_TV if finite else None, logp_T, merge_chunks(parts)
