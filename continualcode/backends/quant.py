"""Weight-only int8 for the decode steps of sampling on CPU; every other forward keeps the full weights.

A decode step on a CPU reads every weight once, so its time is the weights' bytes over the memory
bandwidth.  `DecodeInt8` gives each frozen linear layer of the base model (and the LM head) an int8
copy of its weight with one scale per output row, used by `torch.ops.aten._weight_int8pack_mm` only
inside `decoding()` (the sampler's decode loop) for forwards of one or two tokens without grad.
Everything else uses the original weight: prefill, a drafted run, scoring, every forward with grad,
and every forward outside the decode loop whatever its size (a KV-prefix extension of one token
during scoring too).  The sampler also keeps no KV computed by an int8 step (local.py stores the
prompt's KV only), so the teacher, the reference and the student of a learning step see exactly the
numbers they saw before; only which tokens sampling picks can change, by the int8 rounding (measured
in `bench speed`: the KL between the bf16 and the int8 next-token distributions).  The LoRA layers
are left alone.  Memory: the int8 copies add half of the bf16 weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

MAX_ROWS = 2  # at most this many tokens in a forward take the int8 path
_FULL = [False]  # set inside `full_weights()`: every forward takes the full weights
_DECODING = [False]  # set inside `decoding()`: small no-grad forwards may take the int8 copies


@contextmanager
def decoding() -> Iterator[None]:
    """The sampler's decode steps: inside it (and only there) the int8 copies serve small forwards."""
    before = _DECODING[0]
    _DECODING[0] = True
    try:
        yield
    finally:
        _DECODING[0] = before


@contextmanager
def full_weights() -> Iterator[None]:
    """Inside it, the int8 copies are not used (a benchmark alternates both paths in one process)."""
    before = _FULL[0]
    _FULL[0] = True
    try:
        yield
    finally:
        _FULL[0] = before


class DecodeInt8(torch.nn.Module):
    """A frozen `nn.Linear` with an int8 copy of its weight for small no-grad forwards."""

    def __init__(self, linear: torch.nn.Linear) -> None:
        super().__init__()
        self.weight = linear.weight  # shared: the full-precision path, tied weights and vocab_size see it
        self.bias = linear.bias
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()
        scale = w.abs().amax(dim=1).clamp(min=1e-8) / 127.0  # one scale per output row
        self.register_buffer("w8", (w / scale[:, None]).round().clamp(-127, 127).to(torch.int8).contiguous(),
                             persistent=False)
        self.register_buffer("scale", scale.to(torch.bfloat16), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.numel() // x.shape[-1]
        if (not _DECODING[0] or _FULL[0] or rows > MAX_ROWS or torch.is_grad_enabled()
                or x.device.type != "cpu"):
            return torch.nn.functional.linear(x, self.weight, self.bias)
        y = torch.ops.aten._weight_int8pack_mm(x.reshape(rows, -1).to(torch.bfloat16), self.w8, self.scale)
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def quantize_for_decode(model: Any) -> int:
    """Give every frozen `nn.Linear` of `model` (LoRA's own layers excepted) an int8 decode copy; how many."""
    n = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if type(child) is torch.nn.Linear and not child.weight.requires_grad and not name.startswith("lora_"):
                setattr(module, name, DecodeInt8(child))
                n += 1
    return n
