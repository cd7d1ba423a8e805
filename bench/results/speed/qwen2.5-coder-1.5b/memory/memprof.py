"""Phase-by-phase RSS of the 1.5B default path: load, sample on a long prompt, correction update, settle.
TRIM=1: malloc_trim(0) after each phase (printed: RSS before -> after)."""
import ctypes, os, sys, time
from continualcode.config import parse_config
from continualcode.build import build_parts
from continualcode.bench.speed.step import denial

TRIM = os.environ.get("TRIM") == "1"
libc = ctypes.CDLL("libc.so.6")

def mem():
    d = {}
    for line in open("/proc/self/status"):
        if line.startswith(("VmRSS", "VmHWM")):
            k, v = line.split(":"); d[k] = int(v.split()[0]) / 1024 / 1024
    return d

t0 = time.time()
def say(what):
    d = mem(); extra = ""
    if TRIM:
        libc.malloc_trim(0); extra = f" -> trimmed {mem()['VmRSS']:.2f}"
    print(f"{time.time()-t0:7.1f}s {what:34s} RSS {d['VmRSS']:.2f}{extra}  HWM {d['VmHWM']:.2f} GiB", flush=True)
say("start")
cfg = parse_config(sys.argv[1:])
parts = build_parts(cfg, prompts=lambda c: ["add a docstring to the parse function in cli.py", "rename main to run in app.py"])
say("loaded")
b, r, L = parts.backend, parts.renderer, parts.learner
for i, n in enumerate((1500, 3000, 4500)):
    c = denial(r, n, 80)
    prompt = list(c.prompt_ids)
    b.sample(prompt, max_tokens=40, temperature=0.0); say(f"sampled {len(prompt)}")
    L(c); say(f"update {i+1}")
    b.sample(prompt, max_tokens=40, temperature=0.0); say("retry")
    L.settle(); say(f"settle {i+1}")
