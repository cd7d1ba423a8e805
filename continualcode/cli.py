"""Entry point: `continualcode [key=value …]` runs the agent; subcommands are tools around it.

    continualcode [key=value …]                    the agent (see config.py for keys)
    continualcode setup [model_name=…]             fetch and convert a built-in model, then exit
    continualcode sessions [workspace=…]           list this project's sessions
    continualcode plot SESSION                     PNG of a session's training curves
    continualcode replay SESSION [key=value …]     re-run a session's learning events on a fresh adapter
    continualcode bench learn|speed|security …     benchmarks (results under --out)
No logic here beyond dispatch: errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

USAGE = __doc__.split("\n\n")[1] if __doc__ else ""


def main(argv: Sequence[str] | None = None) -> int:
    from continualcode.config import UsageError, parse_config

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] in ("-h", "--help", "help"):
            print(USAGE)
            return 0
        if args and args[0] == "bench":
            from continualcode.bench.cli import bench_main

            return bench_main(args[1:])
        if args and args[0] in ("setup", "sessions", "plot", "replay"):
            from continualcode import commands

            return commands.COMMANDS[args[0]](args[1:])
        if args and args[0] == "--resume":
            args = [*args[1:], "resume=true"]
        cfg = parse_config(args)
        from continualcode.app import run_agent

        return run_agent(cfg)
    except UsageError as e:
        print(f"continualcode: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
