"""Shared fixtures.  The real embedded model is loaded once per test session (≈4 s after the
one-time conversion, which the first test run does); tests that train restore the adapter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """The model cache: $CONTINUALCODE_CACHE, else the user's default cache."""
    from continualcode.models import cache_root

    return cache_root()


@pytest.fixture(scope="session")
def backend(cache_dir: Path):
    """The real embedded SmolLM2-135M on CPU, fp32 unless CONTINUALCODE_TEST_DTYPE says otherwise."""
    from continualcode.backends.local import LocalBackend

    dtype = os.environ.get("CONTINUALCODE_TEST_DTYPE", "fp32")
    return LocalBackend("smollm2-135m", dtype=dtype, cache=cache_dir, seed=0)


@pytest.fixture
def fresh_backend(backend):
    """The shared backend, with its adapter and optimizer restored after the test."""
    snap = backend.snapshot()
    yield backend
    backend.restore(snap)


@pytest.fixture(scope="session")
def renderer(backend):
    from continualcode.render import Renderer

    return Renderer(backend.tokenizer, vocab_size=backend.vocab_size)


@pytest.fixture(scope="module")
def one_thread(backend):
    """Run a module's model work on one CPU thread (restored after).

    LocalBackend sets torch to os.cpu_count() threads; on a small machine shared with other processes
    that oversubscribes the cores and OpenMP's barriers make each forward 10-30x slower (a 355-token
    score: 0.3 s on one thread, 8 s on two, at load 5 on 2 cores).  Every comparison that must be
    bit-identical runs at this one thread count, the fresh processes included (they are passed it).
    """
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def lora_on(fresh_backend):
    """The shared backend with non-zero LoRA B weights, so that the adapter's path is in every number."""
    import torch

    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in fresh_backend.model.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
    fresh_backend.clear_cache()
    return fresh_backend
