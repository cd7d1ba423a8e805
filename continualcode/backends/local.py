"""The local backend: a transformers causal LM with a PEFT LoRA adapter, on CPU or GPU.

Design:
- The base weights are frozen (bf16 where the hardware runs it well, else fp32); the LoRA weights
  are fp32 and are the only parameters the optimizer (AdamW, grad-norm clip) sees.
- `sample` is its own KV-cached loop, not `generate`, so that it can (1) apply a grammar mask
  from a `Constraint` to the sampling distribution while (2) returning the model's own,
  unmasked, temperature-1 log-probabilities of the chosen tokens: π_old for importance sampling,
  equal to what `score` returns for the same tokens.
- `score` and `train_step` compute logits only at completion positions (`logits_to_keep`), never
  the [L, V] logits of the prompt.  With `prefix_grad=False` the prompt prefix runs without
  grad and its KV cache feeds the completion's forward: gradients then flow through the
  completion positions only (faster; LoRA on k/v of prompt tokens gets no gradient).
- A KV prefix store (`_kv`) holds one prompt prefix per mode: "live" (keyed by a weights version
  bumped on every change of the LoRA weights) and "base" (never stale).  Sampling leaves the
  proposal's prompt in "live", so the teacher (same weights, same prefix up to the correction) and
  the student pass of the step that follows skip the prompt; while the adapter is still a no-op
  (every LoRA B zero: before the first step) "base" copies the "live" prefix too.
- The loss is not code here: `train_step` hands the completion's [T, V] log-distribution to
  `learn.losses.sdpo_loss` under a `LossSpec`.
- An EMA teacher is a plain dict of tensors; scoring with adapter="ema" swaps it into the live
  LoRA weights for the duration of the forward.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from continualcode.backends.base import BackendError, Snapshot, stop_token_ids
from continualcode.fsio import atomic_dir
from continualcode.learn.types import LearnConfig, LossSpec, Scores, StepResult, TrainExample
from continualcode.models import ModelError, ResolvedModel, resolve
from continualcode.records import Sample

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
STATE_FILE = "continualcode_state.json"
OPTIM_FILE = "optimizer.pt"


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 matrix support (avx512_bf16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(f in flags for f in ("avx512_bf16", "amx_bf16"))


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_supports_bf16() else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp32": torch.float32, "float32": torch.float32,
             "fp16": torch.float16, "float16": torch.float16}
    if dtype not in table:
        raise BackendError(f"unknown dtype {dtype!r}: use auto, bf16, fp16 or fp32")
    return table[dtype]


class LocalBackend:
    """transformers + peft.  See the module docstring for the design."""

    def __init__(
        self,
        model_name: str,
        *,
        lora_rank: int = 16,
        lora_alpha: int = 32,
        lora_targets: str = "q_proj,k_proj,v_proj,o_proj",
        device: str = "auto",
        dtype: str = "auto",
        grad_clip: float = LearnConfig.grad_clip,
        prefix_grad: bool = False,
        seed: int = 0,
        threads: int = 0,
        warmup: bool = True,
        cache: Path | None = None,
    ) -> None:
        import transformers
        from peft import LoraConfig, get_peft_model

        torch.set_num_threads(threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.grad_clip = grad_clip
        self.prefix_grad = prefix_grad
        try:
            self.resolved: ResolvedModel = resolve(model_name, cache=cache)  # converts a built-in once (with progress)
        except ModelError as e:
            raise BackendError(str(e)) from None
        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()  # a ~1 s load needs no bar
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\..*")
        try:
            self._tok = transformers.AutoTokenizer.from_pretrained(self.resolved.path, local_files_only=True)
            base = transformers.AutoModelForCausalLM.from_pretrained(
                self.resolved.path, dtype=self.dtype, local_files_only=True
            )
        except OSError as e:
            raise BackendError(
                f"model {model_name!r} is not available offline (not a built-in, a local directory, "
                f"or in the Hugging Face cache): {str(e).splitlines()[0]}"
            ) from None
        base.to(self.device)
        base.eval()
        # transformers 5.x renamed `past_key_values` to `cache` (argument and output field).
        self._cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        targets: str | list[str] = "all-linear" if lora_targets == "all-linear" else [
            t.strip() for t in lora_targets.split(",") if t.strip()
        ]
        self.lora_config = LoraConfig(
            r=lora_rank, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules=targets, bias="none"
        )
        try:
            self.model = get_peft_model(base, self.lora_config)
        except ValueError as e:
            raise BackendError(f"bad lora_targets {lora_targets!r}: {e}") from None
        for p in self.model.parameters():
            if p.requires_grad:
                p.data = p.data.float()
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=1e-4, weight_decay=0.0)
        self._step = 0
        self._version = 0  # bumped on every change of the live LoRA weights (invalidates live KV)
        self._kv: dict[str, _KV] = {}
        self._base_check = (-1, False)  # (weights version, live adapter is a no-op) — see _live_is_base
        self.ema: dict[str, torch.Tensor] | None = None
        if warmup:
            self._warmup()

    # --- identity ---------------------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self._tok

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"full_distribution", "ema_teacher", "snapshot"})

    @property
    def step(self) -> int:
        return self._step

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    # --- forward helpers ----------------------------------------------------------------------

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    @contextmanager
    def _adapter(self, adapter: bool | str) -> Iterator[None]:
        if adapter is True or adapter == "default":
            yield
        elif adapter is False or adapter == "base":
            with self.model.disable_adapter():
                yield
        elif adapter == "ema":
            if self.ema is None:
                self.ema_init()
            with self._swapped_in(self.ema):  # type: ignore[arg-type]
                yield
        else:
            raise BackendError(f"unknown adapter {adapter!r}")

    @contextmanager
    def _swapped_in(self, weights: dict[str, torch.Tensor]) -> Iterator[None]:
        live = self._lora_state()
        self._load_lora_state(weights)
        try:
            yield
        finally:
            self._load_lora_state(live)

    def _completion_logits(
        self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *, grad: bool, mode: str = "live"
    ) -> torch.Tensor:
        """Logits [T, V] (fp32) predicting each completion token; the prompt's logits are never built."""
        n_c = len(completion_ids)
        if n_c == 0:
            raise BackendError("cannot score an empty completion")
        if len(prompt_ids) == 0:
            raise BackendError("cannot score without a prompt")
        full = list(prompt_ids) + list(completion_ids)[:-1]  # position i predicts token i+1
        if grad and self.prefix_grad:
            out = self.model(input_ids=self._ids(full), use_cache=False, logits_to_keep=n_c)
            return out.logits[0, -n_c:].float()  # (T, V)
        # 1) the prefix without grad, its KV taken from the store where a common prefix is there
        n_fixed = len(full) - n_c
        cache = self._prefix_cache(full[:n_fixed], mode)
        if grad and cache is not None:
            cache = copy.deepcopy(cache)  # the grad forward must not write into the stored prefix
        # 2) the completion positions (with grad when training)
        with nullcontext() if grad else torch.no_grad():
            kw = {self._cache_kw: cache} if cache is not None else {}
            out = self.model(input_ids=self._ids(full[n_fixed:]), use_cache=cache is not None,
                             logits_to_keep=n_c, **kw)
        if not grad and cache is not None and mode in self._kv:
            self._kv[mode] = _KV(tuple(full), cache, self._kv[mode].version)  # it now holds `full`
        return out.logits[0, -n_c:].float()  # (T, V)

    def _prefix_cache(self, ids: Sequence[int], mode: str) -> Any:
        """A KV cache holding exactly `ids` under `mode`'s weights, reusing the stored one's common prefix.

        One entry per mode ("live", "base"); a live entry is valid only for the weights version it
        was computed with (every weight change bumps `_version`); the base never changes.
        """
        if not ids:
            return None
        version = 0 if mode == "base" else self._version
        entry = self._kv.get(mode)
        if mode == "base" and self._live_is_base():
            live = self._kv.get("live")  # the same weights: the sampler's KV serves as the reference's
            if live is not None and live.version == self._version and _lcp(live.ids, ids) > (
                    _lcp(entry.ids, ids) if entry is not None else 0):
                entry = _KV(live.ids, copy.deepcopy(live.cache), 0)
        m, cache = 0, None
        if entry is not None and entry.version == version:
            m = _lcp(entry.ids, ids)
            cache = entry.cache if m > 0 else None
            if cache is not None and cache.get_seq_length() > m:
                _crop(cache, m)
        with torch.no_grad():
            if m < len(ids):
                kw = {self._cache_kw: cache} if cache is not None else {}
                out = self.model(input_ids=self._ids(ids[m:]), use_cache=True, logits_to_keep=1, **kw)
                cache = getattr(out, self._cache_kw)
        if mode in ("live", "base"):
            self._kv[mode] = _KV(tuple(ids), cache, version)
        return cache

    def _live_is_base(self) -> bool:
        """Whether the live adapter is a no-op (every LoRA B is zero: at load, before the first step)."""
        if self._base_check[0] != self._version:
            zero = all(not bool(p.any()) for n, p in self.model.named_parameters() if "lora_B" in n)
            self._base_check = (self._version, zero)
        return self._base_check[1]

    # --- sampling -------------------------------------------------------------------------------

    @torch.no_grad()
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
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
        stop_set = set(stop) | set(stop_token_ids(self._tok))
        state = constraint.start() if constraint is not None else None
        tokens: list[int] = []
        logprobs: list[float] = []
        finish = "length"
        # 1) prefill the prompt (its longest prefix already in the KV store is not recomputed)
        prompt = list(prompt_ids)
        past = self._prefix_cache(prompt[:-1], "live")
        kw = {self._cache_kw: past} if past is not None else {}
        out = self.model(input_ids=self._ids(prompt[-1:] if past is not None else prompt), use_cache=True,
                         logits_to_keep=1, **kw)
        past = getattr(out, self._cache_kw)
        logits_V = out.logits[0, -1].float()
        for _ in range(max_tokens):
            # 2) choose: the model's own log-probs, then the grammar mask, temperature and top-p
            logp_V = torch.log_softmax(logits_V, dim=-1)
            masked_V = state.mask(logits_V) if state is not None else logits_V
            tok = _choose(masked_V, temperature, top_p, gen)
            tokens.append(tok)
            logprobs.append(float(logp_V[tok]))
            if state is not None and not state.accept(tok):
                finish = "constraint"
                break
            if tok in stop_set or (state is not None and state.terminated()):
                finish = "stop"
                break
            # 3) one decode step
            out = self.model(input_ids=self._ids([tok]), use_cache=True, **{self._cache_kw: past})
            past = getattr(out, self._cache_kw)
            logits_V = out.logits[0, -1].float()
        seen = (prompt + tokens)[: past.get_seq_length()]
        self._kv["live"] = _KV(tuple(seen), past, self._version)  # the next turn's prompt extends this
        return Sample(tokens=tokens, logprobs=logprobs, finish_reason=finish)  # type: ignore[arg-type]

    # --- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def score(
        self,
        prompt_ids: Sequence[int],
        completion_ids: Sequence[int],
        *,
        topk: int = 0,
        full: bool = False,
        adapter: bool | str = True,
    ) -> Scores:
        mode = {True: "live", "default": "live", False: "base", "base": "base"}.get(adapter, str(adapter))
        with self._adapter(adapter):
            logits_TV = self._completion_logits(prompt_ids, completion_ids, grad=False, mode=mode)
        logp_TV = torch.log_softmax(logits_TV, dim=-1)
        idx_T1 = torch.tensor(list(completion_ids), device=self.device).unsqueeze(1)
        lp_T = logp_TV.gather(1, idx_T1).squeeze(1)
        topk_lp = topk_ids = None
        if topk > 0:
            topk_lp, topk_ids = logp_TV.topk(min(topk, logp_TV.shape[-1]), dim=-1)
        return Scores(logprobs=lp_T, topk_ids=topk_ids, topk_logprobs=topk_lp, full_logprobs=logp_TV if full else None)

    # --- training -------------------------------------------------------------------------------

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float) -> StepResult:
        from continualcode.learn.losses import sdpo_loss

        if not batch:
            raise BackendError("train_step needs at least one example")
        t0 = time.perf_counter()
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.optimizer.zero_grad(set_to_none=True)
        total_w = sum(ex.weight for ex in batch)
        sums: dict[str, float] = {}
        t_fwd = t_bwd = 0.0
        finite = True
        logps: list[torch.Tensor] = []
        for ex in batch:
            t1 = time.perf_counter()
            logits_TV = self._completion_logits(ex.prompt_ids, ex.completion_ids, grad=True)
            logp_TV = torch.log_softmax(logits_TV, dim=-1)  # (T, V)
            ids_T = torch.tensor(ex.completion_ids, device=self.device)
            logp_T = logp_TV.detach().gather(1, ids_T.unsqueeze(1)).squeeze(1)
            logps.append(logp_T)
            old_T = logp_T if ex.old_logprobs is None else ex.old_logprobs.to(self.device)
            out = sdpo_loss(
                spec, student_logp_TV=logp_TV, completion_ids=ids_T, old_logp_T=old_T,
                teacher=ex.teacher, ref=ex.ref,
            )
            t2 = time.perf_counter()
            w = ex.weight / total_w
            if not torch.isfinite(out.loss):
                finite = False
            else:
                (out.loss * w).backward()
            t3 = time.perf_counter()
            t_fwd += t2 - t1
            t_bwd += t3 - t2
            for k, v in out.metrics.items():
                sums[k] = sums.get(k, 0.0) + w * float(v)
        t4 = time.perf_counter()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)) if finite else float("nan")
        if finite and torch.isfinite(torch.tensor(grad_norm)):
            self.optimizer.step()
            self._version += 1
            self._step += 1
            stepped = 1.0
        else:
            stepped = 0.0
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        t5 = time.perf_counter()
        sums.update(
            grad_norm=grad_norm, stepped=stepped, lr=lr, nonfinite=0.0 if finite else 1.0,
            sec_student_fwd=t_fwd, sec_backward=t_bwd, sec_optimizer=t5 - t4, sec_train=t5 - t0,
        )
        if not finite:
            sums["loss"] = float("nan")
        return StepResult(sums, logps)

    def clear_cache(self) -> None:
        """Drop the stored KV prefixes (scores then come from one cold forward: bit-reproducible)."""
        self._kv.clear()

    # --- EMA teacher ------------------------------------------------------------------------------

    def ema_init(self) -> None:
        self.ema = self._lora_state()

    def ema_update(self, rate: float) -> None:
        """ema ← (1 − rate)·ema + rate·live, by parameter name."""
        if self.ema is None:
            self.ema_init()
            return
        live = self._lora_state()
        for k, v in self.ema.items():
            v.mul_(1.0 - rate).add_(live[k], alpha=rate)

    # --- state ------------------------------------------------------------------------------------

    def _lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def _load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        named = dict(self.model.named_parameters())
        for k, v in state.items():
            named[k].copy_(v)
        self._version += 1

    def snapshot(self) -> Snapshot:
        return Snapshot(
            step=self._step,
            state={
                "lora": self._lora_state(),
                "optim": copy.deepcopy(self.optimizer.state_dict()),
                "ema": None if self.ema is None else {k: v.clone() for k, v in self.ema.items()},
            },
        )

    def restore(self, snap: Snapshot) -> None:
        self._load_lora_state(snap.state["lora"])
        self.optimizer.load_state_dict(copy.deepcopy(snap.state["optim"]))
        self.ema = None if snap.state["ema"] is None else {k: v.clone() for k, v in snap.state["ema"].items()}
        self._step = snap.step

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        """Adapter in PEFT format + optimizer + step + base-model identity, written atomically."""
        with atomic_dir(Path(path)) as tmp:
            self.model.save_pretrained(str(tmp))
            torch.save({"optim": self.optimizer.state_dict(), "ema": self.ema}, tmp / OPTIM_FILE)
            state = {"step": self._step, "model_id": self.model_id, **(extra or {})}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

    def load(self, path: Path) -> None:
        """Load a checkpoint written by `save` (refuses another base model's; all-or-nothing)."""
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        path = Path(path)
        try:
            state = json.loads((path / STATE_FILE).read_text())
            weights = load_file(str(path / "adapter_model.safetensors"), device=str(self.device))
            extra = torch.load(path / OPTIM_FILE, map_location=self.device, weights_only=False)
        except FileNotFoundError as e:
            raise BackendError(f"checkpoint {path} is incomplete: {Path(e.filename or '').name} is missing") from None
        except Exception as e:  # corrupt json / safetensors / torch pickle
            raise BackendError(f"checkpoint {path} is corrupt: {type(e).__name__}: {str(e)[:120]}") from None
        if state.get("model_id") != self.model_id:
            raise BackendError(
                f"checkpoint {path} was trained on {state.get('model_id')!r}, not on {self.model_id!r}"
            )
        before = self.snapshot()
        try:
            result = set_peft_model_state_dict(self.model, weights)
            self._version += 1  # the live KV prefixes were computed under the old weights
            missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
            if missing:
                raise BackendError(f"checkpoint {path} does not match this adapter (missing {missing[0]})")
            self.optimizer.load_state_dict(extra["optim"])
            self.ema = extra.get("ema")
            self._step = int(state["step"])
        except BackendError:
            self.restore(before)
            raise
        except Exception as e:
            self.restore(before)
            raise BackendError(f"checkpoint {path} does not fit this adapter: {str(e)[:160]}") from None

    # --- warm-up ----------------------------------------------------------------------------------

    def _warmup(self) -> None:
        """One tiny forward+backward so the first real step does not pay the one-time costs."""
        ids = list(range(1, 9))
        logits_TV = self._completion_logits(ids[:4], ids[4:], grad=True)
        logits_TV.float().logsumexp(-1).mean().mul(0.0).backward()
        self.optimizer.zero_grad(set_to_none=True)
        self.sample(ids[:4], max_tokens=2, temperature=0.0, seed=0)


@dataclass
class _KV:
    """A stored KV cache: the token ids it holds and the weights version it was computed under."""

    ids: tuple[int, ...]
    cache: Any
    version: int


def _lcp(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _crop(cache: Any, keep: int) -> None:
    """Cut a DynamicCache to its first `keep` positions (a negative crop removes tokens in 4.x and 5.x)."""
    n_remove = cache.get_seq_length() - keep
    if n_remove > 0:
        cache.crop(-n_remove)


def _choose(logits_V: torch.Tensor, temperature: float, top_p: float, gen: torch.Generator) -> int:
    """Greedy at temperature 0, else nucleus sampling."""
    if temperature <= 0:
        return int(torch.argmax(logits_V))
    probs_V = torch.softmax(logits_V / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, sorted_i = probs_V.sort(descending=True)
        keep = sorted_p.cumsum(-1) - sorted_p < top_p
        sorted_p = sorted_p * keep
        return int(sorted_i[torch.multinomial(sorted_p / sorted_p.sum(), 1, generator=gen)])
    return int(torch.multinomial(probs_V, 1, generator=gen))
