"""Probe: what the self-teacher would do, by the wording of its correction turn (see README.md).

The teacher of a first-turn denial sees the student's context (the project's listing, the task) and then one
user turn carrying the correction (`learn/teacher.py`).  Sampled from that context, its call is what the
step pulls the student toward.  For each scenario of one half of a learning suite, each wording, and `n`
seeds: the teacher's call, classified by the scenario (complies / violates / neutral / text).

    PYTHONPATH=<checkout> python probe.py SCENARIOS.jsonl dev|test N [threads=1 …] > out.jsonl
"""

import json
import sys
import tempfile
from pathlib import Path

from continualcode.bench.learn.scenario import load_scenarios, select_split
from continualcode.bench.learn.tasks import write_files
from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.context import project_overview
from continualcode.records import Message
from continualcode.tools import Workspace

WORDINGS = {
    # learn/teacher.py before this probe
    "applied": "Correction from the user: {text}\n\nReply to the task with this correction applied.",
    # the words of the retry's denial (rails.DENIAL without the denied call) and the task reminder
    "instead": "Do this instead: {text}\n\n(The task: {task})",
}


def main(path: Path, split: str, n: int, overrides: list[str]) -> None:
    cfg = parse_config(["model_name=qwen2.5-coder-1.5b", *overrides])
    b = build_backend(cfg)
    r = make_renderer(b, cfg)
    for sc in select_split(load_scenarios(path), split):
        with tempfile.TemporaryDirectory() as d:
            write_files(Path(d), sc.files)
            listing = project_overview(Workspace(Path(d)))
        context = [Message("system", listing), Message("user", sc.task, meta={"task": True})]
        for name, form in WORDINGS.items():
            msgs = [*context, Message("user", form.format(text=sc.correction, task=sc.task))]
            for seed in range(n):
                s = b.sample(r.prompt_ids(msgs), max_tokens=160, temperature=0.3, top_p=0.95, stop=r.stop_ids,
                             constraint=r.constraint(allow_text=True), seed=seed)
                text = r.decode(s.tokens)
                call = r.parse(text).call
                cls = sc.classify(call) if call is not None else "text"
                print(json.dumps({"scenario": sc.id, "preference": sc.preference, "wording": name, "seed": seed,
                                  "class": cls, "call": call.to_text() if call else text[:160]}), flush=True)


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:])
