"""The learning benchmark (`continualcode bench learn`): a simulated user drives the real agent.

Does a correction stick on new tasks, and what does it break?  The real model, the real tools
and a fresh temp workspace per task; only the user is simulated.  The scenario format, the
decision rules, the metrics, the modes and the output files are specified in docs/bench-learn.md.

    scenario.py  scenarios, matchers, decisions, the bash guard, the dev/test split, held-out prompts (pure)
    variants.py  what is compared: config overrides (+ replay, memory), the learner as logged and guarded
    records.py   the on-disk records (units.jsonl rows, per-task records) as types
    tasks.py     the simulated user running tasks on a `Session`; one unit's records
    run.py       options, the resumable units file, the loop over seeds × variants × scenarios
    metrics.py   results.json from the unit rows (the headline: first retry, paired persistence, drift floor)
    report.py    results.md from results.json

The benchmark knows the agent only through `Session`, the `Learner` and a backend, built through
`continualcode.build` from a `continualcode.config.parse_config` config.
"""

# `run` and `metrics` stay the submodules' names (their main functions are learn.run.run, learn.metrics.metrics)
from continualcode.bench.learn.metrics import aggregate, bootstrap_gain, forgetting_curve, headline, sign_test, spread
from continualcode.bench.learn.report import best_variant, to_markdown
from continualcode.bench.learn.run import Options, Reporter, Units, main, parse_args, remove_checkpoint
from continualcode.bench.learn.scenario import (
    PUBLIC,
    Matcher,
    Scenario,
    Task,
    decide,
    held_out,
    load_scenarios,
    select_split,
    splits,
    unsafe,
)
from continualcode.bench.learn.tasks import Ctx, SimUser, baseline_unit, retries, run_task, variant_unit
from continualcode.bench.learn.variants import VARIANTS, BenchLearner, PromptLeak, Variant, resolve_variants

__all__ = [
    "PUBLIC", "VARIANTS", "BenchLearner", "Ctx", "Matcher", "Options", "PromptLeak", "Reporter", "Scenario",
    "SimUser", "Task", "Units", "Variant", "aggregate", "baseline_unit", "best_variant", "bootstrap_gain", "decide",
    "forgetting_curve", "headline", "held_out", "load_scenarios", "main", "parse_args", "remove_checkpoint",
    "resolve_variants", "retries", "run_task", "select_split", "sign_test", "splits", "spread", "to_markdown",
    "unsafe", "variant_unit",
]
