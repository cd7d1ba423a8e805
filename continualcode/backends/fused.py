"""Decode steps on CPU as one native call: the whole decoder, LoRA included, for a token or a drafted run.

Why: a decode step reads every weight once, so its floor is the weights' bytes over the memory bandwidth.
With the native weight products (gemv.c) the 0.5B model's products took ~1.3× that floor, yet a step took
2.4× (bench/results/speed/README.md): the rest was the ~40 small torch ops of each layer (norms, rotary,
attention, LoRA's pairs, residual adds, the sampler's view of the cache), each a dispatch away from the
last.  A hand-written Python loop over the same modules and `torch.compile` of the step gained nothing
(measured); what remains is to run the layer's small ops in C beside the products.

What: `step.c`'s `cc_step` runs tokens at given positions through every layer (RMSNorm, q/k/v products
with their biases and LoRA pairs, Qwen3's per-head norms, rotary, the KV written into static buffers,
grouped-query attention, o product, RMSNorm, gate/up/down with SiLU), the final norm and the LM head, all
activations fp32 (the inputs of bf16 and int8 products rounded to bf16, as torch's kernels take them: lin.h), and
returns the logits.  This module builds its plan — pointers to the weights each
product reads, the same ones `quant.DecodeLinear` would (its int8 copy where it has one and `full_weights()`
is off, else the weight in its own dtype, fp32 or bf16), the active adapter's LoRA A/B and scaling — and
keeps the KV in graphs.py's `StaticKV`, loaded from the prompt's cache and handed back as a transformers
`DynamicCache` (`FusedStream.cache`).  The plan is rebuilt for each sample (a few hundred pointers), so
optimizer steps, `load_state` and `disable_adapter()` are always seen.

Exactness: the same weights and the same operations; activations stay fp32 where the model's own forward
rounds them to its dtype, so in fp32 the logits agree with the model's forward to float rounding
(tests/test_fused.py: 1e-4), in bf16 to bf16 noise; one token and a drafted run compute the same products.
Before first use a self-check runs a two-layer random model of the same family both ways; a disagreement turns
the fused step off (`why_not`).

Where: CPU with the native kernels loaded, llama/qwen2/qwen3 with full attention and SiLU, one active
LoRA adapter without DoRA, inside the sampler's decode loop and not inside `plain()` or `torch_kernels()`
(the benchmarks' reference paths); the guided retry keeps the eager stream.  Elsewhere `stream` returns
None and the sampler goes on as before.
"""

from __future__ import annotations

import ctypes
from typing import Any

import torch

from continualcode.backends import native, quant
from continualcode.backends.graphs import MARGIN, MIN_CAPACITY, StaticKV, StaticStream, cache_pairs, decoder_parts

_i64, _ptr, _dbl = ctypes.c_int64, ctypes.c_void_p, ctypes.c_double
F32, BF16, INT8 = 0, 1, 2
MAX_HEAD_DIM = 512  # step.c's CC_MAX_HEAD_DIM
_PROJ = ("q", "k", "v", "o", "gate", "up", "down")


class _Lin(ctypes.Structure):
    _fields_ = [("w", _ptr), ("scale", _ptr), ("bias", _ptr), ("lora_a", _ptr), ("lora_b", _ptr),
                ("lora_scale", _dbl), ("kind", _i64), ("rank", _i64), ("n", _i64), ("k", _i64)]


class _Layer(ctypes.Structure):
    _fields_ = [("ln1", _ptr), ("ln2", _ptr), ("q_norm", _ptr), ("k_norm", _ptr),
                *[(p, _Lin) for p in _PROJ], ("keys", _ptr), ("values", _ptr)]


class _Model(ctypes.Structure):
    _fields_ = [*[(f, _i64) for f in ("layers", "d", "heads", "kv_heads", "head_dim", "inter", "capacity", "vocab",
                                      "kv_bf16", "max_rank")],
                ("eps", _dbl), ("attn_scale", _dbl), ("norm", _ptr), ("layer", ctypes.POINTER(_Layer)),
                ("head", _Lin)]


class Unsupported(Exception):
    """The model (or its adapter state) has a part the fused step does not compute."""


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().float().contiguous()


class Fused:
    """A model's fused decode steps: the frozen parts of the plan (norms and biases as fp32), the rotary
    table, one static KV cache (the largest capacity asked for so far)."""

    def __init__(self, lm: Any, dec: Any, kernels: native.Kernels) -> None:
        self.lm, self.dec, self.k = lm, dec, kernels
        config = lm.config
        if getattr(config, "hidden_act", "silu") != "silu":
            raise Unsupported(f"activation {config.hidden_act}")
        if getattr(dec.rotary_emb, "rope_type", "default") == "dynamic":
            raise Unsupported("dynamic rotary scaling")
        att = dec.layers[0].self_attn
        self.heads, self.kv_heads = config.num_attention_heads, config.num_key_value_heads
        self.head_dim, self.attn_scale = int(att.head_dim), float(att.scaling)
        if self.head_dim > MAX_HEAD_DIM or self.heads % self.kv_heads:
            raise Unsupported(f"{self.heads} heads of {self.head_dim} over {self.kv_heads} KV heads")
        self.eps = float(dec.norm.variance_epsilon)
        self.inter = int(_base(dec.layers[0].mlp.up_proj).out_features)
        self._frozen: dict[int, torch.Tensor] = {}  # id(parameter) -> its fp32 copy (norms, biases)
        if hasattr(dec.embed_tokens, "lora_embedding_A"):
            raise Unsupported("a LoRA-adapted embedding")
        self.kv: StaticKV | None = None
        self._rotary: tuple[torch.Tensor, torch.Tensor] | None = None
        self.rotary(MIN_CAPACITY)  # a partial rotary embedding is refused here, not in a stream
        self.failed: str | None = None

    @classmethod
    def for_model(cls, model: Any, device: torch.device) -> Fused | None:
        """The fused steps for `model` on CPU with the native kernels loaded, self-checked; None elsewhere
        (`why_not` then says why when it is the self-check or the model's shape)."""
        parts = decoder_parts(model)
        k = native.kernels()
        if device.type != "cpu" or parts is None or k is None:
            return None
        try:
            fused = cls(*parts, k)
        except Exception as e:  # a model this cannot serve never stops the backend from loading
            _STATE["why_not"] = f"unsupported model: {e}".splitlines()[0][:200]
            return None
        if problem := _self_check(parts[0], k):
            _STATE["why_not"] = f"self-check failed ({problem})"
            return None
        return fused

    def stream(self, cache: Any, need: int) -> FusedStream | None:
        """A stream continuing `cache` (a DynamicCache) with room for `need` more positions, or None where
        the fused step does not apply now (a reference path, an unsupported adapter state, another cache)."""
        if not quant.fused_allowed() or self.failed is not None:
            return None
        pairs = cache_pairs(cache)
        if pairs is None or pairs[0][0].dtype not in (torch.float32, torch.bfloat16):
            return None
        n = pairs[0][0].shape[2]
        cap = MIN_CAPACITY
        while cap < n + need + MARGIN:
            cap *= 2
        if self.kv is None or self.kv.capacity < cap or self.kv.keys[0].dtype != pairs[0][0].dtype:
            self.kv = StaticKV(pairs, cap)
        self.kv.load(pairs)
        try:
            plan = self._plan(self.kv)
        except Unsupported as e:
            self.failed = str(e)
            return None
        return FusedStream(self, plan, n)

    def rotary(self, capacity: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos, sin [capacity, head_dim] (fp32) for positions 0 .. capacity - 1, from the model's own module."""
        if self._rotary is None or self._rotary[0].shape[0] < capacity:
            x = torch.zeros(1, 1, self.head_dim)
            cos, sin = self.dec.rotary_emb(x, torch.arange(capacity).unsqueeze(0))
            if cos.shape[-1] != self.head_dim:
                raise Unsupported("partial rotary embedding")
            self._rotary = (_f32(cos[0]), _f32(sin[0]))
        return self._rotary

    # --- the plan -------------------------------------------------------------------------------

    def _frozen32(self, t: torch.Tensor | None) -> int | None:
        """The pointer of a frozen parameter's fp32 copy (made once)."""
        if t is None:
            return None
        if id(t) not in self._frozen:
            self._frozen[id(t)] = _f32(t)
        return self._frozen[id(t)].data_ptr()

    def _lin(self, module: Any) -> _Lin:
        base = _base(module)
        lin = _Lin(n=base.out_features, k=base.in_features, bias=self._frozen32(base.bias))
        w8 = getattr(base, "w8", None)
        if w8 is not None and not quant.full_weights_on():
            lin.kind, lin.w, lin.scale = INT8, w8.data_ptr(), base.scale32.data_ptr()
        elif base.weight.dtype in (torch.float32, torch.bfloat16) and base.weight.is_contiguous():
            lin.kind = F32 if base.weight.dtype == torch.float32 else BF16
            lin.w = base.weight.data_ptr()
        else:
            raise Unsupported(f"weights of dtype {base.weight.dtype}")
        if base is not module and not module.disable_adapters:
            active = [a for a in module.active_adapters if a in module.lora_A]
            if len(active) > 1 or any(module.use_dora.get(a) for a in active):
                raise Unsupported("more than one active adapter, or DoRA")
            if active:
                a, b = module.lora_A[active[0]].weight, module.lora_B[active[0]].weight
                if a.dtype != torch.float32 or not (a.is_contiguous() and b.is_contiguous()):
                    raise Unsupported("LoRA weights that are not contiguous fp32")
                lin.lora_a, lin.lora_b, lin.rank = a.data_ptr(), b.data_ptr(), a.shape[0]
                lin.lora_scale = float(module.scaling[active[0]])
        return lin

    def _plan(self, kv: StaticKV) -> tuple[_Model, Any]:
        layers = (_Layer * len(self.dec.layers))()
        for i, layer in enumerate(self.dec.layers):
            att, mlp = layer.self_attn, layer.mlp
            la = layers[i]
            la.ln1, la.ln2 = self._frozen32(layer.input_layernorm.weight), self._frozen32(
                layer.post_attention_layernorm.weight)
            la.q_norm = self._frozen32(att.q_norm.weight) if hasattr(att, "q_norm") else None
            la.k_norm = self._frozen32(att.k_norm.weight) if hasattr(att, "k_norm") else None
            for p, m in zip(_PROJ, (att.q_proj, att.k_proj, att.v_proj, att.o_proj, mlp.gate_proj, mlp.up_proj,
                                    mlp.down_proj), strict=True):
                setattr(la, p, self._lin(m))
            la.keys, la.values = kv.keys[i].data_ptr(), kv.values[i].data_ptr()
        head = self._lin(self.lm.lm_head)
        ranks = [getattr(la, p).rank for la in layers for p in _PROJ] + [head.rank]
        model = _Model(layers=len(layers), d=self.lm.config.hidden_size, heads=self.heads, kv_heads=self.kv_heads,
                       head_dim=self.head_dim, inter=self.inter, capacity=kv.capacity, vocab=head.n,
                       kv_bf16=int(kv.keys[0].dtype == torch.bfloat16), max_rank=max(ranks), eps=self.eps,
                       attn_scale=self.attn_scale, norm=self._frozen32(self.dec.norm.weight), head=head)
        model.layer = layers
        return model, layers  # the layers array must outlive the call


def _base(module: Any) -> Any:
    """The frozen linear layer under a LoRA wrapper (or the layer itself)."""
    base = getattr(module, "base_layer", module)
    if not isinstance(base, (quant.DecodeLinear, torch.nn.Linear)):
        raise Unsupported(f"a {type(base).__name__} projection")
    return base


class FusedStream(StaticStream):
    """The stream over the fused step (graphs.StaticStream; drafts allowed: a drafted run is one call too)."""

    drafts = True

    def __init__(self, fused: Fused, plan: tuple[_Model, Any], length: int) -> None:
        super().__init__(fused, length)
        self.fused, self.plan = fused, plan
        self.cos, self.sin = fused.rotary(plan[0].capacity)

    def _run(self, tokens: list[int]) -> torch.Tensor:
        model, r = self.plan[0], len(tokens)
        x = self.fused.dec.embed_tokens.weight[torch.tensor(tokens)].float().contiguous()
        logits = torch.empty(r, model.vocab)
        cos, sin = self.cos[self.length: self.length + r], self.sin[self.length: self.length + r]
        if self.fused.k.step(ctypes.addressof(model), x.data_ptr(), cos.data_ptr(), sin.data_ptr(), self.length, r,
                             logits.data_ptr()) != 0:
            raise MemoryError("the fused decode step could not allocate its buffers")  # `length` stays
        return logits


_STATE: dict[str, str] = {"why_not": ""}


def why_not() -> str:
    """Why the last `Fused.for_model` returned None for a model it could have served ("" otherwise)."""
    return _STATE["why_not"]


def _self_check(lm: Any, k: native.Kernels) -> str:
    """"" when a two-layer random model of `lm`'s family and head size gives the same logits fused as in its own
    forward (fp32, 1e-3) for a token and a two-token run after a 19-token prompt; else what went wrong, in one line."""
    try:
        return _check_small(lm, k)
    except Exception as e:  # a config this family cannot shrink to, a model that will not build: not used
        return f"{type(e).__name__}: {e}".splitlines()[0][:160]


def _check_small(lm: Any, k: native.Kernels) -> str:
    # the model's own head size: step.c's attention takes another path for sizes not a multiple of 64
    head_dim = int(getattr(lm.config, "head_dim", None) or lm.config.hidden_size // lm.config.num_attention_heads)
    config = lm.config.__class__(**{**lm.config.to_dict(), "hidden_size": 64, "intermediate_size": 96,
                                    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
                                    "head_dim": head_dim, "vocab_size": 128, "layer_types": None,
                                    "torch_dtype": "float32", "dtype": "float32", "tie_word_embeddings": False,
                                    "pad_token_id": None, "bos_token_id": 1, "eos_token_id": 2})
    with torch.random.fork_rng():
        torch.manual_seed(0)
        tiny = type(lm)(config).float().eval()
        with torch.no_grad():
            for name, p in tiny.named_parameters():
                if "norm" in name:
                    p.uniform_(0.5, 1.5)
                elif p.dim() == 1:
                    p.normal_(0, 0.1)
    parts = decoder_parts(tiny)
    if parts is None:
        return "the small model is not of a supported shape"
    prompt, more = [3, 17, 99, 4, 56, 21, 60, 5, 11, 90, 42, 8, 77, 30, 6, 101, 15, 64, 2], [7, 8, 9]  # > 2 x 8
    with torch.no_grad():
        out = tiny(input_ids=torch.tensor([prompt + more]))
        want = out.logits[0, len(prompt) - 1:]
        pre = tiny(input_ids=torch.tensor([prompt[:-1]]), use_cache=True)
        cache = getattr(pre, "cache", None) or getattr(pre, "past_key_values", None)
        fused = Fused(*parts, k)
        stream = fused.stream(cache, 8)
        if stream is None:
            return "no stream"
        got = torch.cat([stream([prompt[-1]]), stream(more[:2]), stream(more[2:])])
    err = float((got - want).abs().max())
    return "" if err < 1e-3 else f"max logit difference {err:.2e}"
