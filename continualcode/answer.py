"""When a reply in words is not one the model meant, and when a question would end unanswered.

Why.  The grammar (constrain.py) lets the model either call a tool inside `<tool_call>` tags or answer in
plain words.  After a tool result the 0.5B model put ~98% of its next token on '{"' (a call written as
bare JSON, which the grammar bars) and under e^-9 on the tag; the sampler then drew the "answer" from the
2% that was left ("NULL", "PKG-INFO", a browser user-agent string) and the user was shown it.  The
sampler reports how much of the first token's distribution the grammar allowed (`Sample.allowed_mass`);
a reply in words whose first token came from less than `SLIVER` of it is a reply the model barely meant.
It is not shown.  For a question the session asks for the answer in words, as a user would ("answer
from what you have read"), and samples it under a text-only grammar: asked, the model's words are its
own likeliest, not the leftovers of a call.  For any other task it samples again under the call grammar
(the model wanted to act, and the tag is the call's one allowed form).  A question whose task would end
unanswered (the model kept repeating a call; max_turns) is asked the same way once.  A reply that repeats,
word for word, what the session showed the model (the task reminder, an error) is treated as one it barely
meant.

A task that runs out of turns without an answer, that ends on refused replies, or on a denied call the model
keeps proposing, says so in one line (`out_of_turns`, `gave_up`, `denied_again`), never in silence.

No model, no session state; agent.py decides when to use it (`ask_for_answer`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TypeVar

from continualcode.context import ERROR_PREFIX
from continualcode.events import ErrorShown, EventSink
from continualcode.records import Message, Sample
from continualcode.render import Parsed

T = TypeVar("T")
SLIVER = 0.5  # under half of the first token's mass allowed: the model wanted something else
NOT_MEANT = ("the model barely meant this reply in words ({mass:.0%} of its first token was allowed; it wanted "
             "a form the grammar bars)")
ECHOED = "the model repeated, word for word, what the session showed it (a reminder, an error, a result)"
ECHO_WORDS = 5  # a shorter reply may quote a name or a path and still answer ("xmltodict.py")
_ERROR = re.compile(rf"^({re.escape(ERROR_PREFIX.strip())}\s*)+", re.I)  # the session's errors' opening, echoed
# Plain, like a user's: a longer request (name the file and the function, the task restated) was echoed back
# by the 0.5B model as its answer in replays of dev-split transcripts
ANSWER_NOW = "Answer the question now in your own words, from what you have read. Do not call a tool."
OUT_OF_TURNS = ("stopped after {n} tool calls without an answer (max_turns={n}): type a follow-up to go on, or raise "
                "max_turns")
DENIED_AGAIN = ("stopped: the model proposed the call you denied again, {n} times: type what to do instead to go "
                "on")
GAVE_UP = ("stopped: {n} replies in this task were neither a call that could run nor an answer (the last: {why}): "
           "type a follow-up to go on")


def barely_meant(sample: Sample, parsed: Parsed) -> bool:
    """Whether `parsed` is a reply in words whose first token the grammar took from a sliver of the model's
    distribution (False without a grammar: then nothing was masked)."""
    return parsed.text is not None and sample.allowed_mass is not None and sample.allowed_mass < SLIVER


def echoed(text: str, shown: Iterable[str]) -> bool:
    """Whether a reply in words repeats something the session showed the model instead of answering: five
    words or more found whole in one of `shown` (case, spacing and a leading "error:" aside).  The 0.5B
    model answered "The task: What happens when …?" (the reminder after a result), "error: error:answer the
    task in a sentence …" and "parse.py is a file of the project: read it …" (dev split, 4 of 16 tasks)."""
    said = _ERROR.sub("", " ".join(text.split()).lower())
    return len(said.split()) >= ECHO_WORDS and any(said in " ".join(s.split()).lower() for s in shown)


def request() -> Message:
    """The user-role turn that asks for the answer (kept in the conversation, marked as the session's)."""
    return Message("user", ANSWER_NOW, meta={"asked": True})


def out_of_turns(emit: EventSink, result: T, max_turns: int) -> T:
    """`result` (a task that ran out of turns), after one line that says so: the task had ended in silence
    (a user trial on cachetools: the fix made on the twelfth call, the tests the task asked for never run, and
    the prompt simply came back)."""
    emit(ErrorShown(OUT_OF_TURNS.format(n=max_turns)))
    return result


def gave_up(emit: EventSink, result: T, n: int) -> T:
    """`result` (a task ended by its `n`th malformed reply), after one line that says so and why: that end was
    silent too (a user trial on tomli: after its change the 1.5B model's replies were refused three times, and
    the prompt came back with nothing said)."""
    emit(ErrorShown(GAVE_UP.format(n=n, why=result.text)))
    return result


def denied_again(emit: EventSink, result: T, n: int) -> T:
    """`result` (a task ended because the model proposed a call the user denied `n` times more), after one line
    that says so: that end was silent (a user trial on iso8601: the retry after "answer in one sentence" was the
    denied read, three times, and the prompt came back with nothing said)."""
    emit(ErrorShown(DENIED_AGAIN.format(n=n)))
    return result
