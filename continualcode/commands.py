"""The small subcommands around the agent: setup, sessions, plot, replay.

Each takes its argument list, prints its result, and returns an exit code (2 for a usage error,
1 for a failure, with one line saying why).  `COMMANDS` is the table the entry point dispatches on.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from continualcode.backends.base import BackendError
from continualcode.config import Config, parse_config
from continualcode.events import CorrectionMade, SessionStart, from_record
from continualcode.ui.visible import visible

HELP_FLAGS = ("-h", "--help", "help")
USAGE = {
    "setup": "usage: continualcode setup [model_name=…] [cache_dir=…]",
    "sessions": "usage: continualcode sessions [workspace=…] [state_home=…]",
    "plot": "usage: continualcode plot SESSION [key=value …]",
    "replay": "usage: continualcode replay SESSION [out=DIR] [key=value …]",
}


def setup(args: Sequence[str]) -> int:
    """Fetch and convert a built-in model into the cache (what the first run would do), then exit."""
    from continualcode.build import cache_path
    from continualcode.models import ModelError, resolve

    cfg = parse_config(args)
    try:
        r = resolve(cfg.model_name, cache=cache_path(cfg))
    except ModelError as e:
        print(f"continualcode: {e}")
        return 1
    print(f"{r.model_id}: {r.path}")
    return 0


def _session_dir(arg: str, cfg: Config) -> Path:
    from continualcode.app import project_state

    p = Path(arg).expanduser()
    if (p / "journal.jsonl").is_file():
        return p
    d = project_state(cfg) / "sessions" / arg
    if not (d / "journal.jsonl").is_file():
        raise BackendError(f"no session {arg!r} (a session id from `continualcode sessions`, or its directory)")
    return d


def sessions(args: Sequence[str]) -> int:
    """List this project's sessions, newest first."""
    import datetime

    from continualcode.app import project_state
    from continualcode.journal import list_sessions

    cfg = parse_config(args)
    infos = list_sessions(project_state(cfg))
    if not infos:
        print("no sessions yet for this project")
    for s in infos:
        when = datetime.datetime.fromtimestamp(s.started).strftime("%Y-%m-%d %H:%M")
        print(f"{s.session_id}  {when}  {s.n_events:5d} events  {s.n_steps:3d} steps  "
              f"{visible((s.first_task or '')[:60])}")
    return 0


def plot(args: Sequence[str]) -> int:
    """Write a PNG of a session's training curves and print its path."""
    from continualcode.journal import read_metrics
    from continualcode.ui.plots import plot_curves

    cfg = parse_config(args[1:])
    try:
        d = _session_dir(args[0], cfg)
    except BackendError as e:
        print(f"continualcode: {e}")
        return 1
    print(plot_curves(read_metrics(d), d / "plots" / "curves.png", title=d.name))
    return 0


def replay(args: Sequence[str]) -> int:
    """Re-run a session's learning events on a fresh adapter (optionally with other settings).

    `out=DIR` (default: <session>/replay-adapter) receives the resulting adapter.  The session's
    recorded model is used unless `model_name=` is given.  Bit for bit the same adapter twice needs
    `draft=off` too: the distillation prompts are sampled, draft sizes follow measured timings, and a drafted
    run's rows sum in another order than a one-row step's (the same distribution, other last bits).
    """
    from continualcode.build import build_backend, make_renderer
    from continualcode.journal import read_events
    from continualcode.learn.step import Learner

    rest = [a for a in args[1:] if not a.startswith("out=")]
    outs = [a[4:] for a in args[1:] if a.startswith("out=")]
    cfg = parse_config(rest)
    try:
        d = _session_dir(args[0], cfg)
        events = [from_record(e) for e in read_events(d / "journal.jsonl")]
        corrections = [e.correction for e in events if isinstance(e, CorrectionMade)]
        recorded = next((e.model for e in events if isinstance(e, SessionStart)), None)
        if recorded and not any(a.startswith("model_name=") for a in rest):  # the session's model, not the default
            cfg = parse_config([f"model_name={recorded}", *rest])
        backend = build_backend(cfg)
    except BackendError as e:
        print(f"continualcode: {e}")
        return 1
    learner = Learner(backend, make_renderer(backend, cfg), cfg.learn_config())  # replay learns even if training is off
    steps = 0
    for c in corrections:
        first = learner(c)
        for report in [first, *learner.settle()] if first is not None else []:  # settle: deferred distillation
            steps += 1
            print(f"step {report['step']}: {report['kind']}{' (distilled)' if report.get('deferred') else ''} "
                  f"loss {report.get('loss', 0):.4f} "
                  f"kl_after {report['kl_after']:.4f}{'  ROLLED BACK' if report['rolled_back'] else ''}")
    out = Path(outs[0]).expanduser() if outs else d / "replay-adapter"
    backend.save(out)
    print(f"replayed {len(corrections)} learning events ({steps} steps); adapter at step {backend.step} saved to {out}")
    return 0


def _with_usage(name: str, fn: Callable[[Sequence[str]], int], *, needs_arg: bool) -> Callable[[Sequence[str]], int]:
    """`--help` prints the usage; a command that needs a SESSION refuses to run without one."""

    def run(args: Sequence[str]) -> int:
        if args and args[0] in HELP_FLAGS:
            print(USAGE[name])
            return 0
        if needs_arg and (not args or "=" in args[0]):
            print(USAGE[name])
            return 2
        return fn(args)

    return run


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "setup": _with_usage("setup", setup, needs_arg=False),
    "sessions": _with_usage("sessions", sessions, needs_arg=False),
    "plot": _with_usage("plot", plot, needs_arg=True),
    "replay": _with_usage("replay", replay, needs_arg=True),
}
