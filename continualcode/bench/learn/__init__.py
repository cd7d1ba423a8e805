"""The learning benchmark (`continualcode bench learn`): a simulated user drives the real agent.

Does a correction stick on new tasks, and what does it break?  The real model, the real tools
and a fresh temp workspace per task; only the user is simulated.  The scenario format, the
decision rules, the metrics, the modes and the output files are specified in docs/bench-learn.md.

    scenario.py  scenarios, matchers, decisions, the bash guard (pure)
    variants.py  what is compared: config overrides (+ replay), and the learner as logged
    records.py   the on-disk records (units.jsonl rows, per-task records) as types
    tasks.py     the simulated user running tasks on a `Session`; one unit's records
    run.py       options, the resumable units file, the loop over seeds × variants × scenarios
    metrics.py   results.json from the unit rows
    report.py    results.md from results.json

The benchmark knows the agent only through `Session`, the `Learner` and a backend, built through
`continualcode.build` from a `continualcode.config.parse_config` config.
"""

# `run` and `metrics` stay the submodules' names (their main functions are learn.run.run, learn.metrics.metrics)
from continualcode.bench.learn.metrics import aggregate, forgetting_curve, spread
from continualcode.bench.learn.report import best_variant, to_markdown
from continualcode.bench.learn.run import Options, Reporter, Units, main, parse_args, remove_checkpoint
from continualcode.bench.learn.scenario import PUBLIC, Matcher, Scenario, Task, decide, load_scenarios, unsafe
from continualcode.bench.learn.tasks import Ctx, SimUser, baseline_unit, retries, run_task, variant_unit
from continualcode.bench.learn.variants import VARIANTS, BenchLearner, Variant, resolve_variants

__all__ = [
    "PUBLIC", "VARIANTS", "BenchLearner", "Ctx", "Matcher", "Options", "Reporter", "Scenario", "SimUser", "Task",
    "Units", "Variant", "aggregate", "baseline_unit", "best_variant", "decide", "forgetting_curve",
    "load_scenarios", "main", "parse_args", "remove_checkpoint", "resolve_variants", "retries", "run_task",
    "spread", "to_markdown", "unsafe", "variant_unit",
]
