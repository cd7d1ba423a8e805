"""Peak RSS of the 1.5B default path through a session, phase by phase (README.md here).

`python memprof.py [config overrides]`: one thread does it all (sample on a long prompt, the correction's
update, the retry, the deferred update), on prompts of 1.5k / 3k / 4.5k tokens.
`APP=1`: as the app runs it: the deferred update (`settle`) and the speculative prefill (`warm`) on threads of
their own, the backend used by one thread at a time, four tasks (1.5k / 3k / 4.5k / 3.5k tokens).
`TRIM=1` (with APP=1): `continualcode.heap.release()` where the app calls it (a task's end, the settle job's end).
"""

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from continualcode.bench.speed.step import denial
from continualcode.build import build_parts
from continualcode.config import parse_config
from continualcode.heap import release

APP, TRIM = os.environ.get("APP") == "1", os.environ.get("TRIM") == "1"
T0 = time.time()


def mem() -> dict[str, float]:
    """VmRSS and VmHWM of this process, GiB."""
    lines = Path("/proc/self/status").read_text().splitlines()
    return {k: int(v.split()[0]) / 2**20 for k, v in (x.split(":", 1) for x in lines) if k in ("VmRSS", "VmHWM")}


def say(what: str, release_here: bool = False) -> None:
    if TRIM and release_here:
        release()
    d = mem()
    print(f"{time.time() - T0:7.1f}s {what:34s} RSS {d['VmRSS']:.2f}  HWM {d['VmHWM']:.2f} GiB", flush=True)


def on_thread(fn: Callable[..., object], *args: object) -> None:
    t = threading.Thread(target=fn, args=args)
    t.start()
    t.join()


def main() -> None:
    earlier = ["add a docstring to the parse function in cli.py", "rename main to run in app.py"]
    parts = build_parts(parse_config(sys.argv[1:]), prompts=lambda c: earlier)
    say("loaded")
    b, r, learner = parts.backend, parts.renderer, parts.learner
    for i, n in enumerate((1500, 3000, 4500, 3500) if APP else (1500, 3000, 4500)):
        c = denial(r, n, 80)
        prompt = list(c.prompt_ids)
        if APP and i:  # the settle job ran while the user typed; joined before this task
            on_thread(learner.settle)
            say("settled on a thread", True)
        if APP:
            on_thread(b.warm, prompt)  # speculate.py's prefill while the user reads
            say(f"warmed {len(prompt)} on a thread")
        b.sample(prompt, max_tokens=40, temperature=0.0)
        say(f"sampled {len(prompt)}")
        learner(c)
        say(f"update {i + 1}")
        b.sample(prompt, max_tokens=40, temperature=0.0)
        say("retry (task ends)", True)
        if not APP:
            learner.settle()
            say(f"settle {i + 1}")
    if APP:
        learner.settle()
        say("settle last")


if __name__ == "__main__":
    main()
