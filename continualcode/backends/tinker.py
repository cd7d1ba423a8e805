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
               `completion_logprobs`; with topk=K (K ≤ 20, the service's cap) one `sample` of
               prompt + completion with `topk_prompt_logprobs=K` gives each completion position's
               top-K too.  full=True raises `CapabilityError` (the service never returns a whole
               distribution).  adapter=False uses one cached sampler of the base model (the KL
               reference); named adapters ("ema") need weight-level operations the service lacks.
- `train_step` → kind "sampled_token": one `forward_backward(data, "importance_sampling")`, SDPO's
               advantage teacher_lp − old_lp and the k1 KL-to-reference term folded into per-token
               advantages (`build_datum`); kind "topk": `forward_backward_custom` with the local
               top-K loss's own math computed on the student's log-probs at the teacher's ids
               (`tinker_data.TopkLoss`).  Then one `optim_step`, submitted back to back, then a NEW
               sampling client from the updated weights (a stale client would silently sample the
               old weights); `sampler_version` counts them.
- `save`/`load`, `snapshot`/`restore` → service checkpoints (`save_state`, then a training client
               created from that state with its optimizer). A snapshot is a real round trip to the
               service: seconds, not milliseconds.

Everything here is synchronous (it blocks on the SDK's futures); call it from a worker thread, not
from inside a running asyncio loop. The API key is read by the SDK from TINKER_API_KEY and never
passes through this module's state, repr or error messages.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from continualcode.backends.base import BackendError, CapabilityError, Snapshot, stop_token_ids
from continualcode.backends.tinker_data import (
    MAX_TOPK,
    TopkLoss,
    build_datum,
    build_topk_datum,
    completion_logprobs,
    completion_topk,
    tensor_of,
)
from continualcode.backends.tinker_service import (
    ServiceSession,
    accepts,
    one_line,
    resolve,
    service_errors,
)
from continualcode.fsio import atomic_write
from continualcode.learn.types import LossSpec, Paused, Scores, StepResult, Stop, TrainExample
from continualcode.records import Sample

try:  # an optional extra: `pip install 'continualcode[tinker]'`
    from tinker import types as ttypes
except ImportError:  # pragma: no cover - exercised only without the extra
    ttypes = None  # type: ignore[assignment]

MANIFEST = "tinker_checkpoint.json"
MANIFEST_FORMAT = 1
SNAPSHOT_TTL_S = 7 * 24 * 3600  # snapshots are for in-session rollback; the service expires them
FULL_UNSUPPORTED = ("the Tinker service returns log-probs only at token ids it is given, never a whole "
                    f"next-token distribution: use distill_loss=topk (K ≤ {MAX_TOPK}) or sampled_token")


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

    def __init__(self, model_name: str, *, lora_rank: int = 16, seed: int | None = None, service_client: Any = None,
                 strict_constraints: bool = False, rescore_samples: bool = False) -> None:
        self.model_name = model_name
        self.lora_rank = lora_rank
        self.strict_constraints = strict_constraints
        self.rescore_samples = rescore_samples
        self._svc = ServiceSession(model_name, lora_rank=lora_rank, seed=seed, service_client=service_client)
        self._step = 0

    @property
    def sampler_version(self) -> int:
        """How many adapter sampling clients have been created."""
        return self._svc.sampler_version

    def __repr__(self) -> str:
        return (f"TinkerBackend(model_name={self.model_name!r}, lora_rank={self.lora_rank}, "
                f"step={self._step}, sampler_version={self.sampler_version})")

    # --- identity ---------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self._svc.tokenizer

    @property
    def model_id(self) -> str:
        return self.model_name

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"snapshot", "topk_distribution"})

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
        sampler = self._svc.adapter_sampler()
        stop_ids = sorted({int(t) for t in stop} | set(stop_token_ids(self.tokenizer))) if stop else None
        params = ttypes.SamplingParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, stop=stop_ids, seed=seed
        )
        with service_errors("sampling"):
            resp = resolve(
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
        if full:
            raise CapabilityError(FULL_UNSUPPORTED)
        if topk > MAX_TOPK:
            raise CapabilityError(f"the Tinker service returns at most {MAX_TOPK} top-K log-probs per position "
                                  f"(asked for {topk}): set distill_topk ≤ {MAX_TOPK}")
        sampler = self._sampler_for(adapter)
        prompt, completion = [int(t) for t in prompt_ids], [int(t) for t in completion_ids]
        if topk > 0:
            return self._topk_scores(sampler, prompt, completion, topk)
        lps = self._logprobs(sampler, prompt, completion)
        return Scores(logprobs=torch.tensor(lps, dtype=torch.float32))

    def _topk_scores(self, sampler: Any, prompt: list[int], completion: list[int], k: int) -> Scores:
        """The completion's log-probs and each position's top-K, from one prefill of prompt + completion."""
        if not prompt or not completion:
            raise BackendError("cannot score without a prompt and a completion")
        with service_errors("scoring (top-K)"):
            resp = resolve(sampler.sample(
                prompt=ttypes.ModelInput.from_ints(prompt + completion), num_samples=1,
                sampling_params=ttypes.SamplingParams(max_tokens=1, temperature=1.0),
                include_prompt_logprobs=True, topk_prompt_logprobs=k, prompt_logprobs_last_n=len(completion)))
        try:
            lps = completion_logprobs(resp.prompt_logprobs or [], len(prompt), len(completion))
            ids_TK, lp_TK, mask_TK = completion_topk(resp.topk_prompt_logprobs or [], len(prompt), len(completion),
                                                     k, vocab_size=_length(self.tokenizer))
        except ValueError as e:
            raise BackendError(f"Tinker scoring returned a malformed answer: {e}") from None
        lp_TK = lp_TK.masked_fill(~mask_TK, float("-inf"))  # a padded cell is no candidate
        return Scores(logprobs=torch.tensor(lps, dtype=torch.float32), topk_ids=ids_TK, topk_logprobs=lp_TK)

    def _logprobs(self, sampler: Any, prompt: list[int], completion: list[int]) -> list[float]:
        """log π(completion[t] | prompt + completion[:t]) under `sampler`, via one prefill."""
        if not completion:
            return []
        if not prompt:
            raise BackendError("cannot score without a prompt")
        full = ttypes.ModelInput.from_ints(prompt + completion)
        kwargs: dict[str, Any] = {}
        if accepts(sampler.compute_logprobs, "prompt_logprobs_last_n"):
            kwargs["prompt_logprobs_last_n"] = len(completion)  # only the suffix: the prefix is cached
        with service_errors("scoring"):
            all_lp = resolve(sampler.compute_logprobs(full, **kwargs))
        try:
            return completion_logprobs(all_lp, len(prompt), len(completion))
        except ValueError as e:
            raise BackendError(f"Tinker scoring returned a malformed answer: {e}") from None

    def _sampler_for(self, adapter: bool | str) -> Any:
        if adapter is True:
            return self._svc.adapter_sampler()
        if adapter is False:
            return self._svc.frozen_sampler()
        raise CapabilityError(
            f"adapter={adapter!r} needs weight-level operations (EMA, named adapters) that the Tinker "
            "service does not expose: use the live adapter as the teacher"
        )

    # --- training ---------------------------------------------------------------------------------

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float,
                   stop: Stop | None = None) -> StepResult:
        """One SDPO step as the service's importance-sampling loss, then a fresh sampling client.

        Per token the service minimises −exp(new − old)·adv with adv from `build_datum`; its gradient
        at new = old equals the local sampled-token loss's (mean over tokens, KL as k1·∇logπ). The
        service does not clamp the ratio (the local backend clamps the detached ratio to
        spec.ratio_clamp); at the first step after sampling the ratio is 1, so this does not matter.
        Loss VALUES differ from the local surrogate's by design; only the gradients agree. The
        service reports no gradient norm and clips none.  `stop`: asked once, before the call.
        """
        if stop is not None and stop():
            raise Paused("the training step was asked to stop before it was sent")
        if spec.kind == "full":
            raise CapabilityError(f"distill_loss=full: {FULL_UNSUPPORTED}")
        if spec.kind == "topk":
            return self._topk_step(batch, spec, lr=lr)
        data, stats, olds = _sampled_token_data(batch, spec)
        fwd, sec_train, sec_sampler = self._svc.train(data, "importance_sampling", lr=lr, what="training step")
        self._step += 1
        metrics = stats.metrics(beta=spec.beta)
        service_loss = (getattr(fwd, "metrics", None) or {}).get("loss:sum")
        if service_loss is not None:
            metrics["loss"] = float(service_loss)
        metrics.update(_ratio_metrics(fwd, batch))
        metrics.update(stepped=1.0, lr=lr, sampler_version=float(self.sampler_version), sec_train=sec_train,
                       sec_sampler=sec_sampler)
        return StepResult(metrics, olds)

    def _topk_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float) -> StepResult:
        """Top-K distillation through `forward_backward_custom` (tinker_data.TopkLoss), then `optim_step`."""
        data = _topk_data(batch, spec)
        fwd, sec_train, sec_sampler = self._svc.train(data, TopkLoss(alpha=spec.alpha, beta=spec.beta), lr=lr,
                                                      what="training step (top-K)")
        self._step += 1
        m = {k.split(":")[0]: float(v) for k, v in (getattr(fwd, "metrics", None) or {}).items()
             if k.split(":")[0] in ("loss", "pg_loss", "kl_loss")}
        m.update(stepped=1.0, lr=lr, sampler_version=float(self.sampler_version), sec_train=sec_train,
                 sec_sampler=sec_sampler, tokens=float(sum(len(ex.completion_ids) for ex in batch)))
        return StepResult(m, [ex.old_logprobs for ex in batch if ex.old_logprobs is not None])

    # --- state ------------------------------------------------------------------------------------

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        """A service checkpoint (weights + optimizer) and a local manifest at path/tinker_checkpoint.json.

        `extra` (JSON-able, as for the local backend) is stored in the manifest alongside.
        """
        path = Path(path)
        tinker_path = self._svc.save_state(f"continualcode-step{self._step:06d}-{uuid.uuid4().hex[:8]}", ttl=None)
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
            raise BackendError(f"Tinker checkpoint manifest {file} is corrupt: {one_line(e)}") from None
        if model_name != self.model_name:
            raise BackendError(f"checkpoint {path} was trained on {model_name!r}, not on {self.model_name!r}")
        self._svc.load_state(tinker_path)
        self._step = step

    def snapshot(self) -> Snapshot:
        name = f"continualcode-snapshot-step{self._step:06d}-{uuid.uuid4().hex[:8]}"
        return Snapshot(step=self._step, state={"tinker_path": self._svc.save_state(name, ttl=SNAPSHOT_TTL_S)})

    def restore(self, snap: Snapshot) -> None:
        self._svc.load_state(snap.state["tinker_path"])
        self._step = snap.step


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
        new_N = tensor_of(td).double()
        if new_N.ndim != 1:  # a top-K datum: the sampled token is the last column
            new_N = new_N[:, -1]
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


def _check_batch(batch: Sequence[TrainExample]) -> float:
    """The batch's total weight; BackendError for an empty batch or one that weighs nothing."""
    if not batch:
        raise BackendError("train_step needs at least one example")
    total_w = sum(ex.weight for ex in batch)
    if not total_w > 0:
        raise BackendError(f"example weights sum to {total_w}: nothing to learn from")
    return total_w


def _length(tokenizer: Any) -> int | None:
    try:
        return len(tokenizer)
    except TypeError:
        return None


def _sampled_token_data(batch: Sequence[TrainExample], spec: LossSpec) -> tuple[list[Any], _StepStats, list[Any]]:
    """The importance-sampling datums: advantages folded per token, scaled so that the service's sum
    is a weighted mean over examples and tokens; with the step's statistics and each π_old."""
    total_w = _check_batch(batch)
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
        data.append(build_datum(ex.prompt_ids, ex.completion_ids, old_T, teacher_T,
                                None if spec.beta == 0 else ref_T, beta=spec.beta, scale=w / T))
        stats.add(w, old_T, teacher_T, ref_T)
    return data, stats, olds


def _topk_data(batch: Sequence[TrainExample], spec: LossSpec) -> list[Any]:
    """The custom-loss datums: the teacher's top-K ids and log-probs per completion position."""
    total_w = _check_batch(batch)
    data = []
    for ex in batch:
        t = ex.teacher
        if t.topk_ids is None or t.topk_logprobs is None or t.topk_ids.shape[-1] < spec.topk:
            raise BackendError(f"distill_loss=topk needs the teacher's top-{spec.topk} (score with topk>0)")
        if spec.beta != 0 and ex.ref is None:
            raise BackendError("beta > 0 needs the reference's scores (TrainExample.ref)")
        ids_TK, lp_TK = t.topk_ids[:, : spec.topk].cpu(), t.topk_logprobs[:, : spec.topk].cpu()
        data.append(build_topk_datum(
            ex.prompt_ids, ex.completion_ids, ids_TK, lp_TK.clamp(min=-1e4), torch.isfinite(lp_TK),
            None if spec.beta == 0 or ex.ref is None else ex.ref.logprobs.detach().cpu(),
            scale=ex.weight / total_w / len(ex.completion_ids)))
    return data
