"""Two builds of backends/gemv.c side by side, alternating: int8 and bf16 one-row products on 60 matrices of
the 0.5B model's MLP shape (4864 x 896, 4.4 MB int8 / 8.7 MB bf16: not cache-resident), ms per matrix.

Usage (repository root): python compare_kernels.py OLD_GEMV_C THREADS, where OLD_GEMV_C is an earlier
gemv.c (e.g. `git show 3d555b1:continualcode/backends/gemv.c > old.c`)."""

import ctypes
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from continualcode.backends import native


def build(src: str, out: Path) -> native.Kernels:
    subprocess.run(["gcc", *native.FLAGS, src, "-o", str(out)], check=True)
    return native.Kernels(ctypes.CDLL(str(out)))


def per_matrix_ms(f, n: int) -> float:
    f()
    t0 = time.perf_counter()
    for _ in range(3):
        f()
    return (time.perf_counter() - t0) / 3 / n * 1000


def main() -> None:
    tmp = Path(tempfile.mkdtemp())
    kernels = {"old": build(sys.argv[1], tmp / "old.so"), "new": build("continualcode/backends/gemv.c", tmp / "new.so")}
    torch.set_num_threads(int(sys.argv[2]))
    n_rows, k = 4864, 896
    w8 = [torch.randint(-127, 128, (n_rows, k), dtype=torch.int8) for _ in range(60)]
    scale = torch.rand(n_rows)
    wb = [torch.randn(n_rows, k).to(torch.bfloat16) for _ in range(60)]
    x = torch.randn(1, k)
    for rnd in range(3):
        for name, kk in kernels.items():
            i8 = per_matrix_ms(lambda kk=kk: [kk.int8(w, scale, x) for w in w8], len(w8))
            b16 = per_matrix_ms(lambda kk=kk: [kk.bf16(w, x) for w in wb], len(wb))
            print(rnd, name, f"int8 {i8:.3f} ms ({n_rows * k / i8 / 1e6:.1f} GB/s)  "
                  f"bf16 {b16:.3f} ms ({2 * n_rows * k / b16 / 1e6:.1f} GB/s)", flush=True)


if __name__ == "__main__":
    main()
