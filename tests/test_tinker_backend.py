"""The Tinker backend without the network: the log-prob alignment, the datum layout, the loss mapping
(gradient-equal to the local sampled-token loss at ratio 1), and the client protocol against
`ScriptedTinkerClient`, a scripted stand-in for the service. One live test runs with TINKER_API_KEY."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from concurrent.futures import Future
from types import SimpleNamespace
from typing import Any

import pytest

tinker = pytest.importorskip("tinker")

import torch  # noqa: E402

from continualcode.backends.base import Backend, BackendError, CapabilityError  # noqa: E402
from continualcode.backends.tinker import MANIFEST, TinkerBackend  # noqa: E402
from continualcode.backends.tinker_data import (  # noqa: E402
    MASK_LOGPROB,
    TopkLoss,
    build_datum,
    build_topk_datum,
    completion_logprobs,
    completion_topk,
    tensor_of,
)
from continualcode.learn.losses import sampled_token_loss, sdpo_loss  # noqa: E402
from continualcode.learn.types import LossSpec, Scores, TrainExample  # noqa: E402


def importance_sampling_loss_local(datum: Any, new_logprobs: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """What the service computes for one datum: −Σ_j exp(new_j − old_j)·adv_j over its N targets.

    `new_logprobs` [N] are the learner's log-probs of `target_tokens` (the service's forward).
    The ratio is NOT clamped or clipped on the service (unlike the local backend's clamp of the
    detached ratio); at the first step after sampling new == old, the ratio is 1 and both agree.
    Returns a 0-dim tensor, differentiable in `new_logprobs` when that is a tensor with grad.
    """
    new_N = torch.as_tensor(new_logprobs)
    if not new_N.is_floating_point():
        new_N = new_N.double()
    old_N = tensor_of(datum.loss_fn_inputs["logprobs"]).to(new_N.dtype)
    adv_N = tensor_of(datum.loss_fn_inputs["advantages"]).to(new_N.dtype)
    if new_N.shape != old_N.shape:
        raise ValueError(f"{tuple(new_N.shape)} new log-probs for {tuple(old_N.shape)} targets")
    return -(torch.exp(new_N - old_N) * adv_N).sum()


# ---------------------------------------------------------------------------------------------------
# Alignment


def test_completion_logprobs_takes_the_completion_positions():
    # prompt [1, 2, 3], completion [4, 5]: entry i is log π(x_i | x_<i), None at position 0
    a, b, c, d = -0.1, -0.2, -0.3, -0.4
    assert completion_logprobs([None, a, b, c, d], 3, 2) == [c, d]


def test_completion_logprobs_with_suffix_only_scoring():
    # prompt_logprobs_last_n=T leaves the prompt positions None
    assert completion_logprobs([None, None, None, -0.3, -0.4], 3, 2) == [-0.3, -0.4]


def test_completion_logprobs_means_the_same_token_as_a_hand_model():
    """A bigram 'service': entry i = log p(x_i | x_{i-1}). The slice must give each completion token's
    own log-prob; an off-by-one would give its neighbour's."""
    table = torch.log_softmax(torch.randn(10, 10, generator=torch.Generator().manual_seed(0)), dim=-1)
    prompt, completion = [1, 7, 3], [4, 9, 2]
    seq = prompt + completion
    service = [None] + [float(table[seq[i - 1], seq[i]]) for i in range(1, len(seq))]
    expected = [float(table[seq[len(prompt) + t - 1], tok]) for t, tok in enumerate(completion)]
    assert completion_logprobs(service, len(prompt), len(completion)) == expected


@pytest.mark.parametrize(
    ("all_lp", "n_prompt", "n_completion"),
    [
        ([None, -0.1, -0.2, -0.3], 3, 2),  # one short
        ([None, -0.1, -0.2, -0.3, -0.4, -0.5], 3, 2),  # one long
        ([None, -0.1, -0.2, None, -0.4], 3, 2),  # a completion position unscored
        ([-0.1, -0.2], 0, 2),  # no prompt
    ],
)
def test_completion_logprobs_rejects_misfits(all_lp, n_prompt, n_completion):
    with pytest.raises(ValueError):
        completion_logprobs(all_lp, n_prompt, n_completion)


# ---------------------------------------------------------------------------------------------------
# The datum and the loss mapping

PROMPT = [11, 12, 13]
COMPLETION = [21, 22, 23, 24]
OLD = torch.tensor([-0.5, -1.25, -0.125, -2.0])
TEACHER = torch.tensor([-0.25, -2.0, -0.0625, -1.0])
REF = torch.tensor([-0.75, -1.0, -0.5, -2.5])


def _ints(td: Any) -> list[int]:
    return [int(x) for x in td.tolist()]


def test_build_datum_layout():
    beta, T = 0.04, len(COMPLETION)
    datum = build_datum(PROMPT, COMPLETION, OLD, TEACHER, REF, beta=beta, scale=1 / T)
    assert isinstance(datum, tinker.types.Datum)
    inputs = datum.loss_fn_inputs
    N = len(PROMPT) + T - 1
    assert datum.model_input.to_ints() == (PROMPT + COMPLETION)[:-1]
    assert _ints(inputs["target_tokens"]) == (PROMPT + COMPLETION)[1:]  # shifted by one
    assert {k: len(v.tolist()) for k, v in inputs.items()} == {
        "target_tokens": N,
        "logprobs": N,
        "advantages": N,
    }
    assert inputs["logprobs"].dtype == "float32" and inputs["advantages"].dtype == "float32"
    assert inputs["target_tokens"].dtype == "int64"
    lp, adv = torch.tensor(inputs["logprobs"].tolist()), torch.tensor(inputs["advantages"].tolist())
    P = len(PROMPT)
    assert torch.all(lp[: P - 1] == 0) and torch.all(adv[: P - 1] == 0)  # prompt targets carry nothing
    assert torch.equal(lp[P - 1 :], OLD)
    old, teacher, ref = OLD.double(), TEACHER.double(), REF.double()
    expected = ((teacher - old - beta * (old - ref)) / T).float()
    assert torch.equal(adv[P - 1 :], expected)
    # the completion's targets are exactly the completion tokens
    assert _ints(inputs["target_tokens"])[P - 1 :] == COMPLETION


def test_build_datum_without_ref_drops_the_kl_term():
    datum = build_datum(PROMPT, COMPLETION, OLD, TEACHER, None, beta=0.5, scale=0.25)
    adv = torch.tensor(datum.loss_fn_inputs["advantages"].tolist())
    assert torch.equal(adv[len(PROMPT) - 1 :], (0.25 * (TEACHER.double() - OLD.double())).float())


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(prompt_ids=[], completion_ids=COMPLETION),
        dict(prompt_ids=PROMPT, completion_ids=[]),
        dict(prompt_ids=PROMPT, completion_ids=COMPLETION[:-1]),  # 3 tokens, 4 log-probs
    ],
)
def test_build_datum_rejects_misfits(kwargs):
    with pytest.raises(ValueError):
        build_datum(old_lp=OLD, teacher_lp=TEACHER, ref_lp=REF, beta=0.04, scale=1.0, **kwargs)


def test_service_loss_at_ratio_one_is_minus_the_advantage_sum():
    datum = build_datum(PROMPT, COMPLETION, OLD, TEACHER, REF, beta=0.04, scale=0.25)
    new = torch.tensor(datum.loss_fn_inputs["logprobs"].tolist())
    adv = torch.tensor(datum.loss_fn_inputs["advantages"].tolist())
    assert float(importance_sampling_loss_local(datum, new)) == pytest.approx(float(-adv.sum()), abs=1e-7)


def _service_grad(
    examples: list[tuple[list[int], list[int], torch.Tensor, torch.Tensor, torch.Tensor, float]], beta: float
) -> list[torch.Tensor]:
    """d(Σ over datums of the service's loss)/d(completion log-probs), at new == old."""
    total_w = sum(w for *_, w in examples)
    grads, loss = [], torch.zeros((), dtype=torch.float64)
    for prompt, completion, old, teacher, ref, w in examples:
        datum = build_datum(
            prompt, completion, old, teacher, ref, beta=beta, scale=w / total_w / len(completion)
        )
        logp_T = old.double().clone().requires_grad_(True)
        new_N = torch.cat([torch.zeros(len(prompt) - 1, dtype=torch.float64), logp_T])
        loss = loss + importance_sampling_loss_local(datum, new_N)
        grads.append(logp_T)
    loss.backward()
    return [g.grad for g in grads]


def _local_grad(examples, beta: float, ratio_clamp=(0.5, 2.0)) -> list[torch.Tensor]:
    """The same for the local backend: Σ_i (w_i/Σw)·sampled_token_loss_i."""
    total_w = sum(w for *_, w in examples)
    leaves, loss = [], torch.zeros((), dtype=torch.float64)
    for _prompt, _completion, old, teacher, ref, w in examples:
        logp_T = old.double().clone().requires_grad_(True)
        out = sampled_token_loss(
            logp_T,
            old_logp_T=old.double(),
            teacher_logp_T=teacher.double(),
            ref_logp_T=ref.double(),
            beta=beta,
            ratio_clamp=ratio_clamp,
        )
        loss = loss + (w / total_w) * out.loss
        leaves.append(logp_T)
    loss.backward()
    return [g.grad for g in leaves]


@pytest.mark.parametrize("beta", [0.0, 0.04, 0.7])
def test_service_loss_gradient_equals_local_sampled_token_loss_at_ratio_one(beta):
    gen = torch.Generator().manual_seed(1)

    def lp(n: int) -> torch.Tensor:  # float32-representable log-probs, as they travel on the wire
        return -torch.rand(n, generator=gen).mul(3).float()

    examples = [
        (PROMPT, COMPLETION, OLD, TEACHER, REF, 1.0),
        ([5, 6], [7, 8, 9, 10, 11, 12], lp(6), lp(6), lp(6), 3.0),  # longer, heavier example
        ([1], [2], lp(1), lp(1), lp(1), 0.5),  # a one-token prompt and completion
    ]
    for g_service, g_local in zip(_service_grad(examples, beta), _local_grad(examples, beta), strict=True):
        torch.testing.assert_close(g_service, g_local, rtol=1e-6, atol=1e-8)


# ---------------------------------------------------------------------------------------------------
# Top-K distillation: the datum layout and the custom loss against the local loss


def _topk_case(seed: int, P: int = 4, T: int = 5, V: int = 23, K: int = 6):
    """A toy student (logits over prompt + completion), a teacher's top-K per completion token and a reference."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.randint(0, V, (P,), generator=g).tolist()
    completion = torch.randint(0, V, (T,), generator=g).tolist()
    logits_NV = torch.randn(P + T - 1, V, generator=g, dtype=torch.float64)  # row j predicts token j+1
    teacher_TV = torch.log_softmax(torch.randn(T, V, generator=g, dtype=torch.float64), -1)
    t_lp_TK, t_ids_TK = teacher_TV.topk(K, dim=-1)
    teacher = Scores(logprobs=teacher_TV.gather(1, torch.tensor(completion)[:, None]).squeeze(1),
                     topk_ids=t_ids_TK, topk_logprobs=t_lp_TK)
    ref_T = -torch.rand(T, generator=g, dtype=torch.float64) * 3
    return prompt, completion, logits_NV, teacher, ref_T


def _local_topk(prompt, completion, logits_NV, teacher, ref_T, *, alpha, beta):
    """The local backend's loss and its gradient w.r.t. the student's logits."""
    logits = logits_NV.clone().requires_grad_(True)
    P = len(prompt)
    student_TV = torch.log_softmax(logits, -1)[P - 1 :]  # the completion positions
    out = sdpo_loss(LossSpec(kind="topk", topk=teacher.topk_ids.shape[1], alpha=alpha, beta=beta),
                    student_logp_TV=student_TV, completion_ids=completion, old_logp_T=student_TV.detach().gather(
                        1, torch.tensor(completion)[:, None]).squeeze(1), teacher=teacher,
                    ref=Scores(logprobs=ref_T))
    out.loss.backward()
    return out.loss.detach(), logits.grad


def _tinker_topk(prompt, completion, logits_NV, teacher, ref_T, *, alpha, beta, shift: int = 0):
    """The Tinker mapping: a top-K datum, the student's log-probs at its target ids (what the service
    returns), TopkLoss, and the gradient w.r.t. the same logits. `shift` misaligns the rows (a bug)."""
    datum = build_topk_datum(prompt, completion, teacher.topk_ids, teacher.topk_logprobs, None, ref_T,
                             scale=1 / len(completion))
    logits = logits_NV.clone().requires_grad_(True)
    ids_NK1 = tensor_of(datum.loss_fn_inputs["target_tokens"]).long()
    assert ids_NK1.shape == (len(prompt) + len(completion) - 1, teacher.topk_ids.shape[1] + 1)
    ids_NK1 = torch.roll(ids_NK1, shift, dims=0)
    lp_NK1 = torch.log_softmax(logits, -1).gather(1, ids_NK1)
    loss, _ = TopkLoss(alpha=alpha, beta=beta)([datum], [lp_NK1])
    loss.backward()
    return loss.detach(), logits.grad


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_topk_datum_and_loss_equal_the_local_topk_loss(alpha, beta):
    for seed in range(3):
        case = _topk_case(seed)
        local_loss, local_grad = _local_topk(*case, alpha=alpha, beta=beta)
        tinker_loss, tinker_grad = _tinker_topk(*case, alpha=alpha, beta=beta)
        assert float(tinker_loss) == pytest.approx(float(local_loss), rel=1e-5, abs=1e-7)
        torch.testing.assert_close(tinker_grad, local_grad, rtol=1e-5, atol=1e-7)
        assert float(local_grad[: len(case[0]) - 1].abs().sum()) == 0.0  # prompt rows get no gradient


def test_topk_alignment_test_catches_an_off_by_one():
    case = _topk_case(0)
    local_loss, local_grad = _local_topk(*case, alpha=0.0, beta=0.04)
    for shift in (1, -1):
        loss, grad = _tinker_topk(*case, alpha=0.0, beta=0.04, shift=shift)
        assert not torch.allclose(grad, local_grad, atol=1e-4) or abs(float(loss - local_loss)) > 1e-4


def test_completion_topk_rows_padding_and_vocab():
    # prompt of 2 + completion of 2: rows 2 and 3 predict the completion tokens
    rows = [None, [(5, -0.1)], [(7, -0.2), (8, -1.0), (0, MASK_LOGPROB)], [(9, -0.3), (99, -0.4), (3, -2.0)]]
    ids, lp, mask = completion_topk(rows, 2, 2, 3, vocab_size=50)
    assert ids.tolist() == [[7, 8, 0], [9, 0, 3]]
    assert mask.tolist() == [[True, True, False], [True, False, True]]  # padding and id 99 ≥ vocab dropped
    assert lp[0, :2].tolist() == pytest.approx([-0.2, -1.0]) and lp[1, 2] == pytest.approx(-2.0)
    with pytest.raises(ValueError, match="no top-K"):
        completion_topk([None, None, None, rows[3]], 2, 2, 3)
    with pytest.raises(ValueError, match="rows"):
        completion_topk(rows[:3], 2, 2, 3)


def test_masked_cells_do_not_leak_into_the_student_tail():
    """A padded teacher cell (id 0) must not count the student's p(0) in its top-K mass."""
    case = _topk_case(1)
    prompt, completion, logits, teacher, ref = case
    mask = torch.ones_like(teacher.topk_ids, dtype=torch.bool)
    mask[:, -1] = False
    ids = teacher.topk_ids.clone()
    ids[:, -1] = 0
    datum = build_topk_datum(prompt, completion, ids, teacher.topk_logprobs, mask, None, scale=0.2)
    lp = torch.log_softmax(logits, -1).gather(1, tensor_of(datum.loss_fn_inputs["target_tokens"]).long())
    loss, _ = TopkLoss(alpha=0.0, beta=0.0)([datum], [lp])
    kept = Scores(logprobs=teacher.logprobs, topk_ids=teacher.topk_ids[:, :-1],
                  topk_logprobs=teacher.topk_logprobs[:, :-1])
    expected, _ = _local_topk(prompt, completion, logits, kept, ref, alpha=0.0, beta=0.0)
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)


# ---------------------------------------------------------------------------------------------------
# A scripted stand-in for the service


def _done(value: Any) -> Future:
    f: Future = Future()
    f.set_result(value)
    return f


def _lp(token: int, version: int) -> float:
    """The scripted model: a log-prob per token that moves with each weight version."""
    return -0.1 - 0.01 * (token % 13) - 0.001 * version


def _topk_row(previous: int, k: int) -> list[tuple[int, float]]:
    """The scripted teacher's top-K after `previous`: k ids that depend on it, descending log-probs;
    only 3 real pairs after token 13 (the service pads short rows with (0, MASK_LOGPROB))."""
    n = 3 if previous == 13 else k
    row = [((previous * 7 + j) % 50 + 1, -0.5 - j) for j in range(min(n, k))]
    return row + [(0, MASK_LOGPROB)] * (k - len(row))


class ScriptedSampler:
    """A sampling client of fixed weights (`version`; -1 is the frozen base)."""

    def __init__(self, version: int, tokens: list[int]) -> None:
        self.version, self.tokens, self.calls = version, tokens, []

    def sample(self, prompt, num_samples, sampling_params, include_prompt_logprobs=False, topk_prompt_logprobs=0,
               prompt_logprobs_last_n=None):
        ids = prompt.to_ints()
        self.calls.append(("sample", ids, sampling_params))
        # what a sampler reports: the tempered distribution's log-probs (so a rescore is detectable)
        temp = sampling_params.temperature or 1.0
        seq = SimpleNamespace(
            tokens=list(self.tokens),
            logprobs=[_lp(t, self.version) / temp for t in self.tokens],
            stop_reason="length",
        )
        resp = SimpleNamespace(sequences=[seq], prompt_logprobs=None, topk_prompt_logprobs=None)
        first = 1 if prompt_logprobs_last_n is None else len(ids) - prompt_logprobs_last_n
        if include_prompt_logprobs:
            resp.prompt_logprobs = [None if i < first else _lp(t, self.version) for i, t in enumerate(ids)]
        if topk_prompt_logprobs:
            resp.topk_prompt_logprobs = [None if i < first else _topk_row(ids[i - 1], topk_prompt_logprobs)
                                         for i in range(len(ids))]
        return _done(resp)

    def compute_logprobs(self, prompt, prompt_logprobs_last_n=None):
        ids = prompt.to_ints()
        self.calls.append(("compute_logprobs", ids, prompt_logprobs_last_n))
        out: list[float | None] = [None] + [_lp(t, self.version) for t in ids[1:]]
        if prompt_logprobs_last_n is not None:
            out[: len(ids) - prompt_logprobs_last_n] = [None] * (len(ids) - prompt_logprobs_last_n)
        return _done(out)


class ScriptedTraining:
    """A LoRA training client: counts weight versions, records every call in order."""

    def __init__(self, service: ScriptedTinkerClient, version: int = 0) -> None:
        self.service, self.version, self.calls = service, version, []

    def forward_backward(self, data, loss_fn):
        self.calls.append(("forward_backward", loss_fn, len(data)))
        if self.service.fail_forward_backward:
            raise RuntimeError(self.service.fail_forward_backward)
        self.service.last_data = data
        # the service's forward at new == old: the learner's log-probs are the sampler's
        outputs = [{"logprobs": d.loss_fn_inputs["logprobs"]} for d in data]
        loss = sum(
            float(importance_sampling_loss_local(d, torch.tensor(d.loss_fn_inputs["logprobs"].tolist())))
            for d in data
        )
        return _done(SimpleNamespace(metrics={"loss:sum": loss}, loss_fn_outputs=outputs))

    def forward_backward_custom(self, data, loss_fn):
        """The SDK's client-side path: the student's log-probs at every target id, the loss's gradient."""
        self.calls.append(("forward_backward_custom", type(loss_fn).__name__, len(data)))
        if self.service.fail_forward_backward:
            raise RuntimeError(self.service.fail_forward_backward)
        self.service.last_data = data
        lps = [tensor_of(d.loss_fn_inputs["target_tokens"]).double().apply_(lambda t: _lp(int(t), self.version))
               .requires_grad_(True) for d in data]
        loss, metrics = loss_fn(data, lps)
        loss.backward()
        self.service.last_custom_grads = [lp.grad for lp in lps]
        sums = {"loss:sum": float(loss.detach()), **{f"{k}:sum": v for k, v in metrics.items()}}
        return _done(SimpleNamespace(metrics=sums, loss_fn_outputs=[]))

    def optim_step(self, params):
        self.calls.append(("optim_step", params.learning_rate))
        self.version += 1
        return _done(SimpleNamespace())

    def save_weights_and_get_sampling_client(self):
        self.calls.append(("save_weights_and_get_sampling_client", self.version))
        sampler = ScriptedSampler(self.version, self.service.tokens)
        self.service.samplers.append(sampler)
        return _done(sampler)

    def save_state(self, name, ttl_seconds=None):
        path = f"tinker://scripted-run/weights/{name}"
        self.calls.append(("save_state", name, ttl_seconds))
        self.service.checkpoints[path] = self.version
        return _done(SimpleNamespace(path=path))

    def get_tokenizer(self):
        return SimpleNamespace(eos_token_id=2)


class ScriptedTinkerClient:
    """A test double for the network: stands in for `tinker.ServiceClient`, with deterministic
    log-probs (`_lp`), scripted sampled tokens, and a record of every client it hands out."""

    def __init__(self, tokens: tuple[int, ...] = (30, 31, 2)) -> None:
        self.tokens = list(tokens)
        self.trainings: list[ScriptedTraining] = []
        self.samplers: list[ScriptedSampler] = []
        self.base_samplers: list[ScriptedSampler] = []
        self.checkpoints: dict[str, int] = {}
        self.fail_forward_backward = ""
        self.last_data: list[Any] = []
        self.last_custom_grads: list[torch.Tensor] = []

    def create_lora_training_client(self, base_model, rank=32, seed=None):
        self.lora_args = (base_model, rank, seed)
        self.trainings.append(ScriptedTraining(self))
        return _done(self.trainings[-1])

    def create_sampling_client(self, model_path=None, base_model=None):
        self.base_samplers.append(ScriptedSampler(-1, self.tokens))
        return _done(self.base_samplers[-1])

    def create_training_client_from_state_with_optimizer(self, path):
        self.trainings.append(ScriptedTraining(self, version=self.checkpoints[path]))
        return _done(self.trainings[-1])


def _example(weight: float = 1.0) -> TrainExample:
    return TrainExample(
        prompt_ids=PROMPT,
        completion_ids=COMPLETION,
        old_logprobs=OLD,
        teacher=Scores(logprobs=TEACHER),
        ref=Scores(logprobs=REF),
        weight=weight,
    )


@pytest.fixture
def service() -> ScriptedTinkerClient:
    return ScriptedTinkerClient()


@pytest.fixture
def backend(service) -> TinkerBackend:
    return TinkerBackend("Scripted/Model-1B", lora_rank=8, seed=3, service_client=service)


def test_is_a_backend(backend, service):
    assert backend.capabilities == frozenset({"snapshot", "topk_distribution"})
    assert backend.model_id == "Scripted/Model-1B" and backend.step == 0
    assert service.trainings == []  # nothing is created before it is needed
    # (on Python 3.11 isinstance against the Protocol reads the lazy `tokenizer` property)
    assert isinstance(backend, Backend)
    assert backend.tokenizer.eos_token_id == 2
    assert service.lora_args == ("Scripted/Model-1B", 8, 3)


def test_sample_and_score_agree(backend, service):
    s = backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    assert s.tokens == service.tokens and s.finish_reason == "length"
    sc = backend.score(PROMPT, s.tokens)
    torch.testing.assert_close(sc.logprobs, torch.tensor(s.logprobs, dtype=torch.float32))
    # scored with the suffix only, on the full sequence
    assert service.samplers[0].calls[-1] == ("compute_logprobs", PROMPT + s.tokens, len(s.tokens))


def test_tempered_samples_are_rescored_at_temperature_one(backend, service):
    s = backend.sample(PROMPT, max_tokens=3, temperature=0.5)
    assert s.logprobs == pytest.approx([_lp(t, 0) for t in service.tokens])


def test_stop_ids_keep_eos(backend, service):
    backend.sample(PROMPT, max_tokens=3, temperature=1.0, stop=[99])
    assert service.samplers[0].calls[0][2].stop == [2, 99]
    backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    assert service.samplers[0].calls[-1][2].stop is None  # the service's implicit EOS


def test_train_step_publishes_a_new_sampler(backend, service):
    backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    assert backend.sampler_version == 1
    old = service.samplers[0]
    n_old_calls = len(old.calls)

    metrics = backend.train_step([_example(1.0), _example(3.0)], LossSpec(beta=0.04), lr=2e-5).metrics

    training = service.trainings[0]
    assert [c[0] for c in training.calls] == [
        "save_weights_and_get_sampling_client",
        "forward_backward",
        "optim_step",
        "save_weights_and_get_sampling_client",
    ]
    assert training.calls[1] == ("forward_backward", "importance_sampling", 2)
    assert training.calls[2] == ("optim_step", 2e-5)
    assert backend.step == 1 and backend.sampler_version == 2
    new = service.samplers[-1]
    assert new.version == 1
    backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    sc = backend.score(PROMPT, COMPLETION)
    assert len(old.calls) == n_old_calls  # the stale sampler is never used again
    assert [c[0] for c in new.calls] == ["sample", "compute_logprobs"]
    assert sc.logprobs.tolist() == pytest.approx([_lp(t, 1) for t in COMPLETION])
    # the metrics: the service's loss is pg + kl at ratio 1, and the ratio is 1
    assert metrics["loss"] == pytest.approx(metrics["pg_loss"] + metrics["kl_loss"], abs=1e-6)
    assert metrics["ratio_mean"] == pytest.approx(1.0) and metrics["lp_mismatch"] == pytest.approx(0.0)
    assert metrics["tokens"] == 2 * len(COMPLETION) and metrics["sampler_version"] == 2
    assert metrics["adv_mean"] == pytest.approx(float((TEACHER - OLD).mean()))
    # the two examples' advantages carry their weights 1/4 and 3/4
    adv = [torch.tensor(d.loss_fn_inputs["advantages"].tolist()).sum() for d in service.last_data]
    assert float(adv[1] / adv[0]) == pytest.approx(3.0, rel=1e-6)


def test_a_failed_step_leaves_no_stale_sampler(backend, service):
    backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    service.fail_forward_backward = "503 Service Unavailable"
    with pytest.raises(BackendError, match="Tinker training step failed: RuntimeError: 503"):
        backend.train_step([_example()], LossSpec(), lr=1e-5)
    assert backend.step == 0
    backend.sample(PROMPT, max_tokens=3, temperature=1.0)
    assert len(service.samplers) == 2  # re-published from the training client, not the old one


def test_capability_errors(backend):
    with pytest.raises(CapabilityError, match="never a whole next-token distribution"):
        backend.score(PROMPT, COMPLETION, full=True)
    with pytest.raises(CapabilityError, match="at most 20 top-K"):
        backend.score(PROMPT, COMPLETION, topk=21)
    with pytest.raises(CapabilityError, match="weight-level"):
        backend.score(PROMPT, COMPLETION, adapter="ema")
    with pytest.raises(CapabilityError, match="distill_loss=full"):
        backend.train_step([_example()], LossSpec(kind="full"), lr=1e-5)


def test_topk_scores_come_from_the_completion_rows(backend, service):
    sc = backend.score(PROMPT, COMPLETION, topk=4)
    seq = PROMPT + COMPLETION
    for t in range(len(COMPLETION)):  # row P+t: the distribution after seq[P+t-1]
        expect = _topk_row(seq[len(PROMPT) + t - 1], 4)
        assert sc.topk_ids[t].tolist() == [i for i, _ in expect]
    assert sc.logprobs.tolist() == pytest.approx([_lp(t, 0) for t in COMPLETION])
    call = service.samplers[0].calls[-1]
    assert call[0] == "sample" and call[1] == seq and call[2].max_tokens == 1


def test_topk_train_step_runs_the_custom_loss_then_steps(backend, service):
    teacher = backend.score(PROMPT, COMPLETION, topk=4)
    ex = TrainExample(PROMPT, COMPLETION, old_logprobs=OLD, teacher=teacher, ref=Scores(logprobs=REF))
    result = backend.train_step([ex], LossSpec(kind="topk", topk=4, beta=0.04), lr=1e-5)
    training = service.trainings[0]
    assert [c[0] for c in training.calls][-3:] == ["forward_backward_custom", "optim_step",
                                                 "save_weights_and_get_sampling_client"]
    assert backend.step == 1 and result.stepped and result.metrics["loss"] > 0
    grad = service.last_custom_grads[0]  # only the completion rows carry a gradient
    assert grad.shape == (len(PROMPT) + len(COMPLETION) - 1, 5)
    assert float(grad[: len(PROMPT) - 1].abs().sum()) == 0.0 and float(grad[len(PROMPT) - 1 :].abs().sum()) > 0
    with pytest.raises(BackendError, match="top-8"):
        backend.train_step([ex], LossSpec(kind="topk", topk=8), lr=1e-5)


def test_the_learner_trains_topk_on_tinker(backend, service):
    from continualcode.learn.step import Learner
    from continualcode.learn.types import LearnConfig
    from continualcode.records import Correction, Message, Sample

    class Renderer:  # the learner needs the teacher's prompt ids and token pieces only
        def prompt_ids(self, messages):
            return [11, 12] + [14] * len(messages)

        def token_pieces(self, tokens):
            return [str(t) for t in tokens]

    c = Correction("deny", (Message("user", "task"),), PROMPT, Sample(COMPLETION, OLD.tolist(), "stop"),
                   "attempt", "use edit_lines")
    report = Learner(backend, Renderer(), LearnConfig(distill_loss="topk", distill_topk=4, max_kl=float("inf"),
                                                  distill_prompts=0))(c)
    assert report is not None and not report["rolled_back"] and backend.step == 1
    assert any(call[0] == "forward_backward_custom" for call in service.trainings[0].calls)


def test_the_frozen_base_has_one_cached_sampler(backend, service):
    a = backend.score(PROMPT, COMPLETION, adapter=False)
    backend.score(PROMPT, COMPLETION, adapter=False)
    assert len(service.base_samplers) == 1 and len(service.base_samplers[0].calls) == 2
    assert a.logprobs.tolist() == pytest.approx([_lp(t, -1) for t in COMPLETION])


def test_constraints_are_dropped_unless_strict(service):
    lenient = TinkerBackend("Scripted/Model-1B", service_client=service)
    assert lenient.sample(PROMPT, max_tokens=3, temperature=1.0, constraint=object()).tokens
    strict = TinkerBackend("Scripted/Model-1B", service_client=service, strict_constraints=True)
    with pytest.raises(CapabilityError, match="grammar"):
        strict.sample(PROMPT, max_tokens=3, temperature=1.0, constraint=object())


def test_missing_api_key(monkeypatch):
    monkeypatch.delenv("TINKER_API_KEY", raising=False)
    with pytest.raises(BackendError) as err:
        TinkerBackend("Qwen/Qwen3-30B-A3B-Instruct-2507")
    assert str(err.value) == "TINKER_API_KEY is not set: export it, or use backend=local"


def test_the_key_never_shows(monkeypatch, backend, service):
    key = "tml-SECRET-0123456789abcdef"
    monkeypatch.setenv("TINKER_API_KEY", key)
    assert key not in repr(backend)
    service.fail_forward_backward = f"401 Unauthorized: bad key {key}"
    with pytest.raises(BackendError) as err:
        backend.train_step([_example()], LossSpec(), lr=1e-5)
    assert key not in str(err.value) and "***" in str(err.value)


def test_save_and_load_through_the_manifest(backend, service, tmp_path):
    backend.train_step([_example()], LossSpec(), lr=1e-5)
    backend.save(tmp_path / "ckpt")
    manifest = json.loads((tmp_path / "ckpt" / MANIFEST).read_text())
    assert manifest["tinker_path"].startswith("tinker://") and manifest["step"] == 1
    assert manifest["model_name"] == "Scripted/Model-1B"
    assert [p.name for p in (tmp_path / "ckpt").iterdir()] == [MANIFEST]  # no temp file left

    fresh = TinkerBackend("Scripted/Model-1B", service_client=service)
    fresh.load(tmp_path / "ckpt")
    assert fresh.step == 1 and service.trainings[-1].version == 1
    assert fresh.score(PROMPT, COMPLETION).logprobs.tolist() == pytest.approx([_lp(t, 1) for t in COMPLETION])

    other = TinkerBackend("Other/Model", service_client=service)
    with pytest.raises(BackendError, match="was trained on 'Scripted/Model-1B'"):
        other.load(tmp_path / "ckpt")
    with pytest.raises(BackendError, match="missing"):
        fresh.load(tmp_path / "nowhere")


def test_snapshot_and_restore(backend, service):
    snap = backend.snapshot()
    assert service.trainings[0].calls[-1][2] is not None  # snapshots expire on the service
    backend.train_step([_example()], LossSpec(), lr=1e-5)
    assert backend.step == 1
    backend.restore(snap)
    assert backend.step == 0 and service.trainings[-1].version == 0
    assert backend.score(PROMPT, COMPLETION).logprobs.tolist() == pytest.approx(
        [_lp(t, 0) for t in COMPLETION]
    )


# ---------------------------------------------------------------------------------------------------
# Live


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("TINKER_API_KEY"), reason="live Tinker test needs TINKER_API_KEY")
def test_live_sample_then_score():
    model = os.environ.get("TINKER_TEST_MODEL", "meta-llama/Llama-3.2-1B")
    backend = TinkerBackend(model)
    prompt = backend.tokenizer.encode("The capital of France is")
    s = backend.sample(prompt, max_tokens=6, temperature=1.0, seed=0)
    assert 0 < len(s.tokens) <= 6 and len(s.logprobs) == len(s.tokens)
    sc = backend.score(prompt, s.tokens)
    diff = (sc.logprobs - torch.tensor(s.logprobs)).abs()
    assert all(math.isfinite(x) for x in sc.logprobs.tolist())
    assert float(diff.mean()) < 0.1, (s.logprobs, sc.logprobs.tolist())
