"""One correction's update by phase: each `score` and `train_step` peak from its own start, `heap.release()`
first (README.md here).  `python phasesmem.py 402 801`: a 1.5k-token prompt, completions of ~N tokens.
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


def measured(b: Any, name: str) -> None:
    """Print the peak of each call of `b.<name>` over the RSS at its start."""
    real = getattr(b, name)

    def call(*a: Any, **k: Any) -> Any:
        release()
        base = status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")
        t = time.time()
        out = real(*a, **k)
        print(f"  {name:12s} {k.get('full', '')!s:5s} +{status('VmHWM') - base:.2f} GiB over {base:.2f} "
              f"({time.time() - t:.1f}s)", flush=True)
        return out

    setattr(b, name, call)


def main() -> None:
    parts = build_parts(parse_config(["threads=1"]))
    b, r, learner = parts.backend, parts.renderer, parts.learner
    measured(b, "score")
    measured(b, "train_step")
    for n in [int(a) for a in sys.argv[1:]]:
        c = denial(r, 1500, n)
        b.sample(list(c.prompt_ids), max_tokens=4, temperature=0.0)
        print("completion", len(c.sample.tokens), flush=True)
        learner(c)
        learner.pending.clear()
        learner.undo()


if __name__ == "__main__":
    main()
