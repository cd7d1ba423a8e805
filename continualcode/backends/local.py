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
- A KV prefix store (`kv.py`) holds one prompt prefix per mode ("live", "base"), so a pass that
  shares a prefix with the previous one runs only the rest, PREFILL_CHUNK tokens per forward (a lower peak
  RSS in the same time).  `warm` fills it ahead of a sample, in chunks it can stop between (the session's
  speculative prefill while the user reads: speculate.py).
- A step's forward reads the prompt's stored KV through a read-only view (`kv.read_only`) with its decoder
  layers checkpointed (`train.checkpoint_layers`): the backward replays each layer instead of keeping its
  activations (a 402-token denied call's update: +2.9 → +1.9 GiB for the 1.5B model, in the same time).
- The loss is not code here: `train_step` hands the completion's [T, V] log-distribution to
  `learn.losses.sdpo_loss` under a `LossSpec`.  A step whose loss, gradient or resulting weights are
  not finite is reported as not taken (`stepped=0`); the learner restores its snapshot.
- The adapter's weights, optimizer, EMA copy, snapshots and checkpoints live in `adapter.py`; the
  token-choosing loop in `decode.py`; loading the base model in `loading.py`; the optimizer step
  (clip, non-finite checks, timings) in `train.py`.
"""

from __future__ import annotations

import copy
import inspect
import os
import threading
from collections.abc import Sequence
from contextlib import nullcontext
from functools import partial
from pathlib import Path
from typing import Any

import torch

from continualcode.backends import attention, native
from continualcode.backends.adapter import STATE_FILE, AdapterState
from continualcode.backends.base import LORA, BackendError, Snapshot, stop_token_ids
from continualcode.backends.decode import Decoded, Drafter, Guide, Lookup, RowCosts, decode
from continualcode.backends.fused import Fused
from continualcode.backends.graphs import Graphs
from continualcode.backends.kv import PrefixStore, crop, lcp, read_only
from continualcode.backends.loading import load_base
from continualcode.backends.quant import decoding, full_weights_on, prepare_for_decode
from continualcode.backends.train import VOCAB_ROWS, checkpoint_layers, optimizer_step
from continualcode.learn.types import LearnConfig, LossSpec, Scores, StepResult, Stop, TrainExample
from continualcode.models import cache_root
from continualcode.records import Sample

WARM_CHUNK = 256  # tokens per forward of a speculative prefill: how long a cancel may wait
# tokens per forward of the base's speculative prefill, which an approval stops (~1 s for the 1.5B model at one thread)
BASE_CHUNK = 64
# tokens per forward of any other prefill: a 3,000-token prompt at once raised the 1.5B model's peak RSS by 0.69 GiB,
# in 512-token chunks by 0.25 GiB, in the same time (its attention and MLP activations grow with the chunk)
PREFILL_CHUNK = 512

__all__ = ["STATE_FILE", "LocalBackend", "cpu_supports_bf16", "pick_device", "pick_dtype"]


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


def lora_config(rank: int, alpha: int, targets: str) -> Any:
    """peft's LoraConfig for the adapter: `targets` is "all-linear" or module names separated by commas."""
    from peft import LoraConfig

    names: str | list[str] = "all-linear" if targets == "all-linear" else [
        t.strip() for t in targets.split(",") if t.strip()]
    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=names, bias="none")


class LocalBackend:
    """transformers + peft.  See the module docstring for the design."""

    def __init__(
        self,
        model_name: str,
        *,
        lora_rank: int = LORA.rank,
        lora_alpha: int = LORA.alpha,
        lora_targets: str = LORA.targets,
        device: str = "auto",
        dtype: str = "auto",
        grad_clip: float = LearnConfig.grad_clip,
        prefix_grad: bool = False,
        seed: int = 0,
        threads: int = 0,
        optimizer: str = "adamw",
        draft: str = "lookup",
        decode_int8: bool = False,
        native_kernels: bool = True,
        cuda_graphs: bool = True,
        fused_decode: bool = True,
        warmup: bool = True,
        cache: Path | None = None,
    ) -> None:
        from peft import get_peft_model

        torch.set_num_threads(threads or os.cpu_count() or 1)
        torch.manual_seed(seed)
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self.grad_clip = grad_clip
        self.prefix_grad = prefix_grad
        self.resolved, self._tok, base = load_base(model_name, dtype=self.dtype, cache=cache)
        base.to(self.device)
        base.eval()
        # transformers 5.x renamed `past_key_values` to `cache` (argument and output field).
        self._cache_kw = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"
        self.lora_config = lora_config(lora_rank, lora_alpha, lora_targets)
        try:
            self.model = get_peft_model(base, self.lora_config)
        except ValueError as e:
            raise BackendError(f"bad lora_targets {lora_targets!r}: {e}") from None
        self.adapter = AdapterState(self.model, self.lora_config, self.resolved.model_id, optimizer=optimizer)
        checkpoint_layers(self.model, True)  # a step keeps each layer's input only: see train.checkpoint_layers
        self.int8 = decode_int8 and self.device.type == "cpu"
        if self.device.type == "cpu":
            prepare_for_decode(self.model, int8=self.int8)
            attention.use(base)
            native.load(cache or cache_root(), enabled=native_kernels)
        self._kv = PrefixStore(partial(_extend, self))
        self.graphs = Graphs.for_model(self.model, self.device) if cuda_graphs else None
        self.fused = Fused.for_model(self.model, self.device) if fused_decode else None
        if draft not in ("lookup", "off"):
            raise BackendError(f"unknown draft {draft!r}: use lookup or off")
        self.drafter: Drafter | None = Lookup(self._tok) if draft == "lookup" else None
        self._row_costs: dict[tuple[str, bool], RowCosts] = {}  # per decode path (stream kind, int8): `decode`
        self.last_decode: Decoded | None = None  # the last sample's decode counters (drafted, accepted, …)
        self.last_prefill = 0  # prompt tokens the last sample ran (the rest came from the KV store)
        if warmup:
            _warmup(self)

    # --- identity and state ---------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        return self._tok

    @property
    def model_id(self) -> str:
        return self.resolved.model_id

    @property
    def capabilities(self) -> frozenset[str]:
        return frozenset({"full_distribution", "topk_distribution", "ema_teacher", "snapshot", "on_policy_forward",
                          "prefix_carry"})

    @property
    def step(self) -> int:
        return self.adapter.step

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    @property
    def params(self) -> list[torch.nn.Parameter]:
        return self.adapter.params

    @property
    def ema(self) -> dict[str, torch.Tensor] | None:
        return self.adapter.ema

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.params)

    def snapshot(self) -> Snapshot:
        return self.adapter.snapshot()

    def restore(self, snap: Snapshot) -> None:
        self.adapter.restore(snap)

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        self.adapter.save(path, extra=extra)

    def load(self, path: Path) -> None:
        self.adapter.load(path, self.device)

    def ema_update(self, rate: float) -> None:
        self.adapter.ema_update(rate)

    def clear_cache(self) -> None:
        """Drop the stored KV prefixes (scores then come from one cold forward: bit-reproducible)."""
        self._kv.clear()

    def carry_prefix(self, prompt_ids: Sequence[int]) -> int:
        """After an update: keep the stored KV of `prompt_ids` (a corrected call's prompt, computed under the
        weights before it) for the conversation that extends it (kv.py `PrefixStore.carry`); tokens kept."""
        return self._kv.carry(prompt_ids, self.adapter.version)

    # --- forwards -----------------------------------------------------------------------------

    def _ids(self, ids: Sequence[int]) -> torch.Tensor:
        return torch.tensor([list(ids)], dtype=torch.long, device=self.device)

    def _forward(self, ids: Sequence[int], cache: Any, *, keep: int = 1) -> Any:
        """One forward over `ids` after `cache` (None: from scratch); returns the model output."""
        kw = {self._cache_kw: cache} if cache is not None else {}
        return self.model(input_ids=self._ids(ids), use_cache=True, logits_to_keep=keep, **kw)

    def _prefix(self, ids: Sequence[int], mode: str) -> Any:
        share = mode == "base" and self.adapter.is_noop()
        return self._kv.prefix(ids, mode, self.adapter.version, share_live=share)

    def _completion_logits(
        self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *, grad: bool, mode: str = "live"
    ) -> torch.Tensor:
        """Logits [T, V] predicting each completion token, in the model's dtype (callers take their log-softmax
        in float32: `dtype=` saves a float32 copy of the logits); the prompt's logits are never built."""
        n_c = len(completion_ids)
        if n_c == 0:
            raise BackendError("cannot score an empty completion")
        if len(prompt_ids) == 0:
            raise BackendError("cannot score without a prompt")
        full = list(prompt_ids) + list(completion_ids)[:-1]  # position i predicts token i+1
        if grad and self.prefix_grad:
            out = self.model(input_ids=self._ids(full), use_cache=False, logits_to_keep=n_c)
            return out.logits[0, -n_c:]  # (T, V)
        # 1) the prefix without grad, its KV taken from the store where a common prefix is there
        n_fixed = len(full) - n_c
        cache = self._prefix(full[:n_fixed], mode)
        if grad and cache is not None:
            cache = read_only(cache)  # the grad forward must not write into the stored prefix
        # 2) the completion positions (with grad when training)
        with nullcontext() if grad else torch.no_grad():
            kw = {self._cache_kw: cache} if cache is not None else {}
            out = self.model(input_ids=self._ids(full[n_fixed:]), use_cache=cache is not None and not grad,
                             logits_to_keep=n_c, **kw)
        if not grad and cache is not None:
            self._kv.extended(mode, full, cache)  # the stored entry now holds `full`
        return out.logits[0, -n_c:]  # (T, V)

    # --- sampling -------------------------------------------------------------------------------

    def sample(self, prompt_ids: Sequence[int], *, max_tokens: int, temperature: float, top_p: float = 1.0,
               stop: Sequence[int] = (), constraint: Any = None, seed: int | None = None) -> Sample:
        return self.sample_guided(prompt_ids, (), guidance=0.0, max_tokens=max_tokens, temperature=temperature,
                                  top_p=top_p, stop=stop, constraint=constraint, seed=seed)

    @torch.no_grad()
    def sample_guided(self, prompt_ids: Sequence[int], contrast_ids: Sequence[int], *, guidance: float,
                      max_tokens: int, temperature: float, top_p: float = 1.0, stop: Sequence[int] = (),
                      constraint: Any = None, seed: int | None = None) -> Sample:
        """`sample`, each token chosen with `guidance` weight away from what the model predicts after
        `contrast_ids` (decode.Guide, `_contrast`; no contrast or weight 0: plain sampling)."""
        gen = torch.Generator(device=self.device)
        gen.manual_seed(seed if seed is not None else int.from_bytes(os.urandom(4), "little"))
        # 1) prefill the prompt (its longest prefix already in the KV store is not recomputed); CPU: where
        # that prefix is stored, the last token is the fused stream's first step (see `_fast_stream`)
        prompt = list(prompt_ids)
        past = self._prefix(prompt[:-1], "live")
        self.last_prefill = len(prompt) - self._kv.last_reused  # tokens this sample had to run through
        guided = guidance > 0 and bool(contrast_ids)
        main: Any = self.fused.stream(past, max_tokens + 1) if self.fused and past is not None and not guided else None
        ran_last = main is not None  # the prompt's last token went through the fused step
        if main is not None:
            first, c = main([prompt[-1]])[0], None
        else:
            out = self._forward(prompt[-1:] if past is not None else prompt, past)
            first, main = out.logits[0, -1], _Stream(self._forward, getattr(out, self._cache_kw), self._cache_kw)
            c = _contrast(main, prompt, list(contrast_ids)) if guided else None  # (logits, stream)
            main = (_fast_stream(self, main.cache, max_tokens) if c is None else None) or main
        drafter = self.drafter if getattr(main, "drafts", True) else None
        guide = Guide(c[0], c[1], guidance) if c is not None else None
        streams = [main] if c is None else [main, c[1]]
        # 2) decode, drafting from the prompt where a guess is to be had (int8 steps where configured)
        with decoding():
            d = decode(first, main, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
                       stop=set(stop) | set(stop_token_ids(self._tok)),
                       state=constraint.start() if constraint is not None else None, gen=gen, context=prompt,
                       drafter=drafter, truncate=lambda n: [st.cut(n) for st in streams], guide=guide,
                       costs=self._row_costs.setdefault((type(main).__name__, self.int8 and not full_weights_on()),
                                                        RowCosts()),
                       encode=lambda text: self._tok.encode(text, add_special_tokens=False))
        self.last_decode = d
        past = main.cache
        if self.int8:  # KV from int8 steps is never reused: scoring must see the full weights' numbers
            crop(past, len(prompt) - ran_last)
        seen = (prompt + d.tokens)[: past.get_seq_length()]
        self._kv.put("live", seen, past, self.adapter.version)  # the next turn's prompt extends this
        return Sample(tokens=d.tokens, logprobs=d.logprobs, finish_reason=d.finish, allowed_mass=d.allowed_mass)

    @torch.no_grad()
    def warm(self, prompt_ids: Sequence[int], *, stop: threading.Event | None = None, base: bool = False) -> int:
        """Prefill what `sample(prompt_ids)` takes from the KV store (all but the last token), in chunks
        (`PrefixStore.fill`); the tokens it prefilled.  `base`: what the frozen base's `score` of a completion
        after `prompt_ids` takes (a correction's reference), in smaller chunks; nothing while the adapter is a
        no-op (the base's scores then start from the sampler's KV)."""
        if base and self.adapter.is_noop():
            return 0
        with self.adapter.selected(not base):
            return self._kv.fill(list(prompt_ids)[:-1], self.adapter.version, chunk=BASE_CHUNK if base else WARM_CHUNK,
                                 stop=stop, mode="base" if base else "live")

    # --- scoring --------------------------------------------------------------------------------

    @torch.no_grad()
    def score(self, prompt_ids: Sequence[int], completion_ids: Sequence[int], *, topk: int = 0, full: bool = False,
              adapter: bool | str = True) -> Scores:
        mode = {True: "live", "default": "live", False: "base", "base": "base"}.get(adapter, str(adapter))
        with self.adapter.selected(adapter):
            logits_TV = self._completion_logits(prompt_ids, completion_ids, grad=False, mode=mode)
        return _scores(logits_TV, torch.tensor(list(completion_ids), device=self.device), topk=topk, full=full)

    # --- training -------------------------------------------------------------------------------

    def train_step(self, batch: Sequence[TrainExample], spec: LossSpec, *, lr: float,
                   stop: Stop | None = None) -> StepResult:
        """Forward + loss + backward per example (weighted mean), one clipped optimizer step
        (`train.optimizer_step`: a step with a non-finite loss, gradient or result is not taken; `stop` asked
        before each example, `Paused` raised with nothing changed)."""
        if not batch:
            raise BackendError("train_step needs at least one example")
        self.model.train()
        try:
            return optimizer_step(
                batch, spec, lr=lr, adapter=self.adapter, grad_clip=self.grad_clip, device=self.device,
                logits=lambda ex: self._completion_logits(ex.prompt_ids, ex.completion_ids, grad=True), stop=stop)
        finally:
            self.model.eval()


def _scores(logits_TV: torch.Tensor, ids_T: torch.Tensor, *, topk: int, full: bool) -> Scores:
    """`Scores` from a completion's logits, VOCAB_ROWS positions' float32 log-softmax at a time (the full
    log-distribution, when asked for, is the only float32 [T, V] tensor)."""
    n, v = logits_TV.shape
    lp_T = torch.empty(n, device=logits_TV.device)
    full_TV = torch.empty(n, v, device=logits_TV.device) if full else None
    k = min(topk, v)
    topk_lp = torch.empty(n, k, device=logits_TV.device) if k > 0 else None
    topk_ids = torch.empty(n, k, dtype=torch.long, device=logits_TV.device) if k > 0 else None
    for s in range(0, n, VOCAB_ROWS):
        e = min(n, s + VOCAB_ROWS)
        logp = torch.log_softmax(logits_TV[s:e], dim=-1, dtype=torch.float32)
        lp_T[s:e] = logp.gather(1, ids_T[s:e, None]).squeeze(1)
        if topk_lp is not None and topk_ids is not None:
            topk_lp[s:e], topk_ids[s:e] = logp.topk(k, dim=-1)
        if full_TV is not None:
            full_TV[s:e] = logp
    return Scores(logprobs=lp_T, topk_ids=topk_ids, topk_logprobs=topk_lp, full_logprobs=full_TV)


@torch.no_grad()
def _extend(b: LocalBackend, ids: Sequence[int], cache: Any) -> Any:
    """The KV store's forward: `cache` extended by `ids`, without grad, PREFILL_CHUNK tokens at a time."""
    ids = list(ids)
    for i in range(0, len(ids), PREFILL_CHUNK):
        cache = getattr(b._forward(ids[i:i + PREFILL_CHUNK], cache), b._cache_kw)
    return cache


def _warmup(b: LocalBackend) -> None:
    """One tiny forward+backward so the first real step does not pay the one-time costs."""
    ids = list(range(1, 9))
    logits_TV = b._completion_logits(ids[:4], ids[4:], grad=True)
    logits_TV.float().logsumexp(-1).mean().mul(0.0).backward()
    b.adapter.optimizer.zero_grad(set_to_none=True)
    b.sample(ids[:4], max_tokens=2, temperature=0.0, seed=0)


def _fast_stream(b: LocalBackend, cache: Any, need: int) -> Any:
    """The decode stream continuing `cache` where there is one faster than `_Stream` (else None): on a GPU
    recorded one-token steps (graphs.py; no drafts: a drafted run is eager there, ~5 steps), on CPU one
    native call a step, drafts included (fused.py)."""
    for fast in (b.graphs, b.fused):
        if fast is not None and (stream := fast.stream(cache, need)) is not None:
            return stream
    return None


class _Stream:
    """One KV cache that decoding extends: called with new tokens, their next-token logits [n, V]."""

    def __init__(self, forward: Any, cache: Any, cache_kw: str) -> None:
        self.forward, self.cache, self.cache_kw = forward, cache, cache_kw

    def __call__(self, tokens: list[int]) -> torch.Tensor:
        o = self.forward(tokens, self.cache, keep=len(tokens))
        self.cache = getattr(o, self.cache_kw)
        return o.logits[0, -len(tokens):]  # (n, V)

    def cut(self, n: int) -> None:
        """Drop the last `n` positions (drafted tokens that were not chosen)."""
        crop(self.cache, self.cache.get_seq_length() - n)


def _contrast(main: _Stream, prompt: list[int], contrast: list[int]) -> tuple[torch.Tensor, _Stream]:
    """The next-token logits after `contrast` and its stream, for guided sampling of `prompt`: its KV starts
    as a copy of the prompt's, cut to the prefix they share (the contrast is usually an earlier prompt of
    the same conversation: only its last token is run)."""
    keep = min(lcp(prompt, contrast), len(contrast) - 1)
    cache = copy.deepcopy(main.cache) if keep > 0 else None
    if cache is not None:
        crop(cache, keep)
    first = main.forward(contrast[keep:], cache, keep=1)
    return first.logits[0, -1], _Stream(main.forward, getattr(first, main.cache_kw), main.cache_kw)
