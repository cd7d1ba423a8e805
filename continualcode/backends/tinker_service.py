"""The Tinker service session: the clients one adapter needs, created lazily, and its saved states.

Boundary: network plumbing only (client creation, publishing weights for sampling, saving and
loading service checkpoints, turning SDK failures into one-line `BackendError`s); no tokens, no
losses.  A training client is replaced, never reloaded in place: the SDK deprecates
`load_state*` in favour of a new client created from the state.
"""

from __future__ import annotations

import inspect
import os
import time
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from typing import Any

from continualcode.backends.base import BackendError

try:  # an optional extra: `pip install 'continualcode[tinker]'`
    import tinker
except ImportError:  # pragma: no cover - exercised only without the extra
    tinker = None  # type: ignore[assignment]

API_KEY_ENV = "TINKER_API_KEY"


class ServiceSession:
    """One adapter's clients on the service: training client, adapter sampler, base sampler, tokenizer."""

    def __init__(self, model_name: str, *, lora_rank: int, seed: int | None, service_client: Any = None) -> None:
        self.model_name, self.lora_rank, self.seed = model_name, lora_rank, seed
        if service_client is None:
            require_tinker()
            if not os.environ.get(API_KEY_ENV):
                raise BackendError(f"{API_KEY_ENV} is not set: export it, or use backend=local")
            with service_errors("connecting to the service"):
                service_client = tinker.ServiceClient()  # reads the key from the environment itself
        self.service = service_client
        self.training_client: Any = None  # created on first use (a network round trip)
        self.sampler: Any = None  # the adapter's current sampling client; None = must be refreshed
        self.base_sampler: Any = None  # the frozen base (adapter=False), created once
        self._tokenizer: Any = None
        self.sampler_version = 0  # how many adapter sampling clients have been created

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tc = self.training()
            try:
                self._tokenizer = tc.get_tokenizer()
            except Exception:  # the SDK's lookup failed: the model's own tokenizer from the HF hub
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                except Exception as e:
                    raise BackendError(f"no tokenizer for {self.model_name}: {one_line(e)}") from e
        return self._tokenizer

    def training(self) -> Any:
        if self.training_client is None:
            with service_errors(f"creating a LoRA training client for {self.model_name}"):
                self.training_client = resolve(
                    self.service.create_lora_training_client(
                        base_model=self.model_name, rank=self.lora_rank, seed=self.seed
                    )
                )
        return self.training_client

    def adapter_sampler(self) -> Any:
        if self.sampler is None:
            self.refresh_sampler()
        return self.sampler

    def frozen_sampler(self) -> Any:
        if self.base_sampler is None:
            with service_errors("creating the base-model sampler"):
                self.base_sampler = resolve(self.service.create_sampling_client(base_model=self.model_name))
        return self.base_sampler

    def refresh_sampler(self) -> None:
        """Save the current weights for sampling and switch to a client of them."""
        tc = self.training()
        self.sampler = None
        with service_errors("publishing the adapter for sampling"):
            sampler = resolve(tc.save_weights_and_get_sampling_client())
        self.sampler = sampler
        self.sampler_version += 1

    def train(self, data: list[Any], loss: Any, *, lr: float, what: str) -> tuple[Any, float, float]:
        """`forward_backward` (loss: a built-in loss's name) or `forward_backward_custom` (a callable),
        then `optim_step`, submitted back to back, then a sampler of the new weights (the old one is
        dead from the submit on).  Returns the forward result, seconds training, seconds publishing."""
        t0 = time.perf_counter()
        custom = not isinstance(loss, str)
        tc = self.training()
        self.sampler = None
        try:
            with service_errors(what):
                fb = tc.forward_backward_custom(data, loss) if custom else tc.forward_backward(data, loss)
                opt = tc.optim_step(tinker.types.AdamParams(learning_rate=lr))
                fwd = resolve(fb)
                resolve(opt)
        except BackendError:
            if custom:
                self.training_client = None  # a failed custom loss poisons the client; a restore builds a new one
            raise
        t1 = time.perf_counter()
        self.refresh_sampler()
        return fwd, t1 - t0, time.perf_counter() - t1

    def save_state(self, name: str, *, ttl: int | None) -> str:
        tc = self.training()
        with service_errors("saving a checkpoint"):
            resp = resolve(tc.save_state(name) if ttl is None else tc.save_state(name, ttl_seconds=ttl))
        return str(resp.path)

    def load_state(self, tinker_path: str) -> None:
        """A training client built from the checkpoint (weights + Adam state), then a fresh sampler."""
        self.sampler = None
        with service_errors("loading a checkpoint"):
            self.training_client = resolve(self.service.create_training_client_from_state_with_optimizer(tinker_path))
        self.refresh_sampler()


def require_tinker() -> None:
    if tinker is None:
        raise BackendError("the Tinker SDK is not installed: pip install 'continualcode[tinker]'")


def resolve(x: Any) -> Any:
    """The value of an SDK future (APIFuture, concurrent Future), or `x` itself.

    Depending on the SDK version, client-creating calls return the client or a future of it.
    """
    if isinstance(x, Future) or (tinker is not None and isinstance(x, tinker.APIFuture)):
        return x.result()
    return x


def accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def one_line(e: BaseException) -> str:
    """`Type: first line` of an exception, capped, with the API key (should it appear) masked."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    key = os.environ.get(API_KEY_ENV, "")
    return text.replace(key, "***") if len(key) >= 4 else text


@contextmanager
def service_errors(what: str) -> Iterator[None]:
    """SDK and network failures as one-line `BackendError`s naming the operation."""
    try:
        yield
    except BackendError:
        raise
    except Exception as e:
        raise BackendError(f"Tinker {what} failed: {one_line(e)}") from e
