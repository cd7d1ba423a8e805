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


def test_session_report_shows_both_replays_and_the_speculation_ratio() -> None:
    from continualcode.bench.speed.report import to_markdown

    def replay(spec: bool, waits: list[float], prefilled: int) -> dict:
        turns = [{"approval_to_proposal_s": w, "tool_s": 0.5, "prompt_tokens": 1000, "prefill_tokens": prefilled,
                  "decoded_tokens": 40, "kv_hit_rate": 1 - prefilled / 1000} for w in waits]
        return {"turns": turns, "turn_latency_median_s": sorted(waits)[1], "max_prompt_tokens": 1000,
                "kv_hit_rate_median": 1 - prefilled / 1000, "read_s": 2.0, "speculate": spec}

    res = {"model": "m", "dtype": "bf16", "date": "d", "machine": "x", "repeats": 1, "command": "c",
           "session_no_speculation": replay(False, [9.0, 12.0, 15.0], 800),
           "session": replay(True, [6.0, 8.0, 10.0], 1), "session_decode": "int8"}
    res["speculation_speedup"] = 12.0 / 8.0
    md = to_markdown(res)
    assert "after 2 s of reading" in md
    assert md.index("### speculate=false") < md.index("### the config's path (speculative prefill")
    assert "**12.0 s**" in md and "**8.0 s**" in md and "**1.50×** faster" in md
    assert "| 1 | 9.0 | 0.50 | 1000 | 800 | 40 |" in md and "| 1 | 6.0 | 0.50 | 1000 | 1 | 40 |" in md


def test_fused_part_times_both_paths_with_full_and_int8_weights(cache_dir: Path) -> None:
    from continualcode.backends import native
    from continualcode.backends.local import LocalBackend
    from continualcode.bench.speed import decode
    from continualcode.bench.speed.report import to_markdown
    from continualcode.build import make_renderer

    b = LocalBackend("smollm2-135m", dtype="fp32", cache=cache_dir, seed=0, warmup=False, threads=1)
    res = decode.fused(b, make_renderer(b), repeats=1, int8=True, lengths=(256,))
    if native.kernels() is None:
        assert "skipped" in res
        return
    (row,) = res["by_length"]
    assert row["full_unfused_s_per_tok"] > 0 and row["int8_fused_s_per_tok"] > 0
    assert res["fused_speedup"] == row["full_unfused_s_per_tok"] / row["full_fused_s_per_tok"]
    assert row["int8_speedup"] == row["int8_unfused_s_per_tok"] / row["int8_fused_s_per_tok"]
    md = to_markdown({"model": "m", "dtype": "fp32", "date": "d", "machine": "x", "repeats": 1, "command": "c",
                      "fused": res})
    assert f"| {row['prompt_tokens']} | int8 |" in md and f"**{row['full_speedup']:.2f}×**" in md


def test_drafts_part_measures_each_prompt_on_its_intended_tool(cache_dir: Path) -> None:
    """Each draft prompt's call is constrained to its intended tool, so edits and writes are what is timed
    (unconstrained, the 0.5B model answered them all with a `read`); drafts on and off give the same tokens."""
    import pytest

    from continualcode.backends.local import LocalBackend
    from continualcode.bench.speed import decode
    from continualcode.build import make_renderer

    b = LocalBackend("smollm2-135m", dtype="fp32", cache=cache_dir, seed=0, warmup=False, threads=1)
    renderer = make_renderer(b)
    prompts = [p for p in decode.draft_prompts("def f():\n    return 1\n" * 5, "m.py") if p[0] != "read"][::2]
    res = decode.drafts(b, renderer, prompts, max_tokens=24)
    assert [r["kind"] for r in res["rows"]] == ["edit_lines", "write"]
    assert all(r["same_tokens"] and r["tokens"] == 24 and not r["complete"] for r in res["rows"])  # cut at max_tokens
    assert set(res["by_kind"]) == {"edit_lines", "write"} and res["overall"]["n"] == 2
    # the same edit tasks asked of `replace` when the renderer shows it (`edit_tool=both`), else not at all
    both = decode.draft_prompts("x = 1\n" * 5, "m.py", ("read", "write", "edit_lines", "replace"))
    assert [k for k, _ in both] == ["read", "read", "edit_lines", "edit_lines", "write", "write", "replace", "replace"]
    assert [m for k, m in both if k == "replace"] == [m for k, m in both if k == "edit_lines"]
    assert "replace" not in {k for k, _ in decode.draft_prompts("x = 1\n" * 5, "m.py")}
    with pytest.raises(ValueError, match="unknown tools"):
        renderer.constraint(only=("edit",))


def test_the_machine_line_names_the_architecture_the_cores_and_the_cpu() -> None:
    import os
    import platform

    from continualcode.bench.speed.common import machine

    line = machine()
    assert line.startswith(f"{platform.machine()}, {os.cpu_count()} cores")
    assert len(line.split(", ")) >= 2 and "\n" not in line


def test_choice_part_times_both_choices_on_the_models_logits_and_reports_them(cache_dir: Path) -> None:
    """Both choices timed on the same logits; the reference draws from the same nucleus (its tokens, over the
    positions, are ones `choose` can draw); the report shows the ratio."""
    import torch

    from continualcode.backends.decode import choose
    from continualcode.backends.local import LocalBackend
    from continualcode.bench.speed import decode
    from continualcode.bench.speed.report import _choice_lines
    from continualcode.build import make_renderer

    b = LocalBackend("smollm2-135m", dtype="bf16", cache=cache_dir, seed=0, warmup=False, threads=1)
    res = decode.chooser(b, make_renderer(b), repeats=1, n=6)
    assert res["positions"] == 6 and res["choose_ms_per_tok"]["median"] > 0
    assert res["choose_speedup"] == res["sorted_nucleus_ms_per_tok"]["median"] / res["choose_ms_per_tok"]["median"]
    logits = torch.tensor([2.0, 1.0, 0.5, -3.0])
    gen = torch.Generator().manual_seed(0)
    assert {decode.sorted_nucleus(logits, 1.0, 0.8, gen) for _ in range(200)} == \
        {choose(logits, 1.0, 0.8, gen) for _ in range(200)} == {0, 1}  # masses 0.63, 0.23, 0.14: 0 and 1 kept
    line = _choice_lines({"choice": res, "decode_s_per_tok": {"median": 0.05}})[0]
    assert f"**{res['choose_speedup']:.1f}×**" in line and "50 ms/tok" in line
    assert _choice_lines({"decode_s_per_tok": {"median": 0.05}}) == []
