"""A reply in words, judged: whether it answers, tells how to use the tools instead, or names what nothing showed.

Pure text in, verdicts out; the rails (rails.py) keep what the session has shown (`seen`) and decide when each
check applies.  The messages are what the model is told back, in place of its reply.

A reply that is neither a call nor an answer (a call written as text in a fenced block, after prose that tells
how to use the tools: all 125 of the committed task transcripts' such replies) is judged by its prose too
(`instead_of`): it was told "answer in a sentence or two of your own words", about a reply that was prose
already; what its words get wrong (a name nothing showed, telling how to use a tool) is what to say back.
"""

from __future__ import annotations

import builtins
import io
import keyword
import re
from collections.abc import Container

from continualcode.reads import GREP_HIT, READ_NUMBER
from continualcode.tools import TOOL_NAMES
from continualcode.tools.search import NO_MATCHES

UNGROUNDED = ("your answer names {names}, which no tool result of this session shows: look it up with a tool, "
              "or answer only with what the results show")

NOT_AN_ANSWER = ("answer the task in a sentence or two of your own words (name the file and the function, say what "
                 "the code does); do not paste tool output")

NOTHING_FOUND = (NO_MATCHES, "no files match ")  # how grep and glob say they found nothing

NARRATED = ("do not tell how to use the tools: you have them.  If the results above answer the task, answer it "
            "from them in your own words; else make the call yourself")

NAME_THE_FILE = ("the task asks where: say in which file (its path, as the results show it) and in which function "
                 "or class")

ASKS_NEXT = ("do not ask the user for a next step: say in a sentence or two what this task found or changed (the "
             "file, the function, what it does now)")

NULL_WORDS = frozenset({"null", "none", "nil", "n/a", "undefined", "nan"})  # a reply that stands for no answer

_NUMBERED, _HIT = READ_NUMBER, GREP_HIT  # a line as read shows it: (number); as grep does: (file, line, text)

_LETTERS = re.compile(r"[A-Za-z]{2,}")

# a reply that tells how to use one of the agent's own tools ("you can use the `grep` function with the pattern
# `def pluralize`"), or how it used one ("I used the `grep` function to search for …", as its answer): the 1.5B
# model's narration instead of acting or answering, in 60 of its 615 text replies in bench tasks
_NARRATION = re.compile(r"\b(?:use|used|call|called|using|calling|run|ran|running)\s+(?:the\s+)?"
                        r"`?(grep|read|glob|write|edit_lines|replace|bash)`?\s+(?:function|tool|command)\b", re.I)

# what an answer asserts exists: a called name `f(`, a file path with a common extension, or a name alone in
# backticks (`` `compute_next_job` ``, `` `def underscore` ``): the 1.5B model named the function it had made up and
# grepped for in vain, "I used the `grep` function to search for the `def compute_next_job` function" (dev split)
_NAMED = re.compile(r"\b([A-Za-z_]\w*)\s*\(|([\w./-]*\w\.(?:py|pyi|md|rst|txt|cfg|toml|json|ya?ml|ini|sh|js|ts))\b"
                    r"|`(?:(?:async )?def |class )?([A-Za-z_]\w*)(?:\(\))?`")

# builtins and the methods of built-in types (`.strip(`, `.replace(`): an answer may name them freely
_BUILTINS = frozenset(dir(builtins)).union(
    *(dir(t) for t in (str, bytes, list, dict, set, tuple, int, float, io.TextIOBase)), keyword.kwlist,
    TOOL_NAMES, ("self", "cls"))  # and the agent's tools
_FENCED = re.compile(r"```.*?(?:```|$)", re.S)  # a fenced block: code or a call written out, not the prose


def names_a_file(text: str) -> bool:
    """Whether an answer names a file by its path or name with a suffix (`schedule/__init__.py`, `parse.py`)."""
    return any(path for _, path, _ in _NAMED.findall(text))


def not_an_answer(text: str, question: bool) -> bool:
    """Text that answers nothing: to a question, fewer than two words ('101', 'NULL', '10' were the 0.5B
    model's answers after a read; after a change 'Done.' is fine); to anything, a null word alone ('NULL'
    after running schedule's tests, in a hand trial) or a tool's output pasted instead of an answer: lines as
    read or grep show them (two or more), or a search's "no matches" (the 0.5B model answered with a whole
    grep result, in a hand trial on python-slugify)."""
    return ((question and len(_LETTERS.findall(text)) < 2) or text.strip().rstrip(".").lower() in NULL_WORDS
            or len(_NUMBERED.findall(text)) >= 2 or len(_HIT.findall(text)) >= 2
            or text.lstrip().startswith(NOTHING_FOUND))


# a reply that hands the turn back instead of reporting: "To continue, please provide the next step of the
# process." right after the fix it asked for was made (user trials on isodate and python-dotenv), "To continue with
# the task, please provide the offset and limit for the next part of the file." (8 of the 176 answers after a
# change in the committed task transcripts)
_ASKS_NEXT = re.compile(r"^\W*to continue\b|\bplease provide\b|\bprovide (?:me )?(?:with )?the next\b"
                        r"|\bwhat (?:would you like|should i do|do you want)(?: me)?(?: to do)? next\b", re.I)


def asks_for_next_step(text: str) -> bool:
    """Whether a reply asks the user for the next step (or for more input) and names no file: it reports nothing
    of the task (`_ASKS_NEXT`).  "I changed line 96 of main.py; what should I do next?" reports, and stands."""
    return _ASKS_NEXT.search(text) is not None and not names_a_file(text)


def narrates_tools(text: str) -> bool:
    """Whether a reply tells how to use one of the agent's tools instead of using it or answering: the
    1.5B model answered "where is the plural function defined?" with "you can use the `grep` function with
    the pattern `def pluralize` …" right after that grep had shown the file and line (`bench tasks`, dev)."""
    return _NARRATION.search(text) is not None


def made_up(text: str, seen: Container[str]) -> list[str]:
    """The functions and files an answer names that nothing shown to the model holds (`seen`), in order, once
    each (the 0.5B model answered 'greet(name) in inflection/__init__.py', the worked example's function)."""
    out = []
    for call, path, ticked in _NAMED.findall(text):
        name = call or ticked or path.removeprefix("./")
        if name and name not in seen and name not in _BUILTINS:
            out.append(name)
    return list(dict.fromkeys(out))


def instead_of(text: str, seen: Container[str], error: str) -> str:
    """What to say back about a reply that is neither a call nor an answer (`error`: why not), from its prose (the
    text outside fenced blocks): the names it made up, or that it tells how to use the tools; else `error`."""
    prose = _FENCED.sub(" ", text)
    if names := made_up(prose, seen):
        return UNGROUNDED.format(names=", ".join(names[:3]))
    return NARRATED if narrates_tools(prose) else error
