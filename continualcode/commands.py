"""The small subcommands around the agent: setup, sessions, plot, replay.

Each takes its argument list and the config parser, prints its result, and returns an exit code.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from continualcode.backends.base import BackendError

ParseConfig = Callable[[Sequence[str]], Any]


def setup(args: Sequence[str], parse_config: ParseConfig) -> int:
    """Fetch and convert a built-in model into the cache (what the first run would do), then exit."""
    from continualcode.models import resolve

    cfg = parse_config(args)
    try:
        r = resolve(cfg.model_name, cache=Path(cfg.cache_dir).expanduser() if cfg.cache_dir else None)
    except BackendError as e:
        print(f"continualcode: {e}")
        return 1
    print(f"{r.model_id}: {r.path}")
    return 0


def _session_dir(arg: str, cfg: Any) -> Path:
    from continualcode.app import project_state

    p = Path(arg).expanduser()
    if (p / "journal.jsonl").is_file():
        return p
    d = project_state(cfg) / "sessions" / arg
    if not (d / "journal.jsonl").is_file():
        raise BackendError(f"no session {arg!r} (a session id from `continualcode sessions`, or its directory)")
    return d


def sessions(args: Sequence[str], parse_config: ParseConfig) -> int:
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
        print(f"{s.session_id}  {when}  {s.n_events:5d} events  {s.n_steps:3d} steps  {(s.first_task or '')[:60]}")
    return 0


def plot(args: Sequence[str], parse_config: ParseConfig) -> int:
    """Write a PNG of a session's training curves and print its path."""
    from continualcode.journal import read_metrics
    from continualcode.ui.plots import plot_curves

    if not args:
        print("usage: continualcode plot SESSION [key=value …]")
        return 2
    cfg = parse_config(args[1:])
    try:
        d = _session_dir(args[0], cfg)
    except BackendError as e:
        print(f"continualcode: {e}")
        return 1
    print(plot_curves(read_metrics(d), d / "plots" / "curves.png", title=d.name))
    return 0


def replay(args: Sequence[str], parse_config: ParseConfig) -> int:
    """Re-run a session's learning events on a fresh adapter (optionally with other settings).

    `out=DIR` (default: <session>/replay-adapter) receives the resulting adapter.
    """
    from continualcode.agent import correction_from_dict
    from continualcode.app import build_backend
    from continualcode.journal import read_events
    from continualcode.learn.step import Learner
    from continualcode.render import Renderer

    if not args:
        print("usage: continualcode replay SESSION [out=DIR] [key=value …]")
        return 2
    rest = [a for a in args[1:] if not a.startswith("out=")]
    outs = [a[4:] for a in args[1:] if a.startswith("out=")]
    cfg = parse_config(rest)
    try:
        d = _session_dir(args[0], cfg)
        all_events = read_events(d / "journal.jsonl")
        events = [e for e in all_events if e.get("type") == "correction"]
        recorded = next((e.get("model") for e in all_events if e.get("type") == "session_start"), None)
        if recorded and not any(a.startswith("model_name=") for a in rest):  # the session's model, not the default
            cfg = parse_config([f"model_name={recorded}", *rest])
        backend = build_backend(cfg)
    except BackendError as e:
        print(f"continualcode: {e}")
        return 1
    learner = Learner(backend, Renderer(backend.tokenizer, vocab_size=getattr(backend, "vocab_size", None)),
                      cfg.learn_config())
    steps = 0
    for e in events:
        report = learner(correction_from_dict(e))
        if report is not None:
            steps += 1
            print(f"step {report['step']}: {report['kind']} loss {report.get('loss', 0):.4f} "
                  f"kl_after {report['kl_after']:.4f}{'  ROLLED BACK' if report['rolled_back'] else ''}")
    out = Path(outs[0]).expanduser() if outs else d / "replay-adapter"
    backend.save(out)
    print(f"replayed {len(events)} learning events ({steps} steps); adapter at step {backend.step} saved to {out}")
    return 0
