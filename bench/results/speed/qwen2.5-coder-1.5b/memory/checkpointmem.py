"""Layer checkpointing on and off in one process, alternating, by the denied completion's length (README.md here).

`python checkpointmem.py`: a 1.5k-token prompt, completions of ~80 and ~400 tokens, each twice per setting.
"""

import sys
import time
from pathlib import Path

from updatemem import status  # this folder's: a /proc/self/status figure, GiB

from continualcode.backends.train import checkpoint_layers
from continualcode.bench.speed.step import denial
from continualcode.build import build_parts
from continualcode.config import parse_config
from continualcode.heap import release


def main() -> None:
    parts = build_parts(parse_config(["threads=1", *sys.argv[1:]]))
    b, r, learner = parts.backend, parts.renderer, parts.learner
    for n in (80, 400):
        c = denial(r, 1500, n)
        for on in (False, True, False, True):
            checkpoint_layers(b.model, on)
            b.sample(list(c.prompt_ids), max_tokens=4, temperature=0.0)
            release()
            base = status("VmRSS")
            Path("/proc/self/clear_refs").write_text("5")
            t0 = time.time()
            rep = learner(c)
            print(f"ckpt={on} completion {len(c.sample.tokens)} tokens: update {time.time() - t0:.1f}s "
                  f"(train {rep.get('sec_train', 0):.1f}s) +{status('VmHWM') - base:.2f} GiB peak over {base:.2f}",
                  flush=True)
            learner.pending.clear()
            learner.undo()


if __name__ == "__main__":
    main()
