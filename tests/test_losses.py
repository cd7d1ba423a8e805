"""Tests of continualcode.learn.losses against values worked out by hand in plain Python floats.

The 3-token, 5-word case below is written out explicitly; every expected value is computed with
math.log/exp over lists, never with the torch formulas under test. Gradients are checked for sign (the
detached-ratio hazard) and for value (against −(1/T)·ratio·A·(onehot − p) + the KL part).
"""

from __future__ import annotations

import math
import re

import pytest
import torch

from continualcode.learn.losses import (
    LossOut,
    distribution_loss,
    entropy,
    kl_to_ref_full,
    merge_chunks,
    sampled_token_loss,
    sdpo_loss,
)
from continualcode.learn.types import LossSpec, Scores

# ---------------------------------------------------------------------------------------------------
# The hand-computed case: T = 3 completion tokens, V = 5 words.

STUDENT = [[1.0, 0.5, -0.5, 0.0, -1.0], [0.2, 1.5, 0.3, -0.7, 0.0], [-0.3, 0.1, 0.9, 0.4, -1.2]]
TEACHER = [[0.4, 1.2, -0.3, 0.1, -0.8], [0.9, 0.6, -0.2, 0.5, -1.0], [-0.5, 0.0, 1.4, -0.1, 0.3]]
REF = [[0.8, 0.7, -0.4, 0.2, -1.1], [0.1, 1.2, 0.5, -0.5, 0.2], [0.0, 0.3, 0.6, 0.2, -0.9]]
IDS = [1, 0, 2]  # the sampled tokens
# log π_old = log π_θ + shift → ratios e^-0.1, e^0.3, e^-0.05 (inside the clamp)
OLD_SHIFT = [0.1, -0.3, 0.05]
BETA = 0.04
T, V = 3, 5
DOC_KEYS = {
    "loss", "pg_loss", "kl_loss", "kl_ref", "adv_mean", "adv_abs_mean", "adv_min", "adv_max",
    "adv_pos_frac", "ratio_mean", "student_entropy", "tokens",
}  # fmt: skip


def py_log_softmax(row: list[float]) -> list[float]:
    m = max(row)
    lse = m + math.log(sum(math.exp(x - m) for x in row))
    return [x - lse for x in row]


def py_kl(p: list[float], q: list[float]) -> float:
    """KL(p‖q) for probability lists."""
    return sum(pi * (math.log(pi) - math.log(qi)) for pi, qi in zip(p, q, strict=True) if pi > 0)


def py_div(p_student: list[float], q_teacher: list[float], alpha: float) -> float:
    if alpha == 0.0:
        return py_kl(q_teacher, p_student)
    if alpha == 1.0:
        return py_kl(p_student, q_teacher)
    m = [alpha * q + (1 - alpha) * p for p, q in zip(p_student, q_teacher, strict=True)]
    return alpha * py_kl(q_teacher, m) + (1 - alpha) * py_kl(p_student, m)


def py_probs(logits: list[list[float]]) -> list[list[float]]:
    return [[math.exp(x) for x in py_log_softmax(row)] for row in logits]


def py_top2(row: list[float]) -> list[int]:
    return sorted(range(len(row)), key=lambda v: -row[v])[:2]


def t64(x: object) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.float64)


def student_leaf() -> tuple[torch.Tensor, torch.Tensor]:
    """(logits leaf [T, V], log-probs [T, V]) for the student, float64."""
    z = t64(STUDENT).requires_grad_(True)
    return z, torch.log_softmax(z, -1)


def hand_sampled() -> dict[str, list[float] | float]:
    lp = [py_log_softmax(STUDENT[t])[IDS[t]] for t in range(T)]
    tlp = [py_log_softmax(TEACHER[t])[IDS[t]] for t in range(T)]
    rlp = [py_log_softmax(REF[t])[IDS[t]] for t in range(T)]
    old = [lp[t] + OLD_SHIFT[t] for t in range(T)]
    adv = [tlp[t] - lp[t] for t in range(T)]
    ratio = [min(max(math.exp(lp[t] - old[t]), 0.5), 2.0) for t in range(T)]
    k1 = [lp[t] - rlp[t] for t in range(T)]
    pg = -sum(ratio[t] * adv[t] * lp[t] for t in range(T)) / T
    kl = BETA * sum(k1) / T
    return {"lp": lp, "tlp": tlp, "rlp": rlp, "old": old, "adv": adv, "ratio": ratio, "k1": k1,
            "pg": pg, "kl": kl, "total": pg + kl}  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# Sampled-token loss: values


def test_sampled_token_values_match_hand_computation() -> None:
    h = hand_sampled()
    _, logp_TV = student_leaf()
    logp_T = logp_TV[torch.arange(T), torch.tensor(IDS)]
    out = sampled_token_loss(
        logp_T, old_logp_T=t64(h["old"]), teacher_logp_T=t64(h["tlp"]), ref_logp_T=t64(h["rlp"]), beta=BETA
    )
    assert isinstance(out, LossOut)
    assert out.metrics["pg_loss"] == pytest.approx(h["pg"], abs=1e-12)
    assert out.metrics["kl_loss"] == pytest.approx(h["kl"], abs=1e-12)
    assert out.loss.item() == pytest.approx(h["total"], abs=1e-12)
    assert out.metrics["loss"] == pytest.approx(h["total"], abs=1e-12)
    assert out.metrics["kl_ref"] == pytest.approx(sum(h["k1"]) / T, abs=1e-12)
    assert out.metrics["ratio_mean"] == pytest.approx(sum(h["ratio"]) / T, abs=1e-12)
    assert out.metrics["adv_mean"] == pytest.approx(sum(h["adv"]) / T, abs=1e-12)
    assert out.metrics["adv_min"] == pytest.approx(min(h["adv"]), abs=1e-12)
    assert out.metrics["adv_max"] == pytest.approx(max(h["adv"]), abs=1e-12)
    assert out.metrics["adv_pos_frac"] == pytest.approx(sum(a > 0 for a in h["adv"]) / T)
    assert out.metrics["tokens"] == 3.0
    assert out.advantage_T.tolist() == pytest.approx(h["adv"], abs=1e-12)
    assert not out.advantage_T.requires_grad


def test_sampled_token_gradient_value() -> None:
    """d loss / d logits = −(1/T)·ratio·A·(onehot − p) + (β/T)·k1·(onehot − p)."""
    h = hand_sampled()
    z, logp_TV = student_leaf()
    logp_T = logp_TV[torch.arange(T), torch.tensor(IDS)]
    out = sampled_token_loss(
        logp_T, old_logp_T=t64(h["old"]), teacher_logp_T=t64(h["tlp"]), ref_logp_T=t64(h["rlp"]), beta=BETA
    )
    out.loss.backward()
    p = py_probs(STUDENT)
    expected = [
        [(-h["ratio"][t] * h["adv"][t] + BETA * h["k1"][t]) / T * ((v == IDS[t]) - p[t][v]) for v in range(V)]
        for t in range(T)
    ]
    assert z.grad is not None
    torch.testing.assert_close(z.grad, t64(expected), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------
# Sampled-token loss: gradient sign, and the hazard of an undetached ratio


def one_token(p: float) -> torch.Tensor:
    """Logits (V = 2) whose first word has probability p."""
    return t64([math.log(p), math.log(1 - p)]).requires_grad_(True)


@pytest.mark.parametrize("p", [0.9, 0.3, 0.01])
@pytest.mark.parametrize("adv", [1.0, -1.0])
def test_sampled_token_gradient_sign(p: float, adv: float) -> None:
    z = one_token(p)
    logp_T = torch.log_softmax(z, -1)[:1]
    before = logp_T.item()
    out = sampled_token_loss(logp_T, old_logp_T=logp_T.detach(), teacher_logp_T=logp_T.detach() + adv)
    out.loss.backward()
    with torch.no_grad():
        after = torch.log_softmax(z - 0.1 * z.grad, -1)[0].item()
    assert (after - before) * adv > 0


@pytest.mark.parametrize(("p", "flips"), [(0.9, False), (0.3, True), (0.01, True)])
def test_undetached_ratio_flips_sign_below_one_over_e(p: float, flips: bool) -> None:
    """The hazard the detach avoids: with the ratio attached the gradient is −A·ratio·(1+logπ)·∇logπ."""
    z = one_token(p)
    logp = torch.log_softmax(z, -1)[0]
    adv = 1.0
    ratio = torch.exp(logp - logp.detach())  # NOT detached
    loss = -(ratio * adv * logp)
    loss.backward()
    with torch.no_grad():
        after = torch.log_softmax(z - 0.1 * z.grad, -1)[0].item()
    assert (after < logp.item()) == flips  # a positive advantage LOWERS the token when p < 1/e
    assert (1 + math.log(p) < 0) == flips


def test_zero_advantage_gives_zero_pg_gradient() -> None:
    z, logp_TV = student_leaf()
    logp_T = logp_TV[torch.arange(T), torch.tensor(IDS)]
    out = sampled_token_loss(logp_T, old_logp_T=logp_T.detach() + 0.2, teacher_logp_T=logp_T.detach())
    out.loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))
    assert out.metrics["adv_abs_mean"] == 0.0


def test_beta_zero_removes_kl_exactly() -> None:
    h = hand_sampled()
    _, logp_TV = student_leaf()
    logp_T = logp_TV[torch.arange(T), torch.tensor(IDS)]
    kw = {"old_logp_T": t64(h["old"]), "teacher_logp_T": t64(h["tlp"])}
    no_kl = sampled_token_loss(logp_T, ref_logp_T=t64(h["rlp"]), beta=0.0, **kw)
    no_ref = sampled_token_loss(logp_T, ref_logp_T=None, beta=BETA, **kw)
    assert no_kl.metrics["loss"] == no_kl.metrics["pg_loss"]  # bit for bit
    assert torch.equal(no_kl.loss, no_ref.loss)
    assert no_kl.metrics["kl_loss"] == 0.0 and no_ref.metrics["kl_loss"] == 0.0
    assert no_ref.metrics["kl_ref"] == 0.0
    assert no_kl.metrics["kl_ref"] == pytest.approx(sum(h["k1"]) / T, abs=1e-12)  # still reported
    assert math.isfinite(no_ref.loss.item())


@pytest.mark.parametrize(("shift", "clamped"), [(-5.0, 2.0), (5.0, 0.5)])
def test_ratio_clamp(shift: float, clamped: float) -> None:
    _, logp_TV = student_leaf()
    logp_T = logp_TV[torch.arange(T), torch.tensor(IDS)]
    out = sampled_token_loss(logp_T, old_logp_T=logp_T.detach() + shift, teacher_logp_T=logp_T.detach() + 1)
    assert out.metrics["ratio_mean"] == clamped


# ---------------------------------------------------------------------------------------------------
# Distribution losses: values


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5, 0.3])
def test_full_divergence_values(alpha: float) -> None:
    p, q = py_probs(STUDENT), py_probs(TEACHER)
    expected = [py_div(p[t], q[t], alpha) for t in range(T)]
    _, logp_TV = student_leaf()
    got = distribution_loss(logp_TV, teacher_logp_TK=torch.log_softmax(t64(TEACHER), -1), alpha=alpha)
    assert got.shape == (T,)
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5, 0.3])
@pytest.mark.parametrize("add_tail", [True, False])
def test_topk_divergence_values(alpha: float, add_tail: bool) -> None:
    p, q = py_probs(STUDENT), py_probs(TEACHER)
    expected = []
    for t in range(T):
        ids = py_top2(q[t])
        ps, qs = [p[t][v] for v in ids], [q[t][v] for v in ids]
        if add_tail:
            ps, qs = [*ps, 1 - sum(ps)], [*qs, 1 - sum(qs)]
        else:
            ps, qs = [x / sum(ps) for x in ps], [x / sum(qs) for x in qs]
        expected.append(py_div(ps, qs, alpha))
    ids_TK = torch.tensor([py_top2(q[t]) for t in range(T)])
    teacher_TK = torch.log_softmax(t64(TEACHER), -1).gather(-1, ids_TK)
    _, logp_TV = student_leaf()
    got = distribution_loss(
        logp_TV, teacher_logp_TK=teacher_TK, teacher_ids_TK=ids_TK, alpha=alpha, add_tail=add_tail
    )
    assert got.tolist() == pytest.approx(expected, abs=1e-12)


def test_kl_to_ref_full_and_entropy_values() -> None:
    p, r = py_probs(STUDENT), py_probs(REF)
    _, logp_TV = student_leaf()
    got = kl_to_ref_full(logp_TV, torch.log_softmax(t64(REF), -1))
    assert got.tolist() == pytest.approx([py_kl(p[t], r[t]) for t in range(T)], abs=1e-12)
    ent = entropy(logp_TV)
    assert ent.tolist() == pytest.approx([-sum(x * math.log(x) for x in p[t]) for t in range(T)], abs=1e-12)


def test_kl_to_ref_full_gradient_by_hand_and_as_autograd_of_the_expression() -> None:
    """The KL's own backward (it keeps only the two log-distributions): by hand on p = (1/2, 1/2), r = (1/4, 3/4)
    through the log-softmax, ∂KL/∂z_v = p_v·(s_v − r_v − KL): raising z_0 moves p away from r (positive), z_1
    toward it (negative); and equal to autograd of Σ e^s (s − r) on random inputs, second argument constant."""
    z = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
    r = torch.log(torch.tensor([[0.25, 0.75]], dtype=torch.float64))
    kl = kl_to_ref_full(torch.log_softmax(z, -1), r)
    assert kl.item() == pytest.approx(0.5 * math.log(4 / 3), abs=1e-12)
    kl.sum().backward()
    want = [0.5 * (math.log(2) - 0.5 * math.log(4 / 3)), 0.5 * (math.log(2 / 3) - 0.5 * math.log(4 / 3))]
    assert z.grad[0].tolist() == pytest.approx(want, abs=1e-12) and want[0] > 0 > want[1]
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 11, dtype=torch.float64, generator=gen, requires_grad=True)
    ref = torch.log_softmax(torch.randn(5, 11, dtype=torch.float64, generator=gen), -1)
    weights = torch.rand(5, dtype=torch.float64, generator=gen)
    (kl_to_ref_full(torch.log_softmax(logits, -1), ref) * weights).sum().backward()
    mine = logits.grad.clone()
    logits.grad = None
    s = torch.log_softmax(logits, -1)
    ((s.exp() * (s - ref)).sum(-1) * weights).sum().backward()
    assert torch.allclose(mine, logits.grad, atol=1e-12, rtol=0)
    assert torch.autograd.gradcheck(lambda x: kl_to_ref_full(torch.log_softmax(x, -1), ref), (logits.detach()
                                                                                              .requires_grad_(),))


# ---------------------------------------------------------------------------------------------------
# Distribution losses: properties


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.5])
@pytest.mark.parametrize("mode", ["full", "top2_tail", "top2_renorm"])
def test_teacher_equal_student_gives_zero_loss_and_gradient(alpha: float, mode: str) -> None:
    z, logp_TV = student_leaf()
    teacher_TV = logp_TV.detach().clone()
    if mode == "full":
        loss_T = distribution_loss(logp_TV, teacher_logp_TK=teacher_TV, alpha=alpha)
    else:
        top_TK, ids_TK = teacher_TV.topk(2, dim=-1)
        loss_T = distribution_loss(
            logp_TV, teacher_logp_TK=top_TK, teacher_ids_TK=ids_TK, alpha=alpha, add_tail=mode == "top2_tail"
        )
    loss_T.mean().backward()
    torch.testing.assert_close(loss_T.detach(), torch.zeros(T, dtype=torch.float64), atol=1e-12, rtol=0)
    torch.testing.assert_close(z.grad, torch.zeros_like(z), atol=1e-12, rtol=0)


def test_teacher_gets_no_gradient() -> None:
    _, logp_TV = student_leaf()
    teacher_TV = torch.log_softmax(t64(TEACHER), -1).requires_grad_(True)
    distribution_loss(logp_TV, teacher_logp_TK=teacher_TV, alpha=0.5).sum().backward()
    assert teacher_TV.grad is None


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_topk_approaches_full_as_k_grows(alpha: float) -> None:
    """Top-K + tail coarse-grains the full distribution: its divergence rises with K to the full value."""
    g = torch.Generator().manual_seed(0)
    n_t, n_v = 4, 40
    student_TV = torch.log_softmax(2 * torch.randn(n_t, n_v, generator=g, dtype=torch.float64), -1)
    teacher_TV = torch.log_softmax(2 * torch.randn(n_t, n_v, generator=g, dtype=torch.float64), -1)
    full_T = distribution_loss(student_TV, teacher_logp_TK=teacher_TV, alpha=alpha)
    by_k = []
    for k in range(1, n_v + 1):
        top_TK, ids_TK = teacher_TV.topk(k, dim=-1)
        by_k.append(distribution_loss(student_TV, teacher_logp_TK=top_TK, teacher_ids_TK=ids_TK, alpha=alpha))
    by_k_KT = torch.stack(by_k)
    assert (by_k_KT.diff(dim=0) >= -1e-12).all()  # monotone in K, per token
    assert (by_k_KT[0] < full_T - 1e-3).all()  # and far from it at K = 1
    torch.testing.assert_close(by_k_KT[-1], full_T, atol=1e-12, rtol=0)  # equal at K = V
    top_TK, ids_TK = teacher_TV.topk(n_v, dim=-1)
    renorm_T = distribution_loss(
        student_TV, teacher_logp_TK=top_TK, teacher_ids_TK=ids_TK, alpha=alpha, add_tail=False
    )
    torch.testing.assert_close(renorm_T, full_T, atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------------
# The dispatcher


def scores(logits: list[list[float]], *, k: int = 3, topk: bool = True, full: bool = True) -> Scores:
    full_TV = torch.log_softmax(t64(logits), -1)
    top_TK, ids_TK = full_TV.topk(k, dim=-1)
    return Scores(
        logprobs=full_TV[torch.arange(len(logits)), torch.tensor(IDS[: len(logits)])],
        topk_ids=ids_TK if topk else None,
        topk_logprobs=top_TK if topk else None,
        full_logprobs=full_TV if full else None,
    )


def run_sdpo(spec: LossSpec, *, teacher: Scores, ref: Scores | None) -> tuple[LossOut, torch.Tensor]:
    z, logp_TV = student_leaf()
    old_T = logp_TV.detach()[torch.arange(T), torch.tensor(IDS)] + t64(OLD_SHIFT)
    out = sdpo_loss(
        spec, student_logp_TV=logp_TV, completion_ids=IDS, old_logp_T=old_T, teacher=teacher, ref=ref
    )
    out.loss.backward()
    return out, z


@pytest.mark.parametrize("kind", ["sampled_token", "topk", "full"])
@pytest.mark.parametrize("ref_kind", ["full", "sampled", "none"])
def test_sdpo_loss_each_kind(kind: str, ref_kind: str) -> None:
    ref = {"full": scores(REF), "sampled": scores(REF, topk=False, full=False), "none": None}[ref_kind]
    out, z = run_sdpo(LossSpec(kind=kind, topk=2), teacher=scores(TEACHER), ref=ref)  # type: ignore[arg-type]
    assert set(out.metrics) == DOC_KEYS | {"teacher_entropy"}
    assert all(math.isfinite(v) for v in out.metrics.values())
    assert torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0
    assert out.metrics["tokens"] == 3.0
    h = hand_sampled()
    assert out.advantage_T.tolist() == pytest.approx(h["adv"], abs=1e-12)
    p, r = py_probs(STUDENT), py_probs(REF)
    expected_kl_ref = {
        "full": sum(py_kl(p[t], r[t]) for t in range(T)) / T if kind != "sampled_token" else sum(h["k1"]) / T,
        "sampled": sum(h["k1"]) / T,
        "none": 0.0,
    }[ref_kind]
    assert out.metrics["kl_ref"] == pytest.approx(expected_kl_ref, abs=1e-12)
    assert out.metrics["loss"] == pytest.approx(out.metrics["pg_loss"] + out.metrics["kl_loss"], abs=1e-12)


def test_sdpo_loss_full_matches_hand_values() -> None:
    p, q, r = py_probs(STUDENT), py_probs(TEACHER), py_probs(REF)
    fwd = sum(py_kl(q[t], p[t]) for t in range(T)) / T
    kl = BETA * sum(py_kl(p[t], r[t]) for t in range(T)) / T
    out, _ = run_sdpo(LossSpec(kind="full", beta=BETA), teacher=scores(TEACHER), ref=scores(REF))
    assert out.metrics["pg_loss"] == pytest.approx(fwd, abs=1e-12)
    assert out.metrics["kl_loss"] == pytest.approx(kl, abs=1e-12)
    assert out.loss.item() == pytest.approx(fwd + kl, abs=1e-12)
    ent = sum(-sum(x * math.log(x) for x in q[t]) for t in range(T)) / T
    assert out.metrics["teacher_entropy"] == pytest.approx(ent, abs=1e-12)


def test_sdpo_loss_sampled_token_matches_hand_values_and_omits_teacher_entropy() -> None:
    h = hand_sampled()
    teacher = scores(TEACHER, topk=False, full=False)
    out, _ = run_sdpo(LossSpec(kind="sampled_token", beta=BETA), teacher=teacher, ref=scores(REF, full=False))
    assert out.loss.item() == pytest.approx(h["total"], abs=1e-12)
    assert set(out.metrics) == DOC_KEYS


def test_sdpo_loss_topk_slices_teacher() -> None:
    teacher = scores(TEACHER, k=4)
    out, _ = run_sdpo(LossSpec(kind="topk", topk=2, beta=0.0), teacher=teacher, ref=None)
    _, logp_TV = student_leaf()
    expected = distribution_loss(
        logp_TV, teacher_logp_TK=teacher.topk_logprobs[:, :2], teacher_ids_TK=teacher.topk_ids[:, :2]
    ).mean()
    assert out.loss.item() == pytest.approx(expected.item(), abs=1e-15)
    assert out.metrics["loss"] == out.metrics["pg_loss"]


@pytest.mark.parametrize("kind", ["sampled_token", "topk", "full"])
def test_mean_not_sum(kind: str) -> None:
    """Duplicating the completion (T → 2T with the same per-token values) leaves the loss unchanged."""

    def twice(s: Scores) -> Scores:
        return Scores(*(None if x is None else torch.cat([x, x]) for x in (s.logprobs, s.topk_ids,
                        s.topk_logprobs, s.full_logprobs)))  # fmt: skip

    spec = LossSpec(kind=kind, topk=2)  # type: ignore[arg-type]
    teacher, ref = scores(TEACHER), scores(REF)
    once, _ = run_sdpo(spec, teacher=teacher, ref=ref)
    _, logp_TV = student_leaf()
    old_T = logp_TV.detach()[torch.arange(T), torch.tensor(IDS)] + t64(OLD_SHIFT)
    doubled = sdpo_loss(
        spec,
        student_logp_TV=torch.cat([logp_TV, logp_TV]),
        completion_ids=IDS + IDS,
        old_logp_T=torch.cat([old_T, old_T]),
        teacher=twice(teacher),
        ref=twice(ref),
    )
    assert doubled.metrics["tokens"] == 6.0
    assert doubled.loss.item() == pytest.approx(once.loss.item(), abs=1e-14)


def test_sdpo_loss_missing_scores_raise() -> None:
    sampled_only = scores(TEACHER, topk=False, full=False)
    message = "spec.kind='topk' needs teacher top-K scores (score with topk>0)"
    with pytest.raises(ValueError, match=re.escape(message)):
        run_sdpo(LossSpec(kind="topk"), teacher=sampled_only, ref=None)
    with pytest.raises(ValueError, match=re.escape("spec.kind='full' needs the teacher's full distribution")):
        run_sdpo(LossSpec(kind="full"), teacher=sampled_only, ref=None)
    with pytest.raises(ValueError, match=re.escape("spec.topk=5 but the teacher was scored with topk=3")):
        run_sdpo(LossSpec(kind="topk", topk=5), teacher=scores(TEACHER), ref=None)
    with pytest.raises(ValueError, match=re.escape("unknown spec.kind")):
        run_sdpo(LossSpec(kind="bogus"), teacher=scores(TEACHER), ref=None)  # type: ignore[arg-type]


def test_bf16_inputs_are_computed_in_float32() -> None:
    logp_TV = torch.log_softmax(t64(STUDENT), -1).to(torch.bfloat16).requires_grad_(True)
    out = sdpo_loss(
        LossSpec(kind="topk", topk=2),
        student_logp_TV=logp_TV,
        completion_ids=IDS,
        old_logp_T=logp_TV.detach()[torch.arange(T), torch.tensor(IDS)],
        teacher=scores(TEACHER),
        ref=scores(REF),
    )
    assert out.loss.dtype == torch.float32
    out.loss.backward()
    assert logp_TV.grad is not None and logp_TV.grad.dtype == torch.bfloat16


def test_chunk_metrics_merge_as_the_whole_completions():
    """Two chunks of 1 and 3 tokens: means weigh by share (¼, ¾), `*_min` / `*_max` take the extreme, tokens add."""
    parts = [(0.25, {"loss": 2.0, "adv_min": -1.0, "adv_max": 0.5, "tokens": 1.0}),
             (0.75, {"loss": 6.0, "adv_min": -0.2, "adv_max": 3.0, "tokens": 3.0})]
    assert merge_chunks(parts) == {"loss": 5.0, "adv_min": -1.0, "adv_max": 3.0, "tokens": 4.0}
