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
- peak RSS of this process and of the cold-start process.
Writes results.json and results.md to --out.  Absolute seconds on a shared machine are noise;
the ratios are the result.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PROMPT = b"\x1b[?2004h"  # prompt_toolkit turns bracketed paste on each time it starts reading a line
CODE_LINE = "    total = compute_total(items, tax_rate=0.2, discount=None)  # keep the running sum\n"


def _stats(xs: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _messages_of_length(renderer: Any, n_tokens: int) -> list[Any]:
    """A user message with a code file long enough that the rendered prompt has ≈ n_tokens."""
    from continualcode.records import Message

    def msgs(k: int) -> list[Any]:
        body = "".join(CODE_LINE for _ in range(k))
        return [Message("user", f"Here is billing.py:\n{body}\nAdd a divide helper to billing.py.")]

    lo, hi = 0, max(1, n_tokens // 4)
    while len(renderer.prompt_ids(msgs(hi))) < n_tokens:
        hi *= 2
    while lo < hi:
        mid = (lo + hi) // 2
        if len(renderer.prompt_ids(msgs(mid))) < n_tokens:
            lo = mid + 1
        else:
            hi = mid
    return msgs(lo)


def _completion(renderer: Any, n_tokens: int) -> list[int]:
    from continualcode.records import ToolCall

    content = "def divide(a, b):\n    if b == 0:\n        raise ZeroDivisionError('b is zero')\n    return a / b\n"
    call = ToolCall("edit_lines", {"path": "billing.py", "start_line": 40, "end_line": 39, "content": content})
    toks = renderer.tok.encode(call.to_text(), add_special_tokens=False)
    while len(toks) < n_tokens - 1:
        content += "# checked\n"
        call = ToolCall("edit_lines", {"path": "billing.py", "start_line": 40, "end_line": 39, "content": content})
        toks = renderer.tok.encode(call.to_text(), add_special_tokens=False)
    return [*toks, renderer.stop_ids[0]]


def bench_step(backend: Any, renderer: Any, cfg: Any, lengths: Sequence[int], n_completion: int,
               repeats: int) -> dict[str, Any]:
    from continualcode.learn.step import Learner
    from continualcode.records import Correction, Sample

    learner = Learner(backend, renderer, cfg.learn_config())
    completion = _completion(renderer, n_completion)
    out: dict[str, Any] = {}
    for n in lengths:
        msgs = _messages_of_length(renderer, n)
        prompt = renderer.prompt_ids(msgs)
        c = Correction("deny", tuple(msgs), prompt, Sample(completion, [0.0] * len(completion), "stop"),
                       renderer.decode(completion), "use edit_lines at the end of the file, and add a docstring")
        rows: dict[str, list[float]] = {}
        for rep in range(repeats + 1):  # the first is a warm-up, not recorded
            snap = backend.snapshot()
            backend.clear_cache()
            t_fwd, _ = _timed(lambda p=prompt: backend.score(p, completion))
            for label, primed in (("cold", False), ("after_sampling", True)):
                backend.restore(snap)
                backend.clear_cache()
                if primed:  # what sampling the proposal leaves in the store
                    backend._prefix_cache(prompt[:-1], "live")
                t_total, rep_m = _timed(lambda c=c: learner(c))
                if rep == 0:
                    continue
                parts = {k: rep_m[k] for k in ("sec_teacher", "sec_ref", "sec_student_fwd", "sec_backward",
                                               "sec_optimizer", "sec_after")}
                step = sum(v for k, v in parts.items() if k != "sec_after")
                for k, v in {**parts, "step": step, "step_plus_check": t_total}.items():
                    rows.setdefault(f"{label}.{k}", []).append(v)
                rows.setdefault(f"{label}.ratio_step_to_forward", []).append(step / t_fwd)
                rows.setdefault(f"{label}.ratio_total_to_forward", []).append(t_total / t_fwd)
            backend.restore(snap)
            if rep > 0:
                rows.setdefault("forward", []).append(t_fwd)
        out[str(n)] = {"prompt_tokens": len(prompt), "completion_tokens": len(completion),
                       **{k: _stats(v) for k, v in rows.items()}}
    return out


def bench_sampling(backend: Any, renderer: Any, repeats: int, n_new: int = 48) -> dict[str, Any]:
    import torch

    msgs = _messages_of_length(renderer, 256)
    prompt = renderer.prompt_ids(msgs)
    constraint = renderer.constraint(allow_text=False)
    ids = torch.tensor([prompt], device=backend.device)
    rows: dict[str, list[float]] = {}
    for rep in range(repeats + 1):
        backend.clear_cache()
        t_c, s_c = _timed(lambda: backend.sample(prompt, max_tokens=n_new, temperature=0.0, constraint=constraint))
        n = len(s_c.tokens)
        backend.clear_cache()
        t_u, s_u = _timed(lambda n=n: backend.sample(prompt, max_tokens=n, temperature=0.0, stop=()))
        with torch.no_grad():
            t_g, g = _timed(lambda n=n: backend.model.generate(
                input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=n, min_new_tokens=n,
                do_sample=False, pad_token_id=renderer.stop_ids[0]))
        n_g = int(g.shape[1] - ids.shape[1])
        if rep == 0:
            continue
        rows.setdefault("constrained_s_per_tok", []).append(t_c / n)
        rows.setdefault("unconstrained_s_per_tok", []).append(t_u / len(s_u.tokens))
        rows.setdefault("generate_s_per_tok", []).append(t_g / n_g)
        rows.setdefault("ratio_constrained_to_generate", []).append((t_c / n) / (t_g / n_g))
        rows.setdefault("ratio_unconstrained_to_generate", []).append((t_u / len(s_u.tokens)) / (t_g / n_g))
        rows.setdefault("tokens", []).append(float(n))
    return {"prompt_tokens": len(prompt), **{k: _stats(v) for k, v in rows.items()}}


def interactive_start(args: Sequence[str], lines: Sequence[str] = ("/quit",),
                      timeout: float = 300.0) -> tuple[float, float, str]:
    """Run the interactive agent (`continualcode ARGS`) on a pseudo-terminal, typing the next of
    `lines` each time a prompt shows: seconds to the first prompt, seconds to its exit, and all it
    wrote.  With `/quit` first, the exit waits for the background load: it bounds backend-ready."""
    import os
    import pty
    import select
    import signal

    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "continualcode", f"state_home={d}/state", f"workspace={d}", *args]
        t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # the child: the agent, on the pty
            os.execvp(cmd[0], cmd)
        buf, t_prompt, typed = b"", None, 0
        try:
            while True:
                if not select.select([fd], [], [], timeout)[0]:
                    raise TimeoutError(f"no prompt within {timeout:.0f} s: {buf[-200:]!r}")
                try:
                    data = os.read(fd, 4096)
                except OSError:  # EIO: the child has exited
                    break
                if not data:
                    break
                buf += data
                if buf.count(PROMPT) > typed and typed < len(lines):
                    t_prompt = t_prompt or time.perf_counter() - t0
                    os.write(fd, lines[typed].encode() + b"\r")
                    typed += 1
        finally:
            if t_prompt is None:
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(fd)
        if t_prompt is None:
            raise RuntimeError(f"the agent exited without a prompt: {buf[-300:]!r}")
        return t_prompt, time.perf_counter() - t0, buf.decode(errors="replace")


def bench_start(cfg: Any, backend: Any, repeats: int) -> dict[str, Any]:
    code = ("import time; t=time.time(); from continualcode.backends.local import LocalBackend; "
            f"b=LocalBackend({cfg.model_name!r}, dtype={cfg.dtype!r}); print(time.time()-t)")
    walls, inner, prompt, quit_ = [], [], [], []
    for _ in range(repeats):
        t = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        walls.append(time.perf_counter() - t)
        inner.append(float(r.stdout.strip().splitlines()[-1]))
        p, q, _ = interactive_start([f"model_name={cfg.model_name}", f"dtype={cfg.dtype}"])
        prompt.append(p)
        quit_.append(q)
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    with tempfile.TemporaryDirectory() as d:
        backend.save(Path(d) / "a")
        reload = [_timed(lambda: backend.load(Path(d) / "a"))[0] for _ in range(repeats)]
    return {"prompt_ready_s": _stats(prompt), "backend_ready_and_quit_s": _stats(quit_),
            "cold_start_process_s": _stats(walls), "cold_start_in_python_s": _stats(inner),
            "adapter_reload_s": _stats(reload), "cold_start_peak_rss_mb": child_rss}


def to_markdown(res: dict[str, Any]) -> str:
    def f(s: dict[str, float], unit: str = "", digits: int = 2) -> str:
        return f"{s['median']:.{digits}f}{unit} ({s['min']:.{digits}f}–{s['max']:.{digits}f})"

    lines = [f"# Speed — {res['model']} ({res['dtype']}), {res['date']}", "",
             f"`{res['command']}` · {res['machine']} · median (min–max) of {res['repeats']} repeats", "",
             "## SDPO step per correction", "",
             "| prompt tokens | forward s | step (after sampling) s | step/forward | step+check/forward | "
             "step (cold) s | cold step/forward |", "|---|---|---|---|---|---|---|"]
    for n, r in res["step"].items():
        lines.append(f"| {r['prompt_tokens']} ({n}) | {f(r['forward'])} | {f(r['after_sampling.step'])} | "
                     f"{f(r['after_sampling.ratio_step_to_forward'])} | "
                     f"{f(r['after_sampling.ratio_total_to_forward'])} | "
                     f"{f(r['cold.step'])} | {f(r['cold.ratio_step_to_forward'])} |")
    lines += ["", "Breakdown after sampling (seconds, median):", "",
              "| prompt | teacher | reference | student fwd | backward | optimizer | post-step check |",
              "|---|---|---|---|---|---|---|"]
    for n, r in res["step"].items():
        parts = [r[f"after_sampling.{k}"]["median"] for k in
                 ("sec_teacher", "sec_ref", "sec_student_fwd", "sec_backward", "sec_optimizer", "sec_after")]
        lines.append(f"| {n} | " + " | ".join(f"{p:.3f}" for p in parts) + " |")
    s = res["sampling"]
    lines += ["", "## Sampling (greedy, same prompt and token count)", "",
              f"- agent sampler, constrained: {f(s['constrained_s_per_tok'], ' s/tok', 4)}",
              f"- agent sampler, unconstrained: {f(s['unconstrained_s_per_tok'], ' s/tok', 4)}",
              f"- `model.generate`: {f(s['generate_s_per_tok'], ' s/tok', 4)}",
              f"- ratio constrained / generate: **{f(s['ratio_constrained_to_generate'])}**; "
              f"unconstrained / generate: {f(s['ratio_unconstrained_to_generate'])}", "",
              "## Start and memory", ""]
    st = res["start"]
    lines += [f"- interactive agent, process start → prompt ready for the first task (the model loads in the "
              f"background): **{f(st['prompt_ready_s'], ' s')}**; → `/quit` typed at once and processed (waits for "
              f"the load): {f(st['backend_ready_and_quit_s'], ' s')}",
              f"- new process → backend ready (model converted): {f(st['cold_start_process_s'], ' s')}",
              f"  (inside Python: {f(st['cold_start_in_python_s'], ' s')})",
              f"- warm reload of a saved adapter: {f(st['adapter_reload_s'], ' s', 3)}",
              f"- peak RSS: this process {res['peak_rss_mb']:.0f} MB (the steps above included); "
              f"cold-start process {st['cold_start_peak_rss_mb']:.0f} MB"]
    return "\n".join(lines) + "\n"


def main(args: Sequence[str]) -> int:
    from continualcode.build import build_backend, make_renderer
    from continualcode.config import parse_config

    p = argparse.ArgumentParser(prog="continualcode bench speed")
    p.add_argument("--out", required=True)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--lengths", default="256,1024,4096")
    p.add_argument("--completion", type=int, default=80)
    ns, rest = p.parse_known_args(list(args))
    cfg = parse_config(rest)
    backend = build_backend(cfg)
    renderer = make_renderer(backend)
    lengths = [int(x) for x in ns.lengths.split(",") if x]
    res: dict[str, Any] = {
        "command": "continualcode bench speed " + " ".join(args), "model": backend.model_id,
        "dtype": str(getattr(backend, "dtype", "")), "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores", "repeats": ns.repeats,
        "config": {"distill_loss": cfg.distill_loss, "kl_beta": cfg.kl_beta, "prefix_grad": cfg.prefix_grad},
    }
    print("sampling …", flush=True)
    res["sampling"] = bench_sampling(backend, renderer, ns.repeats)
    print("steps …", flush=True)
    res["step"] = bench_step(backend, renderer, cfg, lengths, ns.completion, ns.repeats)
    print("start …", flush=True)
    res["start"] = bench_start(cfg, backend, ns.repeats)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out = Path(ns.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    (out / "results.md").write_text(to_markdown(res))
    print(to_markdown(res))
    return 0
