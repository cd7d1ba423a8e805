"""The speed benchmark's int8 part on the real embedded SmolLM2-135M (bf16): both paths timed in one
process, the int8 copies in place afterwards, the distributions close."""

from __future__ import annotations

from pathlib import Path


def test_int8_part_alternates_paths_and_leaves_the_model_quantized(cache_dir: Path) -> None:
    from continualcode.backends.local import LocalBackend
    from continualcode.backends.quant import DecodeLinear
    from continualcode.bench.speed import decode
    from continualcode.build import make_renderer

    b = LocalBackend("smollm2-135m", dtype="bf16", cache=cache_dir, seed=0, warmup=False, threads=1)
    renderer = make_renderer(b)
    assert decode.decode_step_s(b, renderer, n_new=4) > 0
    prompts = decode.draft_prompts("def f():\n    return 1\n" * 5, "m.py")[:2]
    res = decode.int8(b, renderer, prompts, repeats=1)
    assert res["linears"] > 100 and res["prompts"] == 2
    assert res["bf16_s_per_tok"] > 0 and res["int8_s_per_tok"] > 0
    assert res["speedup"] == res["bf16_s_per_tok"] / res["int8_s_per_tok"]
    assert 0 < res["kl_mean"] <= res["kl_max"] < 0.05  # changed, by rounding only
    assert isinstance(b.model.get_output_embeddings(), DecodeLinear)
    again = decode.int8(b, renderer, prompts, repeats=1)  # already quantized: counted, not wrapped twice
    assert again["linears"] == res["linears"]


def test_gemv_part_times_both_kernels(cache_dir: Path) -> None:
    from continualcode.backends.local import LocalBackend
    from continualcode.bench.speed import decode
    from continualcode.build import make_renderer

    b = LocalBackend("smollm2-135m", dtype="bf16", cache=cache_dir, seed=0, warmup=False, threads=1)
    res = decode.gemv(b, make_renderer(b), repeats=1)
    assert res["plain_s_per_tok"] > 0 and res["mv_s_per_tok"] > 0
    assert res["plain_over_mv"] == res["plain_s_per_tok"] / res["mv_s_per_tok"]
