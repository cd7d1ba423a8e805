"""Which of the project's rules a task's prompt carries (config `memory_rules`).

Why: measured with the 0.5B model (`bench learn --mode sequential`, learn ANALYSIS), one rule in the prompt
lifts its preference on fresh tasks from 33% to 70%, but the same rules shown all together, six of them by
the seventh correction, bring it back to 30% (0 up / 12 down against each rule alone): a small model
follows the wrong rule, or none, when every rule the project ever got sits in front of every task.  Claude
Code and aider put the whole of CLAUDE.md / the conventions file in each prompt; a large model can sort it
out, a 0.5B one cannot.  So a task gets the few rules that are about it.

How (pure: rules and a task text in, rule texts out):
1. Each rule is a bag of words (`retrieve.words`: identifiers split, stemmed, filler dropped) of its own
   text and of the tasks it was given on (`memory.Rule.tasks`: "run greet.py" is the best description of
   when "run scripts with python3" applies).
2. Score: BM25 of the task's words over the rules.
3. Shown: the rules scoring at least `RELATIVE` of the best, at most `k`, in the memory's order (oldest
   first, as the file lists them).  With no more than `k` rules, all of them (nothing to choose); when
   no rule shares a word with the task, the `k` newest (what the user cared about last).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

from continualcode.learn.memory import Memory, Rule, project_block
from continualcode.retrieve import bm25, words

RELATIVE = 0.5  # a rule is shown when it scores at least this share of the best one


def recall(rules: Sequence[Rule], task: str, k: int) -> list[str]:
    """The texts of the rules `task`'s prompt carries (see the module docstring); `k` <= 0: all of them."""
    if k <= 0 or len(rules) <= k:
        return [r.text for r in rules]
    scores = bm25(set(words(task)), [Counter(words(" ".join((r.text, *r.tasks)))) for r in rules])
    best = max(scores)
    if best <= 0:
        return [r.text for r in rules[-k:]]
    order = sorted(range(len(rules)), key=lambda i: (-scores[i], -i))  # best first, the newer on a tie
    chosen = {i for i in order[:k] if scores[i] > 0 and scores[i] >= RELATIVE * best}
    return [r.text for i, r in enumerate(rules) if i in chosen]


class TaskRules:
    """A session's `notes`: the rules that open each task's user turn, those `recall` picks for the task among
    the rules not in the system prompt (`opening`, with `memory_at=system`).  Asked again at every task, so a
    rule given during the session opens the later tasks it is about, next to them rather than only somewhere
    above in the conversation (and again in a context that starts fresh, config `earlier_tasks`)."""

    def __init__(self, k: int, opening: Iterable[str] = ()) -> None:
        self.k = k
        self.opening = frozenset(r.lower() for r in opening)

    def __call__(self, memory: Memory | None, task: str) -> str:
        if memory is None:
            return ""
        rules = [r for r in memory.entries if r.text.lower() not in self.opening]
        return project_block(recall(rules, task, self.k))
