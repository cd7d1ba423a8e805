"""One prefill's peak RSS over the loaded 1.5B model, whole or in chunks (README.md here).

`python prefillmem.py TOKENS CHUNK` (CHUNK 0: the whole prompt in one forward).
"""

import sys
import time
from pathlib import Path

import torch

from continualcode.build import build_backend
from continualcode.config import parse_config
from continualcode.heap import release


def status(key: str) -> float:
    """A /proc/self/status figure, GiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) / 2**20


def main() -> None:
    b = build_backend(parse_config(["threads=1"]))
    print("loaded", round(status("VmRSS"), 2), round(status("VmHWM"), 2), flush=True)
    n, chunk = int(sys.argv[1]), int(sys.argv[2])
    ids = torch.randint(1000, 20000, (1, n))
    release()
    base = status("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
    t = time.time()
    with torch.no_grad():
        cache = None
        for i in range(0, n, chunk or n):
            out = b.model(input_ids=ids[:, i:i + (chunk or n)], past_key_values=cache, use_cache=True,
                          logits_to_keep=1)
            cache = out.past_key_values
    peak = status("VmHWM")
    print(f"n={n} chunk={chunk}: {time.time() - t:.1f}s, RSS before {base:.2f}, peak {peak:.2f} GiB "
          f"(+{peak - base:.2f})", flush=True)


if __name__ == "__main__":
    main()
