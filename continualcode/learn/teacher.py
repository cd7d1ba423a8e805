"""The self-teacher's context: the student's exact context plus the user's correction.

The teacher is the same model given privileged context; it scores the student's own completion
tokens in one forward pass.  What it is shown:
- the correction text (a denial's correction, or an edit's argument diff) as the LAST user turn
  (a probe on Qwen2.5-Coder-0.5B: p(correct tool) 0.78 with the correction as the last user turn,
  0.32 when appended to the task message);
- intermediary feedback accumulated in the session;
- a demonstration when one exists (the edited call, or the call approved after a denial), in
  SDPO's "a correct reply" form;
- with `sees_attempt=True` (the seed), the failed attempt itself as an assistant turn before the
  correction; the SDPO paper found excluding it better (teacher entropy collapses when included).
Pure functions of messages; the renderer turns them into ids.
"""

from __future__ import annotations

from continualcode.learn.prompts import task_of
from continualcode.records import INSTEAD, TASK_REMINDER, Correction, Message


def privileged_text(c: Correction, *, with_demonstration: bool = True) -> str:
    """The user turn that makes the model its own teacher: the correction in the words the retry reads it in
    ("Do this instead: …", then the task).  Worded "Correction from the user: … Reply to the task with this
    correction applied.", the 1.5B teacher read "applied" as a change to make: after "always run tests with
    python -m pytest -q, never bare pytest; the stop tests are in tests/test_tenacity.py" it put 0.52 on
    `replace` and 0.24 on `bash` (a user trial; the step taught the student to `replace` in the test file on
    every later task, even "run python -m pytest -q tests/test_tenacity.py").  Sampled from the teacher's
    context on the retry benchmark's scenarios, its call complied in 43 of 60 samples against 32 (dev half,
    chose; held out 38 of 54 against 31) and wrote prose instead of a call in 8 against 22 (dev;
    bench/results/learn/teacher-wording/)."""
    parts = []
    if c.feedback:
        parts.append("Notes from the user about this project:\n" + "\n".join(f"- {f}" for f in c.feedback))
    parts.append(INSTEAD.format(fix=c.text))
    if with_demonstration and c.demonstration:
        parts.append(f"A correct reply is:\n{c.demonstration}")
    task = task_of(c.messages)
    return "\n\n".join(parts) + (TASK_REMINDER.format(task=task) if task else "")


def teacher_messages(c: Correction, *, sees_attempt: bool = False) -> list[Message]:
    """The student's context + (optionally the failed attempt) + the correction as the last user turn."""
    msgs = list(c.messages)
    if sees_attempt:
        msgs.append(Message("assistant", c.attempt_text))
        msgs.append(Message("user", "That call was denied.\n\n" + privileged_text(c)))
    else:
        msgs.append(Message("user", privileged_text(c)))
    return msgs
