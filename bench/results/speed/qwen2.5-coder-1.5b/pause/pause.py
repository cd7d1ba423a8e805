"""How long the next task waits for a paused background distillation, typed at set delays after the answer.

A correction rebuilt from a user trial's journal (its first denial: the conversation before the denied call, the
call as the model wrote it, the correction's text) takes its interim update; then the deferred distillation
(`Learner.settle`) runs in the app's background job (`settle.Settling`), and `pause()` comes DELAY seconds later, as
when the user types the next task.  Measured: seconds from `pause()` to the job's end (what the task waits), and
whether the distilled update landed.  Arms, alternating on one loaded model: `new` (the training step asks `stop`
before each example and before the optimizer step) and `old` (the step's `stop` dropped: it runs to its end once
begun, as before 870f281).  Each run starts from the same weights (a snapshot) with the KV store cleared.

    PYTHONPATH=<checkout> python pause.py <session>/journal.jsonl OUT.jsonl [delays...]
"""

import json
import sys
import time
from pathlib import Path

from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.learn.step import Learner
from continualcode.records import Correction, Message, Sample
from continualcode.settle import Settling


def correction(journal: Path, backend, renderer) -> Correction:
    msgs, proposal = [], None
    for line in journal.read_text().splitlines():
        d = json.loads(line)
        if d["type"] == "proposal":
            proposal = d["text"]
        elif d["type"] == "decision" and d["kind"] == "deny":
            break
        elif d["type"] == "message":
            msgs.append(Message(d["role"], d["content"], meta=d.get("meta") or {}))
        elif d["type"] == "correction":
            break
    rows = [json.loads(x) for x in journal.read_text().splitlines()]
    text = next(x["text"] for x in rows if x["type"] == "correction")
    prompt_ids = renderer.prompt_ids(msgs)
    tokens = [*renderer.tok.encode(proposal, add_special_tokens=False), renderer.stop_ids[0]]
    logprobs = backend.score(prompt_ids, tokens).logprobs.tolist()
    return Correction(kind="deny", messages=tuple(msgs), prompt_ids=prompt_ids,
                      sample=Sample(tokens, logprobs, "stop"), attempt_text=proposal, text=text)


def main(journal: Path, out: Path, delays: list[float]) -> None:
    cfg = parse_config(["model_name=qwen2.5-coder-1.5b"])
    b = build_backend(cfg)
    r = make_renderer(b, cfg)
    c = correction(journal, b, r)
    start = b.snapshot()
    real = b.train_step
    with out.open("a") as f:
        for delay in delays:
            for arm in ("new", "old"):
                b.restore(start)
                b.clear_cache()
                b.train_step = real if arm == "new" else (  # type: ignore[method-assign]
                    lambda batch, spec, *, lr, stop=None: real(batch, spec, lr=lr))
                learner = Learner(b, r, cfg.learn_config())
                learner(c)  # the interim update, as at the denial
                job = Settling(learner)
                time.sleep(delay)
                t = time.perf_counter()
                job.pause()
                reports, error = job.finish()
                row = {"arm": arm, "delay_s": delay, "wait_s": round(time.perf_counter() - t, 2),
                       "landed": any(x.get("deferred") for x in reports), "pending": len(learner.pending),
                       "prompt_tokens": len(c.prompt_ids), "error": error}
                print(json.dumps(row), flush=True)
                f.write(json.dumps(row) + "\n")
    b.train_step = real  # type: ignore[method-assign]


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), [float(x) for x in sys.argv[3:]] or [10, 30, 45, 60, 75])
