"""Where a graphed decode step's time goes (scratch): replay alone vs whole sampler step, and a profile."""
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from continualcode.backends.local import LocalBackend
from continualcode.bench.speed.common import messages_of_length
from continualcode.render import Renderer

b = LocalBackend(sys.argv[1], device="cuda", seed=0)
r = Renderer(b.tokenizer, vocab_size=b.vocab_size)
prompt = r.prompt_ids(messages_of_length(r, 1024))
b.drafter = None
for label in ("warm", "timed"):
    b.clear_cache()
    b.sample(prompt, max_tokens=4, temperature=0.0, stop=())
    torch.cuda.synchronize()
    t = time.perf_counter()
    s = b.sample(prompt, max_tokens=64, temperature=0.0, stop=())
    torch.cuda.synchronize()
    print(label, "sample 64:", f"{(time.perf_counter() - t) / len(s.tokens) * 1000:.1f} ms/token", flush=True)
g = b.graphs
graph, ids, pos, out = next(iter(g.graphs.values()))
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(50):
    graph.replay()
torch.cuda.synchronize()
print(f"replay alone: {(time.perf_counter() - t) / 50 * 1000:.2f} ms", flush=True)
t = time.perf_counter()
for _ in range(50):
    graph.replay()
    x = out.clone()
    lp = torch.log_softmax(x.float(), -1)
    tok = int(torch.argmax(lp))
    v = float(lp[0, tok])
torch.cuda.synchronize()
print(f"replay + chooser-like host work: {(time.perf_counter() - t) / 50 * 1000:.2f} ms", flush=True)
b.clear_cache()
b.sample(prompt, max_tokens=4, temperature=0.0, stop=())
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
    b.sample(prompt, max_tokens=32, temperature=0.0, stop=())
print(p.key_averages().table(sort_by="cpu_time_total", row_limit=25, max_name_column_width=60))
print(p.key_averages().table(sort_by="self_cpu_time_total", row_limit=15, max_name_column_width=60))
