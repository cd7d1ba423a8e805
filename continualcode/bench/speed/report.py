"""results.md of the speed benchmark: the figures of results.json as tables a reader can check."""

from __future__ import annotations

from typing import Any


def _f(s: dict[str, float], unit: str = "", digits: int = 2) -> str:
    return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"


def to_markdown(res: dict[str, Any]) -> str:
    """The parts a run measured (`--parts`), each a section."""
    lines = [f"# Speed — {res['model']} ({res['dtype']}), {res['date']}", "",
             f"`{res['command']}` · {res['machine']} · median (min–max) of {res['repeats']} repeats"]
    if "step" in res:
        lines += _step_lines(res["step"])
    lines += _decode_lines(res, _f)
    if "sampling" in res:
        lines += _sampling_lines(res["sampling"])
    if "start" in res:
        lines += _start_lines(res["start"], res.get("peak_rss_mb", 0.0))
    return "\n".join(lines) + "\n"


def _step_lines(step: dict[str, Any]) -> list[str]:
    f = _f
    lines = ["", "## SDPO step per correction", "",
             "| prompt tokens | forward s | step (after sampling) s | step/forward | step+check/forward | "
             "step (cold) s | cold step/forward |", "|---|---|---|---|---|---|---|"]
    for n, r in step.items():
        lines.append(f"| {r['prompt_tokens']} ({n}) | {f(r['forward'])} | {f(r['after_sampling.step'])} | "
                     f"{f(r['after_sampling.ratio_step_to_forward'])} | "
                     f"{f(r['after_sampling.ratio_total_to_forward'])} | "
                     f"{f(r['cold.step'])} | {f(r['cold.ratio_step_to_forward'])} |")
    lines += ["", "Breakdown after sampling (seconds, median):", "",
              "| prompt | teacher | reference | student fwd | backward | optimizer | post-step check |",
              "|---|---|---|---|---|---|---|"]
    for n, r in step.items():
        parts = [r[f"after_sampling.{k}"]["median"] for k in
                 ("sec_teacher", "sec_ref", "sec_student_fwd", "sec_backward", "sec_optimizer", "sec_after")]
        lines.append(f"| {n} | " + " | ".join(f"{p:.3f}" for p in parts) + " |")
    for n, r in step.items():
        if "carried.step_plus_check" in r:
            ratio = r["after_sampling.step_plus_check"]["median"] / max(r["carried.step_plus_check"]["median"], 1e-9)
            lines.append(f"- {n}: the wait from a denial to the retry's sampling, the prompt re-run under the new "
                         f"weights first (`carry_prefix=false`) {f(r['after_sampling.step_plus_check'], ' s')}, "
                         f"its KV carried across the update (the default) {f(r['carried.step_plus_check'], ' s')}: "
                         f"**{ratio:.2f}×** less" + (
                             f"; the update's shift of the denied completion's log-prob {f(r['carried.shift_exact'])} "
                             f"nats exact, carried keeps {f(r['carried.shift_kept'])} of it"
                             if "carried.shift_kept" in r else " (every carried update rolled back)"))
    for n, r in step.items():
        if "after_sampling.settle" in r and r["after_sampling.settle"]["median"] > 0:
            lines.append(f"- {n}: the correction's deferred distillation (`Learner.settle`, when the task has "
                         f"ended) {f(r['after_sampling.settle'], ' s')}; the retry waits for step+check only")
    return lines


def _sampling_lines(s: dict[str, Any]) -> list[str]:
    f = _f
    return ["", "## Sampling (greedy, same prompt and token count, drafts off)", "",
            f"- agent sampler, constrained: {f(s['constrained_s_per_tok'], ' s/tok', 4)}",
            f"- agent sampler, unconstrained: {f(s['unconstrained_s_per_tok'], ' s/tok', 4)}",
            f"- `model.generate`: {f(s['generate_s_per_tok'], ' s/tok', 4)}",
            f"- ratio constrained / generate: **{f(s['ratio_constrained_to_generate'])}**; "
            f"unconstrained / generate: {f(s['ratio_unconstrained_to_generate'])}", *_choice_lines(s)]


def _choice_lines(s: dict[str, Any]) -> list[str]:
    if "choice" not in s:  # a run before the choice was measured
        return []
    c, f = s["choice"], _f
    return [f"- the token choice at temperature {c['temperature']}, top-p {c['top_p']} (the session's), on the model's "
            f"logits at {c['positions']} positions: `choose` {f(c['choose_ms_per_tok'], ' ms/tok', 2)}, the whole-"
            f"vocabulary sort it replaced {f(c['sorted_nucleus_ms_per_tok'], ' ms/tok', 2)} → "
            f"**{c['choose_speedup']:.1f}×**; the greedy decode step (no choice) "
            f"{1000 * s['decode_s_per_tok']['median']:.0f} ms/tok"]


def _start_lines(st: dict[str, Any], peak_rss_mb: float) -> list[str]:
    f = _f
    return ["", "## Start and memory", "",
            f"- interactive agent, process start → prompt ready for the first task (the model loads in the "
            f"background): **{f(st['prompt_ready_s'], ' s')}**; → `/quit` typed at once and processed (waits for "
            f"the load): {f(st['backend_ready_and_quit_s'], ' s')}",
            f"- new process → backend ready (model converted): {f(st['cold_start_process_s'], ' s')}",
            f"  (inside Python: {f(st['cold_start_in_python_s'], ' s')})",
            f"- warm reload of a saved adapter: {f(st['adapter_reload_s'], ' s', 3)}",
            f"- peak RSS: this process {peak_rss_mb:.0f} MB (the parts above included); "
            f"cold-start process {st['cold_start_peak_rss_mb']:.0f} MB"]


def _decode_lines(res: dict[str, Any], f: Any) -> list[str]:
    """The decode bound, the drafts per tool kind and the replayed session."""
    out: list[str] = []
    b = res.get("bound")
    if b:
        out += ["", "## Decode against the memory-bandwidth bound", "",
                f"- read bandwidth {b['bandwidth_gb_s']:.1f} GB/s ({b['threads']} threads); a step reads "
                f"{b['weight_bytes'] / 1e9:.2f} GB of weights → bound {1000 * b['bound_s_per_tok']:.0f} ms/token",
                f"- measured decode step (drafts off, prompt cached): {1000 * b['decode_s_per_tok']:.0f} ms/token → "
                f"**decode_over_bound {b['decode_over_bound']:.2f}**"]
        if "plain_over_mv" in b:
            out.append(f"- the one-row GEMV kernel against plain `F.linear` (alternating): "
                       f"{1000 * b['mv_s_per_tok']:.0f} vs {1000 * b['plain_s_per_tok']:.0f} ms/token → "
                       f"**{b['plain_over_mv']:.2f}×**")
        if "mv_over_native" in b:
            out.append(f"- the native kernels (backends/gemv.c) against `torch.mv` (alternating): "
                       f"{1000 * b['native_s_per_tok']:.0f} vs {1000 * b['mv_s_per_tok']:.0f} ms/token → "
                       f"**{b['mv_over_native']:.2f}×**")
        elif "native" in b:
            out.append(f"- native kernels not used: {b['native']}")
    a = res.get("attention")
    if a:
        out += ["", "## Decode-step attention: the grouped-query kernel against `sdpa` (alternating, bf16)", "",
                "| prompt tokens | sdpa ms/token | grouped ms/token | speedup |", "|---|---|---|---|"]
        out += [f"| {r['prompt_tokens']} | {1000 * r['sdpa_s_per_tok']:.0f} | {1000 * r['grouped_s_per_tok']:.0f} | "
                f"**{r['sdpa_over_grouped']:.2f}×** |" for r in a["by_length"]]
    fz = res.get("fused")
    if fz and "by_length" in fz:
        out += ["", "## CPU decode steps: one fused native call against the same step op by op (alternating)", "",
                "| prompt tokens | weights | op by op ms/token | fused ms/token | speedup |", "|---|---|---|---|---|"]
        for r in fz["by_length"]:
            for w in ("full", "int8"):
                if f"{w}_speedup" in r:
                    out.append(f"| {r['prompt_tokens']} | {w} | {1000 * r[f'{w}_unfused_s_per_tok']:.1f} | "
                               f"{1000 * r[f'{w}_fused_s_per_tok']:.1f} | **{r[f'{w}_speedup']:.2f}×** |")
        if "int8_decode_over_bound" in res:
            out.append(f"- the int8 fused step over the full weights' bound: **{res['int8_decode_over_bound']:.2f}**")
    elif fz:
        out += ["", f"CPU fused decode: {fz['skipped']}"]
    g = res.get("graphs")
    if g and "by_length" in g:
        out += ["", "## GPU decode steps: a recorded CUDA graph against eager steps (alternating)", "",
                "| prompt tokens | eager ms/token | graph ms/token | speedup |", "|---|---|---|---|"]
        out += [f"| {r['prompt_tokens']} | {1000 * r['eager_s_per_tok']:.1f} | {1000 * r['graphs_s_per_tok']:.1f} | "
                f"**{r['speedup']:.2f}×** |" for r in g["by_length"]]
        for name, c in g["correction"].items():
            out.append(f"- a correction (1k prompt, {name} decode): {f(c['total'], ' s')}, of which sampling the "
                       f"distillation prompts {f(c['distill'], ' s')}")
        if g.get("failed"):
            out.append(f"- recording failed: {g['failed']}")
    elif g:
        out += ["", f"GPU decode graphs: {g['skipped']}"]
    def pct(x: float | None) -> str:
        return "–" if x is None else f"{x:.0%}"

    for key, weights in (("drafts", "full weights"), ("drafts_int8", "int8 copies")):
        if d := res.get(key):
            out += ["", f"## Draft decoding (prompt lookup, {weights}), greedy, each call constrained to its tool, "
                    "same tokens checked", "",
                    "| tool kind | prompts | tokens | speedup | acceptance | tokens per forward | token lookup alone: "
                    "speedup, acceptance | same tokens |", "|---|---|---|---|---|---|---|---|"]
            for kind, r in [*d["by_kind"].items(), ("**all**", d["overall"])]:
                alone = "–" if r.get("speedup_tokens") is None else \
                    f"{r['speedup_tokens']:.2f}×, {pct(r.get('acceptance_tokens'))}"
                out.append(f"| {kind} | {r['n']} | {r['tokens']} | {r['speedup']:.2f}× | {pct(r['acceptance'])} | "
                           f"{r['tokens_per_forward']:.2f} | {alone} | {r['same_tokens']} |")
    q = res.get("int8")
    if q:
        out += ["", "## Weight-only int8 for decode steps (`decode_int8=true`)", "",
                f"- decode step (drafts off): full weights ({res.get('dtype', 'bf16').replace('torch.', '')}) "
                f"{1000 * q['bf16_s_per_tok']:.0f} ms/token, int8 "
                f"{1000 * q['int8_s_per_tok']:.0f} ms/token → **{q['speedup']:.2f}×** ({q['linears']} linear layers)",
                f"- next-token distributions after {q['prompts']} speed prompts: KL(bf16 ‖ int8) mean "
                f"{q['kl_mean']:.4f}, max {q['kl_max']:.4f} nats; same top token {q['same_top_token']:.0%}"]
    s = res.get("session")
    if s:
        how = res.get("session_decode", "bf16")
        read = s.get("read_s", 0.0)
        out += ["", f"## Replayed session (xmltodict.py, greedy, every call approved after {read:g} s of reading, "
                f"{how} decode steps)", ""]
        for name, label in (("session_no_speculation", "speculate=false"), ("session", "the config's path")):
            r = res.get(name)
            if not r:
                continue
            out += [f"### {label}" + (" (speculative prefill while the user reads)" if r.get("speculate") else ""),
                    "", f"- median approval → next proposal: **{r['turn_latency_median_s']:.1f} s** over "
                    f"{len(r['turns'])} turns; largest prompt {r['max_prompt_tokens']} tokens; median KV hit rate "
                    f"{r['kv_hit_rate_median']:.0%}", "",
                    "| turn | approval→proposal s | tool s (+ prefill wait) | prompt tokens | prefilled | decoded |",
                    "|---|---|---|---|---|---|"]
            for i, t in enumerate(r["turns"], 1):
                out.append(f"| {i} | {t['approval_to_proposal_s']:.1f} | {t['tool_s']:.2f} | {t['prompt_tokens']} | "
                           f"{t['prefill_tokens']} | {t['decoded_tokens']} |")
            out.append("")
        if "speculation_speedup" in res:
            out.append(f"- speculative prefill: median turn **{res['speculation_speedup']:.2f}×** faster "
                       "(the two replays above, one run)")
    return out
