"""The run: options, the plan, the resumable units file, the loop over seeds × variants × scenarios.

Everything that touches the output directory lives here: DIR/run.json (the run's identity; a
resume with another configuration is refused), DIR/.lock, DIR/units.jsonl (one fsynced line per
finished unit: an interrupted run resumes from it), DIR/state/ (sequential mode's adapter after
each unit), and DIR/results.json / results.md written from all units at the end.  The model side
is built through `continualcode.build` from a `parse_config` config; a unit's work is `tasks.py`'s.
Modes, cost control and the output format: docs/bench-learn.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import hashlib
import json
import re
import shlex
import shutil
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import chz

from continualcode.backends.base import Backend
from continualcode.bench.learn.metrics import aggregate
from continualcode.bench.learn.records import BaselineRow, UnitRow
from continualcode.bench.learn.report import to_markdown
from continualcode.bench.learn.scenario import (
    PUBLIC,
    SPLITS,
    Scenario,
    cross_tasks,
    held_out,
    load_scenarios,
    select_split,
    splits,
)
from continualcode.bench.learn.tasks import Ctx, baseline_unit, variant_unit
from continualcode.bench.learn.variants import (
    DEFAULT_VARIANTS,
    MEMORY,
    BenchLearner,
    Variant,
    resolve_variants,
)
from continualcode.bench.rundir import Reporter, Units, claim, key_values
from continualcode.build import build_backend, make_renderer
from continualcode.config import Config, UsageError, parse_config
from continualcode.fsio import atomic_write
from continualcode.learn.memory import Memory, Rule
from continualcode.records import Correction

DESCRIPTION = "The learning benchmark (`continualcode bench learn`): a simulated user drives the real agent."
BENCH_MAX_TOKENS = 192
QUICK_SCENARIOS, QUICK_MAX_TURNS, QUICK_MAX_TOKENS, QUICK_VARIANTS = 2, 2, 160, "in-context,topk"
# what build_backend takes: a variant that changes one of these gets its own backend
BACKEND_KEYS = ("model_name", "backend", "device", "dtype", "lora_rank", "lora_alpha", "lora_targets",
                "cache_dir", "prefix_grad", "grad_clip", "threads", "optimizer", "draft", "decode_int8")
# what the unadapted model's samples and scores depend on: a variant that changes one of these gets its own
# baseline ("baseline[k=v,…]"); training-only keys (optimizer, grad_clip, prefix_grad) share the plain one
BASELINE_KEYS = tuple(k for k in BACKEND_KEYS if k not in ("optimizer", "grad_clip", "prefix_grad"))
SAMPLING_KEYS = ("temperature", "top_p", "max_tokens", "max_turns", "constrained")
REPO = Path(__file__).resolve().parents[3]  # the checkout that holds this package


# --- options --------------------------------------------------------------------------------------


@dataclass
class Options:
    scenarios: Path
    out: Path
    quick: bool
    seeds: int
    variants: dict[str, Variant]
    limit: int
    cross: int
    forget: int
    mode: str
    base_args: dict[str, str]
    argv: list[str]
    split: str = "all"
    baseline_only: bool = False
    task_tries: int = 1
    in_session: bool = False

    def config_for(self, variant: Variant, seed: int) -> Config:
        """A variant's config: the base arguments, its overrides and the seed (checked by parse_config).
        Memory is off unless the variant turns it on (the product's default is on: set explicitly)."""
        args = {**self.base_args, MEMORY: "false", **variant.overrides, "seed": str(seed)}
        return parse_config([f"{k}={v}" for k, v in args.items()])


def parse_args(args: Sequence[str]) -> Options:
    p = argparse.ArgumentParser(prog="continualcode bench learn", description=DESCRIPTION)
    p.add_argument("--scenarios", default=str(PUBLIC), help="scenario JSONL (default: the public suite)")
    p.add_argument("--out", required=True, help="results directory (resumed when it holds units.jsonl)")
    p.add_argument("--quick", action="store_true", help="2 scenarios, 1 seed, in-context + topk, max_turns ≤ 2")
    p.add_argument("--seeds", type=int, default=None, help="seeds (default 3; quick 1)")
    p.add_argument("--variants", default=None, help=f"comma-separated (default {DEFAULT_VARIANTS}; 'all')")
    p.add_argument("--limit", type=int, default=0, help="only the first N scenarios")
    p.add_argument("--cross", type=int, default=1, help="other preferences' fresh tasks per scenario for drift")
    p.add_argument("--forget", type=int, default=1, help="sequential: fresh tasks per earlier scenario re-measured")
    p.add_argument("--mode", choices=("independent", "sequential"), default=None)
    p.add_argument("--task-tries", type=int, default=1,
                   help="run the scenario's task again (next seed) until a call is denied, at most N times")
    p.add_argument("--in-session", action="store_true",
                   help="persistence in the scenario task's own session, continued (default: brand-new sessions)")
    p.add_argument("--split", choices=SPLITS, default="all",
                   help="dev or test: a fixed half of each preference's scenarios (default all)")
    p.add_argument("--baseline-only", action="store_true",
                   help="only the base model: each scenario's task and fresh tasks, no controls (the suite check)")
    p.add_argument("overrides", nargs="*", help="config key=value (the base config of every variant)")
    ns = p.parse_intermixed_args(list(args))
    base = key_values(ns.overrides)
    if MEMORY in base:
        raise ValueError("memory is set per variant here: use the variants memory, memory+<variant> "
                         "(or memory=true in an ad-hoc variant)")
    mode = base.pop("mode", None) or ns.mode or "independent"
    if mode not in ("independent", "sequential"):
        raise ValueError(f"mode must be independent or sequential, got {mode!r}")
    base.setdefault("max_tokens", str(QUICK_MAX_TOKENS if ns.quick else BENCH_MAX_TOKENS))
    if ns.seeds is not None and ns.seeds < 1:
        raise ValueError("--seeds must be ≥ 1")
    if ns.task_tries < 1:
        raise ValueError("--task-tries must be ≥ 1")
    if ns.quick:
        base["max_turns"] = str(min(int(base.get("max_turns", QUICK_MAX_TURNS)), QUICK_MAX_TURNS))
    return Options(
        scenarios=Path(ns.scenarios), out=Path(ns.out), quick=ns.quick,
        seeds=ns.seeds if ns.seeds is not None else (1 if ns.quick else 3),
        variants=resolve_variants(ns.variants or (QUICK_VARIANTS if ns.quick else DEFAULT_VARIANTS)),
        limit=ns.limit, cross=ns.cross, forget=ns.forget, mode=mode, base_args=base, argv=list(args),
        split=ns.split, baseline_only=ns.baseline_only, task_tries=ns.task_tries, in_session=ns.in_session,
    )


def select_scenarios(all_sc: list[Scenario], opts: Options) -> list[Scenario]:
    """The split's scenarios (the split is a property of the whole file), then `--limit`, then quick."""
    sc = select_split(all_sc, opts.split)
    sc = sc[: opts.limit] if opts.limit > 0 else sc
    if opts.quick:  # two scenarios of different preferences, 1 fresh task and 1 control each
        picked: list[Scenario] = []
        for s in sc:
            if len(picked) < QUICK_SCENARIOS and all(p.preference != s.preference for p in picked):
                picked.append(s)
        sc = [dataclasses.replace(s, fresh=s.fresh[:1], controls=s.controls[:1]) for s in picked]
    return sc


def unit_line(u: UnitRow) -> str:
    """One log line per finished unit (above the progress bar; the only output when not a terminal)."""
    head = f"{u['variant']} · seed {u['seed']} · {u['scenario']}: "
    if u["kind"] == "baseline":
        dec = Counter(r["decision"] for r in u["fresh"])
        task = f"task {u['task']['decision']} ({u['task']['first_call']}), " if "task" in u else ""
        body = task + f"fresh {dict(dec)}"
        if u["controls"]:
            body += f", controls valid {sum(r['valid'] for r in u['controls'])}/{len(u['controls'])}"
    else:
        dec = Counter(r["decision"] for r in u["persistence"])
        body = (f"calls {[c['name'] + ('✗' if c['class'] == 'violates' else '') for c in u['task']['calls']]}, "
                f"steps {sum(r['n_steps'] for r in u['learn'])}, persistence {dict(dec)}"
                + (f", rules {len(u['memory'])}" if u.get("memory") is not None else "")
                + (" (reused)" if u["persistence"] and all(r.get("reused") for r in u["persistence"]) else ""))
    return head + body + f" · {u['sec']:.0f} s"


# --- the run --------------------------------------------------------------------------------------


@dataclass
class Run:
    """What every unit of one run shares: its options, scenarios, units file, reporter and metadata."""

    opts: Options
    scenarios: list[Scenario]
    units: Units
    reporter: Reporter
    meta: dict[str, Any]
    held_out: frozenset[str]  # every fresh and control task of the scenario file: never a training prompt
    new_units: int = 0

    def add(self, row: UnitRow) -> None:
        self.units.add(row)
        self.reporter.line(f"[{len(self.units.rows)}] " + unit_line(row))
        self.new_units += 1


@dataclass
class Baseline:
    """The baseline rows one group's variants are compared with: its name, and scenario id → row."""

    name: str
    rows: dict[str, BaselineRow]


def _group_key(cfg: Config) -> tuple[Any, ...]:
    return tuple(getattr(cfg, k, None) for k in (*BACKEND_KEYS, *SAMPLING_KEYS))


def _baseline_name(variant_cfg: Config, base_cfg: Config) -> str:
    diff = [f"{k}={getattr(variant_cfg, k, None)}" for k in (*BASELINE_KEYS, *SAMPLING_KEYS)
            if getattr(variant_cfg, k, None) != getattr(base_cfg, k, None)]
    return "baseline" + (f"[{','.join(diff)}]" if diff else "")


def run(opts: Options, *, reporter: Reporter | None = None) -> dict[str, Any]:
    """Run (or resume) the benchmark; writes units.jsonl, results.json and results.md under opts.out."""
    t_start = time.perf_counter()
    all_sc = load_scenarios(opts.scenarios)
    scenarios = select_scenarios(all_sc, opts)
    base_cfg = parse_config([f"{k}={v}" for k, v in opts.base_args.items()])
    seeds = [int(base_cfg.seed) + i for i in range(opts.seeds)]
    # 1) the plan, per seed: variants grouped by backend-level settings (one backend load per group);
    #    every variant's config is checked here, before anything is written
    plan: list[tuple[int, list[str]]] = []
    for seed in seeds:
        groups: dict[tuple[Any, ...], list[str]] = {}
        if opts.baseline_only:
            groups[()] = []
        for name, v in ({} if opts.baseline_only else opts.variants).items():
            groups.setdefault(_group_key(opts.config_for(v, seed)), []).append(name)
        plan += [(seed, names) for names in groups.values()]
    # 2) the run's identity: resuming with another configuration would mix incomparable units
    lock = _claim(opts)
    r = Run(opts, scenarios, Units(opts.out / "units.jsonl"), reporter or Reporter(),
            _meta(opts, base_cfg, seeds, scenarios, all_sc), held_out(all_sc))
    try:
        with r.reporter:
            r.reporter.start(sum(len(scenarios) * (1 + len(names)) for _, names in plan), "bench learn")
            for seed, names in plan:  # 3)–5) in _run_group
                _run_group(r, seed, names)
    except KeyboardInterrupt:
        r.reporter.note(f"interrupted: {len(r.units.rows)} units kept in {opts.out / 'units.jsonl'}; "
                        "rerun the same command to resume")
        raise
    finally:
        # 6) the results, from every unit in the file (this invocation's and earlier ones')
        r.meta["seconds"] = time.perf_counter() - t_start
        r.meta["new_units"] = r.new_units
        res = aggregate(r.units.rows, [] if opts.baseline_only else list(opts.variants), seeds, scenarios, r.meta)
        atomic_write(opts.out / "results.json", json.dumps(res, indent=1, ensure_ascii=False) + "\n")
        atomic_write(opts.out / "results.md", to_markdown(res))
        lock.close()
    return res


def _claim(opts: Options) -> IO[str]:
    """Take DIR/.lock and check (or write) DIR/run.json; the open lock file, held for the whole run."""
    signature: dict[str, Any] = {"scenarios_sha256": hashlib.sha256(opts.scenarios.read_bytes()).hexdigest(),
                                 "base": opts.base_args, "mode": opts.mode, "cross": opts.cross,
                                 "forget": opts.forget, "limit": opts.limit, "quick": opts.quick}
    if opts.split != "all":  # (only when set: older run directories keep their signature)
        signature["split"] = opts.split
    if opts.baseline_only:  # its baseline rows have no controls: never mixed with a full run's
        signature["baseline_only"] = True
    if opts.task_tries != 1:
        signature["task_tries"] = opts.task_tries
    if opts.in_session:
        signature["in_session"] = True
    return claim(opts.out, signature)


def _meta(opts: Options, base_cfg: Config, seeds: list[int], scenarios: list[Scenario],
          all_sc: list[Scenario]) -> dict[str, Any]:
    of = splits(all_sc)
    return {
        "command": "continualcode bench learn " + shlex.join(opts.argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"), "mode": opts.mode, "seeds": seeds,
        "cross": opts.cross, "forget": opts.forget, "quick": opts.quick, "task_tries": opts.task_tries,
        "in_session": opts.in_session,
        "split": opts.split, "baseline_only": opts.baseline_only,
        "scenarios_file": _shown_path(opts.scenarios), "n_scenarios": len(scenarios),
        "scenario_ids": [s.id for s in scenarios], "scenario_split": {s.id: of[s.id] for s in scenarios},
        "base_overrides": opts.base_args,
        "config": {k: v for k, v in chz.asdict(base_cfg).items() if isinstance(v, str | int | float | bool)},
        "variants": {} if opts.baseline_only else {n: {"overrides": v.overrides, "replay": v.replay}
                                                   for n, v in opts.variants.items()},
    }


def _run_group(r: Run, seed: int, names: list[str]) -> None:
    """One seed and backend group: its model loaded once, its baseline, then its variants."""
    first_cfg = r.opts.config_for(r.opts.variants[names[0]] if names else Variant(), seed)
    bname = _baseline_name(first_cfg, r.opts.config_for(Variant(), seed))
    keys = [(n, seed, s.id) for n in (bname, *names) for s in r.scenarios]
    left = sum(k not in r.units.done for k in keys)
    r.reporter.advance(len(keys) - left)
    if not left:
        return
    # 3) one backend for this seed and group; the adapter snapshot right after load
    r.reporter.describe(f"seed {seed} · loading {first_cfg.model_name}")
    backend: Backend = build_backend(first_cfg)
    if "snapshot" not in backend.capabilities:
        raise ValueError(f"backend {first_cfg.backend} cannot snapshot/restore the adapter")
    r.meta["model"] = backend.model_id
    r.meta.setdefault("dtype", str(getattr(backend, "dtype", "")))
    base = Ctx(backend, make_renderer(backend, first_cfg), first_cfg, backend.snapshot(), seed)
    # 4) the shared baseline, once per seed (and backend group)
    baseline = _run_baseline(r, base, bname)
    r.reporter.describe(f"seed {seed} · variants")
    # 5) the variants, each from the same snapshot
    for name in names:
        _run_variant(r, dataclasses.replace(base, cfg=r.opts.config_for(r.opts.variants[name], seed)), name, baseline)


def _run_baseline(r: Run, ctx: Ctx, bname: str) -> Baseline:
    """The baseline units of this seed and group not yet in the file; then all of them."""
    seed = ctx.seed
    for sc in r.scenarios:
        key = (bname, seed, sc.id)
        if key in r.units.done:
            continue
        r.reporter.describe(f"seed {seed} · {bname} · {sc.id}")
        t0 = time.perf_counter()
        recs = baseline_unit(ctx, sc, controls=not r.opts.baseline_only, floor=not r.opts.baseline_only)
        r.add({"key": list(key), "kind": "baseline", "variant": bname, "seed": seed, "scenario": sc.id,
               "preference": sc.preference, **recs, "sec": round(time.perf_counter() - t0, 2)})
    return Baseline(bname, {u["scenario"]: u for u in r.units.rows
                            if u["kind"] == "baseline" and u["variant"] == bname and u["seed"] == seed})


def _run_variant(r: Run, ctx: Ctx, name: str, baseline: Baseline) -> None:
    """All scenarios of one variant and seed not yet in the file."""
    b, seed, opts, scenarios = ctx.backend, ctx.seed, r.opts, r.scenarios
    sequential = opts.mode == "sequential"
    state_dir = opts.out / "state" / f"{_safe(name)}-s{seed}"
    # 1) the adapter (and memory): the base, or (resuming a sequence) as after the last finished unit
    b.restore(ctx.base)
    past, changed, rules = _resume_sequence(r, b, name, seed, state_dir) if sequential else ([], False, [])
    memory = Memory(None, rules) if ctx.cfg.memory else None  # rules with their tasks, resuming
    learner: BenchLearner | None = None
    if ctx.cfg.enable_training:
        from continualcode.learn.step import Learner

        learner = BenchLearner(Learner(b, ctx.renderer, ctx.cfg.learn_config()), replay=opts.variants[name].replay,
                               past=past, held_out=r.held_out)
    # 2) each scenario: learn from the user's corrections, measure, write the unit
    for pos, sc in enumerate(scenarios):
        key = (name, seed, sc.id)
        if key in r.units.done:
            continue
        r.reporter.describe(f"seed {seed} · {name} · {sc.id}")
        if not sequential:
            b.restore(ctx.base)
            changed = False
            if learner is not None:
                learner.past.clear()
            if memory is not None:  # each scenario starts with an empty memory, as with the base adapter
                memory = Memory(None)
        earlier = [(o, i, o.fresh[i]) for o in scenarios[:pos] for i in range(min(opts.forget, len(o.fresh)))] \
            if sequential else []
        t0 = time.perf_counter()
        recs, changed = variant_unit(ctx, sc, learner, cross=cross_tasks(scenarios, pos, opts.cross),
                                     earlier=earlier, baselines=baseline.rows, changed_before=changed,
                                     memory=memory, tries=opts.task_tries, in_session=opts.in_session)
        if sequential:  # 3) the adapter and replay buffer after this unit, to resume the sequence from
            ck = state_dir / f"after-{pos + 1}"
            b.save(ck)
            (ck / "replay.json").write_text(json.dumps([c.to_dict() for c in (learner.past if learner else [])]))
        r.add({"key": list(key), "kind": "variant", "variant": name, "seed": seed, "scenario": sc.id,
               "preference": sc.preference, "baseline": baseline.name, "position": pos, "mode": opts.mode,
               "changed": changed, **recs, "sec": round(time.perf_counter() - t0, 2)})
        if sequential:  # the committed unit's checkpoint is the one to resume from; drop the older ones
            for old in state_dir.glob("after-*"):
                if old.name != f"after-{pos + 1}":
                    remove_checkpoint(old)
    b.restore(ctx.base)


def _resume_sequence(r: Run, b: Backend, name: str, seed: int,
                     state_dir: Path) -> tuple[list[Correction], bool, list[Rule]]:
    """Sequential mode: load the adapter saved after this variant's last finished unit; its replay
    buffer, whether the adapter had changed, and the memory rules after that unit (its row's).
    Nothing done yet: ([], False, [])."""
    done = [s for s in r.scenarios if (name, seed, s.id) in r.units.done]
    if not done:
        return [], False, []
    ck = state_dir / f"after-{len(done)}"
    b.load(ck)
    past = [Correction.from_dict(d) for d in json.loads((ck / "replay.json").read_text())]
    mine = [u for u in r.units.rows if u["kind"] == "variant" and u["variant"] == name and u["seed"] == seed]
    changed = any(u.get("changed") for u in mine)
    last = max(mine, key=lambda u: u["position"])
    tasks = last.get("memory_tasks") or []
    rules = last.get("memory") or []
    return past, changed, [Rule(t, tuple(tasks[i]) if i < len(tasks) else ()) for i, t in enumerate(rules)]


# --- files and the command ------------------------------------------------------------------------


def _shown_path(p: Path) -> str:
    """The scenario file as results show it: relative to the package's repository or the working
    directory when under one (no machine paths in committed results), else as given."""
    full = p.expanduser().resolve()
    for root in (REPO, Path.cwd()):
        if full.is_relative_to(root):
            return str(full.relative_to(root))
    return str(p)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)[:80]


def remove_checkpoint(p: Path) -> None:
    """Remove a saved adapter directory, or the symlink the backend's atomic save made and its target."""
    if p.is_symlink():
        target = p.resolve()
        p.unlink()
        shutil.rmtree(target, ignore_errors=True)
    else:
        shutil.rmtree(p, ignore_errors=True)


def main(args: list[str]) -> int:
    """`continualcode bench learn …`; 0 on success, 2 on a usage error, 130 when interrupted."""
    from continualcode.backends.base import BackendError

    try:
        opts = parse_args(args)
        res = run(opts)
    except SystemExit as e:  # argparse: usage already printed
        return int(e.code or 0)
    except (ValueError, UsageError, FileNotFoundError) as e:
        print(f"continualcode bench learn: {e}", file=sys.stderr)
        return 2
    except BackendError as e:
        print(f"continualcode bench learn: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    print(f"wrote {opts.out / 'results.md'} and results.json ({res['meta']['new_units']} new units)")
    return 0
