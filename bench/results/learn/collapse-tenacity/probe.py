"""Probe: the first call of a session's last task, under the base weights and under saved adapters, with and
without the project's rules in its user turn (see README.md).

    PYTHONPATH=<checkout> python probe.py journal.jsonl N [ADAPTER_DIR …] > out.jsonl
"""
import json
import sys
from pathlib import Path

from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.records import Message

journal, n = Path(sys.argv[1]), int(sys.argv[2])
adapters = sys.argv[3:]
rows = [json.loads(line) for line in journal.read_text().splitlines()]
msgs = []
for d in rows:
    if d["type"] == "message":
        if d["role"] == "system" and d["content"].startswith("Files in the project"):
            msgs = []
        msgs.append(Message(d["role"], d["content"], meta=d.get("meta") or {}))
while msgs[-1].role != "user" or not msgs[-1].meta.get("task"):
    msgs.pop()
cfg = parse_config(["model_name=qwen2.5-coder-1.5b", "threads=1"])
b = build_backend(cfg)
r = make_renderer(b, cfg)
base = b.snapshot()
for arm in ["base", *adapters]:
    if arm == "base":
        b.restore(base)
    else:
        b.load(Path(arm))
    for notes in (True, False):
        ms = list(msgs)
        if not notes:
            m = ms[-1]
            ms[-1] = Message(m.role, m.content, meta={k: v for k, v in m.meta.items() if k != "notes"})
        for seed in range(n):
            s = b.sample(r.prompt_ids(ms), max_tokens=120, temperature=0.3, top_p=0.95, stop=r.stop_ids,
                         constraint=r.constraint(allow_text=False), seed=seed)
            t = b.tokenizer.decode(s.tokens, skip_special_tokens=True).strip()
            print(json.dumps({"arm": Path(arm).name, "notes": notes, "seed": seed, "text": t[:200]}), flush=True)
