"""The one place that builds the model-side parts from a `Config`: backend, renderer, learner.

The app, `replay` and the benchmarks all build through here, so a part is wired the same way
everywhere (the renderer gets the backend's real vocabulary size; the learner its config's
learning fields).  Imports of torch and the backends happen inside the functions: the terminal
comes up before the model loads.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continualcode.backends.base import Backend
from continualcode.config import Config
from continualcode.models import builtin
from continualcode.render import Renderer
from continualcode.tools import tool_schemas

if TYPE_CHECKING:
    from continualcode.events import Event
    from continualcode.learn.step import Learner, PromptSource


def cache_path(cfg: Config) -> Path | None:
    """The model cache the config names (None: the default location)."""
    return Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None


def build_backend(cfg: Config) -> Backend:
    """The configured backend, model loaded (a built-in is fetched and converted on first use)."""
    if cfg.backend == "tinker":
        from continualcode.backends.tinker import TinkerBackend

        return TinkerBackend(cfg.model_name, lora_rank=cfg.lora_rank, seed=cfg.seed)
    from continualcode.backends.local import LocalBackend

    return LocalBackend(
        cfg.model_name, lora_rank=cfg.lora_rank, lora_alpha=cfg.lora_alpha, lora_targets=cfg.lora_targets,
        device=cfg.device, dtype=cfg.dtype, grad_clip=cfg.grad_clip, prefix_grad=cfg.prefix_grad,
        seed=cfg.seed, threads=cfg.threads, optimizer=cfg.optimizer, draft=cfg.draft,
        decode_int8=cfg.decode_int8, native_kernels=cfg.native_kernels,
        cuda_graphs=cfg.cuda_graphs,
        fused_decode=cfg.fused_decode,
        cache=cache_path(cfg),
    )


# The models whose committed figures (bench learn, bench tasks) were measured with `edit_lines` alone and the
# worked example that reads: with `auto` they keep both; every other model is shown `replace` too (the 1.5B
# model solved the version bumps with it on both halves of bench tasks, 2 up / 0 down, and never with line
# numbers) and the example that searches first (its first call on the right module 8 -> 15 of 16 dev tasks;
# bench/results/tasks/ANALYSIS.md).
AS_MEASURED = frozenset({"qwen2.5-coder-0.5b", "smollm2-135m"})


def _as_measured(cfg: Config) -> bool:
    model = builtin(cfg.model_name)
    return model is not None and model.name in AS_MEASURED


def edit_tool(cfg: Config) -> str:
    """The edit tools `cfg` shows the model (`EDIT_TOOLS` key), `auto` resolved by the model."""
    if cfg.edit_tool != "auto":
        return cfg.edit_tool
    return "lines" if _as_measured(cfg) else "both"


def worked_example(cfg: Config) -> str:
    """The worked exchange `cfg` shows a native-template model (`render.EXAMPLES` key), `auto` resolved by the
    model."""
    if cfg.worked_example != "auto":
        return cfg.worked_example
    return "read" if _as_measured(cfg) else "grep"


CPU_READ_CAP = 4000  # characters one read shows a local model on a CPU (`read_cap=0`)


def read_cap(cfg: Config) -> int:
    """The characters one `read` shows (`read_cap`), `auto` (0) resolved by where the model runs: CPU_READ_CAP
    for a local model on a CPU, where a read's result is most of the next turn's wait (the 1.5B model
    prefilled ~50 tokens/s on one loaded core, and the turn after a read took a median 130 s of its 31 s
    median turn in `bench tasks`: 73% of all its turns' time), else `result_cap`."""
    if cfg.read_cap:
        return min(cfg.read_cap, cfg.result_cap)
    if cfg.backend != "local" or cfg.device.startswith("cuda"):
        return cfg.result_cap
    if cfg.device == "auto":
        import torch

        if torch.cuda.is_available():
            return cfg.result_cap
    return min(CPU_READ_CAP, cfg.result_cap)


def make_renderer(backend: Backend, cfg: Config | None = None, **kwargs: Any) -> Renderer:
    """The renderer for this backend's tokenizer and output vocabulary, showing the tools and the worked examples
    `cfg` sets (`edit_tool`, `worked_example`, `change_example`; without a config: the default set, the read
    example, no change example)."""
    if cfg is not None:
        kwargs.setdefault("tools", tool_schemas(edit_tool(cfg)))
        kwargs.setdefault("example", worked_example(cfg))
        kwargs.setdefault("change", cfg.change_example)
    return Renderer(backend.tokenizer, vocab_size=backend.vocab_size, **kwargs)


def make_learner(cfg: Config, backend: Backend, renderer: Renderer, *,
                 prompts: PromptSource | None = None) -> Learner | None:
    """The learner the session is given (None when training is off); `prompts` supplies the project's
    earlier tasks for context distillation."""
    if not cfg.enable_training:
        return None
    from continualcode.learn.step import Learner

    return Learner(backend, renderer, cfg.learn_config(), prompts=prompts)


@dataclass
class Parts:
    """A loaded model and what is built around it."""

    cfg: Config
    backend: Backend
    renderer: Renderer
    learner: Learner | None


def build_parts(cfg: Config, backend: Backend | None = None, *, prompts: PromptSource | None = None,
                **renderer_kwargs: Any) -> Parts:
    """Backend (built unless given), renderer (with `renderer_kwargs`, e.g. a system prompt) and learner."""
    backend = backend if backend is not None else build_backend(cfg)
    renderer = make_renderer(backend, cfg, **renderer_kwargs)
    return Parts(cfg, backend, renderer, make_learner(cfg, backend, renderer, prompts=prompts))


def load_last_good(backend: Backend, adapter: Path) -> list[Event]:
    """Resume the project's adapter; if it cannot be loaded (corrupt, non-finite), the one it replaced
    (`fsio.previous_of`); else go on from the base model.  Returns what to tell the user, one line each."""
    from continualcode.backends.base import BackendError
    from continualcode.events import ErrorShown, Info
    from continualcode.fsio import previous_of

    said: list[Event] = []
    for path in (adapter, previous_of(adapter)):
        if not path.is_dir():
            continue
        try:
            backend.load(path)
            if path != adapter:
                said.append(Info(f"resumed the previous adapter ({path.name}, step {backend.step})"))
            return said
        except BackendError as e:
            said.append(ErrorShown(f"{e}; not resumed"))
    if adapter.is_dir():
        said.append(Info("no loadable adapter: starting from the base model"))
    return said
