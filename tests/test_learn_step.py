"""Tests of continualcode.learn.step (the Learner) and learn.teacher, with the real embedded model.

The correction used throughout: the user asked "show me what is in notes.txt", the student's
completion is the `read` call on notes.txt (+ the stop token), and the user's correction says to read
notes.txt with the read tool, so the teacher (the same model with the correction as the last user
turn) prefers most of these tokens.  One step must raise the tokens the teacher prefers, report what
it did, and be undoable bit-identically; a non-finite loss or gradient, a KL to the base above
`max_kl` (whichever way the step moved, with or without a KL term in the loss) and an exception in
the middle of the steps roll back bit-identically; a saved adapter resumes exactly in a new process;
the EMA teacher moves at its rate.  teacher.py and the correction's journal record are pure and are
tested without the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import continualcode.learn.losses as losses
from continualcode.learn.step import Learner
from continualcode.learn.teacher import privileged_text, teacher_messages
from continualcode.learn.types import LearnConfig
from continualcode.rails import DENIAL
from continualcode.records import Correction, Message, Sample, ToolCall


def _one_prompt(**kw) -> LearnConfig:
    """A learn config that distils on the denied prompt alone (`distill_prompts=0`): these tests are about
    one step; the distillation prompts (the default, 3) have their own tests."""
    return LearnConfig(**{"distill_prompts": 0, **kw})


REPO = Path(__file__).resolve().parents[1]
CALL = ToolCall("read", {"path": "notes.txt"})
TASK = (Message("user", "show me what is in notes.txt"),)
CORRECTION_TEXT = "read notes.txt with the read tool"


@pytest.fixture(scope="module", autouse=True)
def _one_thread(one_thread):
    """This module's model work runs on one CPU thread (see conftest.one_thread)."""
    yield


METRIC_KEYS = {
    "loss", "pg_loss", "kl_loss", "kl_ref", "adv_mean", "adv_abs_mean", "adv_min", "adv_max", "adv_pos_frac",
    "ratio_mean", "student_entropy", "grad_norm", "stepped", "lr", "nonfinite",
    "sec_student_fwd", "sec_backward", "sec_optimizer", "sec_train",
    "sec_teacher", "sec_ref", "sec_step", "sec_after", "sec_total",
    "kind", "step", "correction", "rolled_back", "kl_after", "logp_shift_mean", "logp_shift_pos_adv",
    "logp_shift_neg_adv", "seq_logp_before", "seq_logp_after", "tokens", "student_lp", "teacher_lp", "advantage",
}  # fmt: skip


@pytest.fixture(scope="module")
def correction(backend, renderer) -> Correction:
    """A denial of the student's own `read notes.txt` call, with its own log-probs as the sample's."""
    prompt_ids = renderer.prompt_ids(TASK)
    tokens = [*renderer.tok.encode(CALL.to_text(), add_special_tokens=False), renderer.stop_ids[0]]
    logprobs = backend.score(prompt_ids, tokens).logprobs.tolist()
    return Correction(
        kind="deny", messages=TASK, prompt_ids=prompt_ids, sample=Sample(tokens, logprobs, "stop"),
        attempt_text=CALL.to_text(), text=CORRECTION_TEXT,
    )  # fmt: skip


def scores(b, c: Correction) -> torch.Tensor:
    """The completion's scores from scratch: bit-identical scores mean identical weights.

    The backend's KV prefix store may build the prompt's KV in two chunks (reusing a stored common
    prefix), which moves fp32 scores by up to ~1e-5 depending on what was stored before; dropping
    the store first makes `score` a pure function of the weights.
    """
    b.clear_cache()
    return b.score(c.prompt_ids, c.sample.tokens).logprobs


# ---------------------------------------------------------------------------------------------------
# One real step


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sampled_token", "topk"])
def test_a_step_raises_the_teacher_preferred_tokens_and_is_undoable(fresh_backend, renderer, correction, kind):
    b, c = fresh_backend, correction
    n = len(c.sample.tokens)
    before = scores(b, c)
    step0 = b.step
    learner = Learner(b, renderer, _one_prompt(distill_loss=kind, learning_rate=1e-3, carry_prefix=False))

    report = learner(c)

    assert report is not None and report["rolled_back"] == ""
    assert report.keys() >= METRIC_KEYS, METRIC_KEYS - report.keys()
    assert report["kind"] == "deny" and report["correction"] == CORRECTION_TEXT
    assert b.step == step0 + 1 and report["step"] == step0 + 1
    assert report["stepped"] == 1.0 and math.isfinite(report["loss"]) and report["lr"] == 1e-3
    for key in ("tokens", "student_lp", "teacher_lp", "advantage"):
        assert len(report[key]) == n, key
    assert "".join(report["tokens"]) == renderer.tok.decode(c.sample.tokens, skip_special_tokens=False)
    # the teacher context helps on this completion, and the step moved the preferred tokens up
    assert report["adv_pos_frac"] > 0
    assert report["logp_shift_pos_adv"] > 0
    assert report["student_lp"] == pytest.approx(before.tolist(), abs=1e-4)
    after = scores(b, c)
    assert report["seq_logp_after"] == pytest.approx(float(after.sum()), abs=1e-4)
    assert not torch.equal(after, before)
    json.dumps(report)  # the journal records it as it is

    assert learner.undo() is True
    assert torch.equal(scores(b, c), before)
    assert b.step == step0
    assert learner.undo() is False


@pytest.mark.slow
def test_the_retry_reuses_the_corrected_prompts_kv_from_before_the_update(fresh_backend, renderer, correction):
    """`carry_prefix` (the default): after the step, the guard's score of the denied completion, and the retry
    that extends its prompt, run no prompt token again; they see the prompt's KV from before the update (the
    prefix the step itself was taken on), and they keep part of the update's shift of the completion, the part
    that acts through the completion's own positions: here 43% (99% with the teacher's words before 2026-12-07); on
    the 1.5B model, for the three corrections of a user trial, 47%, 103% and 102% (26%, 99%, 93% before).  A
    prompt that shares only part of it runs from scratch, exactly under the new weights."""
    b, c = fresh_backend, correction
    before = scores(b, c)
    ran: list[int] = []
    hook = b.model.register_forward_pre_hook(lambda m, args, kw: ran.append(kw["input_ids"].shape[1]),
                                             with_kwargs=True)
    learner = Learner(b, renderer, _one_prompt(learning_rate=1e-3))
    original = b.train_step

    def step(*args, **kw):  # what runs after the step is what the retry waits for
        result = original(*args, **kw)
        ran.clear()
        return result

    b.train_step = step
    try:
        report = learner(c)
        after_check = list(ran)
        ran.clear()
        retry = [*c.prompt_ids, *c.sample.tokens]
        b.score(retry, c.sample.tokens[:2])
        assert ran == [2], ran  # the completion's last token and the retry's first: no prompt token again
        b.sample(retry, max_tokens=2, temperature=0.0)  # the retry's sample stores its KV still marked stale
        assert b._kv.entries["live"].stale >= len(c.prompt_ids) - 1
        part = c.prompt_ids[: len(c.prompt_ids) // 2]
        assert torch.allclose(b.score(part, c.sample.tokens).logprobs, exact_scores(b, part, c.sample.tokens),
                              atol=1e-4, rtol=0)
    finally:
        hook.remove()
        b.train_step = original
    assert report["rolled_back"] == "" and sum(after_check) == len(c.sample.tokens), after_check
    exact_after = scores(b, c)
    shift, kept = float(exact_after.sum() - before.sum()), report["seq_logp_after"] - float(before.sum())
    assert shift > 0.1 and 0.25 * shift < kept < 1.25 * shift, (shift, kept)


def exact_scores(b, prompt, completion) -> torch.Tensor:
    b.clear_cache()
    return b.score(prompt, completion).logprobs


# ---------------------------------------------------------------------------------------------------
# Guards: non-finite loss or gradient, KL to the base


@pytest.mark.slow
def test_a_nan_loss_is_rolled_back_bit_identically(fresh_backend, renderer, correction, monkeypatch):
    b, c = fresh_backend, correction
    real = losses.sdpo_loss

    def nan_loss(*args, **kwargs):
        out = real(*args, **kwargs)
        return losses.LossOut(loss=out.loss * float("nan"), metrics=out.metrics, advantage_T=out.advantage_T)

    monkeypatch.setattr(losses, "sdpo_loss", nan_loss)
    before, step0 = scores(b, c), b.step
    learner = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3))

    report = learner(c)

    assert report["rolled_back"] and "non-finite" in report["rolled_back"]
    assert math.isnan(report["loss"]) and report["stepped"] == 0.0 and report["nonfinite"] == 1.0
    assert b.step == step0 and report["step"] == step0
    assert torch.equal(scores(b, c), before)
    assert learner.undo() is False  # a rolled-back step is not on the undo stack


@pytest.mark.slow
def test_a_nan_gradient_is_rolled_back_bit_identically(fresh_backend, renderer, correction):
    b, c = fresh_backend, correction
    before, step0 = scores(b, c), b.step
    param = next(p for n, p in b.model.named_parameters() if "lora_B" in n)
    hook = param.register_hook(lambda g: torch.full_like(g, float("nan")))
    try:
        report = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3))(c)
    finally:
        hook.remove()

    assert report["rolled_back"] and report["stepped"] == 0.0
    assert math.isfinite(report["loss"]) and math.isnan(report["grad_norm"])
    assert b.step == step0
    assert torch.equal(scores(b, c), before)
    assert all(p.grad is None for p in b.params)


@pytest.mark.slow
def test_a_kl_above_max_kl_is_rolled_back(fresh_backend, renderer, correction):
    b, c = fresh_backend, correction
    before, step0 = scores(b, c), b.step
    learner = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3, max_kl=-1.0))

    report = learner(c)

    assert report["rolled_back"].startswith("KL to the base") and "max_kl -1.0" in report["rolled_back"]
    assert report["stepped"] == 1.0  # the step was taken, then undone
    assert b.step == step0
    assert torch.equal(scores(b, c), before)
    assert learner.undo() is False


@pytest.mark.slow
@pytest.mark.parametrize("kl_beta", [0.04, 0.0])
def test_max_kl_zero_rolls_back_any_step(fresh_backend, renderer, correction, kl_beta):
    """KL(π_θ‖π_base) ≥ 0, and > 0 once a step changed the weights: max_kl=0 must roll back every step.

    Both directions count: the step here lowers the completion's mean log-prob (the tokens with
    negative advantage go down), which is drift from the base as much as raising it; and kl_beta=0
    (no KL term in the loss) must not switch the guard off.
    """
    b, c = fresh_backend, correction
    before, step0 = scores(b, c), b.step
    cfg = _one_prompt(distill_loss="sampled_token", learning_rate=1e-3, kl_beta=kl_beta, max_kl=0.0)

    report = Learner(b, renderer, cfg)(c)

    assert report["stepped"] == 1.0 and report["logp_shift_mean"] != 0.0  # the step did move the weights
    assert report["kl_after"] > 0.0
    assert report["rolled_back"].startswith("KL to the base"), report["kl_after"]
    assert b.step == step0 and torch.equal(scores(b, c), before)


@pytest.mark.slow
def test_an_exception_mid_step_restores_the_adapter(fresh_backend, renderer, correction, monkeypatch):
    """Two steps per correction; the second raises after the first changed the weights."""
    from continualcode.learn.step import StepError

    b, c = fresh_backend, correction
    before, step0 = scores(b, c), b.step
    real, calls = losses.sdpo_loss, []

    def fails_the_second_time(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("injected failure")
        return real(*args, **kwargs)

    monkeypatch.setattr(losses, "sdpo_loss", fails_the_second_time)
    learner = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3,
                                               steps_per_correction=2))  # fmt: skip
    with pytest.raises(StepError, match="rolled back: ValueError: injected failure"):
        learner(c)
    assert len(calls) == 2
    assert b.step == step0
    assert torch.equal(scores(b, c), before)
    assert learner.undo() is False


# ---------------------------------------------------------------------------------------------------
# Checkpoint → a new process

RESUME = r"""
import json, sys
from pathlib import Path
from continualcode.backends.local import LocalBackend

cache, ckpt, dtype, data = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
b = LocalBackend("smollm2-135m", dtype=dtype, cache=Path(cache), seed=99, warmup=False, threads=data["threads"])
b.load(Path(ckpt))
lp = b.score(data["prompt"], data["completion"]).logprobs.tolist()
print("RESULT " + json.dumps({"step": b.step, "logprobs": lp, "ema": b.ema is not None}))
"""


@pytest.mark.slow
def test_a_saved_adapter_resumes_exactly_in_a_new_process(fresh_backend, renderer, correction, cache_dir, tmp_path):
    b, c = fresh_backend, correction
    report = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3))(c)
    assert report["rolled_back"] == ""
    ckpt = tmp_path / "adapter"
    b.save(ckpt)
    here = scores(b, c)

    dtype = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[b.dtype]
    data = json.dumps({"prompt": c.prompt_ids, "completion": c.sample.tokens, "threads": torch.get_num_threads()})
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run(
        [sys.executable, "-c", RESUME, str(cache_dir), str(ckpt), dtype, data],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1].removeprefix("RESULT "))
    assert out["step"] == b.step and out["ema"] is False
    assert torch.equal(torch.tensor(out["logprobs"], dtype=torch.float32), here)


# ---------------------------------------------------------------------------------------------------
# EMA teacher


@pytest.mark.slow
def test_the_ema_teacher_moves_at_its_rate(fresh_backend, renderer, correction):
    b, c = fresh_backend, correction
    rate = 0.25
    assert b.ema is None
    old = {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}
    learner = Learner(b, renderer, _one_prompt(distill_loss="sampled_token", learning_rate=1e-3, teacher="ema",
                                               ema_rate=rate))  # fmt: skip

    report = learner(c)

    assert report["rolled_back"] == ""
    assert b.ema is not None
    new = {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}
    assert b.ema.keys() == new.keys()
    moved = [k for k in new if not torch.equal(new[k], old[k])]
    assert moved, "the step changed no LoRA weight"
    for k in moved[:4]:
        assert torch.allclose(b.ema[k], (1 - rate) * old[k] + rate * new[k], atol=1e-7, rtol=1e-6), k
        assert not torch.equal(b.ema[k], new[k])
    # the EMA teacher scores with its own weights, and leaves the live adapter as it was
    ema_lp = b.score(c.prompt_ids, c.sample.tokens, adapter="ema").logprobs
    assert not torch.equal(ema_lp, scores(b, c))
    assert all(torch.equal(p, new[n]) for n, p in b.model.named_parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------------
# teacher.py and the correction's record (no model)


def plain_correction(**kw) -> Correction:
    base = dict(
        kind="deny", messages=(Message("system", "be brief"), *TASK), prompt_ids=[1, 2, 3],
        sample=Sample([5, 6, 2], [-0.5, -1.25, -0.125], "stop"), attempt_text=CALL.to_text(), text=CORRECTION_TEXT,
    )  # fmt: skip
    return Correction(**{**base, **kw})


def test_the_correction_is_the_last_user_message():
    c = plain_correction()
    msgs = teacher_messages(c)
    assert msgs[: len(c.messages)] == list(c.messages)
    assert len(msgs) == len(c.messages) + 1
    assert msgs[-1].role == "user"
    assert f"Do this instead: {CORRECTION_TEXT}" in msgs[-1].content  # the retry's words (rails.DENIAL)
    assert all(m.role != "assistant" for m in msgs)  # the attempt is not shown by default
    assert "applied" not in msgs[-1].content  # "with this correction applied" read as a change to make


def test_the_teacher_turn_closes_with_the_task_it_serves():
    """As the retry's denial does (records.TASK_REMINDER): the task is the conversation's last user message that is
    not an error or a denial; a context with no task adds nothing."""
    c = plain_correction()
    task = next(m.content for m in reversed(c.messages) if m.role == "user")
    assert privileged_text(c).endswith(f"(The task: {task})")
    denied = Message("user", DENIAL.format(fix="x"))  # the retry's denial: not the task
    later = plain_correction(messages=(*c.messages, denied))
    assert privileged_text(later).endswith(f"(The task: {task})")
    assert "(The task:" not in privileged_text(plain_correction(messages=(Message("system", "s"),)))


def test_sees_attempt_inserts_the_attempt_before_the_correction():
    c = plain_correction()
    msgs = teacher_messages(c, sees_attempt=True)
    assert msgs[: len(c.messages)] == list(c.messages)
    assert msgs[-2] == Message("assistant", CALL.to_text())
    assert msgs[-1].role == "user" and CORRECTION_TEXT in msgs[-1].content


def test_feedback_and_demonstration_are_in_the_privileged_text():
    demo = ToolCall("read", {"path": "docs/notes.txt"}).to_text()
    c = plain_correction(feedback=("notes live in docs/", "use relative paths"), demonstration=demo)
    text = teacher_messages(c)[-1].content
    assert text == privileged_text(c)
    assert "- notes live in docs/" in text and "- use relative paths" in text
    assert f"A correct reply is:\n{demo}" in text
    assert text.index("notes live in docs/") < text.index(CORRECTION_TEXT) < text.index(demo)
    assert demo not in privileged_text(c, with_demonstration=False)
    assert "Notes from the user" not in privileged_text(plain_correction())


def test_teacher_context_renders_the_correction_last(renderer):
    c = plain_correction()
    text = renderer.prompt_text(teacher_messages(c))
    task = "show me what is in notes.txt"
    assert text.find(task) < text.rfind(CORRECTION_TEXT) < text.rfind(f"(The task: {task})")  # the last user turn
    assert text.rstrip().endswith("assistant")  # the generation prompt follows the correction


def test_a_correction_round_trips_through_its_json_record():
    c = plain_correction(
        kind="edit", feedback=("a", "b"), demonstration=CALL.to_text(),
        messages=(*TASK, Message("assistant", CALL.to_text()), Message("tool", "hello", meta={"tool": "read"})),
    )  # fmt: skip
    d = json.loads(json.dumps(c.to_dict()))
    back = Correction.from_dict(d)
    assert back == c
    assert [m.meta for m in back.messages] == [m.meta for m in c.messages]  # meta is not part of ==
    assert isinstance(back.feedback, tuple) and isinstance(back.messages, tuple)
    assert back.sample.logprobs == c.sample.logprobs and back.sample.finish_reason == "stop"
    assert back.to_dict() == d


# ---------------------------------------------------------------------------------------------------
# Adaptive steps, the per-step trust region, distillation prompts


def _lora(b) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in b.model.named_parameters() if p.requires_grad}


@pytest.mark.slow
def test_adaptive_steps_stop_once_the_student_agrees_at_the_decision(fresh_backend, renderer, correction):
    from continualcode.learn.examples import build_examples

    b = fresh_backend
    cfg = _one_prompt(distill_loss="topk", learning_rate=2e-3, adaptive=True, steps_per_correction=6, max_kl=10.0)
    (main,), _ = build_examples(b, renderer, cfg, correction)
    report = Learner(b, renderer, cfg)(correction)
    assert report is not None and not report["rolled_back"]
    assert report["stop"] in ("agrees", "max_steps") and 0 < report["steps_taken"] <= 6
    assert b.step == report["steps_taken"]
    if main.decision is None:  # teacher and student already agreed: no step is needed
        assert report["stop"] == "agrees"
    elif report["stop"] == "agrees":
        top = b.score(correction.prompt_ids, correction.sample.tokens, topk=1).topk_ids
        assert int(top[main.decision, 0]) == main.teacher_token
    else:
        assert report["steps_taken"] == 6


@pytest.mark.slow
def test_a_step_beyond_the_trust_region_is_undone(fresh_backend, renderer, correction):
    b = fresh_backend
    before, step = _lora(b), b.step
    report = Learner(b, renderer, _one_prompt(distill_loss="topk", learning_rate=1e-3, step_max_kl=1e-12,
                                              steps_per_correction=3))(correction)
    assert report is not None and report["stop"] == "trust_region" and report["steps_taken"] == 0
    assert report["step_kl"] > 1e-12
    assert b.step == step and all(torch.equal(v, _lora(b)[k]) for k, v in before.items())


@pytest.fixture
def batch_sizes(fresh_backend, monkeypatch) -> list[int]:
    """The batch size of every `train_step` the shared backend takes in the test, in order (a paused one is not
    taken: it is not listed)."""
    seen: list[int] = []
    real = fresh_backend.train_step

    def spy(batch, spec, *, lr, stop=None):
        result = real(batch, spec, lr=lr, stop=stop)
        seen.append(len(batch))
        return result

    monkeypatch.setattr(fresh_backend, "train_step", spy)
    return seen


@pytest.mark.slow
def test_distillation_prompts_join_the_batch(fresh_backend, renderer, correction, batch_sizes):
    b, seen = fresh_backend, batch_sizes
    earlier = ["show me what is in todo.txt", "what does setup.py contain?", "list the python files"]
    asked: list[Correction] = []
    learner = Learner(b, renderer, LearnConfig(distill_loss="topk", learning_rate=1e-3, distill_prompts=2,
                                               distill_deferred=False),
                      prompts=lambda c: asked.append(c) or earlier)
    report = learner(correction)
    assert report is not None and report["distill_examples"] == 2 and seen == [3]
    assert asked == [correction]
    assert report["sec_distill"] > 0
    assert not learner.pending and learner.settle() == []


@pytest.mark.slow
def test_deferred_distillation_replaces_the_interim_update_with_the_undeferred_one(
        fresh_backend, renderer, correction, batch_sizes, monkeypatch):
    """`distill_deferred` (the default): the correction's interim update uses the denied call alone (what the
    retry waits for); `settle` goes back to the weights before it and takes the update the undeferred path
    takes (the denied call and the distillation examples, from the same start): the same weights at the
    end, one undo entry, and `settle` does it once."""
    b, seen = fresh_backend, batch_sizes
    earlier = ["show me what is in todo.txt", "what does setup.py contain?"]
    for name in ("score", "sample"):  # every forward cold: a stored prefix is reused in other chunks on one path
        real = getattr(b, name)  # than on the other, which rounds otherwise under some kernels (AMX bf16)
        monkeypatch.setattr(b, name, lambda *a, _real=real, **k: (b.clear_cache(), _real(*a, **k))[1])
    on_policy: list[list[bool]] = []  # per step, which examples take π_old from the step's own forward
    step = b.train_step
    monkeypatch.setattr(b, "train_step", lambda batch, spec, *, lr, stop=None: (
        on_policy.append([e.old_logprobs is None for e in batch]), step(batch, spec, lr=lr, stop=stop))[1])
    start, step0 = b.snapshot(), b.step

    def learner(deferred: bool, asked: list[Correction]) -> Learner:
        return Learner(b, renderer, LearnConfig(distill_loss="topk", learning_rate=1e-3, distill_prompts=2,
                                                distill_deferred=deferred),
                       prompts=lambda c: asked.append(c) or earlier)

    undeferred = learner(False, [])
    undeferred(correction)
    want = _lora(b)
    b.restore(start)
    b.clear_cache()
    seen.clear()
    asked: list[Correction] = []
    deferred = learner(True, asked)
    first = deferred(correction)
    assert first is not None and first["distill_examples"] == 0 and seen == [1] and asked == []
    assert [p.correction for p in deferred.pending] == [correction] and b.step == step0 + 1
    interim = _lora(b)
    reports = deferred.settle()
    assert seen == [1, 3] and asked == [correction] and not deferred.pending
    assert on_policy == [[True] * 3, [True], [True] * 3]  # the settled batch is the undeferred one, as built
    assert len(reports) == 1 and reports[0]["deferred"] and reports[0]["distill_examples"] == 2
    assert b.step == step0 + 1 and len(deferred.undo_stack) == 1
    now = _lora(b)
    assert all(torch.allclose(now[k], want[k], atol=1e-6) for k in want)
    assert any(not torch.allclose(now[k], interim[k], atol=1e-6) for k in want)
    assert deferred.settle() == [] and seen == [1, 3]
    assert deferred.undo() and all(torch.equal(v, _lora(b)[k]) for k, v in start.state["lora"].items())


@pytest.mark.slow
def test_a_paused_settle_keeps_the_interim_update_and_the_work_pending(fresh_backend, renderer, correction,
                                                                        batch_sizes):
    """The app pauses the deferred job when the user types the next task (settle.py): asked to stop before
    any update, `settle` gives the interim weights and their undo entry back and keeps the correction pending;
    a later `settle` does the whole update."""
    b, seen = fresh_backend, batch_sizes
    learner = Learner(b, renderer, LearnConfig(distill_loss="topk", learning_rate=1e-3, distill_prompts=2),
                      prompts=lambda c: ["show me what is in todo.txt"])
    learner(correction)
    interim, undo = _lora(b), len(learner.undo_stack)
    assert learner.settle(stop=lambda: True) == []  # at once
    asks = iter([False, False])  # after the paraphrases and the first distillation sample
    assert learner.settle(stop=lambda: next(asks, True)) == []
    assert [p.correction for p in learner.pending] == [correction] and len(learner.undo_stack) == undo
    assert seen == [1] and all(torch.equal(v, _lora(b)[k]) for k, v in interim.items())
    reports = learner.settle(stop=lambda: False)
    assert len(reports) == 1 and reports[0]["distill_examples"] == 2 and seen == [1, 3] and not learner.pending
    assert len(learner.undo_stack) == undo and any(not torch.equal(v, _lora(b)[k]) for k, v in interim.items())


@pytest.mark.slow
def test_a_settle_paused_after_an_update_takes_the_rest_as_interim_updates_and_keeps_them_pending(
        fresh_backend, renderer, correction, batch_sizes):
    """Two corrections in a task; the user types the next task while the first one's distilled update runs (a
    user trial on isodate waited ~110 s for both): that update ends, the second correction's distillation
    stops before its first sample, its interim update is taken again from the weights now (its denied call
    alone) and it stays pending with that update on the undo stack; a later `settle` distills it."""
    b, seen = fresh_backend, batch_sizes
    learner = Learner(b, renderer, LearnConfig(distill_loss="topk", learning_rate=1e-3, distill_prompts=1),
                      prompts=lambda c: ["show me what is in todo.txt"])
    second = dataclasses.replace(correction, text="open notes.txt with the read tool, never with bash")
    learner(correction)
    learner(second)
    assert seen == [1, 1] and len(learner.pending) == 2 and len(learner.undo_stack) == 2
    reports = learner.settle(stop=lambda: len(seen) > 2)  # true once the first correction's update is taken
    assert seen == [1, 1, 2, 1]  # its batch (denied call + one prompt), then the second's denied call alone
    assert [r.get("deferred", False) for r in reports] == [True, False] and reports[1]["interim"]
    assert reports[1]["correction"] == second.text and reports[1]["distill_examples"] == 0
    assert [p.correction for p in learner.pending] == [second] and len(learner.undo_stack) == 2
    paused_at = _lora(b)
    before = learner.pending[0].before.state["lora"]  # the weights after the first correction's update
    assert any(not torch.equal(before[k], v) for k, v in paused_at.items())  # the interim update moved them
    reports = learner.settle(stop=lambda: False)
    assert len(reports) == 1 and reports[0]["deferred"] and reports[0]["correction"] == second.text
    assert seen == [1, 1, 2, 1, 2] and not learner.pending and len(learner.undo_stack) == 2
    assert any(not torch.equal(v, _lora(b)[k]) for k, v in paused_at.items())


@pytest.mark.slow
def test_a_training_step_asked_to_stop_raises_paused_and_changes_nothing(fresh_backend, renderer, correction):
    """`stop` is asked before each example's forward and before the optimizer step: true at any of them, the
    step raises `Paused` with the adapter, the optimizer's state and the step count as they were."""
    from continualcode.learn.examples import build_examples
    from continualcode.learn.types import Paused

    b = fresh_backend
    cfg = _one_prompt(distill_loss="topk")
    (main,), _ = build_examples(b, renderer, cfg, correction)
    batch, spec = [main.example, main.example], cfg.spec()
    before, step, state = _lora(b), b.step, len(b.adapter.optimizer.state)
    for true_at in (1, 2, 3):  # before the first example, before the second, before the optimizer step
        asked: list[int] = []
        with pytest.raises(Paused):
            b.train_step(batch, spec, lr=1e-2, stop=lambda: asked.append(1) or len(asked) >= true_at)  # noqa: B023
        assert len(asked) == true_at and b.step == step and len(b.adapter.optimizer.state) == state
        assert all(torch.equal(v, _lora(b)[k]) for k, v in before.items())
        assert all(p.grad is None for p in b.adapter.params)
    result = b.train_step(batch, spec, lr=1e-2, stop=lambda: False)  # never true: the step is taken
    assert result.stepped and any(not torch.equal(v, _lora(b)[k]) for k, v in before.items())


@pytest.mark.slow
def test_a_settle_paused_in_the_training_step_keeps_the_interim_weights_and_the_correction_pending(
        fresh_backend, renderer, correction):
    """The user types the next task during a distilled update's forward and backward (a user trial on
    python-dotenv waited ~38 s for the rest of it and its guard): the step is dropped, the interim update comes
    back with its undo entry, the correction stays pending, and a later `settle` distills it."""
    b = fresh_backend
    learner = Learner(b, renderer, LearnConfig(distill_loss="topk", learning_rate=1e-3, distill_prompts=1),
                      prompts=lambda c: ["show me what is in todo.txt"])
    learner(correction)
    interim, steps = _lora(b), b.step
    real, stepping = b.train_step, [False]

    def step(batch, spec, *, lr, stop=None):
        stepping[0] = True  # the user types now, in the middle of the step
        return real(batch, spec, lr=lr, stop=stop)

    b.train_step = step  # type: ignore[method-assign]
    try:
        assert learner.settle(stop=lambda: stepping[0]) == []
    finally:
        del b.train_step
    assert stepping[0] and b.step == steps and len(learner.pending) == 1 and len(learner.undo_stack) == 1
    assert all(torch.equal(v, _lora(b)[k]) for k, v in interim.items())
    reports = learner.settle(stop=lambda: False)
    assert len(reports) == 1 and reports[0]["deferred"] and reports[0]["distill_examples"] == 1
    assert not learner.pending and len(learner.undo_stack) == 1 and b.step == steps  # it replaced the interim one
    assert any(not torch.equal(v, _lora(b)[k]) for k, v in interim.items())


def test_paraphrase_lines_are_cleaned_and_deduplicated():
    from continualcode.learn.prompts import parse_lines, task_of

    text = "1. add a docstring to utils.py\n- add a docstring to utils.py\n* rename foo to bar in app.py\nok\n" \
           "<tool_call>read</tool_call>\n2) Add a test for parse() in tests/test_parse.py\n"
    assert parse_lines(text, 5, exclude=("rename foo to bar in app.py",)) == [
        "add a docstring to utils.py", "Add a test for parse() in tests/test_parse.py"]
    assert parse_lines(text, 1) == ["add a docstring to utils.py"]
    msgs = (Message("user", "fix the bug"), Message("assistant", "<c>"), Message("tool", "out"),
            Message("user", "Denied. use grep"))
    assert task_of(msgs) == "fix the bug"


def test_scripted_model_paraphrases_never_copy_the_worked_example(renderer):
    """The 0.5B model's list for "run greet.py" (a hand check): two of its three lines were the worked
    example's own; `paraphrases` keeps only the line about the project's file (a scripted backend returns
    that reply)."""
    from continualcode.learn.prompts import paraphrases

    reply = (" Rename the function greet to greet_world in utils.py.\n"
             "2. Rename the variable n to count in stats.py.\n3. Rename the method run to start in server.py.")

    class Scripted:
        def sample(self, prompt, **kw):
            return Sample(renderer.tok.encode(reply, add_special_tokens=False), [], "stop")

    assert paraphrases(Scripted(), renderer, "run greet.py", 3) == [
        "Rename the function greet to greet_world in utils.py."]
