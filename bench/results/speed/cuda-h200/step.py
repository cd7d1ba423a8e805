"""bench speed's step part on CUDA with one correction per repeat and its time split: `step.py MODEL_DIR`."""
import sys
import time

import torch

from continualcode.backends.local import LocalBackend
from continualcode.bench.speed.common import completion_of_length, messages_of_length
from continualcode.config import Config
from continualcode.learn.step import Learner
from continualcode.records import Correction, Sample
from continualcode.render import Renderer

t0 = time.perf_counter()
b = LocalBackend(sys.argv[1], device="cuda", seed=0)
r = Renderer(b.tokenizer, vocab_size=b.vocab_size)
print(f"load {time.perf_counter() - t0:.1f}s", flush=True)
learner = Learner(b, r, Config().learn_config())
comp = completion_of_length(r, 80)
for n in (1024, 4096):
    msgs = messages_of_length(r, n)
    ids = r.prompt_ids(msgs)
    c = Correction("deny", tuple(msgs), ids, Sample(comp, [0.0] * len(comp), "stop"), r.decode(comp),
                   "use edit_lines at the end of the file, and add a docstring")
    for rep in range(3):
        snap = b.snapshot()
        b.clear_cache()
        torch.cuda.synchronize()
        t = time.perf_counter()
        b.score(ids, comp)
        torch.cuda.synchronize()
        fwd = time.perf_counter() - t
        t = time.perf_counter()
        m = learner(c)
        torch.cuda.synchronize()
        tot = time.perf_counter() - t
        parts = {k: round(v, 3) for k, v in m.items() if k.startswith("sec_")}
        print(f"n={len(ids)} rep={rep} forward {fwd:.3f}s learner {tot:.3f}s {parts}", flush=True)
        b.restore(snap)
print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB", flush=True)
