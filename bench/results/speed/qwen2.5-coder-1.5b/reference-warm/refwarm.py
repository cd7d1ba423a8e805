"""A correction in a later task waits for the base's prefill of that task's prompt (its KL reference); the
proposal's prompt prefilled under the base while the user reads takes it off the wait (README.md here).

`python refwarm.py [config overrides]`: the 1.5B default at one thread; task A (~1.5k tokens) with a correction
(the adapter moves), then tasks B and C (~3k tokens each, sharing only the system text with A and each other),
each with a denied proposal: B cold, C after `warm(prompt, base=True)` (what speculate.py now runs while the user
reads the proposal).  Prints each update's phases (sec_ref: the reference's scoring) and the warm's own time.
"""

import sys
import time

from continualcode.bench.speed.common import completion_of_length, messages_of_length
from continualcode.build import build_parts
from continualcode.config import parse_config
from continualcode.records import Correction, Message, Sample


def denial(r, tag: str, n_prompt: int) -> Correction:
    """A denied 80-token call after a prompt of ≈ n_prompt tokens whose user turn opens with `tag`."""
    body = messages_of_length(r, n_prompt)[0].content
    msgs = (Message("user", f"({tag}) {body}"),)
    completion = completion_of_length(r, 80)
    return Correction("deny", msgs, r.prompt_ids(list(msgs)), Sample(completion, [0.0] * len(completion), "stop"),
                      r.decode(completion), "use edit_lines at the end of the file, and add a docstring")


def main() -> None:
    parts = build_parts(parse_config(["threads=1", *sys.argv[1:]]))
    b, r, learner = parts.backend, parts.renderer, parts.learner
    for tag, n, warm in (("task A", 1500, False), ("task B", 3000, False), ("task C", 3000, True)):
        c = denial(r, tag, n)
        b.sample(list(c.prompt_ids), max_tokens=4, temperature=0.0)  # the proposal
        t_warm, done = 0.0, 0
        if warm:  # while the user reads it
            t0 = time.time()
            done = b.warm(list(c.prompt_ids), base=True)
            t_warm = time.time() - t0
        rep = learner(c)
        learner.pending.clear()
        print(f"{tag}: prompt {len(c.prompt_ids)}, base warm {done} tokens in {t_warm:.1f} s while reading; "
              f"the update: teacher {rep['sec_teacher']:.1f} s, reference {rep['sec_ref']:.1f} s, "
              f"step {rep['sec_step']:.1f} s, after {rep['sec_after']:.1f} s, total {rep['sec_total']:.1f} s",
              flush=True)


if __name__ == "__main__":
    main()
