"""The configuration: one chz dataclass, set from the command line as `key=value`.

`continualcode enable_training=false`, `continualcode model_name=Qwen/Qwen3-4B-Instruct-2507
lora_rank=64`, `continualcode save_every=10`.  Every field is documented where it is declared.
Defaults are written once: the learning ones come from `learn.types.LearnConfig`, the sampling
ones from `agent.SamplingConfig`, the tool limits from `tools`.

`parse_config` is the one way in: unknown keys and wrong types are refused by chz, and every key
has a range or a set of values in `CHECKS`, checked before anything loads.  A problem is one line
(`UsageError`); the command line prints it and exits 2.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

import chz

from continualcode.agent import SamplingConfig
from continualcode.backends.base import LORA
from continualcode.learn.memory import MEMORY_AT
from continualcode.learn.types import LearnConfig
from continualcode.models import DEFAULT_MODEL
from continualcode.tools import DEFAULT_BASH_TIMEOUT, DEFAULT_RESULT_CAP, TOOL_NAMES

_L = LearnConfig
_S = SamplingConfig


class UsageError(ValueError):
    """A bad command line or configuration value; its message is one line for the user."""


@chz.chz
class Config:
    # --- model and backend --------------------------------------------------------------------
    model_name: str = DEFAULT_MODEL
    """Built-in name (qwen2.5-coder-1.5b, the default; qwen2.5-coder-0.5b, ~4x faster per turn but rarely
    finishes a real task; smollm2-135m, small and fast), a local model directory, or a HF id in the local HF
    cache."""
    backend: Literal["local", "tinker"] = "local"
    """local: transformers + peft on this machine; tinker: the hosted training service (TINKER_API_KEY)."""
    device: str = "auto"
    """auto (cuda when available, else cpu), cpu, cuda, cuda:1, …"""
    dtype: str = "auto"
    """auto: bf16 on CUDA and on CPUs with avx512_bf16/AMX, else fp32.  LoRA weights are always fp32."""
    lora_rank: int = LORA.rank
    lora_alpha: int = LORA.alpha
    lora_targets: str = LORA.targets
    """Comma-separated module names, or all-linear."""
    draft: Literal["lookup", "off"] = "lookup"
    """Draft decoding (local): guess the next tokens by copying from the prompt and check them in one forward;
    the same tokens as plain decoding, fewer passes over the weights when the guesses hold."""
    native_kernels: bool = True
    """CPU: decode steps compute the frozen weights' products with a small C kernel (backends/gemv.c, built
    once with the system's C compiler: ~2x faster than torch's one-row kernels here); without a compiler,
    or with false, torch's kernels.  The same products, fp32 accumulation.  Ignored on GPU."""
    decode_int8: bool = True
    """CPU: one-token decode steps read an int8 copy of the frozen weights (half the bytes; 2.4x faster decode,
    KL 0.002 nats to bf16); prefill, scoring and training keep the full weights, so learning sees the same
    numbers.  Ignored on GPU."""
    fused_decode: bool = True
    """CPU: each decode step (one token, or a drafted run) is one native call through the whole decoder, LoRA
    included (backends/fused.py, step.c; needs native_kernels): ~2x faster than the step op by op, the same
    weights and numbers (activations fp32).  Self-checked before use; ignored on GPU."""
    cuda_graphs: bool = True
    """GPU: each one-token decode step replays a recorded CUDA graph over a static KV cache (backends/graphs.py:
    eager steps are launch-bound there, ~50 ms a token whatever the model's size); the same modules and
    numbers.  Ignored on CPU."""
    cache_dir: str = ""
    """Converted built-in models (default $CONTINUALCODE_CACHE or ~/.cache/continualcode)."""

    # --- sampling ----------------------------------------------------------------------------
    temperature: float = _S.temperature
    top_p: float = _S.top_p
    max_tokens: int = _S.max_tokens
    """Most tokens in one reply (one tool call)."""
    max_turns: int = _S.max_turns
    """Most tool calls per task before the agent stops and hands back."""
    repo_map: int = _S.repo_map
    """Characters of the map of the project's classes and functions (line, arguments, docstring) put in the first
    task's overview; 0: the file listing only (the 0.5B model found the right file less often with it)."""
    retrieve: int = _S.retrieve
    """Characters of the project's code that matches the task's words (its best few functions, numbered as read shows
    them), shown with the file listing before the model's first call; 0: none (retrieve.py)."""
    remind_task: bool = _S.remind_task
    """End every tool result the model sees with the task it serves (a small model loses the task after a result)."""
    earlier_tasks: str = _S.earlier_tasks
    """What a new task of a session sees of the earlier ones: none (it starts as a new session would: the project's
    files as they are now, the rules, the task), recap (that, plus one line per earlier task: the task and its
    answer) or whole (the conversation goes on).  The rules given in the session open every task either way.
    none chosen on the dense dev scenarios (fresh tasks after a correction, in its session: 9 of 18 kept the
    rule, recap 8, whole 7); held out, 14 vs whole's 10 of 24 (bench/results/learn/fresh/)."""
    retry_guidance: float = _S.retry_guidance
    """After a denial with a correction, the retry's tokens are chosen from log p + w·(log p − log p_bare), where
    p_bare is the model's prediction with the correction's words left out (a bare "Denied."): what the correction
    says weighs 1 + w times (context-aware decoding; local backend).  0: plain sampling."""
    ask_for_answer: bool = _S.ask_for_answer
    """A reply in words whose first token the grammar took from under half of the model's distribution (it wanted
    to write a call in a form the grammar bars) is not shown: a question is asked for its answer in words, any
    other task samples the call again; a question that would end unanswered (a loop, max_turns) is asked once.
    Off: the reply is shown (answer.py)."""
    speculate: bool = _S.speculate
    """While the user reads a proposal, prefill the prompt that follows its approval (local backend; for a
    read-only call with its result, read ahead of the approval and never shown unless approved)."""
    constrained: bool = _S.constrained
    """Grammar-constrained decoding: every call is valid JSON for a known tool."""

    # --- learning -----------------------------------------------------------------------------
    enable_training: bool = True
    """false: inference only; denials still reach the model as context."""
    distill_loss: Literal["sampled_token", "topk", "full"] = _L.distill_loss
    """sampled_token (the seed), topk (teacher top-K + tail) or full (local only)."""
    distill_alpha: float = _L.distill_alpha
    """0 forward KL(teacher‖student), 1 reverse KL, between: generalized JSD."""
    distill_topk: int = _L.distill_topk
    kl_beta: float = _L.kl_beta
    """Weight of KL(π_θ‖π_base)."""
    learning_rate: float = _L.learning_rate
    steps_per_correction: int = _L.steps_per_correction
    teacher: Literal["live", "ema", "frozen"] = _L.teacher
    """live: current weights (τ=1, the seed); ema: averaged weights; frozen: the base model."""
    ema_rate: float = _L.ema_rate
    teacher_sees_attempt: bool = _L.teacher_sees_attempt
    """Show the failed attempt to the teacher (the seed) or not (the SDPO paper)."""
    learn_from_approved_retry: bool = _L.learn_from_approved_retry
    """After an approved retry, one more step on the failed attempt with the approved call as demonstration."""
    max_kl: float = _L.max_kl
    """Roll a step back when the mean per-token KL to the base on its completion exceeds this (inf: never)."""
    adaptive: bool = _L.adaptive
    """Stop stepping on a correction once the student's top token at the decision is the teacher's
    (steps_per_correction is then the most steps)."""
    step_max_kl: float = _L.step_max_kl
    """Trust region of one step: undo a step whose KL(before ‖ after) on the completion exceeds this (inf: off)."""
    distill_prompts: int = _L.distill_prompts
    """Also distil the correction into the student on this many other prompts: the project's earlier tasks,
    then paraphrases of the task the model writes (0: the denied completion only)."""
    distill_deferred: bool = _L.distill_deferred
    """Learn on those prompts when the task ends (a second update, while the user reads the answer), not
    before the retry: the retry after a denial then waits only for the step on the denied call."""
    carry_prefix: bool = _L.carry_prefix
    """After an update, the retry and the rest of that conversation reuse the corrected prompt's KV computed
    before it (false: re-run the whole prompt under the new weights first, a prefill of the conversation)."""
    optimizer: Literal["adamw", "sgd"] = "adamw"
    """adamw: steps of about learning_rate per weight whatever the gradient; sgd: steps that follow the gradient
    (needs a far larger learning_rate: 0.5 moves about as far as adamw's 5e-4).  Measured on the 1.5B model (learn
    ANALYSIS): no better at the same drift, so adamw stays."""
    prefix_grad: bool = False
    """Backpropagate through the prompt positions too (slower; false = completion positions only)."""
    grad_clip: float = _L.grad_clip

    memory: bool = True
    """Keep each correction and feedback as a plain-language rule in the project's memory.md (see /memory),
    and start every session with those rules and the workspace's AGENTS.md / CLAUDE.md (see memory_at)."""
    memory_at: str = "task"
    """Where a session's rules and notes go: task (the first user turn, just before the first task, where Claude
    Code puts CLAUDE.md) or system (the end of the system prompt).  Chosen on the dense dev scenarios: fresh
    tasks kept the rule 50% (task) vs 17% (system) of the time, from 11% without it."""
    memory_rules: int = 3
    """With memory_at=task: at most this many rules open a task, the ones whose words (and the words of the tasks
    they were given on) match the task best (learn/recall.py); 0 = every rule.  Why: six rules shown together
    held 30% on fresh tasks where each alone held 70% (0.5B).  3 chosen on the dev half of the public scenarios
    (22 rules): a task's own rule among those shown 76% of the time (1: 46%, 2: 64%), 2.4 rules shown."""

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
    result_cap: int = DEFAULT_RESULT_CAP
    """Most characters of a tool result shown to the model."""
    read_cap: int = 0
    """Most characters of a file one `read` shows (its later lines are offered from an offset); 0 = auto:
    build.CPU_READ_CAP for a local model on a CPU, where what a read shows is most of the next turn's wait (prefilled
    at ~50 tokens/s by the 1.5B model on one loaded core), else result_cap."""
    edit_tool: Literal["auto", "lines", "replace", "both"] = "auto"
    """The edit tool the model is shown: `edit_lines` (lines by number), `replace` (old text quoted, new text in
    its place, as Claude Code's Edit), or both; auto: `lines` for the 0.5B and 135M built-ins (their measured
    figures), both for every other model (`build.edit_tool`)."""
    worked_example: Literal["auto", "read", "grep"] = "auto"
    """The worked exchange before a session's first task (native tool templates): `read` (a map of definitions
    in the listing, a read at the function's line) or `grep` (a search for the definition over the whole
    project, then the read); auto: `read` for the 0.5B and 135M built-ins (their measured figures), `grep` for
    every other model (`build.worked_example`)."""
    change_example: bool = False
    """A task that asks for a change is shown a worked fix instead (a bug reported by its symptom, searched,
    read, changed, tested; `render.change_example`), for the whole task; false: the question example
    (`worked_example`) for every task, gone after the first tool result.  Off: on the 1.5B model's dev
    change tasks it stopped the model quoting the reported symptom as the code (4 of 4 fix tasks -> 0) and
    solved fewer (3 -> 1 of 8, 0 up / 2 down; bench/results/tasks/ANALYSIS.md)."""
    read_outline: bool = False
    """A read from the top of a Python file too long to show whole ends with its classes and functions.  Off:
    no gain measured on the 0.5B or the 1.5B model (bench/results/tasks/ANALYSIS.md), and its room comes
    from the read's lines."""
    bash_timeout: int = DEFAULT_BASH_TIMEOUT
    """Seconds a bash command may run; the model's own `timeout` argument is clamped to it."""
    pass_secrets: bool = False
    """Pass API keys and tokens from the environment to bash commands."""
    sandbox: Literal["auto", "on", "off"] = "auto"
    """Run bash confined by bubblewrap (writes only in the workspace and a private /tmp, no network, no view of
    the agent's processes): on, off, or auto (on where bwrap works; says once when it does not)."""
    sandbox_network: bool = False
    """Let sandboxed bash commands use the network."""
    seed: int = 0
    threads: int = 0
    """CPU threads (0 = all cores)."""

    def tool_settings(self) -> dict[str, Any]:
        """The `Workspace` keyword arguments this config sets (callers override what they must)."""
        return {"result_cap": self.result_cap, "bash_timeout": self.bash_timeout, "pass_secrets": self.pass_secrets,
                "sandbox": self.sandbox, "sandbox_network": self.sandbox_network, "read_outline": self.read_outline}

    def learn_config(self) -> LearnConfig:
        """The learning fields, by name (LearnConfig's own defaults for the few not exposed here)."""
        names = {f.name for f in dataclasses.fields(LearnConfig)}
        return LearnConfig(**{n: getattr(self, n) for n in names if hasattr(self, n)})

    def sampling_config(self) -> SamplingConfig:
        names = {f.name for f in dataclasses.fields(SamplingConfig)}
        return SamplingConfig(**{n: getattr(self, n) for n in names if hasattr(self, n)})


# --- value checks: one per key --------------------------------------------------------------------

Check = Callable[[Any], str | None]


def _number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
            allow_inf: bool = False) -> Check:
    """A finite number (or +inf when allowed) within [lo, hi] ((lo, hi] when lo_open)."""

    def check(v: Any) -> str | None:
        if isinstance(v, float) and math.isnan(v):
            return "must be a number, not nan"
        if isinstance(v, float) and math.isinf(v) and not (allow_inf and v > 0):
            return "must be finite"
        if lo is not None and (v <= lo if lo_open else v < lo):
            return f"must be {'>' if lo_open else '≥'} {lo:g}"
        if hi is not None and v > hi:
            return f"must be ≤ {hi:g}"
        return None

    return check


def _one_of(*values: str) -> Check:
    return lambda v: None if v in values else f"must be one of {', '.join(values)}"


def _pattern(rx: str, what: str) -> Check:
    return lambda v: None if re.fullmatch(rx, v) else f"must be {what}"


def _any(_v: Any) -> str | None:
    return None


def _text(v: str) -> str | None:
    """Any string but one holding a NUL byte (no path or text can; only a caller, not a shell, passes one)."""
    return "must not contain a NUL byte" if "\x00" in v else None


def _tool_list(v: str) -> str | None:
    bad = [t for t in (x.strip() for x in v.split(",")) if t and t not in TOOL_NAMES]
    return f"names unknown tools {', '.join(bad)} (tools: {', '.join(TOOL_NAMES)})" if bad else None


DTYPES = ("auto", "bf16", "bfloat16", "fp16", "float16", "fp32", "float32")

CHECKS: dict[str, Check] = {
    "model_name": _pattern(r"[^\s\x00][^\x00]*", "a model name or path"),
    "backend": _any,  # a Literal: chz refuses other values
    "device": _pattern(r"auto|cpu|cuda(:\d+)?|mps", "auto, cpu, cuda, cuda:N or mps"),
    "dtype": _one_of(*DTYPES),
    "lora_rank": _number(1, 1024),
    "lora_alpha": _number(0, lo_open=True),
    "lora_targets": _pattern(r"all-linear|\s*[A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*\s*",
                             "all-linear or comma-separated module names"),
    "draft": _any,
    "decode_int8": _any,
    "native_kernels": _any,
    "cuda_graphs": _any,
    "fused_decode": _any,
    "cache_dir": _text,
    "temperature": _number(0, 10),
    "top_p": _number(0, 1, lo_open=True),
    "max_tokens": _number(8, 32768),
    "max_turns": _number(1, 1000),
    "repo_map": _number(0, 100_000),
    "retrieve": _number(0, 100_000),
    "remind_task": _any,
    "earlier_tasks": _one_of("whole", "recap", "none"),
    "retry_guidance": _number(0, 10),
    "ask_for_answer": _any,
    "speculate": _any,
    "constrained": _any,
    "enable_training": _any,
    "distill_loss": _any,
    "distill_alpha": _number(0, 1),
    "distill_topk": _number(1, 1000),
    "kl_beta": _number(0, 100),
    "learning_rate": _number(0, 1, lo_open=True),
    "steps_per_correction": _number(1, 100),
    "teacher": _any,
    "ema_rate": _number(0, 1, lo_open=True),
    "teacher_sees_attempt": _any,
    "memory": _any,
    "memory_at": _one_of(*MEMORY_AT),
    "memory_rules": _number(0, 50),
    "learn_from_approved_retry": _any,
    "max_kl": _number(0, lo_open=True, allow_inf=True),
    "adaptive": _any,
    "step_max_kl": _number(0, lo_open=True, allow_inf=True),
    "distill_prompts": _number(0, 16),
    "distill_deferred": _any,
    "carry_prefix": _any,
    "optimizer": _any,
    "prefix_grad": _any,
    "grad_clip": _number(0, lo_open=True, allow_inf=True),
    "workspace": _pattern(r"[^\x00]+", "a directory"),
    "auto_approve": _tool_list,
    "save_every": _number(0),
    "resume": _any,
    "load_checkpoint_path": _text,
    "state_home": _text,
    "interactive": _any,
    "task": _text,
    "result_cap": _number(500, 10_000_000),
    "read_cap": lambda v: None if v == 0 or 500 <= v <= 10_000_000 else "must be 0 (auto) or 500 … 10000000",
    "read_outline": _any,
    "edit_tool": _any,  # a Literal: chz refuses other values
    "worked_example": _any,  # a Literal
    "change_example": _any,
    "bash_timeout": _number(1, 3600),
    "pass_secrets": _any,
    "sandbox": _any,
    "sandbox_network": _any,
    "seed": _number(0, 2**31 - 1),
    "threads": _number(0, 4096),
}


def _combinations(cfg: Config) -> list[str]:
    """Values that are fine alone but not together."""
    problems = []
    if cfg.backend == "tinker":
        if cfg.distill_loss == "full":
            problems.append("distill_loss=full is not available on backend=tinker (no whole distributions there): "
                            "use topk or sampled_token")
        if cfg.distill_loss == "topk" and cfg.distill_topk > 20:
            problems.append(f"distill_topk must be ≤ 20 on backend=tinker (the service's cap; got {cfg.distill_topk})")
        if cfg.teacher == "ema":
            problems.append("teacher=ema is not available on backend=tinker (no weight-level operations): use live")
    return problems


def validate(cfg: Config) -> list[str]:
    """Every key's value against its check, then the combinations; each problem is one line."""
    problems = []
    for f in chz.chz_fields(cfg).values():
        check = CHECKS.get(f.logical_name)
        if check is None:
            problems.append(f"{f.logical_name} has no value check (a bug: add it to config.CHECKS)")
            continue
        v = getattr(cfg, f.logical_name)
        if (why := check(v)) is not None:
            problems.append(f"{f.logical_name} {why} (got {v!r})")
    return problems or _combinations(cfg)


def parse_config(argv: Sequence[str], *, overrides: dict[str, str] | None = None) -> Config:
    """A Config from key=value arguments (then `overrides`); UsageError with one line on a problem."""
    args = list(argv) + [f"{k}={v}" for k, v in (overrides or {}).items()]
    for a in args:
        if "=" not in a:
            raise UsageError(f"expected key=value, got {a!r} (continualcode --help)")
    try:
        cfg = chz.Blueprint(Config).make_from_argv(args)
    except Exception as e:
        raise UsageError(_chz_message(e)) from None
    problems = validate(cfg)
    if problems:
        raise UsageError("; ".join(problems))
    return cfg


def _chz_message(e: Exception) -> str:
    text = str(e)
    if m := re.search(r"Extraneous argument '([^']+)'", text):
        hint = re.search(r"Did you mean '([^']+)'", text)
        return f"unknown config key {m.group(1)!r}" + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
    if m := re.search(r"Could not interpret argument '([^']*)' provided for param '([^']+)'", text):
        why = re.search(r"Could not cast [^\n]*", text)
        return f"bad value {m.group(1)!r} for {m.group(2)}" + (f": {why.group(0)}" if why else "")
    return text.splitlines()[0] if text else type(e).__name__
