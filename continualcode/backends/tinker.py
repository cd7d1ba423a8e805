"""The Tinker backend: the same agent on large models, through the hosted Tinker training service.

The service holds the base model and the LoRA adapter; this module only moves token ids and
log-probabilities across the wire. It knows nothing of tools, chat templates or corrections.

How the `Backend` protocol maps onto the service (tinker SDK ≥ 0.10; written against 0.38):
- `sample`   → `SamplingClient.sample` on the *current* adapter sampler. Grammar constraints are not
               available there: with `strict_constraints=False` (default) the constraint is ignored and
               the agent's parser turns malformed output into a retry message; with True it is a
               `CapabilityError`. When temperature ≠ 1 or top_p < 1 the sampled tokens are re-scored
               with `compute_logprobs`, so `Sample.logprobs` stay the model's own temperature-1
               log-probs (base.py's contract), whatever the service reports for tempered sampling.
- `score`    → `SamplingClient.compute_logprobs(prompt + completion)`, sliced by
               `completion_logprobs`. Sampled-token log-probs only: topk/full raise `CapabilityError`.
               adapter=False uses one cached sampler of the base model (the KL reference); named
               adapters ("ema") need weight-level operations the service does not expose.
- `train_step` → one `forward_backward(data, "importance_sampling")` and one `optim_step`, submitted
               back to back, then a NEW sampling client from the updated weights (a stale client would
               silently sample the old weights); `sampler_version` counts them. Only
               kind="sampled_token": SDPO's advantage teacher_lp − old_lp and the k1 KL-to-reference
               term are folded into per-token advantages (`build_datum`).
- `save`/`load`, `snapshot`/`restore` → service checkpoints (`save_state`, then a training client
               created from that state with its optimizer). A snapshot is a real round trip to the
               service: seconds, not milliseconds.

Everything here is synchronous (it blocks on the SDK's futures); call it from a worker thread, not
from inside a running asyncio loop. The API key is read by the SDK from TINKER_API_KEY and never
passes through this module's state, repr or error messages.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from continualcode.backends.base import BackendError, CapabilityError, Snapshot, stop_token_ids
from continualcode.fsio import atomic_write
from continualcode.learn.losses import advantage
from continualcode.learn.types import LossSpec, Scores, StepResult, TrainExample
from continualcode.records import Sample

try:  # an optional extra: `pip install 'continualcode[tinker]'`
    import tinker
    from tinker import types as ttypes
except ImportError:  # pragma: no cover - exercised only without the extra
    tinker = None  # type: ignore[assignment]
    ttypes = None  # type: ignore[assignment]

API_KEY_ENV = "TINKER_API_KEY"
MANIFEST = "tinker_checkpoint.json"
MANIFEST_FORMAT = 1
SNAPSHOT_TTL_S = 7 * 24 * 3600  # snapshots are for in-session rollback; the service expires them
TOPK_UNSUPPORTED = "the Tinker service returns sampled-token logprobs only: use distill_loss=sampled_token"


# ---------------------------------------------------------------------------------------------------
# Pure functions: the alignment and the loss mapping (tested without the network)


def completion_logprobs(
    all_logprobs: Sequence[float | None], n_prompt: int, n_completion: int
) -> list[float]:
    """The completion's log-probs out of the service's per-position log-probs of prompt + completion.

    The service returns one entry per input position i: log π(x_i | x_<i), with None at position 0
    (nothing precedes it) and, under `prompt_logprobs_last_n`, None before the scored suffix. The
    completion's T tokens sit at positions n_prompt … n_prompt+T−1, so entry t of the result is
    log π(completion[t] | prompt + completion[:t]), the same index convention as `Scores.logprobs`.
    """
    if n_prompt < 1:
        raise ValueError("scoring needs a non-empty prompt (position 0 has no log-prob)")
    if n_completion < 0:
        raise ValueError(f"n_completion={n_completion} < 0")
    if len(all_logprobs) != n_prompt + n_completion:
        raise ValueError(
            f"the service returned {len(all_logprobs)} log-probs for {n_prompt} prompt + "
            f"{n_completion} completion tokens"
        )
    out = list(all_logprobs[n_prompt : n_prompt + n_completion])
    bad = [t for t, x in enumerate(out) if x is None or math.isnan(x)]
    if bad:
        raise ValueError(f"the service returned no log-prob for completion token {bad[0]}")
    return [float(x) for x in out]  # type: ignore[arg-type]


def build_datum(
    prompt_ids: Sequence[int],
    completion_ids: Sequence[int],
    old_lp: Sequence[float] | torch.Tensor,
    teacher_lp: Sequence[float] | torch.Tensor,
    ref_lp: Sequence[float] | torch.Tensor | None,
    *,
    beta: float,
    scale: float,
) -> Any:
    """One `tinker.types.Datum` for the service's "importance_sampling" loss.

    Standard shifted layout over N = P + T − 1 positions: model_input = (prompt + completion)[:-1],
    target_tokens = (prompt + completion)[1:], so input position j predicts token j+1 and completion
    token t is the target at position P−1+t. On those T positions:
        logprobs[t]   = old_lp[t]                                    (π_old, the sampler's log-probs)
        advantages[t] = scale · (teacher_lp − old_lp − β·(old_lp − ref_lp))[t]
    and 0 on the P−1 prompt positions (advantage 0 removes them from the loss). The KL-to-reference
    is folded in as a per-token advantage (its k1 estimate at π_old), since the service sees no full
    distributions; ref_lp None drops the term. `scale` = example weight / Σ weights / T makes the
    service's SUM over tokens and examples the local backend's weighted per-token MEAN.
    """
    _require_tinker()
    prompt, completion = [int(t) for t in prompt_ids], [int(t) for t in completion_ids]
    P, T = len(prompt), len(completion)
    if P < 1 or T < 1:
        raise ValueError(f"a datum needs a prompt and a completion (got P={P}, T={T})")
    old_T = _vector(old_lp, T, "old_lp")
    teacher_T = _vector(teacher_lp, T, "teacher_lp")
    adv_T = advantage(teacher_T, old_T)  # [T]
    if ref_lp is not None:
        adv_T = adv_T - beta * (old_T - _vector(ref_lp, T, "ref_lp"))
    tokens = prompt + completion
    logprobs_N = torch.zeros(P + T - 1, dtype=torch.float64)
    advantages_N = torch.zeros(P + T - 1, dtype=torch.float64)
    logprobs_N[P - 1 :] = old_T
    advantages_N[P - 1 :] = scale * adv_T
    return ttypes.Datum(
        model_input=ttypes.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": ttypes.TensorData.from_torch(torch.tensor(tokens[1:], dtype=torch.int64)),
            "logprobs": ttypes.TensorData.from_torch(logprobs_N.float()),
            "advantages": ttypes.TensorData.from_torch(advantages_N.float()),
        },
    )


# ---------------------------------------------------------------------------------------------------
# The backend


class TinkerBackend:
    """`Backend` on the Tinker service: sampling, scoring and LoRA training of `model_name` there.

    model_name:          a base model the service hosts, e.g. "Qwen/Qwen3-30B-A3B-Instruct-2507".
    lora_rank:           rank of the adapter (the SDK's default targets: attention, MLP and unembed).
    seed:                seed of the adapter's initialisation (None: the service picks).
    service_client:      a `tinker.ServiceClient` (or a test double); None builds one, which needs
                         TINKER_API_KEY in the environment.
    strict_constraints:  True raises `CapabilityError` when `sample` is given a grammar constraint;
                         False (default) samples unconstrained.
    rescore_samples:     True re-scores every sample with `compute_logprobs` (one extra prefill), for
                         when the sampler's own log-probs are not trusted as π_old; tempered or top-p
                         samples are always re-scored.
    """

    def __init__(
        self,
        model_name: str,
        *,
        lora_rank: int = 16,
        seed: int | None = None,
        service_client: Any = None,
        strict_constraints: bool = False,
        rescore_samples: bool = False,
    ) -> None:
        self.model_name = model_name
        self.lora_rank = lora_rank
        self.seed = seed
        self.strict_constraints = strict_constraints
        self.rescore_samples = rescore_samples
        if service_client is None:
            _require_tinker()
            if not os.environ.get(API_KEY_ENV):
                raise BackendError(f"{API_KEY_ENV} is not set: export it, or use backend=local")
            with _service_errors("connecting to the service"):
                service_client = tinker.ServiceClient()  # reads the key from the environment itself
        self._service = service_client
        self._training: Any = None  # created on first use (a network round trip)
        self._sampler: Any = None  # the adapter's current sampling client; None = must be refreshed
        self._base_sampler: Any = None  # the frozen base (adapter=False), created once
        self._tokenizer: Any = None
        self._step = 0
        self.sampler_version = 0  # how many adapter sampling clients have been created

    def __repr__(self) -> str:
        return (
            f"TinkerBackend(model_name={self.model_name!r}, lora_rank={self.lora_rank}, "
            f"step={self._step}, sampler_version={self.sampler_version})"
        )

    # --- identity ---------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            tc = self._training_client()
            try:
                self._tokenizer = tc.get_tokenizer()
            except Exception:  # the SDK's lookup failed: the model's own tokenizer from the HF hub
                from transformers import AutoTokenizer

                try:
                    self._tokenizer = AutoTokenizer.from_pretrained(self.model_name)
                except Exception as e:
                    raise BackendError(f"no tokenizer for {self.model_name}: {_one_line(e)}") from e
        return self._tokenizer

    @property
    def model_id(self) -> str:
        return self.model_name

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"snapshot"})

    @property
    def step(self) -> int:
        return self._step

    @property
    def vocab_size(self) -> int | None:
        """Unknown here (the service does not say); the renderer then uses the tokenizer's length."""
        return None

    # --- sampling and scoring ---------------------------------------------------------------------

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
    ) -> Sample:
        if constraint is not None and self.strict_constraints:
            raise CapabilityError(
                "grammar-constrained decoding is not available on the Tinker service "
                "(strict_constraints=True): use backend=local, or allow unconstrained sampling"
            )
        prompt = [int(t) for t in prompt_ids]
        sampler = self._adapter_sampler()
        stop_ids = sorted({int(t) for t in stop} | set(stop_token_ids(self.tokenizer))) if stop else None
        params = ttypes.SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop_ids, seed=seed
        )
        with _service_errors("sampling"):
            resp = _resolve(
                sampler.sample(
                    prompt=ttypes.ModelInput.from_ints(prompt), num_samples=1, sampling_params=params
                )
            )
        seq = resp.sequences[0]
        tokens = [int(t) for t in seq.tokens]
        logprobs = seq.logprobs
        tempered = temperature != 1.0 or top_p < 1.0
        if tokens and (logprobs is None or tempered or self.rescore_samples):
            logprobs = self._logprobs(sampler, prompt, tokens)
        finish = "length" if seq.stop_reason == "length" else "stop"
        return Sample(tokens=tokens, logprobs=[float(x) for x in (logprobs or [])], finish_reason=finish)

    def score(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        topk: int = 0,
        full: bool = False,
        adapter: bool | str = True,
    ) -> Scores:
        if topk > 0 or full:
            raise CapabilityError(TOPK_UNSUPPORTED)
        sampler = self._sampler_for(adapter)
        lps = self._logprobs(sampler, [int(t) for t in prompt_ids], [int(t) for t in completion_ids])
        return Scores(logprobs=torch.tensor(lps, dtype=torch.float32))

    def _logprobs(self, sampler: Any, prompt: list[int], completion: list[int]) -> list[float]:
        """log π(completion[t] | prompt + completion[:t]) under `sampler`, via one prefill."""
        if not completion:
            return []
        if not prompt:
            raise BackendError("cannot score without a prompt")
        full = ttypes.ModelInput.from_ints(prompt + completion)
        kwargs: dict[str, Any] = {}
        if _accepts(sampler.compute_logprobs, "prompt_logprobs_last_n"):
            kwargs["prompt_logprobs_last_n"] = len(completion)  # only the suffix: the prefix is cached
        with _service_errors("scoring"):
            all_lp = _resolve(sampler.compute_logprobs(full, **kwargs))
        try:
            return completion_logprobs(all_lp, len(prompt), len(completion))
        except ValueError as e:
            raise BackendError(f"Tinker scoring returned a malformed answer: {e}") from None

    def _sampler_for(self, adapter: bool | str) -> Any:
        if adapter is True:
            return self._adapter_sampler()
        if adapter is False:
            if self._base_sampler is None:
                with _service_errors("creating the base-model sampler"):
                    self._base_sampler = _resolve(
                        self._service.create_sampling_client(base_model=self.model_name)
                    )
            return self._base_sampler
        raise CapabilityError(
            f"adapter={adapter!r} needs weight-level operations (EMA, named adapters) that the Tinker "
            "service does not expose: use the live adapter as the teacher"
        )

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float) -> StepResult:
        """One SDPO step as the service's importance-sampling loss, then a fresh sampling client.

        Per token the service minimises −exp(new − old)·adv with adv from `build_datum`; its gradient
        at new = old equals the local sampled-token loss's (mean over tokens, KL as k1·∇logπ). The
        service does not clamp the ratio (the local backend clamps the detached ratio to
        spec.ratio_clamp); at the first step after sampling the ratio is 1, so this does not matter.
        Loss VALUES differ from the local surrogate's by design; only the gradients agree. The
        service reports no gradient norm and clips none.
        """
        if spec.kind != "sampled_token":
            raise CapabilityError(f"distill_loss={spec.kind}: {TOPK_UNSUPPORTED}")
        if not batch:
            raise BackendError("train_step needs at least one example")
        total_w = sum(ex.weight for ex in batch)
        if not total_w > 0:
            raise BackendError(f"example weights sum to {total_w}: nothing to learn from")
        t0 = time.perf_counter()
        # 1) datums: advantages folded per token, scaled so the service's sum is a weighted mean
        data, stats, olds = [], _StepStats(), []
        for ex in batch:
            T = len(ex.completion_ids)
            if T == 0 or not ex.prompt_ids:
                raise BackendError("train_step got an example with an empty prompt or completion")
            if spec.beta != 0 and ex.ref is None:
                raise BackendError("beta > 0 needs the reference's scores (TrainExample.ref)")
            if ex.old_logprobs is None:
                raise BackendError("the Tinker backend needs π_old (TrainExample.old_logprobs): the sampler's")
            old_T = ex.old_logprobs.detach().double().cpu()
            olds.append(old_T)
            teacher_T = ex.teacher.logprobs.detach().double().cpu()
            ref_T = None if ex.ref is None else ex.ref.logprobs.detach().double().cpu()
            w = ex.weight / total_w
            data.append(
                build_datum(
                    ex.prompt_ids,
                    ex.completion_ids,
                    old_T,
                    teacher_T,
                    None if spec.beta == 0 else ref_T,
                    beta=spec.beta,
                    scale=w / T,
                )
            )
            stats.add(w, old_T, teacher_T, ref_T)
        # 2) forward_backward and optim_step back to back; the old sampler is dead from here on
        tc = self._training_client()
        self._sampler = None
        with _service_errors("training step"):
            fwd_future = tc.forward_backward(data, "importance_sampling")
            opt_future = tc.optim_step(ttypes.AdamParams(learning_rate=lr))
            fwd = _resolve(fwd_future)
            _resolve(opt_future)
        self._step += 1
        t1 = time.perf_counter()
        # 3) a sampling client of the new weights, before anything samples again
        self._refresh_sampler()
        t2 = time.perf_counter()
        metrics = stats.metrics(beta=spec.beta)
        service_loss = (getattr(fwd, "metrics", None) or {}).get("loss:sum")
        if service_loss is not None:
            metrics["loss"] = float(service_loss)
        metrics.update(_ratio_metrics(fwd, batch))
        metrics.update(
            stepped=1.0,
            lr=lr,
            sampler_version=float(self.sampler_version),
            sec_train=t1 - t0,
            sec_sampler=t2 - t1,
        )
        return StepResult(metrics, olds)

    # --- state ------------------------------------------------------------------------------------

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        """A service checkpoint (weights + optimizer) and a local manifest at path/tinker_checkpoint.json.

        `extra` (JSON-able, as for the local backend) is stored in the manifest alongside.
        """
        path = Path(path)
        tinker_path = self._save_state(f"continualcode-step{self._step:06d}-{uuid.uuid4().hex[:8]}", ttl=None)
        manifest = {
            **(extra or {}),
            "format": MANIFEST_FORMAT,
            "backend": "tinker",
            "tinker_path": tinker_path,
            "model_name": self.model_name,
            "lora_rank": self.lora_rank,
            "step": self._step,
        }
        atomic_write(path / MANIFEST, json.dumps(manifest, indent=1))

    def load(self, path: Path) -> None:
        """Resume from `save`'s manifest (refuses another base model's checkpoint)."""
        file = Path(path) / MANIFEST
        try:
            manifest = json.loads(file.read_text())
            tinker_path, model_name, step = (
                manifest["tinker_path"],
                manifest["model_name"],
                int(manifest["step"]),
            )
        except FileNotFoundError:
            raise BackendError(f"no Tinker checkpoint at {path}: {MANIFEST} is missing") from None
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(f"Tinker checkpoint manifest {file} is corrupt: {_one_line(e)}") from None
        if model_name != self.model_name:
            raise BackendError(f"checkpoint {path} was trained on {model_name!r}, not on {self.model_name!r}")
        self._load_state(tinker_path)
        self._step = step

    def snapshot(self) -> Snapshot:
        name = f"continualcode-snapshot-step{self._step:06d}-{uuid.uuid4().hex[:8]}"
        return Snapshot(step=self._step, state={"tinker_path": self._save_state(name, ttl=SNAPSHOT_TTL_S)})

    def restore(self, snap: Snapshot) -> None:
        self._load_state(snap.state["tinker_path"])
        self._step = snap.step

    def _save_state(self, name: str, *, ttl: int | None) -> str:
        tc = self._training_client()
        with _service_errors("saving a checkpoint"):
            resp = _resolve(tc.save_state(name) if ttl is None else tc.save_state(name, ttl_seconds=ttl))
        return str(resp.path)

    def _load_state(self, tinker_path: str) -> None:
        """A training client built from the checkpoint (weights + Adam state), then a fresh sampler.

        The SDK deprecates `TrainingClient.load_state*` in favour of creating a new training client
        from the state; the old client is simply dropped.
        """
        self._sampler = None
        with _service_errors("loading a checkpoint"):
            self._training = _resolve(
                self._service.create_training_client_from_state_with_optimizer(tinker_path)
            )
        self._refresh_sampler()

    # --- clients ----------------------------------------------------------------------------------

    def _training_client(self) -> Any:
        if self._training is None:
            with _service_errors(f"creating a LoRA training client for {self.model_name}"):
                self._training = _resolve(
                    self._service.create_lora_training_client(
                        base_model=self.model_name, rank=self.lora_rank, seed=self.seed
                    )
                )
        return self._training

    def _adapter_sampler(self) -> Any:
        if self._sampler is None:
            self._refresh_sampler()
        return self._sampler

    def _refresh_sampler(self) -> None:
        """Save the current weights for sampling and switch to a client of them."""
        tc = self._training_client()
        self._sampler = None
        with _service_errors("publishing the adapter for sampling"):
            sampler = _resolve(tc.save_weights_and_get_sampling_client())
        self._sampler = sampler
        self.sampler_version += 1


# ---------------------------------------------------------------------------------------------------
# Helpers


class _StepStats:
    """Weighted per-example means of the SDPO signal at π_old (A = teacher − old, k1 = old − ref)."""

    def __init__(self) -> None:
        self.adv: list[tuple[float, torch.Tensor]] = []
        self.k1: list[tuple[float, torch.Tensor]] = []

    def add(self, w: float, old_T: torch.Tensor, teacher_T: torch.Tensor, ref_T: torch.Tensor | None) -> None:
        self.adv.append((w, teacher_T - old_T))
        if ref_T is not None:
            self.k1.append((w, old_T - ref_T))

    def metrics(self, *, beta: float) -> dict[str, float]:
        def wmean(items: list[tuple[float, torch.Tensor]], f: Any = lambda x: x) -> float:
            return float(sum(w * f(x).mean() for w, x in items)) if items else 0.0

        pg = -wmean(self.adv)
        kl_ref = wmean(self.k1)
        all_adv = torch.cat([a for _, a in self.adv])
        return {
            "loss": pg + beta * kl_ref,  # the service's loss at ratio 1 (replaced by its own report)
            "pg_loss": pg,
            "kl_loss": beta * kl_ref,
            "kl_ref": kl_ref,
            "adv_mean": wmean(self.adv),
            "adv_abs_mean": wmean(self.adv, torch.abs),
            "adv_min": float(all_adv.min()),
            "adv_max": float(all_adv.max()),
            "adv_pos_frac": wmean(self.adv, lambda x: (x > 0).double()),
            "tokens": float(all_adv.numel()),
        }


def _ratio_metrics(fwd: Any, batch: Sequence[TrainExample]) -> dict[str, float]:
    """π_trainer/π_sampler on the completion tokens, from the service's forward log-probs (if given).

    A ratio far from 1 at the first step means the sampler's log-probs are not the trainer's (see
    `rescore_samples`).
    """
    outputs = getattr(fwd, "loss_fn_outputs", None) or []
    ratios, diffs = [], []
    for out, ex in zip(outputs, batch, strict=False):
        td = out.get("logprobs") if hasattr(out, "get") else None
        if td is None:
            return {}
        new_N = _tensor_data(td).double()
        new_T = new_N[len(ex.prompt_ids) - 1 :]
        old_T = ex.old_logprobs.detach().double().cpu()
        if new_T.shape != old_T.shape:
            return {}
        ratios.append(torch.exp(new_T - old_T))
        diffs.append((new_T - old_T).abs())
    if not ratios:
        return {}
    r, d = torch.cat(ratios), torch.cat(diffs)
    return {"ratio_mean": float(r.mean()), "ratio_max": float(r.max()), "lp_mismatch": float(d.mean())}


def _require_tinker() -> None:
    if tinker is None:
        raise BackendError("the Tinker SDK is not installed: pip install 'continualcode[tinker]'")


def _resolve(x: Any) -> Any:
    """The value of an SDK future (APIFuture, concurrent Future), or `x` itself.

    Depending on the SDK version, client-creating calls return the client or a future of it.
    """
    if isinstance(x, Future) or (tinker is not None and isinstance(x, tinker.APIFuture)):
        return x.result()
    return x


def _accepts(fn: Any, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _vector(x: Sequence[float] | torch.Tensor, T: int, name: str) -> torch.Tensor:
    v = torch.as_tensor(x, dtype=torch.float64).detach().cpu().reshape(-1)
    if v.numel() != T:
        raise ValueError(f"{name} has {v.numel()} entries for {T} completion tokens")
    return v


def _tensor_data(td: Any) -> torch.Tensor:
    """A `tinker.types.TensorData` as a float64 tensor (SDK-version independent)."""
    data = td.tolist() if hasattr(td, "tolist") else td.data
    return torch.tensor(data, dtype=torch.float64)


def _one_line(e: BaseException) -> str:
    """`Type: first line` of an exception, capped, with the API key (should it appear) masked."""
    lines = str(e).strip().splitlines()
    text = f"{type(e).__name__}: {lines[0] if lines else ''}"[:300]
    key = os.environ.get(API_KEY_ENV, "")
    return text.replace(key, "***") if len(key) >= 4 else text


@contextmanager
def _service_errors(what: str) -> Iterator[None]:
    """SDK and network failures as one-line `BackendError`s naming the operation."""
    try:
        yield
    except BackendError:
        raise
    except Exception as e:
        raise BackendError(f"Tinker {what} failed: {_one_line(e)}") from e
