"""One correction's update: its peak RSS over the loaded 1.5B model, by the denied completion's length (README.md).

`python updatemem.py [N ...]`: a 1.5k-token prompt (PROMPT=n: n tokens), completions of ~N tokens (default 80
and 400).
"""

import os
import sys
import time
from pathlib import Path

from continualcode.bench.speed.step import denial
from continualcode.build import build_parts
from continualcode.config import parse_config
from continualcode.heap import release


def status(key: str) -> float:
    """A /proc/self/status figure, GiB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(key))
    return int(line.split()[1]) / 2**20


def main() -> None:
    parts = build_parts(parse_config(["threads=1"]))
    b, r, learner = parts.backend, parts.renderer, parts.learner
    for n in [int(a) for a in sys.argv[1:]] or (80, 400):
        c = denial(r, int(os.environ.get("PROMPT", "1500")), n)
        b.sample(list(c.prompt_ids), max_tokens=4, temperature=0.0)
        release()
        base = status("VmRSS")
        Path("/proc/self/clear_refs").write_text("5")  # the peak (VmHWM) starts again from here
        t0 = time.time()
        learner(c)
        print(f"prompt {len(c.prompt_ids)}, completion {len(c.sample.tokens)} tokens: update {time.time() - t0:.1f}s, "
              f"+{status('VmHWM') - base:.2f} GiB peak over {base:.2f}", flush=True)
        learner.pending.clear()


if __name__ == "__main__":
    main()
