"""Decoding speed: the sampler against `model.generate`, against the memory-bandwidth bound, and with drafts.

- `bandwidth`: the machine's read bandwidth, measured (a sum over a 1 GiB tensor, at the backend's
  thread count).  `weight_bytes`: the bytes a decode step must read once (every weight the forward
  uses: the decoder, the LM head; the embedding table only for the one row it looks up).  Their
  quotient is the fastest a step can be; `decode_over_bound` is the measured step over it.
- `gemv`: the decode step with the one-row kernel against plain `F.linear` (quant.py), alternating.
- `sampler`: greedy decoding of the same prompt and token count by the agent's sampler (drafts off,
  grammar on and off) and by `model.generate`: seconds per token and their ratios.  Then the token choice at
  the session's temperature and top-p (`decode.choose`) on the model's own next-token logits, against the
  whole-vocabulary sort and draw it replaced (`sorted_nucleus`), alternating, beside the greedy decode step:
  greedy decoding leaves the choice out, which is how its 22 ms a token went unseen.
- `drafts`: real agent prompts on a real file whose next call is a `read`, an `edit_lines` or a
  `write`; greedy, the same seed, drafts off then on: tokens, time per token, drafted/accepted
  tokens, the speedup per tool kind and overall.  Same tokens both ways is checked, not assumed.
- `fused` (CPU): decode steps as one native call through the whole decoder (fused.py) against the same
  steps op by op (`unfused()`, the native weight products and the grouped attention kernel), alternating,
  after prompts of each length, with the full weights and with the int8 copies.
- `graphs` (GPU): decode steps replaying recorded CUDA graphs (graphs.py) against eager steps, alternating,
  after prompts of each length; and a whole correction (the Learner on a denial, its distillation
  prompts sampled) both ways.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import Any

from continualcode.bench.speed.common import messages_of_length, stats, timed


def bandwidth(threads: int, gib: float = 1.0, repeats: int = 5) -> float:
    """Read bandwidth in bytes/s: the best of `repeats` sums over a `gib` GiB float32 tensor."""
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a = torch.ones(int(gib * 2**30) // 4)
        a.sum()
        best = min(timed(lambda: a.sum())[0] for _ in range(repeats))
    finally:
        torch.set_num_threads(old)
    return a.numel() * 4 / best


def weight_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads: every parameter once, but of the input embedding only a
    row (unless it is tied to the LM head, which reads it whole)."""
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings().weight
    total = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    if emb.data_ptr() != head.data_ptr():
        total -= emb.numel() * emb.element_size() - emb.shape[1] * emb.element_size()
    return total


def sampler(backend: Any, renderer: Any, repeats: int, n_new: int = 48) -> dict[str, Any]:
    """The agent's sampler (drafts off) vs `model.generate`, greedy, same prompt and token count."""
    import torch

    prompt = renderer.prompt_ids(messages_of_length(renderer, 256))
    constraint = renderer.constraint(allow_text=False)
    ids = torch.tensor([prompt], device=backend.device)
    rows: dict[str, list[float]] = {}
    drafter, backend.drafter = backend.drafter, None
    try:
        for rep in range(repeats + 1):
            backend.clear_cache()
            t_c, s_c = timed(lambda: backend.sample(prompt, max_tokens=n_new, temperature=0.0, constraint=constraint))
            n = len(s_c.tokens)
            backend.clear_cache()
            t_u, s_u = timed(lambda n=n: backend.sample(prompt, max_tokens=n, temperature=0.0, stop=()))
            with torch.no_grad():
                t_g, g = timed(lambda n=n: backend.model.generate(
                    input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                    do_sample=False, pad_token_id=renderer.stop_ids[0]))
            t_d, n_d = _decode_only(backend, prompt, n)
            n_g = int(g.shape[1] - ids.shape[1])
            if rep == 0:
                continue
            rows.setdefault("constrained_s_per_tok", []).append(t_c / n)
            rows.setdefault("unconstrained_s_per_tok", []).append(t_u / len(s_u.tokens))
            rows.setdefault("generate_s_per_tok", []).append(t_g / n_g)
            rows.setdefault("decode_s_per_tok", []).append(t_d / n_d)
            rows.setdefault("ratio_constrained_to_generate", []).append((t_c / n) / (t_g / n_g))
            rows.setdefault("ratio_unconstrained_to_generate", []).append((t_u / len(s_u.tokens)) / (t_g / n_g))
            rows.setdefault("tokens", []).append(float(n))
    finally:
        backend.drafter = drafter
    return {"prompt_tokens": len(prompt), **{k: stats(v) for k, v in rows.items()},
            "choice": chooser(backend, renderer, repeats)}


def sorted_nucleus(logits_V: Any, temperature: float, top_p: float, gen: Any) -> int:
    """The token choice before `decode.choose`, kept as its reference: the whole vocabulary's probabilities
    sorted, the nucleus kept, one `torch.multinomial` over the sorted vector."""
    import torch

    probs_V = torch.softmax(logits_V.float() / temperature, dim=-1)
    sorted_p, sorted_i = probs_V.sort(descending=True)
    sorted_p = sorted_p * (sorted_p.cumsum(-1) - sorted_p < top_p)
    return int(sorted_i[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])


def chooser(backend: Any, renderer: Any, repeats: int, n: int = 48) -> dict[str, Any]:
    """Milliseconds a token of `decode.choose` at the session's temperature and top-p, and of `sorted_nucleus`,
    alternating, over the model's next-token logits at the `n` positions of a greedy completion."""
    import torch

    from continualcode.agent import SamplingConfig
    from continualcode.backends.decode import choose

    s = SamplingConfig()
    prompt = renderer.prompt_ids(messages_of_length(renderer, 256))
    done = backend.sample(prompt, max_tokens=n, temperature=0.0, stop=())
    with torch.no_grad():
        logits = backend.model(torch.tensor([prompt + done.tokens], device=backend.device)).logits[0, -n:].float()
    rows: dict[str, list[float]] = {}
    gen = torch.Generator(device=backend.device)
    for rep in range(repeats + 1):
        for name, fn in (("choose", choose), ("sorted_nucleus", sorted_nucleus)):
            gen.manual_seed(rep)
            t, _ = timed(lambda fn=fn: [fn(row, s.temperature, s.top_p, gen) for row in logits])
            if rep:
                rows.setdefault(f"{name}_ms_per_tok", []).append(1000 * t / len(logits))
    out = {k: stats(v) for k, v in rows.items()}
    return {**out, "temperature": s.temperature, "top_p": s.top_p, "positions": len(logits),
            "choose_speedup": out["sorted_nucleus_ms_per_tok"]["median"] / out["choose_ms_per_tok"]["median"]}


def _decode_only(backend: Any, prompt: list[int], n: int) -> tuple[float, int]:
    """Seconds and tokens of `n` greedy decode steps with the prompt already in the KV store (the same
    sample run a second time: only the decode steps run)."""
    t, s = timed(lambda: backend.sample(prompt, max_tokens=n, temperature=0.0, stop=()))
    return t, len(s.tokens)


def decode_step_s(backend: Any, renderer: Any, n_new: int = 48, n_prompt: int = 256) -> float:
    """Seconds per greedy decode step (drafts off) after a prompt of at least `n_prompt` tokens (the tool
    schemas alone are ~1k): warmed, then timed."""
    prompt = renderer.prompt_ids(messages_of_length(renderer, n_prompt))
    drafter, backend.drafter = backend.drafter, None
    try:
        backend.clear_cache()
        _decode_only(backend, prompt, n_new)  # prefill and warm
        t, n = _decode_only(backend, prompt, n_new)
    finally:
        backend.drafter = drafter
    return t / n


def bound(backend: Any, decode_s_per_tok: float) -> dict[str, Any]:
    """The bandwidth bound of one decode step and how far the measured step is from it."""
    import torch

    bw = bandwidth(torch.get_num_threads())
    nbytes = weight_bytes(backend.model)
    bound_s = nbytes / bw
    return {"bandwidth_gb_s": bw / 1e9, "weight_bytes": nbytes, "bound_s_per_tok": bound_s,
            "decode_s_per_tok": decode_s_per_tok, "decode_over_bound": decode_s_per_tok / bound_s,
            "threads": torch.get_num_threads()}


def _alternating(backend: Any, renderer: Any, repeats: int, paths: dict[str, Any],
                 n_prompt: int = 256) -> dict[str, float]:
    """The median decode step of each path (name → a context manager factory), the paths alternating
    `repeats` times so that a change in the machine's load hits all of them."""
    times: dict[str, list[float]] = {name: [] for name in paths}
    for _ in range(repeats):
        for name, path in paths.items():
            with path():
                times[name].append(decode_step_s(backend, renderer, n_prompt=n_prompt))
    return {name: statistics.median(ts) for name, ts in times.items()}


def gemv(backend: Any, renderer: Any, repeats: int) -> dict[str, Any]:
    """Decode steps on the same bf16 weights, alternating: plain `F.linear`, torch's one-row GEMV
    (`torch.mv`) and, where built, the native kernels (quant.py, native.py); sdpa attention for all three."""
    from contextlib import nullcontext

    from continualcode.backends import native
    from continualcode.backends.attention import sdpa_only
    from continualcode.backends.quant import full_weights, plain, torch_kernels, unfused

    paths = {"plain": plain, "mv": torch_kernels, **({"native": nullcontext} if native.kernels() else {})}
    with full_weights(), sdpa_only(), unfused():
        t = _alternating(backend, renderer, repeats, paths)
    out = {"plain_s_per_tok": t["plain"], "mv_s_per_tok": t["mv"], "plain_over_mv": t["plain"] / t["mv"],
           "native": native.why_not() or "built"}
    if "native" in t:
        out |= {"native_s_per_tok": t["native"], "mv_over_native": t["mv"] / t["native"]}
    return out


def attention(backend: Any, renderer: Any, repeats: int, lengths: Sequence[int] = (1024, 3072)) -> dict[str, Any]:
    """Decode steps with the grouped-query decode kernel (attention.py) against transformers' `sdpa` on the
    same weights, alternating, after prompts of each length (full weights, one-row GEMV both ways)."""
    from contextlib import nullcontext

    from continualcode.backends.attention import sdpa_only
    from continualcode.backends.quant import full_weights, unfused

    rows = []
    with full_weights(), unfused():
        for n in lengths:
            t = _alternating(backend, renderer, repeats, {"sdpa": sdpa_only, "grouped": nullcontext}, n_prompt=n)
            rows.append({"prompt_tokens": len(renderer.prompt_ids(messages_of_length(renderer, n))),
                         "sdpa_s_per_tok": t["sdpa"], "grouped_s_per_tok": t["grouped"],
                         "sdpa_over_grouped": t["sdpa"] / t["grouped"]})
    return {"by_length": rows}


def draft_prompts(file_text: str, file_name: str, kinds: Sequence[str] = ("read", "edit_lines", "write"),
                  ) -> list[tuple[str, list[Any]]]:
    """(intended tool kind, conversation) pairs whose next call copies from the context or not, for the
    `kinds` the renderer shows (the edits are asked of `edit_lines`, and of `replace` when it is shown)."""
    from continualcode.records import Message, ToolCall

    lines = file_text.splitlines()
    shown = "\n".join(f"{i + 1:6}\t{line}" for i, line in enumerate(lines[:60]))
    read = ToolCall("read", {"path": file_name, "offset": 1, "limit": 60}).to_text()

    def after_read(task: str) -> list[Any]:
        return [Message("user", task), Message("assistant", read), Message("tool", shown, {"tool": "read"})]

    first = next((i for i, line in enumerate(lines[:60]) if line.strip().startswith("def ")), 10)
    edits = [f"In {file_name}, add the comment '# checked' at the end of line {first + 1}, keeping the line "
             "otherwise as it is.",
             f"Indent nothing, change nothing else: replace lines 1 to 12 of {file_name} by the same lines, with "
             "'xml' written as 'XML' in comments."]
    prompts = [
        ("read", [Message("user", f"Show me the first lines of {file_name}.")]),
        ("read", [Message("user", f"What is in lines 100 to 140 of {file_name}?")]),
        *(("edit_lines", after_read(task)) for task in edits),
        ("write", after_read(f"Create header.py holding exactly lines 1 to 25 of {file_name}.")),
        ("write", after_read("Copy the first 20 lines shown above into a new file notes.txt.")),
        *(("replace", after_read(task)) for task in edits),
    ]
    return [(kind, msgs) for kind, msgs in prompts if kind in kinds]


def drafts(backend: Any, renderer: Any, prompts: Sequence[tuple[str, list[Any]]], *, max_tokens: int = 320,
           repeats: int = 1) -> dict[str, Any]:
    """Greedy decoding with drafts off, with token lookup alone and with the product's drafter (text lookup,
    then tokens: `decode.Lookup`), per prompt: time per token, drafted/accepted, speedup of each.  Each
    prompt's call is constrained to its intended tool (the agent's prompt, a narrower grammar): without it
    the 0.5B model answered every edit and write prompt with a `read`, and no edit or write was measured."""
    from continualcode.backends.decode import Lookup, PromptLookup

    rows: list[dict[str, Any]] = []
    configured = backend.drafter  # put back afterwards: with `draft=off` the later parts run without drafts
    modes = {"off": None, "tokens": PromptLookup(), "on": configured or Lookup(backend.tokenizer)}
    try:
        for intended, msgs in prompts:
            constraint = renderer.constraint(allow_text=False, only=(intended,))
            prompt = renderer.prompt_ids(msgs)
            times: dict[str, list[float]] = {m: [] for m in modes}
            samples: dict[str, Any] = {}
            for _ in range(repeats):
                for mode, d in modes.items():
                    backend.drafter = d
                    backend.clear_cache()
                    backend._prefix(prompt[:-1], "live")  # the prompt in the store, as after the previous turn
                    t0 = time.perf_counter()
                    s = backend.sample(prompt, max_tokens=max_tokens, temperature=0.0, constraint=constraint, seed=0)
                    times[mode].append(time.perf_counter() - t0)
                    samples[mode] = (s, backend.last_decode)
            (off, _), (tk, dt), (on, d) = samples["off"], samples["tokens"], samples["on"]
            parsed = renderer.parse(renderer.decode(on.tokens))
            t_off, t_tk, t_on = min(times["off"]), min(times["tokens"]), min(times["on"])
            rows.append({"intended": intended, "kind": intended, "complete": parsed.call is not None,
                         "tokens": len(on.tokens), "same_tokens": on.tokens == off.tokens == tk.tokens,
                         "s_off": t_off, "s_on": t_on, "speedup": t_off / t_on,
                         "drafted": d.drafted, "accepted": d.accepted, "forwards": d.forwards,
                         "s_tokens": t_tk, "speedup_tokens": t_off / t_tk,
                         "drafted_tokens": dt.drafted, "accepted_tokens": dt.accepted})
    finally:
        backend.drafter = configured
    by_kind: dict[str, Any] = {}
    for kind in sorted({r["kind"] for r in rows}):
        rs = [r for r in rows if r["kind"] == kind]
        by_kind[kind] = _pooled(rs)
    return {"rows": rows, "by_kind": by_kind, "overall": _pooled(rows)}


def _pooled(rs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Speedup of the pooled time (Σ off / Σ on) and the acceptance rate over some prompts; the same for token
    lookup alone (`*_tokens`)."""
    off, on = sum(r["s_off"] for r in rs), sum(r["s_on"] for r in rs)
    drafted, accepted = sum(r["drafted"] for r in rs), sum(r["accepted"] for r in rs)
    tk, dt, at = (sum(r.get(f, 0) for r in rs) for f in ("s_tokens", "drafted_tokens", "accepted_tokens"))
    return {"n": len(rs), "tokens": sum(r["tokens"] for r in rs), "speedup": off / on if on else None,
            "acceptance": accepted / drafted if drafted else None,
            "tokens_per_forward": sum(r["tokens"] for r in rs) / max(1, sum(r["forwards"] + 1 for r in rs)),
            "same_tokens": all(r["same_tokens"] for r in rs),
            "speedup_tokens": off / tk if tk else None, "acceptance_tokens": at / dt if dt else None}


def int8(backend: Any, renderer: Any, prompts: Sequence[tuple[str, list[Any]]], repeats: int) -> dict[str, Any]:
    """Decode steps with the int8 copies against bf16 on the same backend (quantized here, if it was not
    already), the two paths alternating `repeats` times so that a change in the machine's load hits both;
    and the KL between the two next-token distributions after each speed prompt."""
    from contextlib import nullcontext

    import torch

    from continualcode.backends.quant import decoding, full_weights, quantize_for_decode

    def dists() -> list[torch.Tensor]:
        out_d = []
        with torch.no_grad():
            for _, msgs in prompts:
                ids = renderer.prompt_ids(msgs)
                out = backend.model(input_ids=torch.tensor([ids[:-1]]), use_cache=True, logits_to_keep=1)
                kw = backend._cache_kw  # transformers 5.x: `cache`, earlier `past_key_values`
                last = backend.model(input_ids=torch.tensor([ids[-1:]]), **{kw: getattr(out, kw)})
                out_d.append(torch.log_softmax(last.logits[0, -1].float(), -1))
        return out_d

    n = quantize_for_decode(backend.model)
    with full_weights():
        d_bf16 = dists()
    with decoding():
        d_int8 = dists()
    t = _alternating(backend, renderer, repeats, {"bf16": full_weights, "int8": nullcontext})
    t_bf16, t_int8 = t["bf16"], t["int8"]
    kls = [float((p.exp() * (p - q)).sum()) for p, q in zip(d_bf16, d_int8, strict=True)]
    same = [int(p.argmax()) == int(q.argmax()) for p, q in zip(d_bf16, d_int8, strict=True)]
    return {"linears": n, "bf16_s_per_tok": t_bf16, "int8_s_per_tok": t_int8, "speedup": t_bf16 / t_int8,
            "kl_mean": sum(kls) / len(kls), "kl_max": max(kls), "same_top_token": sum(same) / len(same),
            "prompts": len(kls)}


def fused(backend: Any, renderer: Any, repeats: int, *, int8: bool,
          lengths: Sequence[int] = (1024, 3072)) -> dict[str, Any]:
    """See the module docstring: `fused_speedup` is op-by-op over fused decode steps (full weights, 1k prompt).
    With `int8` the model gets its int8 copies first (if the int8 part has not given them) and both paths
    are measured with them too."""
    from contextlib import nullcontext

    from continualcode.backends import fused as fz
    from continualcode.backends.quant import full_weights, quantize_for_decode, unfused

    if getattr(backend, "fused", None) is None:
        return {"skipped": fz.why_not() or "no fused decode here (a GPU, no native kernels, or fused_decode=false)"}
    if int8:
        quantize_for_decode(backend.model)
    rows = []
    for n in lengths:
        row: dict[str, Any] = {"prompt_tokens": len(renderer.prompt_ids(messages_of_length(renderer, n)))}
        with full_weights():
            t = _alternating(backend, renderer, repeats, {"unfused": unfused, "fused": nullcontext}, n_prompt=n)
        row |= {"full_unfused_s_per_tok": t["unfused"], "full_fused_s_per_tok": t["fused"],
                "full_speedup": t["unfused"] / t["fused"]}
        if int8:
            t = _alternating(backend, renderer, repeats, {"unfused": unfused, "fused": nullcontext}, n_prompt=n)
            row |= {"int8_unfused_s_per_tok": t["unfused"], "int8_fused_s_per_tok": t["fused"],
                    "int8_speedup": t["unfused"] / t["fused"]}
        rows.append(row)
    return {"by_length": rows, "fused_speedup": rows[0]["full_speedup"]}


def graphs(backend: Any, renderer: Any, cfg: Any, repeats: int,
           lengths: Sequence[int] = (1024, 3072)) -> dict[str, Any]:
    """See the module docstring: `graphs_speedup` is eager over graphed decode steps after a 1k prompt."""
    from contextlib import contextmanager, nullcontext

    from continualcode.bench.speed.step import denial
    from continualcode.learn.step import Learner

    recorded = backend.graphs
    if recorded is None:
        return {"skipped": "no CUDA graphs here (a CPU, an unsupported model, or cuda_graphs=false)"}

    @contextmanager
    def eager() -> Any:
        backend.graphs = None
        try:
            yield
        finally:
            backend.graphs = recorded

    rows = []
    for n in lengths:
        t = _alternating(backend, renderer, repeats, {"eager": eager, "graphs": nullcontext}, n_prompt=n)
        rows.append({"prompt_tokens": len(renderer.prompt_ids(messages_of_length(renderer, n))),
                     "eager_s_per_tok": t["eager"], "graphs_s_per_tok": t["graphs"],
                     "speedup": t["eager"] / t["graphs"]})
    learner, c = Learner(backend, renderer, cfg.learn_config()), denial(renderer, 1024, 80)
    corr: dict[str, dict[str, list[float]]] = {"eager": {"total": [], "distill": []},
                                                "graphs": {"total": [], "distill": []}}
    for _ in range(repeats):
        for name, path in (("eager", eager), ("graphs", nullcontext)):
            with path():
                snap = backend.snapshot()
                backend.clear_cache()
                backend.sample(list(c.prompt_ids), max_tokens=1, temperature=0.0)  # the proposal's KV, as in the agent
                t, m = timed(lambda: learner(c))
                t_settle, _ = timed(learner.settle)  # deferred distillation (distill_deferred): counted in the total
                t += t_settle
                backend.restore(snap)
            corr[name]["total"].append(t)
            corr[name]["distill"].append(float((m or {}).get("sec_distill", 0.0)) + t_settle)
    return {"by_length": rows, "failed": recorded.failed,
            "correction": {k: {"total": stats(v["total"]), "distill": stats(v["distill"])} for k, v in corr.items()},
            "graphs_speedup": rows[0]["speedup"]}
