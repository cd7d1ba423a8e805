"""One online update per correction: score → advantages → loss → step → guard/rollback.

`Learner` is the callable the session is given.  For a `Correction` it
1) builds the teacher context (`teacher.py`) and scores the student's own completion under it
   (sampled-token log-probs, plus top-K or the full distribution when the loss needs them);
2) scores the same tokens under the frozen base (the KL reference) when β > 0;
3) snapshots the adapter, then takes `steps_per_correction` optimizer steps through the backend
   (the loss is `learn.losses.sdpo_loss` under a `LossSpec`);
4) re-scores the completion under the updated adapter: the per-token log-prob shift is reported,
   and a non-finite loss, gradient or weight, or a KL to the base that is not ≤ `max_kl` (NaN
   included) restores the snapshot; so does any exception or Ctrl-C during 3)–4);
5) updates the EMA teacher when one is configured.
It returns a metrics dict (also the heatmap's data); every step's snapshot is kept for `/undo`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from typing import Any

import torch

from continualcode.backends.base import Backend, CapabilityError, Snapshot
from continualcode.learn.losses import advantage, kl_to_ref_full
from continualcode.learn.teacher import teacher_messages
from continualcode.learn.types import LearnConfig, Scores, TrainExample
from continualcode.records import Correction
from continualcode.render import Renderer


def _kl_after(after: Scores, ref: Scores | None) -> float:
    """Mean per-token KL(π_after ‖ π_ref) on the completion: exact over the vocabulary when both full
    distributions are at hand, else the non-negative k3 estimate on the sampled tokens."""
    if ref is None:
        return 0.0
    if after.full_logprobs is not None and ref.full_logprobs is not None:
        return float(kl_to_ref_full(after.full_logprobs, ref.full_logprobs).mean())
    r = ref.logprobs - after.logprobs
    return float((torch.expm1(r) - r).mean())


class StepError(RuntimeError):
    """A learning step raised; the adapter was restored to its pre-step snapshot."""


class Learner:
    """Callable learner hook for `agent.Session`; see the module docstring."""

    def __init__(self, backend: Backend, renderer: Renderer, cfg: LearnConfig) -> None:
        self.backend = backend
        self.renderer = renderer
        self.cfg = cfg
        self.spec = cfg.spec()
        needs = {"topk": "topk_distribution", "full": "full_distribution"}.get(cfg.distill_loss)
        if needs and needs not in backend.capabilities:
            what = {"topk": "the teacher's top-K", "full": "full distributions"}[cfg.distill_loss]
            raise CapabilityError(f"distill_loss={cfg.distill_loss} needs {what}, which this backend lacks")
        if cfg.teacher == "ema" and "ema_teacher" not in backend.capabilities:
            raise CapabilityError("teacher=ema needs weight-level access, which this backend lacks: use teacher=live")
        self.undo_stack: deque[Snapshot] = deque(maxlen=cfg.undo_depth)
        self.n_corrections = 0

    def __call__(self, c: Correction) -> dict[str, Any] | None:
        if c.kind == "approved_retry" and not self.cfg.learn_from_approved_retry:
            return None
        cfg, b = self.cfg, self.backend
        self.n_corrections += 1
        t0 = time.perf_counter()
        completion = list(c.sample.tokens)
        # 1) the teacher: same model, correction in context, same completion tokens
        t_ids = self.renderer.prompt_ids(teacher_messages(c, sees_attempt=cfg.teacher_sees_attempt))
        adapter: bool | str = {"live": True, "ema": "ema", "frozen": False}[cfg.teacher]
        teacher = b.score(t_ids, completion, topk=cfg.distill_topk if cfg.distill_loss == "topk" else 0,
                          full=cfg.distill_loss == "full", adapter=adapter)
        t1 = time.perf_counter()
        # 2) the frozen reference
        ref = None
        full_ref = cfg.distill_loss != "sampled_token" and "full_distribution" in b.capabilities
        if cfg.kl_beta > 0 or math.isfinite(cfg.max_kl):  # the reference also feeds the KL guard
            ref = b.score(c.prompt_ids, completion, full=full_ref, adapter=False)
        t2 = time.perf_counter()
        # 3) the step(s), from a snapshot
        snap = b.snapshot()
        # π_old: on-policy in the step's own forward where the backend has one (exact in any dtype),
        # else the sampler's log-probs of the completion
        old = None if "on_policy_forward" in b.capabilities else torch.tensor(c.sample.logprobs)
        ex = TrainExample(list(c.prompt_ids), completion, old_logprobs=old, teacher=teacher, ref=ref)
        metrics: dict[str, float] = {}
        before_T: torch.Tensor | None = None
        rolled_back = ""
        try:
            for i in range(cfg.steps_per_correction):
                result = b.train_step([ex], self.spec, lr=cfg.learning_rate)
                metrics = result.metrics
                if i == 0 and result.logp_T:
                    before_T = result.logp_T[0]
                    ex = dataclasses.replace(ex, old_logprobs=before_T)  # π_old of later steps on the same sample
                if not math.isfinite(metrics.get("loss", float("nan"))) or not result.stepped:
                    rolled_back = ("non-finite weights after the step" if metrics.get("nonfinite_weights")
                                   else "non-finite loss or gradient")
                    break
            t3 = time.perf_counter()
            # 4) what the step did, and the guard: NaN fails `<=`, so a non-finite KL rolls back too
            after = b.score(c.prompt_ids, completion, full=ref is not None and ref.full_logprobs is not None)
            kl_after = _kl_after(after, ref)
            if not rolled_back and not (kl_after <= cfg.max_kl):
                rolled_back = f"KL to the base {kl_after:.2f} > max_kl {cfg.max_kl}"
        except KeyboardInterrupt:  # Ctrl-C mid-step: the last good adapter, then the interrupt goes on
            b.restore(snap)
            raise
        except Exception as e:  # a failure mid-step must leave the last good adapter in use
            b.restore(snap)
            raise StepError(f"learning step failed and was rolled back: {type(e).__name__}: {e}") from e
        if rolled_back:
            b.restore(snap)
        else:
            self.undo_stack.append(snap)
            if cfg.teacher == "ema":
                b.ema_update(cfg.ema_rate)  # type: ignore[attr-defined]
        t4 = time.perf_counter()
        return self._report(c, teacher.logprobs, before_T, after.logprobs, ex, metrics, rolled_back, kl_after,
                            {"sec_teacher": t1 - t0, "sec_ref": t2 - t1, "sec_step": t3 - t2,
                             "sec_after": t4 - t3, "sec_total": t4 - t0})

    def _report(self, c: Correction, teacher_T: torch.Tensor, before_T: torch.Tensor | None, after_T: torch.Tensor,
                ex: TrainExample, metrics: dict[str, float], rolled_back: str, kl_after: float,
                secs: dict[str, float]) -> dict[str, Any]:
        before = before_T if before_T is not None else after_T
        adv_T = advantage(teacher_T, before).float()
        shift_T = (after_T - before).float()
        pos = adv_T > 0
        report: dict[str, Any] = {
            **metrics, **secs,
            "n_tokens": len(ex.completion_ids), "kind": c.kind, "step": self.backend.step, "correction": c.text,
            "rolled_back": rolled_back,
            "kl_after": kl_after,
            "logp_shift_mean": float(shift_T.mean()),
            "logp_shift_pos_adv": float(shift_T[pos].mean()) if bool(pos.any()) else 0.0,
            "logp_shift_neg_adv": float(shift_T[~pos].mean()) if bool((~pos).any()) else 0.0,
            "seq_logp_before": float(before.sum()), "seq_logp_after": float(after_T.sum()),
            "tokens": self.renderer.token_pieces(ex.completion_ids),
            "student_lp": [round(float(x), 5) for x in before],
            "teacher_lp": [round(float(x), 5) for x in teacher_T],
            "advantage": [round(float(x), 5) for x in adv_T],
        }
        return report

    def undo(self) -> bool:
        """Revert the last learning step; False when there is nothing to undo."""
        if not self.undo_stack:
            return False
        self.backend.restore(self.undo_stack.pop())
        return True
