"""The Backend protocol: the only view of a model that the agent and the learner have.

A backend is token-level. It knows nothing of tools, chat templates or corrections: it samples
completions for prompt ids, scores given completions (under the LoRA adapter or the frozen base),
and takes one optimizer step on the adapter for a batch of `TrainExample`s under a `LossSpec`.

Two contracts matter for learning:
- `Sample.logprobs` are the model's own log-probabilities of the sampled tokens at temperature 1
  and without any decoding constraint, so they equal what `score` returns for the same tokens
  (to rounding: KV-cached decoding in bf16 differs from a full forward by ~0.04 nats on average,
  which is why a first training step on a fresh sample may use the on-policy π_old instead).
- `score(...).logprobs[t]` is log π(completion[t] | prompt + completion[:t]).  Teacher and
  student are scored over the same completion tokens, so index t means the same token in both.

The loss is data, not code, at this seam: `LossSpec` (learn/types.py, like `Scores`,
`TrainExample` and the `StepResult` a step returns) names a pure function of
`continualcode.learn.losses`, which the local backend evaluates on full next-token distributions
and the Tinker backend maps onto the service's losses.  The records come from below
(`records.py`, `learn/types.py`); backends import nothing from the agent or the learner.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from continualcode.learn.types import LossSpec, Scores, StepResult, Stop, TrainExample
from continualcode.records import Sample


class BackendError(RuntimeError):
    """A backend failure with a one-line message meant for the user."""


class CapabilityError(BackendError):
    """The backend cannot do what the configuration asks (e.g. full-distribution KL on Tinker)."""


@dataclass(frozen=True)
class LoraShape:
    """The adapter's shape; the defaults of `Config.lora_*` and of the local backend."""

    rank: int = 16
    alpha: int = 32
    targets: str = "q_proj,k_proj,v_proj,o_proj"


LORA = LoraShape()


@dataclass(frozen=True)
class Snapshot:
    """An in-memory copy of the adapter (and optimizer) state; opaque to callers."""

    step: int
    state: Any


CHAT_END_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|endoftext|>")


def stop_token_ids(tok: Any) -> list[int]:
    """The ids that end an assistant turn for this tokenizer: chat end tokens it has, then its eos."""
    ids: list[int] = []
    convert = getattr(tok, "convert_tokens_to_ids", None)  # absent on minimal (service) tokenizers
    for t in CHAT_END_TOKENS if convert is not None else ():
        i = convert(t)
        if isinstance(i, int) and i >= 0 and i != getattr(tok, "unk_token_id", None) and i not in ids:
            ids.append(i)
    eos = getattr(tok, "eos_token_id", None)
    for e in eos if isinstance(eos, list | tuple) else [] if eos is None else [eos]:
        if int(e) not in ids:
            ids.append(int(e))
    return ids


@runtime_checkable
class Guided(Protocol):
    """A backend that can sample with a contrasting context (decode.Guide): the local one."""

    def sample_guided(self, prompt_ids: Sequence[int], contrast_ids: Sequence[int], *, guidance: float,
                      max_tokens: int, temperature: float, top_p: float = 1.0, stop: Sequence[int] = (),
                      constraint: Any = None, seed: int | None = None) -> Sample: ...


@runtime_checkable
class Backend(Protocol):
    """What the agent and the learner may ask of a model."""

    @property
    def tokenizer(self) -> Any:
        """A HF tokenizer (chat template, encode/decode, eos ids) for the renderer."""
        ...

    @property
    def model_id(self) -> str:
        """The base model's identity; checkpoints of another base are refused."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """Subset of {"full_distribution", "topk_distribution", "ema_teacher", "snapshot", "on_policy_forward",
        "prefix_carry"}.

        on_policy_forward: `train_step` accepts `old_logprobs=None` (π_old from its own forward).
        prefix_carry: `carry_prefix(prompt_ids)` keeps a corrected prompt's KV across an update (local.py)."""
        ...

    @property
    def step(self) -> int:
        """Number of optimizer steps taken on the adapter."""
        ...

    @property
    def vocab_size(self) -> int | None:
        """Rows of the model's output layer (may exceed the tokenizer's length); None when unknown."""
        ...

    def sample(
        self,
        prompt_ids: Sequence[int],
        *,
        max_tokens: int,
        temperature: float,
        top_p: float = 1.0,
        stop: Sequence[int] = (),
        constraint: Any = None,
        seed: int | None = None,
    ) -> Sample: ...

    def score(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        topk: int = 0,
        full: bool = False,
        adapter: bool | str = True,
    ) -> Scores:
        """adapter=True: the live LoRA; False: the frozen base; a string: that named adapter (e.g. "ema")."""
        ...

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float,
                   stop: Stop | None = None) -> StepResult:
        """One optimizer step on the adapter: its metrics (loss, pg_loss, kl_loss, grad_norm, stepped, …)
        and each example's pre-step log-probs (π_old of a later step on it).  `stop` (a background job's
        pause) asked where the step can still be dropped: true there, `learn.types.Paused` is raised and
        the adapter is as it was."""
        ...

    def save(self, path: Path) -> None: ...

    def load(self, path: Path) -> None: ...

    def snapshot(self) -> Snapshot: ...

    def restore(self, snap: Snapshot) -> None: ...
