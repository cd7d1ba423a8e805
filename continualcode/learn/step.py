"""One online update per correction: examples → steps (until the student agrees) → guard → report.

`Learner` is the callable the session is given.  For a `Correction` it
1) builds the examples (`examples.py`): the student's own denied completion, scored by its teacher
   (the same model with the correction in context: sampled-token log-probs, plus top-K or the full
   distribution when the loss needs them) and by the frozen base (the KL reference); with
   `distill_prompts` > 0 also that many other prompts of the same kind (the project's earlier tasks,
   then paraphrases the model writes), each with a short on-policy sample and its own teacher.  With
   `distill_deferred` (the default) the update here is interim, on the denied call alone (the retry
   after the denial waits only for it), and `settle` (called when the task has ended) replaces it with
   the full update from the same starting weights;
2) snapshots the adapter and takes up to `steps_per_correction` optimizer steps on the batch
   (`learn.losses.sdpo_loss` under a `LossSpec`).  With `adaptive`, it stops as soon as the student
   agrees with the teacher at every example's decision point (the first position where their top
   tokens differed; there the student's top token must become the teacher's).  A step whose own KL
   (before ‖ after, mean per token on the denied completion) exceeds `step_max_kl` is undone and ends
   the stepping: a trust region per step, not only a bound on the total drift;
3) re-scores the denied completion under the updated adapter — with `carry_prefix` (the default) on the
   prompt's KV from before the update, which the retry then extends (backends/kv.py `PrefixStore.carry`),
   so neither re-runs the conversation: the per-token log-prob shift is reported, and a non-finite loss,
   gradient or weight, or a KL to the base that is not ≤ `max_kl` (NaN included) restores the snapshot;
   so does any exception or Ctrl-C during 2)–3);
4) updates the EMA teacher when one is configured.
It returns a metrics dict (also the heatmap's data); every update's snapshot is kept for `/undo`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch

from continualcode.backends.base import Backend, CapabilityError, Snapshot
from continualcode.learn.examples import Example, build_examples, distill_examples
from continualcode.learn.losses import advantage, kl_to_ref_full
from continualcode.learn.types import LearnConfig, Paused, Scores, Stop
from continualcode.records import Correction
from continualcode.render import Renderer

PromptSource = Callable[[Correction], Sequence[str]]


def _kl(p: Scores, q: Scores | None) -> float:
    """Mean per-token KL(p ‖ q) on a completion: exact over the vocabulary when both full distributions
    are at hand (always, on the local backend); else, as a proxy, the mean absolute log-prob change of
    the completion's tokens (0 without q).

    Not the k3 estimate: the completion was sampled before the step, and the step pushes the denied
    tokens down on purpose, so q/p on them is huge and k3 = r − 1 − log r explodes (a KL "of 4567"
    that rolled good steps back), although the distributions barely moved elsewhere."""
    if q is None:
        return 0.0
    if p.full_logprobs is not None and q.full_logprobs is not None:
        return float(kl_to_ref_full(p.full_logprobs, q.full_logprobs).mean())
    return float((p.logprobs - q.logprobs).abs().mean())


_kl_after = _kl  # the guard's KL to the base: a name the tests patch


@dataclasses.dataclass
class _Pending:
    """A correction whose distillation is deferred: its denied call's example, the adapter before its
    interim update, and whether that update was kept (then it is on the undo stack)."""

    correction: Correction
    main: Example
    before: Snapshot
    kept: bool


class StepError(RuntimeError):
    """A learning step raised; the adapter was restored to its pre-step snapshot."""


class Learner:
    """Callable learner hook for `agent.Session`; see the module docstring.

    `prompts`: where the project's earlier tasks come from for context distillation (None: only
    paraphrases), called with the correction being learned.
    """

    def __init__(self, backend: Backend, renderer: Renderer, cfg: LearnConfig, *,
                 prompts: PromptSource | None = None) -> None:
        self.backend = backend
        self.renderer = renderer
        self.cfg = cfg
        self.spec = cfg.spec()
        self.prompts = prompts
        needs = {"topk": "topk_distribution", "full": "full_distribution"}.get(cfg.distill_loss)
        if needs and needs not in backend.capabilities:
            what = {"topk": "the teacher's top-K", "full": "full distributions"}[cfg.distill_loss]
            raise CapabilityError(f"distill_loss={cfg.distill_loss} needs {what}, which this backend lacks")
        if cfg.teacher == "ema" and "ema_teacher" not in backend.capabilities:
            raise CapabilityError("teacher=ema needs weight-level access, which this backend lacks: use teacher=live")
        self.undo_stack: deque[Snapshot] = deque(maxlen=cfg.undo_depth)
        self.pending: deque[_Pending] = deque()  # corrections whose distillation `settle` has yet to do
        self.n_corrections = 0

    def __call__(self, c: Correction) -> dict[str, Any] | None:
        if c.kind == "approved_retry" and not self.cfg.learn_from_approved_retry:
            return None
        cfg = self.cfg
        self.n_corrections += 1
        t0 = time.perf_counter()
        # 1) the examples: the denied completion first, then any distillation prompts (deferred: `settle`)
        defer = cfg.distill_deferred and cfg.distill_prompts > 0
        examples, secs = build_examples(self.backend, self.renderer, cfg, c,
                                        extra_prompts=() if defer else self._extra(c), distill=not defer)
        before = self.backend.snapshot() if defer else None
        main = dataclasses.replace(examples[0])  # as built: the update sets π_old on the one it steps on
        report = self._update(c, examples, secs, t0, distilled=len(examples) - 1, snap=before)
        if before is not None:
            self.pending.append(_Pending(c, main, before, kept=not report["rolled_back"]))
        return report

    def settle(self, stop: Stop | None = None) -> list[dict[str, Any]]:
        """The deferred distillation (`distill_deferred`).  Each correction since the last call took an
        interim update on its denied call alone (what the retry used); those are replaced: the adapter goes
        back to the weights before the first of them (their undo entries dropped), and each correction
        takes the update it would have taken undeferred, on its denied call and its distillation examples
        (the project's earlier tasks, paraphrases of its task, each with a short on-policy sample taught
        by the correction), guarded the same way.  The final weights are then those of the undeferred
        path (the same batches from the same start), and so is the drift.  The session calls it when a
        task has ended.  One report per update taken.

        `stop`: asked before each distillation sample, and in the training step before each example's forward
        and before the optimizer step (the app pauses the job when the user types the next task: the task does
        not wait for it; settle.py).  When it turns true before any update has changed the weights, the interim
        weights and their undo entries come back, every correction stays pending, and it returns [].  A pause
        in the training step dropped the step: in a user trial on python-dotenv the next task, typed during a
        distilled update's forward and backward (23.6 s for its four examples, then 18.3 s of the guard's
        scoring), waited ~38 s.  When it turns true after a correction's update has changed the weights (it then
        runs to its end, the guard included), the corrections left take their interim
        updates again, on their denied calls alone from the weights now (`_interim`: ~11-15 s each for the
        1.5B model, where a distillation took 80-100 s), and stay pending; the reports of both are returned.
        Before, the job ran every correction to its end: after a task with two corrections the next task
        waited ~110 s (a user trial on isodate).  A later `settle` goes on from there: the same batches from
        the same start as the undeferred path."""
        if not self.pending:
            return []
        b, reports = self.backend, []
        now = b.snapshot() if stop is not None else None  # the interim weights: what a paused job leaves
        popped = [self.undo_stack.pop() for _ in range(min(sum(p.kept for p in self.pending), len(self.undo_stack)))]
        b.restore(self.pending[0].before)
        paused = False
        try:
            while self.pending:
                p = self.pending[0]
                t0 = time.perf_counter()
                more = distill_examples(b, self.renderer, self.cfg, p.correction, self._extra(p.correction),
                                        stop=stop)
                report = None
                if more is not None and not (stop is not None and stop()):
                    secs = {"sec_distill": time.perf_counter() - t0}
                    try:
                        report = self._update(p.correction, [p.main, *more], secs, t0, distilled=len(more),
                                              stop=stop)
                    except Paused:  # asked in the step, before it changed the weights (`_update` restored them)
                        report = None
                if report is None and reports:  # paused after an update: the rest as they were before `settle`
                    reports += self._interim()
                    paused = True
                    return reports
                if report is None:  # paused before any update: back to the interim weights, nothing lost
                    assert now is not None
                    b.restore(now)
                    self.undo_stack.extend(reversed(popped))
                    paused = True
                    return []
                self.pending.popleft()
                reports.append({**report, "deferred": True})
        finally:
            if not paused:
                self.pending.clear()  # after a failure the adapter is the last good one; nothing is left to redo
        return reports

    def _interim(self) -> list[dict[str, Any]]:
        """Each pending correction's interim update again, from the weights now, as `__call__` takes it (its
        denied call alone, a snapshot before it, kept on the undo stack unless rolled back); its reports."""
        reports = []
        for p in self.pending:
            t0 = time.perf_counter()
            p.before = self.backend.snapshot()
            report = self._update(p.correction, [dataclasses.replace(p.main)], {}, t0, distilled=0, snap=p.before)
            p.kept = not report["rolled_back"]
            reports.append({**report, "interim": True})
        return reports

    def _extra(self, c: Correction) -> list[str]:
        return list(self.prompts(c)) if self.prompts is not None and self.cfg.distill_prompts > 0 else []

    def _update(self, c: Correction, examples: list[Example], secs: dict[str, float], t0: float, *,
                distilled: int, snap: Snapshot | None = None, stop: Stop | None = None) -> dict[str, Any]:
        """Steps on `examples` from a snapshot (`snap`, one the caller already took of the current weights,
        or a new one), the guard on the first one's completion, the report (`distilled`: how many of the
        examples are distillation examples).  `stop` (settle's pause) reaches the training step: `Paused`
        comes out of it with the snapshot restored; once a step is taken, the update runs to its end."""
        cfg, b = self.cfg, self.backend
        main = examples[0]
        carry = cfg.carry_prefix and not distilled and "prefix_carry" in b.capabilities
        t1 = time.perf_counter()
        # 2) the steps, from a snapshot
        snap = snap if snap is not None else b.snapshot()
        metrics: dict[str, float] = {}
        rolled_back, why, steps = "", "max_steps", 0
        try:
            metrics, steps, why, rolled_back = self._steps(examples, stop)
            t2 = time.perf_counter()
            if carry and steps and not rolled_back:  # the retry extends this prompt: its KV from before serves
                b.carry_prefix(main.example.prompt_ids)  # type: ignore[attr-defined]
            # 3) what the steps did, and the guard: NaN fails `<=`, so a non-finite KL rolls back too
            after = b.score(main.example.prompt_ids, main.example.completion_ids,
                            full=main.example.ref is not None and main.example.ref.full_logprobs is not None)
            kl_after = _kl_after(after, main.example.ref)
            if not rolled_back and not (kl_after <= cfg.max_kl):
                rolled_back = f"KL to the base {kl_after:.2f} > max_kl {cfg.max_kl}"
        except Paused:  # asked before the (first) step changed anything; a later step's pause drops the earlier
            b.restore(snap)
            raise
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
        t3 = time.perf_counter()
        secs.update(sec_step=t2 - t1, sec_after=t3 - t2, sec_total=t3 - t0)
        report = self._report(c, main, after.logprobs, metrics, rolled_back, kl_after, secs)
        report.update(steps_taken=steps, stop=why, distill_examples=distilled)
        return report

    def _steps(self, examples: list[Example], stop: Stop | None = None) -> tuple[dict[str, float], int, str, str]:
        """Up to steps_per_correction steps on the batch → (last metrics, steps kept, why it stopped,
        rollback reason or ""); `stop` goes to each training step (`Paused`)."""
        cfg, b = self.cfg, self.backend
        batch = [e.example for e in examples]
        main = examples[0]
        metrics: dict[str, float] = {}
        trust = math.isfinite(cfg.step_max_kl)
        full = "full_distribution" in b.capabilities
        steps = 0
        for i in range(cfg.steps_per_correction):
            if cfg.adaptive and all(e.agrees(b) for e in examples):
                return metrics, steps, "agrees", ""
            before = b.score(main.example.prompt_ids, main.example.completion_ids, full=full) if trust else None
            pre = b.snapshot() if trust else None
            result = b.train_step(batch, self.spec, lr=cfg.learning_rate, stop=stop)
            metrics = result.metrics
            if i == 0 and len(result.logp_T) == len(batch):  # π_old of later steps on the same samples
                batch = [dataclasses.replace(ex, old_logprobs=lp) for ex, lp in zip(batch, result.logp_T, strict=True)]
                for e, ex in zip(examples, batch, strict=True):
                    e.example = ex
            if not math.isfinite(metrics.get("loss", float("nan"))) or not result.stepped:
                why = "non-finite weights after the step" if metrics.get("nonfinite_weights") else \
                    "non-finite loss or gradient"
                return metrics, steps, "nonfinite", why
            if trust and before is not None and pre is not None:
                moved = _kl(before, b.score(main.example.prompt_ids, main.example.completion_ids, full=full))
                metrics["step_kl"] = moved
                if not (moved <= cfg.step_max_kl):
                    b.restore(pre)
                    return metrics, steps, "trust_region", ""
            steps += 1
        if cfg.adaptive and steps and all(e.agrees(b) for e in examples):
            return metrics, steps, "agrees", ""
        return metrics, steps, "max_steps", ""

    def _report(self, c: Correction, main: Example, after_T: torch.Tensor, metrics: dict[str, float],
                rolled_back: str, kl_after: float, secs: dict[str, float]) -> dict[str, Any]:
        ex = main.example
        teacher_T = ex.teacher.logprobs
        before = ex.old_logprobs if ex.old_logprobs is not None else after_T
        adv_T = advantage(teacher_T, before).float()
        shift_T = (after_T - before.to(after_T.device)).float()
        pos = adv_T > 0
        return {
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

    def undo(self) -> bool:
        """Revert the last learning update; False when there is nothing to undo."""
        if not self.undo_stack:
            return False
        self.backend.restore(self.undo_stack.pop())
        return True
