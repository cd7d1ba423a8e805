"""The decode steps of sampling on CPU: a one-row GEMV kernel, and weight-only int8 where configured.

A decode step on a CPU reads every weight once, so its time is the weights' bytes over the memory
bandwidth.  `DecodeLinear` wraps each frozen linear layer of the base model (and the LM head) and
changes only how the sampler's decode steps (inside `decoding()`, one or two tokens, no grad) compute
it; every other forward is `F.linear` on the original weight (its input as rows: see `forward`):
prefill, a drafted run, scoring, every forward with grad, and every forward outside the decode loop
whatever its size (a KV-prefix extension of one token during scoring too).

- **Native kernels** (native.py, where they are built): a step of one or two tokens takes the C loop of
  `gemv.c` on the same bf16 weights or int8 copies (fp32 accumulation; bench speed, `mv_over_native`).
- **One-row GEMV** (without the native kernels, or inside `torch_kernels()`): `F.linear` of one row in
  bf16 goes through a matrix-matrix kernel that read the weights at ~70% of the bandwidth `torch.mv`
  reached on one host (bench speed, `plain_over_mv`; 0.9× of it on another); a one-token step takes
  `torch.mv` on the same weights instead (fp32 accumulation, the same result to bf16 rounding).
- **int8** (`decode_int8`): an int8 copy of the weight with one scale per output row, used by
  `torch.ops.aten._weight_int8pack_mm` for steps of one or two tokens: half the bytes.  Memory: the
  copies add half of the bf16 weights.

Where the fused decode step runs (fused.py: the whole decoder in one native call), it reads the same
weights these layers would — the int8 copy where there is one and `full_weights()` is off — and these
forwards serve only what it does not (`unfused()`, another model family, the guided retry).

The sampler also keeps no KV computed by an int8 step (local.py stores the prompt's KV only), so the
teacher, the reference and the student of a learning step see exactly the numbers they saw before;
only which tokens sampling picks can change, by the int8 rounding (measured in `bench speed`: the KL
between the bf16 and the int8 next-token distributions).  The LoRA layers are left alone.
`full_weights()` turns the int8 copies off and `plain()` every decode-path kernel, so that a benchmark
can alternate the paths in one process.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from continualcode.backends import native

MAX_ROWS = 2  # at most this many tokens in a forward take the int8 path
_FULL = [False]  # set inside `full_weights()`: no forward takes the int8 copies
_PLAIN = [False]  # set inside `plain()`: every forward is `F.linear`
_DECODING = [False]  # set inside `decoding()`: small no-grad forwards may take the decode kernels
_TORCH = [False]  # set inside `torch_kernels()`: the decode kernels are torch's, never the native ones
_UNFUSED = [False]  # set inside `unfused()`: decode steps run op by op (the fused native step is not used)


@contextmanager
def _flag(flag: list[bool]) -> Iterator[None]:
    before = flag[0]
    flag[0] = True
    try:
        yield
    finally:
        flag[0] = before


def decoding() -> Any:
    """The sampler's decode steps: inside it (and only there) small forwards take the decode kernels."""
    return _flag(_DECODING)


def in_decode_loop() -> bool:
    """Whether the current forward is one of the sampler's decode steps (inside `decoding()`, not `plain()`)."""
    return _DECODING[0] and not _PLAIN[0]


def full_weights() -> Any:
    """Inside it, the int8 copies are not used (a benchmark alternates both paths in one process)."""
    return _flag(_FULL)


def torch_kernels() -> Any:
    """Inside it, the decode steps take torch's kernels even where the native ones are loaded (native.py)."""
    return _flag(_TORCH)


def unfused() -> Any:
    """Inside it, decode steps run op by op through the model's modules, not as one fused native call (a
    benchmark alternates both in one process)."""
    return _flag(_UNFUSED)


def fused_allowed() -> bool:
    """Whether a decode step may be the fused native one (fused.py): not inside `plain()`, `torch_kernels()`
    or `unfused()`."""
    return not (_PLAIN[0] or _TORCH[0] or _UNFUSED[0])


def full_weights_on() -> bool:
    """Whether `full_weights()` is in force (no int8 copies)."""
    return _FULL[0]


def plain() -> Any:
    """Inside it, every forward is `F.linear` on the full weights and transformers' attention (the benchmark's
    reference path)."""
    return _flag(_PLAIN)


class DecodeLinear(torch.nn.Module):
    """A frozen `nn.Linear` whose small no-grad forwards in the decode loop take a faster kernel."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight  # shared: the full-precision path, tied weights and vocab_size see it
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.w8: torch.Tensor | None
        self.scale: torch.Tensor | None
        self.register_buffer("w8", None, persistent=False)
        self.register_buffer("scale", None, persistent=False)
        self.register_buffer("scale32", None, persistent=False)  # the same (bf16-rounded) scales, fp32: native

    def add_int8(self) -> None:
        """Give this layer its int8 copy (one scale per output row), unless it has one."""
        if self.w8 is not None:
            return
        w = self.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        self.w8 = (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous()
        self.scale = scale.to(torch.bfloat16)
        self.scale32 = self.scale.float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if (not _DECODING[0] or _PLAIN[0] or rows > MAX_ROWS or torch.is_grad_enabled()
                or x.device.type != "cpu"):
            # As rows: the LM head's input under `logits_to_keep` is a slice of the hidden states whose
            # batch stride is the whole sequence's, and `F.linear` of such a 3-D slice goes through a
            # broadcast bmm that copies the transposed weight first (the 1.5B model's 467 MB LM head:
            # 1.4 s a call, in every prefill, score and training forward; 2-D: 22 ms, the same numbers).
            return torch.nn.functional.linear(x.reshape(rows, -1), self.weight, self.bias).reshape(
                *x.shape[:-1], self.out_features)
        k = None if _TORCH[0] else native.kernels()
        if self.w8 is not None and self.scale is not None and not _FULL[0]:
            if k is not None and self.scale32 is not None:
                y = k.int8(self.w8, self.scale32, x.reshape(rows, -1))
            else:
                y = torch.ops.aten._weight_int8pack_mm(x.reshape(rows, -1).to(torch.bfloat16), self.w8, self.scale)
        elif k is not None and self.weight.dtype == torch.bfloat16 and self.weight.is_contiguous():
            y = k.bf16(self.weight, x.reshape(rows, -1).to(torch.bfloat16))
        elif rows == 1:
            y = torch.mv(self.weight, x.reshape(-1).to(self.weight.dtype)).unsqueeze(0)
        else:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def prepare_for_decode(model: Any, *, int8: bool = False) -> int:
    """Wrap every frozen `nn.Linear` of `model` (LoRA's own layers excepted) in a `DecodeLinear`, with an
    int8 copy if `int8` (added to layers wrapped before, too).  Returns how many `DecodeLinear` layers
    the model has (wrapped now or before)."""
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and not child.weight.requires_grad and not name.startswith("lora_"):
                child = DecodeLinear(child)
                setattr(module, name, child)
            if isinstance(child, DecodeLinear):
                n += 1
                if int8:
                    child.add_int8()
    return n


def quantize_for_decode(model: Any) -> int:
    """`prepare_for_decode` with int8 copies: how many layers have one."""
    return prepare_for_decode(model, int8=True)
