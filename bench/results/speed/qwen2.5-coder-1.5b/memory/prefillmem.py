import sys, time, torch
from continualcode.config import parse_config
from continualcode.build import build_backend
def hwm():
    for l in open("/proc/self/status"):
        if l.startswith("VmHWM"): return int(l.split()[1]) / 1024 / 1024
def rss():
    for l in open("/proc/self/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) / 1024 / 1024
cfg = parse_config(["threads=1"])
b = build_backend(cfg)
print("loaded", round(rss(), 2), round(hwm(), 2), "attn", b.model.config._attn_implementation, flush=True)
ids = torch.randint(1000, 20000, (1, int(sys.argv[1])))
chunk = int(sys.argv[2])
import ctypes; ctypes.CDLL("libc.so.6").malloc_trim(0)
base = rss()
# reset HWM
open("/proc/self/clear_refs", "w").write("5")
t = time.time()
with torch.no_grad():
    if chunk == 0:
        out = b.model(input_ids=ids, use_cache=True, logits_to_keep=1)
    else:
        cache = None
        for i in range(0, ids.shape[1], chunk):
            out = b.model(input_ids=ids[:, i:i+chunk], past_key_values=cache, use_cache=True, logits_to_keep=1)
            cache = out.past_key_values
print(f"n={ids.shape[1]} chunk={chunk}: {time.time()-t:.1f}s, RSS before {base:.2f}, peak {hwm():.2f} GiB (+{hwm()-base:.2f})", flush=True)
