"""Entry point: `continualcode [key=value …]` runs the agent; subcommands are tools around it.

    continualcode [key=value …]                    the agent (see config.py for keys)
    continualcode setup [model_name=…]             fetch and convert a built-in model, then exit
    continualcode sessions [workspace=…]           list this project's sessions
    continualcode plot SESSION                     PNG of a session's training curves
    continualcode replay SESSION [key=value …]     re-run a session's learning events on a fresh adapter
    continualcode bench learn|speed|security …     benchmarks (results under --out)
No logic here beyond parsing: errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Sequence

USAGE = __doc__.split("\n\n")[1] if __doc__ else ""


class UsageError(ValueError):
    pass


def parse_config(argv: Sequence[str]):  # type: ignore[no-untyped-def]
    """A Config from key=value arguments; UsageError with one line on a bad key or value."""
    import chz

    from continualcode.config import Config, validate

    for a in argv:
        if "=" not in a:
            raise UsageError(f"expected key=value, got {a!r} (continualcode --help)")
    try:
        cfg = chz.Blueprint(Config).make_from_argv(list(argv))
    except Exception as e:
        raise UsageError(_chz_message(e)) from None
    problems = validate(cfg)
    if problems:
        raise UsageError("; ".join(problems))
    return cfg


def _chz_message(e: Exception) -> str:
    text = str(e)
    if m := re.search(r"Extraneous argument '([^']+)'", text):
        hint = re.search(r"Did you mean '([^']+)'", text)
        return f"unknown config key {m.group(1)!r}" + (f" (did you mean {hint.group(1)!r}?)" if hint else "")
    if m := re.search(r"Could not interpret argument '([^']*)' provided for param '([^']+)'", text):
        why = re.search(r"Could not cast [^\n]*", text)
        return f"bad value {m.group(1)!r} for {m.group(2)}" + (f": {why.group(0)}" if why else "")
    return text.splitlines()[0] if text else type(e).__name__


def main(argv: Sequence[str] | None = None) -> int:
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

            return getattr(commands, args[0])(args[1:], parse_config)
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
