"""One correction's update, twice per length, with `heap.release()` before each scoring pass and step (first
argument 1) or not (0); run under GLIBC_TUNABLES to try malloc settings (README.md here).
`python updaterel.py 0 402 801`.
"""

import sys
import time
from pathlib import Path
from typing import Any

from updatemem import status  # this folder's: a /proc/self/status figure, GiB

from continualcode.bench.speed.step import denial
from continualcode.build import build_parts
from continualcode.config import parse_config
from continualcode.heap import release


def main() -> None:
    parts = build_parts(parse_config(["threads=1"]))
    b, r, learner = parts.backend, parts.renderer, parts.learner
    between = sys.argv[1] == "1"
    for name in ("score", "train_step"):
        real = getattr(b, name)

        def call(*a: Any, _real: Any = real, **k: Any) -> Any:
            if between:
                release()
            return _real(*a, **k)

        setattr(b, name, call)
    for n in [int(a) for a in sys.argv[2:]]:
        for _ in range(2):
            c = denial(r, 1500, n)
            b.sample(list(c.prompt_ids), max_tokens=4, temperature=0.0)
            release()
            base = status("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.time()
            learner(c)
            print(f"release-between={between} completion {len(c.sample.tokens)}: update {time.time() - t0:.1f}s "
                  f"+{status('VmHWM') - base:.2f} GiB over {base:.2f}", flush=True)
            learner.pending.clear()
            learner.undo()


if __name__ == "__main__":
    main()
