"""Probe: the answer after a user trial's fix, as sampled, and after the ASKS_NEXT re-ask (see README.md).

    PYTHONPATH=<checkout> python probe.py <session>/journal.jsonl 6 > out.jsonl
"""

import json
import sys
from pathlib import Path

from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.records import Message
from continualcode.replies import ASKS_NEXT, asks_for_next_step


def main(journal: Path, n: int) -> None:
    rows = [json.loads(line) for line in journal.read_text().splitlines()]
    msgs = []
    for d in rows:
        if d["type"] == "assistant_text":
            break
        if d["type"] == "message":
            msgs.append(Message(d["role"], d["content"], meta=d.get("meta") or {}))
    vague = msgs.pop()  # the answer itself
    assert vague.role == "assistant", vague
    cfg = parse_config(["model_name=qwen2.5-coder-1.5b"])
    b = build_backend(cfg)
    r = make_renderer(b, cfg)
    for arm in ("as-is", "re-asked"):
        for seed in range(n):
            ms = msgs if arm == "as-is" else [*msgs, vague, Message("user", f"error: {ASKS_NEXT}. Try again.")]
            s = b.sample(r.prompt_ids(ms), max_tokens=160, temperature=0.3, top_p=0.95, stop=r.stop_ids,
                         constraint=r.constraint(allow_text=True), seed=seed)
            t = b.tokenizer.decode(s.tokens, skip_special_tokens=True).strip()
            print(json.dumps({"arm": arm, "seed": seed, "asks_next": asks_for_next_step(t), "text": t[:300]}),
                  flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), int(sys.argv[2]))
