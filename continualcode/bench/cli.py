"""`continualcode bench learn|tasks|speed|security …`: dispatch to the benchmark modules."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

USAGE = """usage:
  continualcode bench learn --out DIR [--scenarios FILE (default: the public suite)] [--quick] [--seeds N]
                            [--variants A,B|all] [--limit N] [--cross N] [--forget N]
                            [mode=independent|sequential] [key=value …]
  continualcode bench tasks --out DIR [--split dev|test|all] [--tasks ID,ID] [--limit N] [--seeds N] [--verify]
                            [key=value …]
  continualcode bench tasks --compare BEFORE_DIR AFTER_DIR
  continualcode bench speed --out DIR [--parts sampling,bound,drafts,session,step,start] [--repeats N]
                            [--lengths 256,1024,4096] [key=value …]
  continualcode bench security --out DIR [--kills N] [--fuzz N] [--adapter-kills N]"""


def bench_main(args: Sequence[str]) -> int:
    if not args or args[0] not in ("learn", "tasks", "speed", "security"):
        print(USAGE)
        return 2
    which, rest = args[0], list(args[1:])
    if which == "learn":
        from continualcode.bench.learn import main

        return main(rest)
    if which == "tasks":
        from continualcode.bench.tasks import main as tasks_main

        return tasks_main(rest)
    if which == "speed":
        from continualcode.bench.speed import main as speed_main

        return speed_main(rest)
    p = argparse.ArgumentParser(prog="continualcode bench security")
    p.add_argument("--out", required=True)
    p.add_argument("--kills", type=int, default=200)
    p.add_argument("--fuzz", type=int, default=100_000)
    p.add_argument("--adapter-kills", type=int, default=100)
    ns = p.parse_args(rest)
    from continualcode.bench.security import run

    result = run(Path(ns.out), kills=ns.kills, fuzz=ns.fuzz, adapter_kills=ns.adapter_kills)
    print(f"wrote {Path(ns.out) / 'security.md'} ({len(result.get('path_attacks', []))} attacks)")
    return 0
