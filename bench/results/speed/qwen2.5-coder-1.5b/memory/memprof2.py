"""RSS as in the app: the deferred update (`settle`) and the speculative prefill (`warm`) run on threads of their
own, the backend used by one thread at a time.  TRIM=1: continualcode.heap.release() where the app calls it (a task's end, the settle job's end)."""
import os, sys, threading, time
from continualcode.config import parse_config
from continualcode.build import build_parts
from continualcode.bench.speed.step import denial

TRIM = os.environ.get("TRIM") == "1"

def mem():
    d = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":"); d[k] = int(v.split()[0]) / 1024 / 1024
    return d

t0 = time.time()
def say(what, release_here=False):
    if TRIM and release_here:
        from continualcode.heap import release
        release()
    d = mem()
    print(f"{time.time()-t0:7.1f}s {what:34s} RSS {d['VmRSS']:.2f}  HWM {d['VmHWM']:.2f} GiB", flush=True)
cfg = parse_config(sys.argv[1:])
parts = build_parts(cfg, prompts=lambda c: ["add a docstring to the parse function in cli.py", "rename main to run in app.py"])
say("loaded")
b, r, L = parts.backend, parts.renderer, parts.learner
prev = None
for i, n in enumerate((1500, 3000, 4500, 3500)):
    c = denial(r, n, 80)
    prompt = list(c.prompt_ids)
    if prev:  # as the app: the settle job on its thread while the user types, joined before the next task
        th = threading.Thread(target=L.settle); th.start(); th.join(); say("settled on a thread", True)
    w = threading.Thread(target=b.warm, args=(prompt,)); w.start(); w.join()  # speculate.py's prefill
    say(f"warmed {len(prompt)} on a thread")
    b.sample(prompt, max_tokens=40, temperature=0.0)
    say(f"sampled {len(prompt)}")
    L(c); say(f"update {i+1}")
    b.sample(prompt, max_tokens=40, temperature=0.0); say("retry (task ends)", True)
    prev = c
L.settle(); say("settle last")
