"""`continualcode bench speed`: what a correction costs, as ratios measured in one run.

For prompt lengths (default 256 / 1k / 4k tokens) and a ~80-token tool call it measures, median
of `--repeats` with min–max spread:
- one plain student forward over the same tokens (`score`, logits on completion positions only,
  no KV reuse): the unit every ratio is expressed in;
- the SDPO step through the product path (`learn.step.Learner` on a `Correction`): teacher
  scoring, reference scoring, student forward, backward, optimizer, and the post-step check —
  both "cold" (nothing cached) and "after sampling" (the live KV of the student's prompt is in
  the store, as it is in the agent right after the model proposed the call);
- sampling: the agent's sampler (grammar-constrained and not) vs `model.generate` on the same
  prompt, greedy, same number of new tokens: time per token and the ratio;
- cold start: the interactive agent on a pseudo-terminal, process start → prompt (the backend loads
  in the background while the first task is typed) and → exit after an immediate `/quit` (which
  waits for the load); a new process → `LocalBackend` ready; warm adapter reload;
- peak RSS of this process and of the cold-start process;
- decoding against the memory-bandwidth bound, the decode steps' attention kernel against `sdpa`
  after 1k- and 3k-token prompts, (CPU) fused native decode steps against op-by-op ones, (GPU)
  recorded CUDA-graph decode steps against eager ones, draft
  decoding per tool kind (each prompt's call constrained to its tool; on CPU again on the int8 copies
  after the int8 part: `draft_speedup_int8`), and a replayed
  multi-turn session on a real file (`decode.py`, `session.py`).
Every part but the session runs on the full (bf16) weights, so `decode_over_bound` is the bf16
decode against the bf16 bound; the int8 part then quantizes the model, and the session replays last,
on the path the config gives a user (`decode_int8`, on by default on CPU; `session_decode` says which).
`--parts` picks what to measure.  Writes results.json and results.md to --out.  Absolute seconds on
a shared machine are noise; the ratios are the result.  Machine-readable: `decode_over_bound`,
`draft_speedup` (per tool kind and overall) and `turn_latency_median_s` (the replayed session; its
user reads each proposal for `--read-s` seconds before approving, and with `speculate` on the same
session is first replayed without it: `speculation_speedup` is the ratio of the two medians).
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# int8 quantizes; session: the user's path
PARTS = ("sampling", "bound", "attention", "graphs", "drafts", "step", "start", "int8", "fused", "session")


def main(args: Sequence[str]) -> int:
    import chz

    from continualcode.bench.speed import decode, session, start, step
    from continualcode.bench.speed.common import machine
    from continualcode.bench.speed.report import to_markdown
    from continualcode.build import build_backend, edit_tool, make_renderer, worked_example
    from continualcode.config import parse_config

    p = argparse.ArgumentParser(prog="continualcode bench speed")
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lengths", default="256,1024,4096")
    p.add_argument("--completion", type=int, default=80)
    p.add_argument("--read-s", type=float, default=2.0, help="seconds the session's user reads each proposal")
    p.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    ns, rest = p.parse_known_args(list(args))
    parts = [x for x in ns.parts.split(",") if x]
    if unknown := set(parts) - set(PARTS):
        p.error(f"unknown parts {sorted(unknown)}")
    cfg = parse_config(rest)
    backend = build_backend(chz.replace(cfg, decode_int8=False))
    renderer = make_renderer(backend, cfg)  # `edit_tool=both` adds `replace` calls to the drafts part
    shown = [t["function"]["name"] for t in renderer.tools]

    def prompts() -> list[Any]:
        return decode.draft_prompts(*_draft_file(cfg), shown)

    res: dict[str, Any] = {
        "command": "continualcode bench speed " + " ".join(args), "model": backend.model_id,
        "dtype": str(getattr(backend, "dtype", "")), "date": time.strftime("%Y-%m-%d"),
        "machine": machine(), "repeats": ns.repeats,
        "config": {"distill_loss": cfg.distill_loss, "kl_beta": cfg.kl_beta, "prefix_grad": cfg.prefix_grad,
                   "draft": cfg.draft, "threads": cfg.threads, "edit_tool": edit_tool(cfg),
                   "worked_example": worked_example(cfg)},
    }
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)

    def run(name: str, fn: Any, part: str | None = None) -> None:
        if (part or name) in parts:
            print(f"{name} …", flush=True)
            res[name] = fn()
            _write(out, res, to_markdown)  # a partial result survives an interrupt

    run("sampling", lambda: decode.sampler(backend, renderer, ns.repeats))
    if "bound" in parts:
        per_tok = res["sampling"]["decode_s_per_tok"]["median"] if "sampling" in res else \
            decode.sampler(backend, renderer, 1)["decode_s_per_tok"]["median"]
        run("bound", lambda: {**decode.bound(backend, per_tok), **decode.gemv(backend, renderer, ns.repeats)})
        res["decode_over_bound"] = res["bound"]["decode_over_bound"]
    run("attention", lambda: decode.attention(backend, renderer, ns.repeats))
    run("graphs", lambda: decode.graphs(backend, renderer, cfg, ns.repeats))
    if "speedup" in res.get("graphs", {}).get("by_length", [{}])[0]:
        res["graphs_speedup"] = res["graphs"]["graphs_speedup"]
    run("drafts", lambda: decode.drafts(backend, renderer, prompts()))
    if "drafts" in res:
        res["draft_speedup"] = _speedups(res["drafts"])
    lengths = [int(x) for x in ns.lengths.split(",") if x]
    run("step", lambda: step.bench_step(backend, renderer, cfg, lengths, ns.completion, ns.repeats))
    run("start", lambda: start.bench_start(cfg, backend, ns.repeats))
    run("int8", lambda: decode.int8(backend, renderer, prompts(), ns.repeats))
    run("fused", lambda: decode.fused(backend, renderer, ns.repeats,
                                      int8=(cfg.decode_int8 or "int8" in res) and backend.device.type == "cpu"))
    if "drafts" in parts and backend.device.type == "cpu" and ("int8" in res or ("fused" in res and cfg.decode_int8)):
        # the drafts again on the int8 copies (the CPU default): there a drafted run is compute-bound
        run("drafts_int8", lambda: decode.drafts(backend, renderer, prompts()), "drafts")
        res["draft_speedup_int8"] = _speedups(res["drafts_int8"])
    if "fused_speedup" in res.get("fused", {}):
        res["fused_speedup"] = res["fused"]["fused_speedup"]
        if "bound" in res:  # the int8 fused step against the full weights' bound (its own bytes are fewer)
            r0 = res["fused"]["by_length"][0]
            if "int8_fused_s_per_tok" in r0:
                res["int8_decode_over_bound"] = r0["int8_fused_s_per_tok"] / res["bound"]["bound_s_per_tok"]
    if "session" in parts:
        if cfg.decode_int8 and "int8" not in res and backend.device.type == "cpu":
            from continualcode.backends.quant import quantize_for_decode

            quantize_for_decode(backend.model)
        res["session_decode"] = "int8" if cfg.decode_int8 or "int8" in res else "bf16"
        if cfg.speculate:  # the same session without the speculative prefill, just before: the gain in one run
            run("session", lambda: session.replay(backend, renderer, cfg, read_s=ns.read_s, speculate=False))
            res["session_no_speculation"] = res.pop("session")
        run("session", lambda: session.replay(backend, renderer, cfg, read_s=ns.read_s))
        res["turn_latency_median_s"] = res["session"]["turn_latency_median_s"]
        if "session_no_speculation" in res:
            res["speculation_speedup"] = (res["session_no_speculation"]["turn_latency_median_s"]
                                          / res["turn_latency_median_s"])
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    _write(out, res, to_markdown)
    print(to_markdown(res))
    return 0


def _speedups(drafts: dict[str, Any]) -> dict[str, float]:
    """The drafts part's speedup per tool kind and overall (the machine-readable `draft_speedup*`)."""
    return {**{k: v["speedup"] for k, v in drafts["by_kind"].items()}, "overall": drafts["overall"]["speedup"]}


def _draft_file(cfg: Any) -> tuple[str, str]:
    """The real file the draft prompts quote: xmltodict.py of the pinned xmltodict sdist."""
    from continualcode.bench.tasks.packages import PINS, source
    from continualcode.models import cache_root

    src = source(PINS["xmltodict"], Path(cfg.cache_dir).expanduser() if cfg.cache_dir else cache_root())
    return (src / "xmltodict.py").read_text(), "xmltodict.py"


def _write(out: Path, res: dict[str, Any], to_markdown: Any) -> None:
    from continualcode.fsio import atomic_write

    atomic_write(out / "results.json", json.dumps(res, indent=1) + "\n")
    atomic_write(out / "results.md", to_markdown(res))
