"""The configuration: one chz dataclass, set from the command line as `key=value`.

`continualcode enable_training=false`, `continualcode model_name=Qwen/Qwen3-4B-Instruct-2507
lora_rank=64`, `continualcode save_every=10`.  Unknown keys and wrong types are refused by chz
with a one-line message (and a "did you mean").  Every field is documented where it is declared;
the README's table is generated from the same comments.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Literal

import chz

from continualcode.models import DEFAULT_MODEL

if TYPE_CHECKING:  # the learner (and torch) load with the backend, not with the CLI
    from continualcode.learn.step import LearnConfig


@chz.chz
class Config:
    # --- model and backend --------------------------------------------------------------------
    model_name: str = DEFAULT_MODEL
    """Built-in name (qwen2.5-coder-0.5b, the default; smollm2-135m, small and fast), a local model directory,
    or a HF id in the local HF cache."""
    backend: Literal["local", "tinker"] = "local"
    """local: transformers + peft on this machine; tinker: the hosted training service (TINKER_API_KEY)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, …"""
    dtype: str = "auto"
    """auto: bf16 on CUDA and on CPUs with avx512_bf16/AMX, else fp32.  LoRA weights are always fp32."""
    lora_rank: int = 16
    lora_alpha: int = 32
    lora_targets: str = "q_proj,k_proj,v_proj,o_proj"
    """Comma-separated module names, or all-linear."""
    cache_dir: str = ""
    """Converted built-in models (default $CONTINUALCODE_CACHE or ~/.cache/continualcode)."""

    # --- sampling ----------------------------------------------------------------------------
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 512
    """Most tokens in one reply (one tool call)."""
    max_turns: int = 12
    """Most tool calls per task before the agent stops and hands back."""
    constrained: bool = True
    """Grammar-constrained decoding: every call is valid JSON for a known tool."""

    # --- learning -----------------------------------------------------------------------------
    enable_training: bool = True
    """false: inference only; denials still reach the model as context."""
    distill_loss: Literal["sampled_token", "topk", "full"] = "topk"
    """sampled_token (the seed), topk (teacher top-K + tail; local only) or full."""
    distill_alpha: float = 0.0
    """0 forward KL(teacher‖student), 1 reverse KL, between: generalized JSD."""
    distill_topk: int = 20
    kl_beta: float = 0.04
    """Weight of KL(π_θ‖π_base)."""
    learning_rate: float = 5e-4
    steps_per_correction: int = 1
    teacher: Literal["live", "ema", "frozen"] = "live"
    """live: current weights (τ=1, the seed); ema: averaged weights; frozen: the base model."""
    ema_rate: float = 0.05
    teacher_sees_attempt: bool = False
    """Show the failed attempt to the teacher (the seed) or not (the SDPO paper)."""
    learn_from_approved_retry: bool = False
    """After an approved retry, one more step on the failed attempt with the approved call as demonstration."""
    max_kl: float = 1.0
    """Roll a step back when the mean per-token KL to the base on its completion exceeds this."""
    prefix_grad: bool = False
    """Backpropagate through the prompt positions too (slower; false = completion positions only)."""
    grad_clip: float = 1.0

    # --- session -------------------------------------------------------------------------------
    workspace: str = "."
    """The project directory the tools are confined to."""
    auto_approve: str = ""
    """Comma-separated tools approved without asking, e.g. read,glob,grep."""
    save_every: int = 1
    """Save the adapter every N learning steps (0 = only on /save and exit)."""
    resume: bool = False
    """Continue the last session of this project: its conversation and its adapter."""
    load_checkpoint_path: str = ""
    """Start from this saved adapter instead of the project's own."""
    state_home: str = ""
    """Where sessions, journals and adapters live (default $CONTINUALCODE_HOME or ~/.local/state/continualcode)."""
    interactive: Literal["auto", "true", "false"] = "auto"
    """false: read tasks and decisions from stdin lines (see README); auto: false when stdin is not a terminal."""
    task: str = ""
    """Run this task first."""
    result_cap: int = 12000
    """Most characters of a tool result shown to the model."""
    bash_timeout: int = 60
    pass_secrets: bool = False
    """Pass API keys and tokens from the environment to bash commands."""
    seed: int = 0
    threads: int = 0
    """CPU threads (0 = all cores)."""

    def learn_config(self) -> LearnConfig:
        """The learning fields, by name (LearnConfig's own defaults for the few not exposed here)."""
        from continualcode.learn.step import LearnConfig

        names = {f.name for f in dataclasses.fields(LearnConfig)}
        return LearnConfig(**{n: getattr(self, n) for n in names if hasattr(self, n)})


def validate(cfg: Config) -> list[str]:
    """Value checks chz cannot express; each problem is one line."""
    problems = []
    if cfg.lora_rank < 1:
        problems.append("lora_rank must be ≥ 1")
    if not 0.0 <= cfg.distill_alpha <= 1.0:
        problems.append("distill_alpha must be in [0, 1]")
    if cfg.distill_topk < 1:
        problems.append("distill_topk must be ≥ 1")
    if cfg.learning_rate <= 0:
        problems.append("learning_rate must be > 0")
    if cfg.steps_per_correction < 1:
        problems.append("steps_per_correction must be ≥ 1")
    if cfg.temperature < 0:
        problems.append("temperature must be ≥ 0")
    if not 0 < cfg.top_p <= 1:
        problems.append("top_p must be in (0, 1]")
    if cfg.max_tokens < 8:
        problems.append("max_tokens must be ≥ 8")
    if cfg.kl_beta < 0:
        problems.append("kl_beta must be ≥ 0")
    return problems
