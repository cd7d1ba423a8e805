"""The first proposal of the default model on each dev task, under prompt variants (an experiment).

    python bench/results/tasks/first-call/first_call.py VARIANT[,VARIANT…] OUT.jsonl

Each dev task of `bench tasks` gets a fresh copy of its package and one Session whose user aborts
at the first proposal; the row is that proposal.  Variants are names made of words:
  (none)      the file listing in the system prompt, the old worked example (grep, then read)
  outline     a 3,000-character map of classes and functions after the listing (o1200: 1,200)
  nooutline   no map
  inuser      the overview opens the task's user turn instead of the system prompt
  noex        no worked example
  ex2         the new worked example (a listing and a map line in its user turn, a read at the line)
The product now renders `ex2-inuser-nooutline` by default (render.py, config repo_map=0).
This patches module globals of the installed package to make the variants; it is a record of
how the figures in README.md were made, not part of the product.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import continualcode.agent as agent
import continualcode.context as context
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

OLD_EXAMPLE = (
    ("user", "What does greet() return?"),
    ("assistant", ToolCall("grep", {"pattern": "def greet", "path": ".", "include": "*.py"}).to_text()),
    ("tool", "app/hello.py:3: def greet(name):"),
    ("assistant", ToolCall("read", {"path": "app/hello.py", "offset": 1, "limit": 80}).to_text()),
    ("tool", '     1\timport sys\n     2\t\n     3\tdef greet(name):\n     4\t    return f"Hello, {name}!"'),
    ("assistant", 'greet(name) in app/hello.py (line 3) returns the greeting "Hello, <name>!".'),
)
NEW_EXAMPLE = render.NATIVE_EXAMPLE
OVERVIEW = context.project_overview


class Stop:
    def decide(self, call: ToolCall, preview: str) -> Abort:
        return Abort()


def main(variants: list[str], out_path: str) -> None:
    cfg = parse_config(["model_name=qwen2.5-coder-0.5b", "threads=1"])
    backend = build_backend(cfg)
    renderer = make_renderer(backend)
    tasks = [t for t in load_tasks() if t.split == "dev"]
    with open(out_path, "a") as out:
        for v in variants:
            render.NATIVE_EXAMPLE = () if "noex" in v else NEW_EXAMPLE if "ex2" in v else OLD_EXAMPLE
            chars = 0 if "nooutline" in v else 1200 if "o1200" in v else context.OUTLINE_CHARS
            for t in tasks:
                with tempfile.TemporaryDirectory() as tmp:
                    root = copy_tree(source(PINS[t.package], cache_root()), Path(tmp) / "w")
                    apply_ops(root, t.setup)
                    ws = Workspace(root)
                    text = t.task
                    if "inuser" in v:
                        text = OVERVIEW(ws, outline_chars=chars) + "\n\n" + t.task
                        agent.project_overview = lambda ws, **kw: ""  # type: ignore[assignment]
                    else:  # the listing as a system message: the renderer of the time put it in the system prompt
                        agent.project_overview = lambda ws, c=chars, **kw: OVERVIEW(ws, outline_chars=c)  # type: ignore[assignment]
                    events: list[object] = []
                    s = Session(backend, renderer, ws, Stop(), sampling=cfg.sampling_config(),
                                on_event=events.append, seed=0)
                    t0 = time.time()
                    s.run_task(text)
                    props = [e for e in events if isinstance(e, Proposal)]
                    first = props[0] if props else None
                    row = {"variant": v, "task": t.id, "call": first.call if first else None,
                           "text": first.text[:200] if first else "", "n_props": len(props),
                           "s": round(time.time() - t0, 1)}
                    out.write(json.dumps(row) + "\n")
                    out.flush()


if __name__ == "__main__":
    main(sys.argv[1].split(","), sys.argv[2])
