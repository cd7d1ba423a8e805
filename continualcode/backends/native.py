"""Native weight products for the decode steps on CPU (`gemv.c`) and the fused decode step that uses them
(`step.c`, fused.py), compiled once per machine.

Why: a decode step reads every weight once, and on a 2-core AMD EPYC torch's one-row kernels read
weights that do not fit in cache at 9–16 GB/s (`torch.mv`, `F.linear`, `_weight_int8pack_mm`) while a
sum over memory reads 57 GB/s.  The C loop in `gemv.c` reads them at ~25 GB/s, bf16 and int8 alike:
the 0.5B model's GEMVs of one step took 33–39 ms against torch's 62–107 ms (bf16) and 20–24 ms against
33–48 ms (int8), in one process, alternating.  `bench speed` measures it on the model (`gemv`).

How: the system's C compiler (`$CC`, else `cc`, else `gcc`) builds `gemv.c` and `step.c` (sharing the
dot products of `dot.h`; `lin.h` has the fused step's weight products) with `-O3 -march=native -fopenmp`
into `<model cache>/kernels/gemv-<hash>.so`
(the hash covers the sources, the flags, the compiler and this CPU's feature flags, so a cache shared
between machines never runs code built for another CPU), written to a temporary name and renamed, so a
crash leaves no half-written library. The library uses torch's OpenMP runtime (its `libgomp.so.1`,
loaded by torch first), so its threads are torch's threads. Loaded with ctypes; a call passes data
pointers. Before first use a self-check compares both kernels with torch on random weights whose rows
are not a multiple of the vector width; a library that disagrees is not used.

Where it is not available — no compiler, a failed build, a failed self-check, `native_kernels=false`
in the config — `kernels()` is None with the reason in `why_not()`, and the decode steps keep torch's
kernels (quant.py): slower, never wrong.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import torch

SOURCE = Path(__file__).with_name("gemv.c")  # the weight products
STEP = Path(__file__).with_name("step.c")  # the fused decode step (fused.py)
HEADERS = (Path(__file__).with_name("dot.h"),  # the dot products both use
           Path(__file__).with_name("lin.h"))  # the fused step's weight products
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC")
_STATE: dict[str, Any] = {"lib": None, "why_not": "not loaded"}


class Kernels:
    """The loaded library's two products, on CPU tensors (contiguous, the weights' dtypes as named)."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        self._bf16, self._int8 = lib.cc_gemv_bf16, lib.cc_gemv_int8
        i64, ptr = ctypes.c_int64, ctypes.c_void_p
        self._bf16.argtypes = [ptr, ptr, ptr, i64, i64, i64]
        self._int8.argtypes = [ptr, ptr, ptr, ptr, i64, i64, i64]
        self._bf16.restype = self._int8.restype = None
        # the fused decode step (step.c): model plan, x, cos, sin, start, rows, logits -> 0 (or -1: no memory)
        self.step = lib.cc_step
        self.step.argtypes = [ptr, ptr, ptr, ptr, i64, i64, ptr]
        self.step.restype = ctypes.c_int
        # one layer's product as the fused step computes it (lin.h), for the tests: plan, x, y, rows -> 0 (or -1)
        self.linear = lib.cc_linear
        self.linear.argtypes = [ptr, ptr, ptr, i64]
        self.linear.restype = ctypes.c_int

    def bf16(self, weight: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x [R, K] (any float dtype) times the bf16 weight [N, K]ᵀ: fp32 [R, N]."""
        x32 = x.float().contiguous()
        r, (n, k) = x32.shape[0], weight.shape
        y = torch.empty(r, n)
        self._bf16(weight.data_ptr(), x32.data_ptr(), y.data_ptr(), r, n, k)
        return y

    def int8(self, w8: torch.Tensor, scale: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """x [R, K] rounded to bf16 times the int8 weight [N, K]ᵀ, each output n times scale[n] (fp32): fp32
        [R, N] (x rounded as torch's int8 kernel and the fused step take it: lin.h)."""
        x32 = x.to(torch.bfloat16).float().contiguous()
        r, (n, k) = x32.shape[0], w8.shape
        y = torch.empty(r, n)
        self._int8(w8.data_ptr(), scale.data_ptr(), x32.data_ptr(), y.data_ptr(), r, n, k)
        return y


def kernels() -> Kernels | None:
    """The loaded kernels, or None (see `why_not`); `load` must have run."""
    return _STATE["lib"]


def why_not() -> str:
    """Why `kernels()` is None ("" when it is not)."""
    return "" if _STATE["lib"] is not None else str(_STATE["why_not"])


def load(cache: Path, *, enabled: bool = True) -> Kernels | None:
    """Build (once) and load the library under `cache`/kernels, self-checked; None where that fails, and
    None (the kernels unloaded) when not `enabled` (the config's `native_kernels=false`)."""
    if not enabled:
        return _fail("native_kernels=false")
    if _STATE["lib"] is not None:
        return _STATE["lib"]
    try:
        path = _build(cache / "kernels")
        k = Kernels(ctypes.CDLL(str(path)))
        if problem := _self_check(k):
            return _fail(f"self-check failed ({problem})")
    except _Unavailable as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
    _STATE.update(lib=k, why_not="")
    return k


class _Unavailable(Exception):
    pass


def _fail(reason: str) -> None:
    _STATE.update(lib=None, why_not=reason)
    return None


def _compiler() -> str:
    for name in (os.environ.get("CC"), "cc", "gcc"):
        if name and (found := shutil.which(name)):
            return found
    raise _Unavailable("no C compiler (cc, gcc) on PATH")


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return platform.processor()


def _build(folder: Path) -> Path:
    """The library for this source, compiler and CPU, compiled if it is not in `folder` yet."""
    cc = _compiler()
    sources = [SOURCE, STEP]
    texts = [p.read_bytes() for p in [*sources, *HEADERS]]
    key = hashlib.sha256(b"\0".join([*texts, " ".join(FLAGS).encode(), cc.encode(), _cpu_flags().encode(),
                                     platform.machine().encode()])).hexdigest()[:16]
    path = folder / f"gemv-{key}.so"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".gemv-", suffix=".so")
    os.close(fd)
    try:
        done = subprocess.run([cc, *FLAGS, f"-I{SOURCE.parent}", *map(str, sources), "-o", tmp, "-lm"],
                              capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            first = (done.stderr.strip().splitlines() or ["?"])[0]
            raise _Unavailable(f"{Path(cc).name} could not build gemv.c/step.c: {first[:160]}")
        os.replace(tmp, path)
    except subprocess.TimeoutExpired:
        raise _Unavailable(f"{Path(cc).name} took over 120 s to build gemv.c/step.c") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _self_check(k: Kernels) -> str:
    """"" when both kernels agree with torch in fp32 on random weights (rows of 131: a vector tail)."""
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(37, 131, generator=gen).to(torch.bfloat16)
    x = torch.randn(2, 131, generator=gen)
    want = x @ w.float().T
    if not torch.allclose(k.bf16(w, x), want, rtol=1e-4, atol=1e-4):
        return "bf16"
    w8 = torch.randint(-127, 128, (37, 131), generator=gen, dtype=torch.int8)
    scale = torch.rand(37, generator=gen)
    if not torch.allclose(k.int8(w8, scale, x), (x.bfloat16().float() @ w8.float().T) * scale, rtol=1e-4, atol=1e-4):
        return "int8"
    return ""
