"""The LoRA adapter's state on the local backend: its weights, optimizer, EMA copy, snapshots, checkpoints.

Boundary: this module owns everything that changes or persists the adapter's numbers; it knows
nothing of forwards, sampling or losses.  Every change of the live LoRA weights bumps `version`
(the KV prefix store keys live entries by it).

Checkpoints are a PEFT adapter directory (`adapter_config.json` + `adapter_model.safetensors`)
plus `optimizer.pt` (optimizer state and EMA, loaded with `weights_only=True`) and
`continualcode_state.json` (step, base-model identity), written whole through `fsio.atomic_dir`;
the checkpoint a save replaces is kept beside it as `<name>.prev` (the last good one to fall back to).
Nothing non-finite is ever saved or loaded: `save` refuses an adapter with a NaN/inf weight (the
previous checkpoint stays), and `load` refuses one, as it refuses another base model's adapter, an
adapter_config.json that disagrees with the weights or with this adapter (rank, alpha, targets),
or a corrupt file: one-line `BackendError`s, the live adapter unchanged.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from continualcode.backends.base import BackendError, Snapshot
from continualcode.fsio import atomic_dir

STATE_FILE = "continualcode_state.json"
OPTIM_FILE = "optimizer.pt"
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"


class AdapterState:
    """The trainable LoRA parameters of one PEFT model, with their AdamW optimizer and bookkeeping."""

    def __init__(self, model: Any, lora_config: Any, model_id: str, *, optimizer: str = "adamw") -> None:
        self.model = model
        self.lora_config = lora_config
        self.model_id = model_id
        for p in model.parameters():
            if p.requires_grad:
                p.data = p.data.float()  # LoRA weights are fp32 whatever the base dtype
        self.params = [p for p in model.parameters() if p.requires_grad]
        # the lr is set per step by the learner (LearnConfig.learning_rate); 0.0 here is never used
        if optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(self.params, lr=0.0)
        elif optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.params, lr=0.0, weight_decay=0.0)
        else:
            raise BackendError(f"unknown optimizer {optimizer!r}: use adamw or sgd")
        self.step = 0
        self.version = 0  # bumped on every change of the live LoRA weights
        self.ema: dict[str, torch.Tensor] | None = None
        self._noop = (-1, False)  # (version, every LoRA B is zero)

    # --- the live weights -----------------------------------------------------------------------

    def state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    @torch.no_grad()
    def load_state(self, state: dict[str, torch.Tensor]) -> None:
        named = dict(self.model.named_parameters())
        for k, v in state.items():
            named[k].copy_(v)
        self.version += 1

    def stepped(self) -> None:
        """The optimizer changed the weights."""
        self.version += 1
        self.step += 1

    def is_noop(self) -> bool:
        """Whether the adapter changes nothing (every LoRA B is zero: at load, before the first step)."""
        if self._noop[0] != self.version:
            zero = all(not bool(p.any()) for n, p in self.model.named_parameters() if "lora_B" in n)
            self._noop = (self.version, zero)
        return self._noop[1]

    def finite(self) -> bool:
        """Whether every adapter weight (and EMA weight) is finite."""
        tensors = [*self.params, *(self.ema.values() if self.ema else ())]
        return all(bool(torch.isfinite(t).all()) for t in tensors)

    # --- EMA teacher ----------------------------------------------------------------------------

    def ema_init(self) -> None:
        self.ema = self.state()

    def ema_update(self, rate: float) -> None:
        """ema ← (1 − rate)·ema + rate·live, by parameter name."""
        if self.ema is None:
            self.ema_init()
            return
        live = self.state()
        for k, v in self.ema.items():
            v.mul_(1.0 - rate).add_(live[k], alpha=rate)

    @contextmanager
    def selected(self, which: bool | str) -> Iterator[None]:
        """The forward inside uses: the live adapter (True / "default"), the base model (False /
        "base"), or the EMA copy ("ema", made on first use)."""
        if which is True or which == "default":
            yield
        elif which is False or which == "base":
            with self.model.disable_adapter():
                yield
        elif which == "ema":
            if self.ema is None:
                self.ema_init()
            with self.swapped_in(self.ema):  # type: ignore[arg-type]
                yield
        else:
            raise BackendError(f"unknown adapter {which!r}")

    @contextmanager
    def swapped_in(self, weights: dict[str, torch.Tensor]) -> Iterator[None]:
        """Run with `weights` as the live LoRA weights, then put the live ones back."""
        live = self.state()
        self.load_state(weights)
        try:
            yield
        finally:
            self.load_state(live)

    # --- snapshots --------------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        return Snapshot(step=self.step, state={
            "lora": self.state(),
            "optim": copy.deepcopy(self.optimizer.state_dict()),
            "ema": None if self.ema is None else {k: v.clone() for k, v in self.ema.items()},
        })

    def restore(self, snap: Snapshot) -> None:
        self.load_state(snap.state["lora"])
        self.optimizer.load_state_dict(copy.deepcopy(snap.state["optim"]))
        self.ema = None if snap.state["ema"] is None else {k: v.clone() for k, v in snap.state["ema"].items()}
        self.step = snap.step

    # --- checkpoints ------------------------------------------------------------------------------

    def save(self, path: Path, *, extra: dict[str, Any] | None = None) -> None:
        """Adapter in PEFT format + optimizer + step + base-model identity, written atomically."""
        if not self.finite():
            raise BackendError(f"refusing to save a non-finite adapter to {path}; the previous checkpoint stays")
        with atomic_dir(Path(path), keep_previous=True) as tmp:
            self.model.save_pretrained(str(tmp))
            torch.save({"optim": self.optimizer.state_dict(), "ema": self.ema}, tmp / OPTIM_FILE)
            state = {"step": self.step, "model_id": self.model_id, **(extra or {})}
            (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))

    def load(self, path: Path, device: torch.device) -> None:
        """Load a checkpoint written by `save`: all-or-nothing, checked (see the module docstring)."""
        from peft.utils import set_peft_model_state_dict

        path = Path(path)
        state, weights, extra = _read_checkpoint(path, device)
        if state.get("model_id") != self.model_id:
            raise BackendError(f"checkpoint {path} was trained on {state.get('model_id')!r}, not on {self.model_id!r}")
        self._check_config(path, weights)
        bad = [k for k, v in weights.items() if not bool(torch.isfinite(v).all())]
        ema = extra.get("ema")
        if ema is not None:
            bad += [k for k, v in ema.items() if not bool(torch.isfinite(v).all())]
        if bad:
            raise BackendError(f"checkpoint {path} is corrupt: non-finite values in {bad[0]}")
        before = self.snapshot()
        try:
            result = set_peft_model_state_dict(self.model, weights)
            self.version += 1  # the live KV prefixes were computed under the old weights
            missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
            if missing:
                raise BackendError(f"checkpoint {path} does not match this adapter (missing {missing[0]})")
            self.optimizer.load_state_dict(extra["optim"])
            self.ema = ema
            self.step = int(state["step"])
        except BackendError:
            self.restore(before)
            raise
        except Exception as e:
            self.restore(before)
            raise BackendError(f"checkpoint {path} does not fit this adapter: {str(e)[:160]}") from None

    def _check_config(self, path: Path, weights: dict[str, torch.Tensor]) -> None:
        """adapter_config.json must agree with this adapter and with the weights' shapes."""
        try:
            cfg = json.loads((path / CONFIG_FILE).read_text())
            rank, alpha, targets = int(cfg["r"]), float(cfg["lora_alpha"]), cfg["target_modules"]
        except FileNotFoundError:
            raise BackendError(f"checkpoint {path} is incomplete: {CONFIG_FILE} is missing") from None
        except (ValueError, KeyError, TypeError) as e:
            raise BackendError(f"checkpoint {path} is corrupt: {CONFIG_FILE} is unreadable ({e})") from None
        mine = self.lora_config
        if rank != mine.r or alpha != float(mine.lora_alpha):
            raise BackendError(f"checkpoint {path} has rank {rank} / alpha {alpha:g}; this adapter has "
                               f"rank {mine.r} / alpha {mine.lora_alpha} (set lora_rank/lora_alpha to match)")
        if _targets(targets) != _targets(mine.target_modules):
            raise BackendError(f"checkpoint {path} adapts {sorted(_targets(targets))}, this adapter "
                               f"{sorted(_targets(mine.target_modules))} (set lora_targets to match)")
        for k, v in weights.items():
            if ("lora_A" in k and v.shape[0] != rank) or ("lora_B" in k and v.shape[-1] != rank):
                raise BackendError(f"checkpoint {path} does not fit this adapter: {k} has shape {tuple(v.shape)}, "
                                   f"not rank {rank}")


def _targets(t: Any) -> frozenset[str]:
    return frozenset([t] if isinstance(t, str) else t or ())


def _read_checkpoint(path: Path, device: torch.device) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict]:
    from safetensors.torch import load_file

    try:
        state = json.loads((path / STATE_FILE).read_text())
        weights = load_file(str(path / WEIGHTS_FILE), device=str(device))
        extra = torch.load(path / OPTIM_FILE, map_location=device, weights_only=True)
    except FileNotFoundError as e:
        raise BackendError(f"checkpoint {path} is incomplete: {Path(e.filename or '').name} is missing") from None
    except Exception as e:  # corrupt json / safetensors / pickle, or a pickle that is not plain tensors
        raise BackendError(f"checkpoint {path} is corrupt: {type(e).__name__}: {str(e)[:120]}") from None
    if not isinstance(state, dict) or not isinstance(extra, dict) or "optim" not in extra:
        raise BackendError(f"checkpoint {path} is corrupt: unexpected contents")
    return state, weights, extra
