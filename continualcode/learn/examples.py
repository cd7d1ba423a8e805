"""The training examples of one correction: the denied completion, and distillation prompts beside it.

Each `Example` is a `TrainExample` (the student's prompt and its own completion, scored by the
teacher and by the frozen reference) plus the position where the correction decides: the first
completion position where the teacher's most likely token differs from the student's.  `agrees`
asks whether the student's most likely token there is now the teacher's (the adaptive stop rule).

The denied completion's teacher is the student's context plus the correction as the last user
turn (`teacher.teacher_messages`).  A distillation prompt (an earlier task of the project, or a
paraphrase the model wrote) gets the same treatment: the student samples a short completion for
it with no correction anywhere (on-policy, `distill_tokens` tokens: the decision is in the first
few), and its teacher is that prompt plus the same correction.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from continualcode.learn.prompts import paraphrases, task_of
from continualcode.learn.teacher import teacher_messages
from continualcode.learn.types import LearnConfig, Scores, TrainExample
from continualcode.records import Correction, Message


@dataclass
class Example:
    """One completion to learn on, and where its correction decides (None: teacher and student agree)."""

    example: TrainExample
    decision: int | None = None
    teacher_token: int | None = None

    def agrees(self, backend: Any) -> bool:
        """Whether the student's most likely token at the decision is now the teacher's."""
        if self.decision is None:
            return True
        ex = self.example
        top = backend.score(ex.prompt_ids, ex.completion_ids, topk=1).topk_ids
        return top is not None and int(top[self.decision, 0]) == self.teacher_token


def build_examples(backend: Any, renderer: Any, cfg: LearnConfig, c: Correction, *,
                   extra_prompts: Sequence[str] = (), distill: bool = True) -> tuple[list[Example], dict[str, float]]:
    """The denied completion's example, then (with `distill`) up to `cfg.distill_prompts` distillation
    examples (`distill_examples`), and the seconds each part took."""
    secs: dict[str, float] = {}
    main = _example(backend, renderer, cfg, c, secs)
    t1 = time.perf_counter()
    out = [main, *((distill_examples(backend, renderer, cfg, c, extra_prompts) or []) if distill else [])]
    secs["sec_distill"] = time.perf_counter() - t1
    return out, secs


def distill_examples(backend: Any, renderer: Any, cfg: LearnConfig, c: Correction,
                     extra_prompts: Sequence[str] = (), *,
                     stop: Callable[[], bool] | None = None) -> list[Example] | None:
    """Up to `cfg.distill_prompts` distillation examples for the correction `c`: the given prompts first,
    then paraphrases of its task the model writes.  None when `stop()` turned true before one of its samples
    (the background job pauses for the user's next task: settle.py)."""
    n = cfg.distill_prompts
    if n <= 0:
        return []
    stopped = stop or (lambda: False)
    prompts = [p for p in extra_prompts if p.strip()][:n]
    task = task_of(c.messages)
    if len(prompts) < n:
        if stopped():
            return None
        prompts += paraphrases(backend, renderer, task, n - len(prompts), seed=_seed(task, -1))
    out = []
    for i, p in enumerate(prompts[:n]):
        if stopped():
            return None
        ex = _distill_example(backend, renderer, cfg, c, p, seed=_seed(task, i))
        if ex is not None:
            out.append(ex)
    return out


def _example(backend: Any, renderer: Any, cfg: LearnConfig, c: Correction,
             secs: dict[str, float] | None = None) -> Example:
    """Teacher and reference scores of the student's own completion in `c`, and its decision point
    (`secs` gets sec_teacher and sec_ref)."""
    t0 = time.perf_counter()
    completion = list(c.sample.tokens)
    t_ids = renderer.prompt_ids(teacher_messages(c, sees_attempt=cfg.teacher_sees_attempt))
    adapter: bool | str = {"live": True, "ema": "ema", "frozen": False}[cfg.teacher]
    k = cfg.distill_topk if cfg.distill_loss == "topk" else (1 if cfg.adaptive else 0)
    teacher = backend.score(t_ids, completion, topk=k, full=cfg.distill_loss == "full", adapter=adapter)
    t1 = time.perf_counter()
    ref = None
    if cfg.kl_beta > 0 or cfg.max_kl < float("inf"):  # the reference also feeds the KL guard
        # full where the backend has it: the guard's KL is then exact, whatever the loss
        ref = backend.score(c.prompt_ids, completion, full="full_distribution" in backend.capabilities,
                            adapter=False)
    # π_old: on-policy in the step's own forward where the backend has one (exact in any dtype),
    # else the sampler's log-probs of the completion
    old = None if "on_policy_forward" in backend.capabilities else torch.tensor(c.sample.logprobs)
    ex = TrainExample(list(c.prompt_ids), completion, old_logprobs=old, teacher=teacher, ref=ref)
    decision, token = _decision(backend, ex, teacher) if cfg.adaptive else (None, None)
    if secs is not None:
        secs.update(sec_teacher=t1 - t0, sec_ref=time.perf_counter() - t1)
    return Example(ex, decision, token)


def _distill_example(backend: Any, renderer: Any, cfg: LearnConfig, c: Correction, prompt: str, *,
                     seed: int) -> Example | None:
    """A short on-policy sample for `prompt` with no correction in context, taught by the correction."""
    messages = (Message("user", prompt),)
    prompt_ids = renderer.prompt_ids(messages)
    sample = backend.sample(prompt_ids, max_tokens=cfg.distill_tokens, temperature=cfg.distill_temperature,
                            top_p=1.0, stop=renderer.stop_ids, constraint=renderer.constraint(allow_text=False),
                            seed=seed)
    if len(sample.tokens) < 2:
        return None
    synthetic = Correction("deny", messages, prompt_ids, sample, renderer.decode(sample.tokens), c.text, c.feedback)
    return _example(backend, renderer, cfg, synthetic)


def _decision(backend: Any, ex: TrainExample, teacher: Scores) -> tuple[int | None, int | None]:
    """The first position where the teacher's top token differs from the student's, and the teacher's."""
    t_top = _top1(teacher)
    s_top = _top1(backend.score(ex.prompt_ids, ex.completion_ids, topk=1))
    if t_top is None or s_top is None:
        return None, None
    differ = (t_top != s_top).nonzero()
    if differ.numel() == 0:
        return None, None
    t = int(differ[0, 0])
    return t, int(t_top[t])


def _top1(s: Scores) -> torch.Tensor | None:
    if s.topk_ids is not None:
        return s.topk_ids[:, 0].cpu()
    if s.full_logprobs is not None:
        return s.full_logprobs.argmax(-1).cpu()
    return None


def _seed(task: str, i: int) -> int:
    return zlib.crc32(f"{task}\x00{i}".encode()) & 0x7FFFFFFF
