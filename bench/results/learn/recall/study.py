"""How often `learn.recall` shows a task its own rule: every scenario of one half of the public suite gives
its correction as a rule (kept with the scenario's task, as the app keeps it), then for each fresh task:
is a rule of the task's own preference among the rules shown?  Pure text; no model.

    python bench/results/learn/recall/study.py dev|test

Printed per `k` (memory_rules) and RELATIVE, with the rules' tasks and without (the rule's own words only).
`memory_rules=3` (RELATIVE 0.5) was chosen on dev; test reports.
"""

from __future__ import annotations

import sys

import continualcode.learn.recall as recall_module
from continualcode.bench.learn.scenario import PUBLIC, load_scenarios, select_split
from continualcode.learn.memory import Memory, Rule


def main(split: str) -> None:
    scenarios = select_split(load_scenarios(PUBLIC), split)
    memory, preference = Memory(None), {}
    for s in scenarios:
        memory.add(s.correction, task=s.task, save=False)
        preference.setdefault(s.correction.lower(), s.preference)
    rules = memory.entries
    n = sum(len(s.fresh) for s in scenarios)
    print(f"{split}: {len(scenarios)} scenarios, {len(rules)} rules, {n} fresh tasks")
    for with_tasks in (True, False):
        shown_rules = rules if with_tasks else [Rule(r.text) for r in rules]
        for k in (1, 2, 3, 4):
            for relative in (0.0, 0.5):
                recall_module.RELATIVE = relative
                hit = shown = 0
                for s in scenarios:
                    for t in s.fresh:
                        got = recall_module.recall(shown_rules, t.task, k)
                        shown += len(got)
                        hit += any(preference[g.lower()] == s.preference for g in got)
                print(f"  rule tasks {'on ' if with_tasks else 'off'} k={k} RELATIVE={relative}: own rule shown "
                      f"{hit}/{n} = {hit / n:.0%}, rules shown {shown / n:.2f} per task")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "dev")
