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
