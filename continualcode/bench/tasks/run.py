"""The run: options, the packages, the resumable units file, the loop over seeds × tasks, main().

Everything that touches the output directory lives here: DIR/run.json (the run's configuration;
a resume with another one is refused), DIR/.lock, DIR/units.jsonl (one fsynced line per finished
task: an interrupted run resumes from it), DIR/transcripts/TASK.sSEED.json, and DIR/results.json /
results.md written from all units at the end.  The model is built through `continualcode.build`
from a `parse_config` config, once, and only when a unit is left to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import chz

from continualcode.backends.base import Backend
from continualcode.bench.rundir import Reporter, Units, claim, key_values
from continualcode.bench.tasks.checks import verify
from continualcode.bench.tasks.metrics import aggregate
from continualcode.bench.tasks.packages import PINS, PackageError, source
from continualcode.bench.tasks.report import to_markdown
from continualcode.bench.tasks.runner import Ctx, run_task
from continualcode.bench.tasks.taskfile import SPLITS, TASKS_FILE, Task, load_tasks, select
from continualcode.build import build_backend, cache_path, edit_tool, make_renderer, read_cap, worked_example
from continualcode.config import Config, UsageError, parse_config
from continualcode.fsio import atomic_write
from continualcode.models import cache_root

DESCRIPTION = "The task benchmark (`continualcode bench tasks`): real tasks on real third-party packages."


@dataclass
class Options:
    out: Path | None
    split: str = "all"
    ids: list[str] = field(default_factory=list)
    limit: int = 0
    seeds: int = 1
    verify: bool = False
    compare: list[Path] = field(default_factory=list)
    tasks_file: Path = TASKS_FILE
    base_args: dict[str, str] = field(default_factory=dict)
    argv: list[str] = field(default_factory=list)


def parse_args(args: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="continualcode bench tasks", description=DESCRIPTION)
    p.add_argument("--out", help="results directory (resumed when it holds units.jsonl)")
    p.add_argument("--split", choices=(*SPLITS, "all"), default="all", help="dev (choose defaults), test (report)")
    p.add_argument("--tasks", default="", help="comma-separated task ids")
    p.add_argument("--limit", type=int, default=0, help="only the first N selected tasks")
    p.add_argument("--seeds", type=int, default=1, help="runs per task (seeds cfg.seed, cfg.seed+1, …)")
    p.add_argument("--verify", action="store_true", help="check every selected task's checker against its "
                   "reference solution (no model) and exit")
    p.add_argument("--compare", nargs=2, metavar=("BEFORE", "AFTER"), help="two finished runs' directories: "
                   "print their paired comparison (up / down by task, sign test) and exit")
    p.add_argument("--tasks-file", default=str(TASKS_FILE), help=argparse.SUPPRESS)
    p.add_argument("overrides", nargs="*", help="config key=value (e.g. model_name=… threads=1 max_turns=…)")
    ns = p.parse_intermixed_args(list(args))
    base = key_values(ns.overrides)
    if ns.seeds < 1:
        raise ValueError("--seeds must be ≥ 1")
    if ns.out is None and not ns.verify and not ns.compare:
        raise ValueError("--out DIR is required")
    return Options(out=Path(ns.out) if ns.out else None, split=ns.split,
                   ids=[x.strip() for x in ns.tasks.split(",") if x.strip()], limit=ns.limit, seeds=ns.seeds,
                   verify=ns.verify, compare=[Path(x) for x in ns.compare or ()],
                   tasks_file=Path(ns.tasks_file), base_args=base, argv=list(args))


def task_line(row: dict[str, Any], n_done: int) -> str:
    """One log line per finished task."""
    mark = "✓" if row["success"] else "✗"
    failed = [k for k, ok in row["check"]["parts"].items() if not ok]
    return (f"[{n_done}] {row['task']} · seed {row['seed']}: {mark} {row['status']}, {row['calls']} calls, "
            f"{row['sec']:.0f} s" + (f" (failed: {', '.join(failed)})" if failed else ""))


def sources_for(tasks: Sequence[Task], cache: Path) -> dict[str, Path]:
    """Each needed package's extracted tree (fetched and verified first: an offline error comes early)."""
    return {name: source(PINS[name], cache) for name in dict.fromkeys(t.package for t in tasks)}


def _claim(opts: Options, tasks: Sequence[Task]) -> IO[str]:
    """Take DIR/.lock and check (or write) DIR/run.json; the open lock file, held for the whole run."""
    assert opts.out is not None
    checks = hashlib.sha256(b"".join(t.snippet_path.read_bytes() for t in tasks if t.snippet_path))
    signature = {"tasks_sha256": hashlib.sha256(opts.tasks_file.read_bytes()).hexdigest(),
                 "checks_sha256": checks.hexdigest(),
                 "tasks": [t.id for t in tasks], "seeds": opts.seeds, "base": opts.base_args,
                 "packages": {t.package: PINS[t.package].sha256 for t in tasks}}
    return claim(opts.out, signature)


def _meta(opts: Options, cfg: Config, seeds: list[int], tasks: Sequence[Task]) -> dict[str, Any]:
    return {
        "command": "continualcode bench tasks " + shlex.join(opts.argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"), "model": cfg.model_name, "seeds": seeds,
        "split": opts.split, "n_tasks": len(tasks), "tasks_file": opts.tasks_file.name,
        "packages": {t.package: PINS[t.package].version for t in tasks}, "base_overrides": opts.base_args,
        "config": {k: v for k, v in chz.asdict(cfg).items() if isinstance(v, str | int | float | bool)},
        # what `auto` became for this model (build.py): the figures depend on it
        "resolved": {"edit_tool": edit_tool(cfg), "worked_example": worked_example(cfg), "read_cap": read_cap(cfg)},
    }


def run(opts: Options, *, backend: Backend | None = None, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; writes units.jsonl, transcripts/, results.json and results.md."""
    assert opts.out is not None
    t_start = time.perf_counter()
    # 1) the tasks, the config and the packages (fetched and verified before anything is written)
    tasks = select(load_tasks(opts.tasks_file), split=opts.split, ids=opts.ids, limit=opts.limit)
    if not tasks:
        raise ValueError("no task selected")
    cfg = parse_config([f"{k}={v}" for k, v in opts.base_args.items()])
    sources = sources_for(tasks, cache_path(cfg) or cache_root())
    seeds = [int(cfg.seed) + i for i in range(opts.seeds)]
    # 2) the run's identity, the units already done
    lock = _claim(opts, tasks)
    units = Units(opts.out / "units.jsonl")
    meta = _meta(opts, cfg, seeds, tasks)
    rep = reporter or Reporter()
    left = [(t, s) for s in seeds for t in tasks if (t.id, s) not in units.done]
    meta["new_units"] = 0
    try:
        with rep:
            rep.start(len(tasks) * len(seeds), "bench tasks")
            rep.advance(len(tasks) * len(seeds) - len(left))
            if left:
                # 3) the model, once
                rep.describe(f"loading {cfg.model_name}")
                backend = backend if backend is not None else build_backend(cfg)
                meta["model"] = backend.model_id
                ctx = Ctx(backend, make_renderer(backend, cfg), cfg)
                (opts.out / "transcripts").mkdir(exist_ok=True)
            # 4) each task left, with the simulated user; its transcript, then its fsynced unit line
            for task, seed in left:
                rep.describe(f"seed {seed} · {task.id}")
                row, doc = run_task(ctx, task, sources[task.package], seed)
                atomic_write(opts.out / "transcripts" / f"{task.id}.s{seed}.json",
                             json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
                units.add(row)
                meta["new_units"] += 1
                rep.line(task_line(row, len(units.rows)))
    except KeyboardInterrupt:
        rep.note(f"interrupted: {len(units.rows)} tasks kept in {opts.out / 'units.jsonl'}; "
                 "rerun the same command to resume")
        raise
    finally:
        # 5) the results, from every unit in the file (this invocation's and earlier ones')
        meta["seconds"] = round(time.perf_counter() - t_start, 1)
        res = aggregate(units.rows, [t.id for t in tasks], meta)
        atomic_write(opts.out / "results.json", json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        atomic_write(opts.out / "results.md", to_markdown(res))
        lock.close()
    return res


def verify_all(opts: Options) -> int:
    """`--verify`: each selected task's checker against its reference solution; 0 when all pass."""
    tasks = select(load_tasks(opts.tasks_file), split=opts.split, ids=opts.ids, limit=opts.limit)
    cfg = parse_config([f"{k}={v}" for k, v in opts.base_args.items()])
    sources = sources_for(tasks, cache_path(cfg) or cache_root())
    bad = 0
    for t in tasks:
        problems = verify(t, sources[t.package])
        bad += bool(problems)
        print(f"{t.id}: " + ("ok" if not problems else "; ".join(problems)), flush=True)
    print(f"{len(tasks) - bad}/{len(tasks)} tasks verified")
    return 1 if bad else 0


def main(args: list[str]) -> int:
    """`continualcode bench tasks …`; 0 on success, 1 on a model or package error, 2 on a usage error."""
    from continualcode.backends.base import BackendError
    from continualcode.models import ModelError

    try:
        opts = parse_args(args)
        if opts.verify:
            return verify_all(opts)
        if opts.compare:
            from continualcode.bench.tasks import compare

            before, after = opts.compare
            print(compare.to_markdown(compare.compare(compare.load(before), compare.load(after)), str(before),
                                      str(after)), end="")
            return 0
        res = run(opts)
    except SystemExit as e:  # argparse: usage already printed
        return int(e.code or 0)
    except (ValueError, UsageError, FileNotFoundError) as e:
        print(f"continualcode bench tasks: {e}", file=sys.stderr)
        return 2
    except (BackendError, ModelError, PackageError) as e:
        print(f"continualcode bench tasks: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    assert opts.out is not None
    print(f"wrote {opts.out / 'results.md'} and results.json ({res['meta']['new_units']} new tasks): "
          f"success {res['success_rate']:.0%}, valid calls "
          + ("–" if res["valid_call_rate"] is None else f"{res['valid_call_rate']:.0%}")
          + f", fake tool text {res['fake_tool_text']}")
    return 0
