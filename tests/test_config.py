"""Tests of continualcode.config: every key refuses a bad value with one line, before anything loads.

`BAD` is the table: at least one bad value for every key in `config.CHECKS` (a test fails when a key
has none), including every value an attacker's pass found accepted.  Each is refused by
`parse_config` with a one-line `UsageError` naming the key; a few go through the real command line
(a subprocess with an empty state directory): exit code 2, one stderr line, fast because nothing
loads.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import chz
import pytest

from continualcode.config import CHECKS, Config, UsageError, parse_config

REPO = Path(__file__).resolve().parents[1]

# key -> bad values (as they would be typed after `key=`)
BAD: dict[str, list[str]] = {
    "model_name": ["", " leading-space"],
    "backend": ["openai"],
    "device": ["tpu", "cuda:x"],
    "dtype": ["int4", "fp8"],
    "lora_rank": ["0", "-4", "2000"],
    "lora_alpha": ["-1", "0"],
    "lora_targets": ["", "1bad", "q_proj,,v_proj"],
    "draft": ["medusa"],
    "decode_int8": ["int4"],
    "native_kernels": ["maybe"],
    "cuda_graphs": ["maybe"],
    "fused_decode": ["maybe"],
    "distill_deferred": ["maybe"],
    "carry_prefix": ["sometimes"],
    "cache_dir": ["cache\x00dir"],
    "temperature": ["nan", "inf", "-inf", "-0.1", "11"],
    "top_p": ["0", "1.5", "nan"],
    "max_tokens": ["0", "4", "100000"],
    "max_turns": ["0", "-1"],
    "repo_map": ["-1", "1e9"],
    "retrieve": ["-5", "1e9"],
    "remind_task": ["perhaps"],
    "earlier_tasks": ["some", "all"],
    "retry_guidance": ["-1", "11", "x"],
    "ask_for_answer": ["if needed"],
    "speculate": ["later"],
    "constrained": ["maybe"],
    "enable_training": ["yes please"],
    "distill_loss": ["mse"],
    "distill_alpha": ["-0.5", "2", "nan"],
    "distill_topk": ["0", "5000"],
    "kl_beta": ["nan", "-1", "inf"],
    "learning_rate": ["nan", "inf", "0", "-1e-4", "2"],
    "steps_per_correction": ["0", "1000"],
    "teacher": ["student"],
    "ema_rate": ["5", "0", "nan"],
    "teacher_sees_attempt": ["sometimes"],
    "memory": ["often"],
    "memory_at": ["user", ""],
    "memory_rules": ["-1", "51", "x"],
    "read_outline": ["sometimes"],
    "edit_tool": ["patch", ""],
    "worked_example": ["map", ""],
    "change_example": ["sometimes"],
    "learn_from_approved_retry": ["2"],
    "max_kl": ["nan", "-1", "0", "-inf"],
    "prefix_grad": ["x"],
    "adaptive": ["sometimes"],
    "step_max_kl": ["nan", "0", "-1"],
    "distill_prompts": ["-1", "17"],
    "optimizer": ["lion"],
    "grad_clip": ["nan", "0", "-1"],
    "workspace": ["", "ws\x00"],
    "auto_approve": ["rm", "read,rm -rf"],
    "save_every": ["-1"],
    "resume": ["2"],
    "load_checkpoint_path": ["adapter\x00"],
    "state_home": ["state\x00home"],
    "interactive": ["maybe"],
    "task": ["fix it\x00"],
    "result_cap": ["10", "499", "-1"],
    "read_cap": ["1", "499", "-1", "x"],
    "bash_timeout": ["0", "-5", "3601", "1.5"],
    "pass_secrets": ["please"],
    "sandbox": ["maybe", "strict"],
    "sandbox_network": ["wifi"],
    "seed": ["-1", "x"],
    "threads": ["-3", "1.5"],
}

# values at the edges that must still be accepted (so the checks are not simply "refuse everything")
GOOD: dict[str, list[str]] = {
    "temperature": ["0", "10"],
    "max_kl": ["inf", "0.5"],
    "carry_prefix": ["false", "true"],
    "grad_clip": ["inf"],
    "ema_rate": ["1"],
    "bash_timeout": ["1", "3600"],
    "result_cap": ["500"],
    "read_cap": ["0", "500", "10000000"],
    "device": ["cuda:1", "cpu", "auto"],
    "dtype": ["bf16", "fp32"],
    "lora_targets": ["all-linear", "q_proj, v_proj"],
    "auto_approve": ["read,glob,grep", ""],
    "save_every": ["0"],
    "threads": ["0"],
    "sandbox": ["auto", "on", "off"],
    "memory_at": ["system", "task"],
    "sandbox_network": ["true", "false"],
    "task": ["", "add a divide function"],
    "change_example": ["true", "false"],
}

CASES = [(key, value) for key, values in BAD.items() for value in values]


def test_every_key_has_a_bad_value_in_the_table():
    fields = {f.logical_name for f in chz.chz_fields(Config).values()}
    assert set(CHECKS) == fields, "CHECKS and Config must list the same keys"
    missing = sorted(fields - set(BAD))
    assert not missing, f"keys without a bad value in the table: {missing}"
    assert not set(BAD) - fields, "the table names keys Config does not have"


@pytest.mark.parametrize(("key", "value"), CASES, ids=[f"{k}={v!r}" for k, v in CASES])
def test_a_bad_value_is_refused_with_one_line_naming_the_key(key: str, value: str):
    with pytest.raises(UsageError) as exc:
        parse_config([f"{key}={value}"])
    msg = str(exc.value)
    assert "\n" not in msg, msg
    assert key in msg, msg


@pytest.mark.parametrize(("key", "value"), [(k, v) for k, vs in GOOD.items() for v in vs])
def test_values_at_the_edges_are_accepted(key: str, value: str):
    cfg = parse_config([f"{key}={value}"])
    assert hasattr(cfg, key)


def test_defaults_pass_every_check():
    cfg = parse_config([])
    assert cfg.sandbox == "auto" and cfg.sandbox_network is False


def test_unknown_key_and_missing_equals_are_one_line():
    with pytest.raises(UsageError, match="unknown config key 'temprature'") as exc:
        parse_config(["temprature=0.3"])
    assert "\n" not in str(exc.value)
    with pytest.raises(UsageError, match="expected key=value"):
        parse_config(["temperature"])


def test_tinker_combinations_are_refused():
    with pytest.raises(UsageError, match="distill_loss=full"):
        parse_config(["backend=tinker", "distill_loss=full"])
    with pytest.raises(UsageError, match="teacher=ema"):
        parse_config(["backend=tinker", "teacher=ema"])


# ---------------------------------------------------------------------------------------------------
# through the real command line: exit 2, one stderr line, nothing loads


CLI_CASES = ["temperature=nan", "learning_rate=inf", "max_kl=-1", "result_cap=10", "auto_approve=rm",
             "device=tpu", "bash_timeout=0", "sandbox=maybe"]


@pytest.mark.parametrize("arg", CLI_CASES)
def test_the_command_line_refuses_before_anything_loads(tmp_path: Path, arg: str):
    state, cache = tmp_path / "state", tmp_path / "cache"
    env = {**os.environ, "CONTINUALCODE_HOME": str(state), "CONTINUALCODE_CACHE": str(cache),
           "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "continualcode", arg], cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                       capture_output=True, text=True, timeout=60)
    seconds = time.perf_counter() - t0
    key = arg.split("=", 1)[0]
    assert r.returncode == 2, (r.returncode, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("continualcode: ") and key in lines[0], r.stderr
    assert r.stdout == ""
    assert not state.exists() and not cache.exists(), "nothing is created before the configuration is checked"
    assert seconds < 10, f"{seconds:.1f}s: something loaded before the check"
