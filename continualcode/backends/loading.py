"""Loading a base model for the local backend: resolve the name, then tokenizer and weights, offline.

A built-in model whose converted cache does not load is rebuilt once (with one line saying why);
any other model that does not load is one `BackendError` line.  Nothing here knows of LoRA.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

from continualcode.backends.base import BackendError
from continualcode.models import ModelError, ResolvedModel, resolve


def load_base(model_name: str, *, dtype: torch.dtype, cache: Path | None) -> tuple[ResolvedModel, Any, Any]:
    """(resolved model, tokenizer, base model) for `model_name`: a built-in, a local directory or the
    local Hugging Face cache."""
    import transformers

    try:
        resolved = resolve(model_name, cache=cache)  # converts a built-in once (with progress)
    except ModelError as e:
        raise BackendError(str(e)) from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # a ~1 s load needs no bar
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
    try:
        return resolved, *_load(model_name, resolved, dtype)
    except Exception as e:  # a built-in whose cache does not load is rebuilt once, with one line
        if resolved.builtin is None:
            if isinstance(e, BackendError):
                raise
            raise BackendError(f"model {model_name!r} does not load: {type(e).__name__}: "
                               f"{str(e).splitlines()[0][:160] if str(e) else ''}") from None
        try:
            resolved = resolve(model_name, cache=cache, broken=f"load error: {str(e).splitlines()[0][:120]}")
        except ModelError as e2:
            raise BackendError(str(e2)) from None
        return resolved, *_load(model_name, resolved, dtype)


def _load(model_name: str, resolved: ResolvedModel, dtype: torch.dtype) -> tuple[Any, Any]:
    """Tokenizer and model from the resolved directory (or the local HF cache), offline."""
    import transformers

    try:
        tok = transformers.AutoTokenizer.from_pretrained(resolved.path, local_files_only=True)
        model = transformers.AutoModelForCausalLM.from_pretrained(resolved.path, dtype=dtype, local_files_only=True)
    except OSError as e:
        raise BackendError(
            f"model {model_name!r} is not available offline (not a built-in, a local directory, "
            f"or in the Hugging Face cache): {str(e).splitlines()[0]}"
        ) from None
    return tok, model
