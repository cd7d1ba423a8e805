"""What one correction costs: the SDPO step through the product path, against one plain forward."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from continualcode.bench.speed.common import completion_of_length, messages_of_length, stats, timed


def denial(renderer: Any, n_prompt: int, n_completion: int) -> Any:
    """A denied ~`n_completion`-token call after a prompt of ≈ `n_prompt` tokens, with its correction."""
    from continualcode.records import Correction, Sample

    msgs = messages_of_length(renderer, n_prompt)
    completion = completion_of_length(renderer, n_completion)
    sample = Sample(completion, [0.0] * len(completion), "stop")
    return Correction("deny", tuple(msgs), renderer.prompt_ids(msgs), sample, renderer.decode(completion),
                      "use edit_lines at the end of the file, and add a docstring")


# (label, the prompt's KV stored as sampling leaves it, the corrected prompt's KV carried across the update)
RUNS = (("cold", False, False), ("after_sampling", True, False), ("carried", True, True))


def bench_step(backend: Any, renderer: Any, cfg: Any, lengths: Sequence[int], n_completion: int,
               repeats: int) -> dict[str, Any]:
    """Per prompt length: the step cold, after sampling with the whole prompt re-run under the new weights
    before the retry (`carry_prefix=false`), and after sampling with the prompt's KV carried across the
    update (`carry_prefix`, the default); with the update's shift of the denied completion's log-prob, exact
    (from scratch under the new weights) and as the carried prefix scores it (`carried.shift_kept`)."""
    from continualcode.learn.step import Learner

    learner = Learner(backend, renderer, cfg.learn_config())
    default_carry = learner.cfg.carry_prefix
    out: dict[str, Any] = {}
    for n in lengths:
        c = denial(renderer, n, n_completion)
        prompt, completion = list(c.prompt_ids), list(c.sample.tokens)
        rows: dict[str, list[float]] = {}
        for rep in range(repeats + 1):  # the first is a warm-up, not recorded
            snap = backend.snapshot()
            backend.clear_cache()
            t_fwd, scored = timed(lambda p=prompt, q=completion: backend.score(p, q))
            before = float(scored.logprobs.sum())
            for label, primed, carry in RUNS:
                backend.restore(snap)
                backend.clear_cache()
                if primed:  # what sampling the proposal leaves in the store
                    backend._prefix(prompt[:-1], "live")
                learner.cfg.carry_prefix = carry
                t_total, rep_m = timed(lambda c=c: learner(c))  # what the retry waits for
                if carry and rep > 0 and not rep_m["rolled_back"]:
                    backend.clear_cache()
                    exact = float(backend.score(prompt, completion).logprobs.sum())
                    shift = exact - before
                    rows.setdefault("carried.shift_exact", []).append(shift)
                    rows.setdefault("carried.shift_kept", []).append(
                        (rep_m["seq_logp_after"] - before) / shift if shift else 1.0)
                t_settle, _ = timed(learner.settle)  # the deferred distillation (distill_deferred), after the task
                if rep == 0:
                    continue
                rows.setdefault(f"{label}.settle", []).append(t_settle)
                parts = {k: rep_m[k] for k in ("sec_teacher", "sec_ref", "sec_student_fwd", "sec_backward",
                                               "sec_optimizer", "sec_after")}
                step = sum(v for k, v in parts.items() if k != "sec_after")
                for k, v in {**parts, "step": step, "step_plus_check": t_total}.items():
                    rows.setdefault(f"{label}.{k}", []).append(v)
                rows.setdefault(f"{label}.ratio_step_to_forward", []).append(step / t_fwd)
                rows.setdefault(f"{label}.ratio_total_to_forward", []).append(t_total / t_fwd)
            backend.restore(snap)
            learner.cfg.carry_prefix = default_carry
            if rep > 0:
                rows.setdefault("forward", []).append(t_fwd)
        out[str(n)] = {"prompt_tokens": len(prompt), "completion_tokens": len(completion),
                       **{k: stats(v) for k, v in rows.items()}}
    return out


