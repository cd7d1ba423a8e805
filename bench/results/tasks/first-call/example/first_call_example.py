"""The first proposal on each bench task under worked-example variants (an experiment; README.md beside it).

    python bench/results/tasks/first-call/example/first_call_example.py MODEL SPLIT VARIANT[,VARIANT] OUT.jsonl

Run on acb9ab7's code: it patches `render.NATIVE_EXAMPLE`, which that renderer read (the product now picks its
example with `worked_example`; `grep` here is `render.GREP_EXAMPLE`).  A record of how the figures were made.
"""
from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import continualcode.render as render
from continualcode.agent import Abort, Session
from continualcode.bench.tasks.packages import PINS, copy_tree, source
from continualcode.bench.tasks.taskfile import apply_ops, load_tasks
from continualcode.build import build_backend, make_renderer
from continualcode.config import parse_config
from continualcode.events import Proposal
from continualcode.models import cache_root
from continualcode.records import ToolCall
from continualcode.tools import Workspace

NOW = render.NATIVE_EXAMPLE
LISTING = ("Files in the project (the workspace root is '.'):\n"
           "app/hello.py\ntests/test_hello.py\ndocs/conf.py\nREADME.md\n\n")
MAP = f"Classes and functions {render.LEGEND}\napp/hello.py\n  3: def greet(name) \u2014 The greeting for a name.\n\n"
READ = ("tool", '     3\tdef greet(name):\n     4\t    """The greeting for a name."""\n'
               '     5\t    return f"Hello, {name}!"')
ANSWER = ("assistant", 'greet(name) in app/hello.py (line 3) returns the greeting "Hello, <name>!".')
DECOYS = (("user", LISTING + MAP + "What does greet() return?"), NOW[1], NOW[2], NOW[3])
GREP = (("user", LISTING + "What does greet() return?"),
        ("assistant", ToolCall("grep", {"pattern": "def greet", "path": "."}).to_text()),
        ("tool", "app/hello.py:3: def greet(name):"),
        ("assistant", ToolCall("read", {"path": "app/hello.py", "offset": 3, "limit": 20}).to_text()),
        READ, ANSWER)
VARIANTS = {"now": NOW, "decoys": DECOYS, "grep": GREP}

class Stop:
    def decide(self, call: ToolCall, preview: str) -> Abort:
        return Abort()

def main(model, split, variants, out_path):
    cfg = parse_config([f"model_name={model}", "threads=1"])
    backend = build_backend(cfg)
    renderer = make_renderer(backend, cfg)
    tasks = [t for t in load_tasks() if split == "all" or t.split == split]
    with open(out_path, "a") as out:
        for t in tasks:
            for v in variants:
                render.NATIVE_EXAMPLE = VARIANTS[v]
                with tempfile.TemporaryDirectory() as tmp:
                    root = copy_tree(source(PINS[t.package], cache_root()), Path(tmp) / "w")
                    apply_ops(root, t.setup)
                    ws = Workspace(root)
                    events = []
                    s = Session(backend, renderer, ws, Stop(), sampling=cfg.sampling_config(),
                                on_event=events.append, seed=0)
                    t0 = time.time()
                    s.run_task(t.task)
                    props = [e for e in events if isinstance(e, Proposal)]
                    first = props[0] if props else None
                    row = {"variant": v, "task": t.id, "call": first.call if first else None,
                           "text": (first.text or "")[:200] if first else "", "n_props": len(props),
                           "s": round(time.time() - t0, 1)}
                    out.write(json.dumps(row) + "\n")
                    out.flush()
                    print(v, t.id, row["call"], round(time.time()-t0), flush=True)

if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3].split(","), sys.argv[4])
