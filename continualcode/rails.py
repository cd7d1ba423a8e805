"""The guard rails a small model runs on: what makes a proposal unacceptable, and what a task demands
before it may be answered in words.

Pure bookkeeping over calls and their results: no model, no terminal.  The `Session` asks `review`
about each parsed proposal (it returns the proposal, or an error to send back, or a repeat to sample
again), `allow_text` before each sample (the grammar then bars text), and tells `ran` what each
executed call did.  `workspace_rails.py` gives a session's rails the workspace's judgement of a change
(whether it breaks the file, cuts it, changes nothing, can be mended, or amends a denied change).  Why each
rule exists, with the failure it answers: docs/agent.md.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from continualcode.context import ERROR_PREFIX
from continualcode.hits import best_hit, widened, wider_hit
from continualcode.intent import (
    asks_a_question,
    asks_for_change,
    asks_for_words,
    asks_only_a_question,
    asks_to_explain,
    asks_to_run_tests,
    asks_where,
)
from continualcode.reads import FileKey, Find, Reads
from continualcode.records import INSTEAD, Message, ToolCall
from continualcode.render import EXAMPLE_FILES, TEXT_ARGS, Parsed, placeholder_argument
from continualcode.replies import (
    ASKS_NEXT,
    NAME_THE_FILE,
    NARRATED,
    NOT_AN_ANSWER,
    NOTHING_FOUND,
    UNGROUNDED,
    asks_for_next_step,
    instead_of,
    made_up,
    names_a_file,
    narrates_tools,
    not_an_answer,
)
from continualcode.tools import ToolError, validate_args
from continualcode.tools.replace import AMBIGUOUS, INSIDE_WORDS
from continualcode.tools.search import IS_A_FILE

REPEAT_ERROR = "the model proposed a call the user had denied in this task again"
DENIED = "Denied: the call was not run."  # the user turn after a denied call opens so (agent.py; docs/agent.md)
DENIAL = f"{DENIED} {INSTEAD}"  # with the correction, as the call's replacement
LOOP_ERROR = ("the model repeated a call whose result it already has (a read-only call, one that failed, or a "
              "change just made)")
LOOP_NOTE = ("You already made this call (or read these lines through the file's end) and its result is above; "
             "nothing has changed since. Use that result: make a different call, or answer.")
ASKED_ONLY = "the task asks a question, not for a change: answer it in words; do not change files"
CHANGE_FIRST = "the task asks for a change: make it (write, edit_lines or replace) before you answer"
RUN_FIRST = "the task asks to run the tests: run them with bash (after your last change) before you answer"
READ_FIRST = "read {path} before you change it (use write only for new files)"
READ_TO_EXPLAIN = "the task asks what code does: read it before you answer"
BREAKS_SYNTAX = "the proposed change would leave the file unable to parse as Python"
CUTS_FILE = "the proposed write would leave the file with less than half its lines"
EXAMPLE_FILE = ("the {arg} argument names {name}, the worked example's file, which this project does not have: use "
                "the project's own files (listed above)")
REJECTED_AGAIN = "the model proposed a call these rails had refused in this task again"
READ_ONLY = frozenset({"read", "glob", "grep"})
STAND_IN = ("the {arg} argument has a line that stands in for the file's own lines (like <original content>): "
            "the file would hold that line, not them; write out every line, or change only the lines to change")
CHANGING = frozenset({"write", "edit_lines", "replace"})
NO_CHANGE = ("the proposed change would leave the file as it is (the same text in place of itself): change "
             "what the task asks to change, or answer")
UNASKED_RENAME = ("the task does not ask to rename {old}: a new name changes nothing that it does.  Change the lines "
                  "of {old} that are wrong (read them first if they are not shown above), or answer")
DOCS_ONLY = ("the proposed change touches only docstrings (their examples too), not what the code does: change "
             "the code the task is about")
PASTED = ("the {arg} argument copies how tool results are shown ({what}), which the file does not hold: write "
          "only the file's own lines; to add or change a few lines, change just those (replace or edit_lines)")

_WORD = re.compile(r"[\w./-]+")
_MEANT = re.compile(r"; did you mean ([^?\s,]+)")  # the first file a not-found error names (tools/paths.py)
_A_FILE = re.compile(r"^\((\S+)" + re.escape(IS_A_FILE) + r"\)$", re.M)  # an empty grep for a file's path
_RENAME = re.compile(r"\brenam|\bnew name\b|\b(?:call|name) it\b", re.I)  # words that ask for a new name
_ABOUT_DOCS = re.compile(r"\bdoc|typo|spell|wording|\bexamples?\b", re.I)  # a task (or correction) on docs
# a negation in the clause before a word: "do not rename anything", "leave the docstring alone" ask for nothing
_NEGATED = re.compile(r"(?:\bnot|n't|\bnever|\bno|\bleave|\bwithout|\bkeep)\b[^.;:,!?]*$", re.I)
_IDENTIFIER = re.compile(r"_*[A-Za-z]\w*")  # a name: underscores, then a letter

_FRAME_TAG = re.compile(r"</?(tool_response|tool_call)>")  # the chat template's frame of a call or a result
_READ_LINE = re.compile(r"^( *)(\d+)(\t|\.(?!\d))")  # read: "     7\t" (6 wide), or "     7."
# the first line of a change tool's own result ("replaced 9 occurrences in x.py (at lines …", "wrote 3 lines to")
_RESULT_LINE = re.compile(r"(replaced \d+ occurrences in|replaced lines? \d+(-\d+)? of|wrote \d+ lines? to) \S+")
READ_WIDTH = 6


def pasted_argument(call: ToolCall) -> tuple[str, str] | None:
    """(argument, what) when a file text argument copies the frame tool results are shown in: a first or last
    line that is a `<tool_response>` tag, a first line that is a change tool's result ("replaced 9
    occurrences in …"), or two consecutive lines numbered as read numbers them.  The 1.5B model wrote a test
    file as `<tool_response>` and `     1.import parse` … (`bench tasks`, test split), and inflection's
    module as the one line its `replace` had answered (dev split); a file holding such a tag inside it, or a
    list numbered `1.`, is left alone."""
    for key in sorted(TEXT_ARGS):
        value = call.arguments.get(key)
        if not isinstance(value, str) or not (lines := value.splitlines()):
            continue
        if tags := [line.strip() for line in (lines[0], lines[-1]) if _FRAME_TAG.fullmatch(line.strip())]:
            return key, f"a {tags[0]} tag"
        if _RESULT_LINE.match(lines[0].strip()):
            return key, "a change tool's result line"
        numbers = [int(m.group(2)) if (m := _READ_LINE.match(line)) and len(m.group(1) + m.group(2)) == READ_WIDTH
                   else None for line in lines]
        if any(a is not None and b == a + 1 for a, b in itertools.pairwise(numbers)):
            return key, "read's line numbers"
    return None


def _answer_error(r: Rails, text: str) -> str | None:
    """Why a reply in words is sent back instead of shown as the answer (None: it stands).  The last three
    are sent back once a task, and a second such reply stands."""
    if names := r.ungrounded(text):
        return UNGROUNDED.format(names=", ".join(names[:3]))
    if not_an_answer(text, asks_a_question(r.task)):
        return NOT_AN_ANSWER
    if not r.narrated and narrates_tools(text):
        # once: its second narration named the file and function asked for; refusing it ended a task
        r.narrated = True
        return NARRATED
    if not r.placed and asks_where(r.task) and not names_a_file(text):
        # once: asked which method removes the jobs with a tag and where it is defined, the 1.5B model answered
        # "the `clear` method of the `Scheduler` class" and no file (`bench tasks`, test split)
        r.placed = True
        return NAME_THE_FILE
    if not r.prompted and asks_for_next_step(text):
        # once: "To continue, please provide the next step of the process." was the answer after the fix in two
        # user trials (isodate, python-dotenv)
        r.prompted = True
        return ASKS_NEXT
    return None


Breaks = Callable[[ToolCall], str | None]  # why a change would leave a parsing Python file unparsable, or None
Cuts = Callable[[ToolCall], str | None]  # "REL from N lines to M" for a write that drops most of a file, or None
Mend = Callable[[ToolCall], ToolCall | None]  # the change mended (re-indented, placed, restrung), or None
Idle = Callable[[ToolCall], bool]  # whether a change would leave its file as it is
Amend = Callable[[ToolCall, list[ToolCall]], ToolCall | None]  # the call composed with a denied change, or None


def _evidence(last: Message | None, readonly_done: dict[str, bool], worded: bool) -> bool:
    """Whether an answer may follow `last`: a tool result that worked and found something (not an empty search
    without wider hits), or a denial whose correction asks for words, once a read-only call has worked (iso8601
    trial: "answer in one sentence …", words barred, the denied read 3 times); "use grep first" asks for a call."""
    if last is not None and last.role == "user" and last.content.startswith(DENIED):
        return worded and any(readonly_done.values())
    return (last is not None and last.role == "tool" and bool(last.meta.get("ok", True))
            and not (last.content.startswith(NOTHING_FOUND) and not widened(last.content)))


def _never(_call: ToolCall) -> None:
    return None


@dataclass(frozen=True)
class Verdict:
    """What the rails make of one proposal.

    parsed:      the proposal to go on with (the model's, an error in its place, or a read in its place);
    repeat:      why it should be sampled again (a denied, repeated or refused call), or None;
    redirected:  `parsed` is not the model's own tokens: the read of a file the model wanted to change
                 unseen, its edit re-indented so that the file still parses, or its edit of a denied change
                 made to that change (a denial of it still teaches: the step scores the tokens the model wrote).
    """

    parsed: Parsed
    repeat: str | None = None
    redirected: bool = False


@dataclass
class Rails:
    """One session's rails: the files it has seen (across tasks) and the current task's demands.

    `on=False` keeps only what is not a guard rail: a denied call is never shown again, and a
    read-only call whose result the conversation holds is not run again.
    """

    file_key: FileKey
    on: bool = True
    breaks: Breaks = _never
    cuts: Cuts = _never
    mend: Mend = _never
    idle: Idle = lambda _call: False
    embedded: Breaks = _never  # why a replace_all would change parts of longer words (`Workspace.embedded_replace_all`)
    docs_only: Idle = lambda _call: False  # whether a change touches only docstrings
    amend: Amend = lambda _call, _denied: None  # a retry that edits a denied change, composed with it (amend.py)
    known_files: set[str] = field(default_factory=set)  # read or written in this session: may be changed
    task: str = ""
    must_change: bool = False  # the task asks for a change and no file has been changed yet
    asks_only: bool = False  # the task is a question that names no change: nothing is to be changed
    must_run: bool = False  # the task asks to run the tests and they have not run since the last change
    must_read: bool = False  # the task asks for an explanation and no file has been read in it yet
    denied: dict[str, ToolCall] = field(default_factory=dict)  # calls denied in this task, by canonical text
    # calls whose result the conversation holds and would come out the same: read-only calls since the last
    # change, and a bash command or a change that failed (nothing changed since) -> whether it worked
    readonly_done: dict[str, bool] = field(default_factory=dict)
    rejected: set[str] = field(default_factory=set)  # calls these rails refused in this task
    meant: dict[str, ToolCall] = field(default_factory=dict)  # read-only call -> what its result said was meant
    seen: set[str] = field(default_factory=set)  # words of the tool results, tasks and file listing so far
    narrated: bool = False  # a reply telling how to use the tools was sent back, or a change made, in this task
    placed: bool = False  # an answer to "where" that named no file was sent back in this task (once is enough)
    prompted: bool = False  # a reply asking the user for a next step was sent back in this task (once)
    worded: bool = False  # the last denial's correction asked for words (an answer, an explanation)
    said: str = ""  # the task and the corrections given in it
    reads: Reads | None = None  # what reads showed, and where they should start (made from `file_key` if None)

    def __post_init__(self) -> None:
        self.reads = self.reads or Reads(self.file_key)

    def start_task(self, task: str, code: str = "") -> None:
        """A new task's demands; with `code` (the code matching its words, put before it: retrieve.py) an
        explanation may come without a read, and a read of a file it showed starts at the first chunk shown."""
        self.task, self.denied, self.readonly_done, self.rejected, self.meant = task, {}, {}, set(), {}
        self.said = task
        self.narrated, self.placed, self.worded, self.prompted = False, False, False, False
        self._reads.new_task(code)
        self.must_change = self.on and asks_for_change(task)
        self.asks_only = self.on and asks_only_a_question(task)
        self.must_run = self.on and asks_to_run_tests(task)
        self.must_read = self.on and asks_to_explain(task) and not code

    def allow_text(self, last: Message | None) -> bool:
        """Text is allowed after evidence (`_evidence`), once the task's demands are met."""
        return _evidence(last, self.readonly_done, self.worded) and not self.owed()

    def saw(self, text: str) -> None:
        """Text the model was shown as fact (a tool result, the task, the file listing): what answers
        may name.  Paths count whole, without a leading './', by each trailing part (`tomli/_parser.py` of
        `src/tomli/_parser.py`: the 1.5B model's answer in a user trial was refused for naming it so) and by
        each part.  An empty search's first line is left out: it echoes the pattern, which the search did not find
        (the 1.5B model answered with the `camel_to_snake` it had grepped for in vain)."""
        if text.startswith(NOTHING_FOUND):
            text = text.partition("\n")[2]
        for w in _WORD.findall(text):
            w = w.removeprefix("./").strip(".")
            parts = w.split("/")
            self.seen.update((w, *("/".join(parts[i:]) for i in range(1, len(parts))), *re.split(r"[./-]", w)))

    def ungrounded(self, text: str) -> list[str]:
        """The functions and files an answer names that nothing shown to the model holds (`replies.made_up`)."""
        return made_up(text, self.seen)

    def owed(self) -> str | None:
        """What the task still demands before a text answer (the error that says so), or None."""
        return CHANGE_FIRST if self.must_change else RUN_FIRST if self.must_run else \
            READ_TO_EXPLAIN if self.must_read else None

    def review(self, parsed: Parsed, words: str | None = None) -> Verdict:
        """The proposal as it stands, or an error in its place, or the read it needs first; with a repeat
        error when it should be sampled again.  `words`: the reply as text, when it was sampled as one (an error
        is then said back from them: `replies.instead_of`)."""
        if parsed.error is not None:  # neither a call nor an answer: never judged as the empty answer it is not
            return Verdict(Parsed(error=instead_of(words, self.seen, parsed.error)) if self.on and words else parsed)
        if parsed.text is not None and (owed := self.owed()) is not None:  # the grammar bars this too
            return Verdict(Parsed(error=owed))
        call = parsed.call
        if call is None:
            error = _answer_error(self, parsed.text or "") if self.on else None
            return Verdict(parsed) if error is None else Verdict(Parsed(error=error))
        key, error = call.to_text(), None
        if self.on and (named := self._example_file(call)) is not None:  # before the read a change needs:
            error = EXAMPLE_FILE.format(arg=named[0], name=named[1])  # that read would fail (0.5B, dev split)
        elif self.asks_only and call.name in CHANGING:  # the 1.5B model, asked what humanize() does with
            error = ASKED_ONLY  # `_id`, replaced `author_id` in its docstring, then explained that (dev split)
        elif self.on and not self._may_change(call):
            try:  # a change to a file the model has not seen: what it needs first is that file
                read = ToolCall("read", validate_args("read", {"path": call.arguments.get("path")}))
            except ToolError:
                error = READ_FIRST.format(path=call.arguments.get("path"))
            else:  # a read the user denied is not put in its place again (a user trial on iso8601)
                first = self._reads.before_change(call, read)
                return Verdict(Parsed(call=first), REPEAT_ERROR if first.to_text() in self.denied else None, True)
        elif (arg := placeholder_argument(call)) is not None:
            error = STAND_IN.format(arg=arg) if arg in TEXT_ARGS else (
                f"the {arg} argument {str(call.arguments[arg])[:40]!r} is a placeholder: use a real value from "
                "the project")
        elif self.on and (pasted := pasted_argument(call)) is not None:  # before the syntax check: a clearer why
            error = PASTED.format(arg=pasted[0], what=pasted[1])
        elif self.on and (renamed := unasked_rename(call, self.said, self._reads.find)) is not None:
            # the 1.5B model "fixed" the function a task named by renaming it (`ordinalize` -> `ordinalize2`,
            # `humanize` -> `humanize1`): 89 proposals in 24 committed task transcripts, none of them solved
            error = UNASKED_RENAME.format(old=renamed)
        elif self.on and call.name in CHANGING and not asked(_ABOUT_DOCS, self.said) and self.docs_only(call):
            # asked to fix ordinalize(13), the 1.5B model changed the examples of its docstring (`ordinalize(1)` ->
            # `ordinalize('1')`, six times over); asked to fix is_prerelease, it wrote the task's words into the
            # docstring (a user trial on packaging): ~69 such replaces in 25 committed task transcripts, 2 solved
            error = DOCS_ONLY
        elif self.on and key not in self.readonly_done and (embedded := self.embedded(call)) is not None:
            # the 1.5B model's replace_all of "nd" by "rd" in inflection's module: 30 places, most inside other words
            error = embedded  # (dev split); a change just made is the loop rail's ("made already", not this)
        if error is not None:  # refused; refused again when proposed again, and then sampled again, hotter
            again = key in self.rejected
            self.rejected.add(key)
            return Verdict(Parsed(error=error), REJECTED_AGAIN if again else None)
        if self.on and (made := self.amend(call, [*self.denied.values()])) and made.to_text() not in self.denied:
            # amend.py; the composed change then meets the checks of a change (it may not change the file, or
            # break it: mended or sampled again as the model's own change would be)
            checked = change_verdict(self, Parsed(call=made), made)
            return Verdict(checked.parsed, checked.repeat, True) if checked else Verdict(Parsed(call=made), None, True)
        if (checked := change_verdict(self, parsed, call)) is not None:
            return checked
        at = self._reads.instead_of(call) if self.on and call.name == "read" and key not in self.denied else None
        if at is not None and at.to_text() not in self.denied and at.to_text() not in self.readonly_done:
            # a read from the top of a long file whose definition the task's shown code or the last search named
            # further down: the read of that definition (the 1.5B model read modules from line 1 right after a
            # grep had named `def ordinalize` at line 236; the read's window ended near line 80, dev split)
            return Verdict(Parsed(call=at), redirected=True)
        if self.on and key in self.meant and key not in self.denied:
            # a read or search of a missing path again, after its error named the file meant: that file; a
            # search for a file's path again, after its result said it is a file: the read of that file; a
            # replace refused for a text found more than once, again: with replace_all
            fixed = self.meant[key]
            if fixed.to_text() in self.denied:  # the call it stands for was denied: a repeat of it (packaging trial)
                return Verdict(parsed, REPEAT_ERROR)
            if fixed.to_text() not in self.readonly_done and not (fixed.name == "read" and self._reads.shows(fixed)) \
                    and self.embedded(fixed) is None:  # a rename made already: `_emit` is now inside `_emit_element`
                return Verdict(Parsed(call=fixed), redirected=True)
        held = key in self.readonly_done or (self.on and call.name == "read" and self._reads.holds(call))
        return Verdict(parsed, REPEAT_ERROR if key in self.denied else LOOP_ERROR if held else None)

    def _example_file(self, call: ToolCall) -> tuple[str, str] | None:
        """(argument, file) when a call's argument names a worked example's file that the session was never
        shown (not in the project's listing, a result or the task), else None.  Not grep's `include`: one
        that matches no file is dropped by grep itself (the search may be right; refusing it ended a task)."""
        for key, value in call.arguments.items():
            if key not in ("content", "include") and isinstance(value, str):
                for w in _WORD.findall(value):
                    if (w := w.removeprefix("./").strip(".")) in EXAMPLE_FILES and w not in self.seen:
                        return key, w
        return None

    def deny(self, call: ToolCall, correction: str = "") -> None:
        self.denied, self.worded = {**self.denied, call.to_text(): call}, asks_for_words(correction)
        self.said += "\n" + correction

    def ran(self, call: ToolCall, ok: bool, output: str = "") -> None:
        """What an executed call did to the demands and to what is known."""
        if call.name in READ_ONLY:
            self.readonly_done[call.to_text()] = ok
            if ok and call.name == "grep" and not output.startswith(NOTHING_FOUND):
                self._reads.searched(output)
            if not ok and "path" in call.arguments and (m := _MEANT.search(output)):
                self.meant[call.to_text()] = ToolCall(call.name, {**call.arguments, "path": m.group(1)})
            elif ok and call.name == "grep" and (m := _A_FILE.search(output)):
                self.meant[call.to_text()] = ToolCall("read", validate_args("read", {"path": m.group(1)}))
            elif ok and call.name == "grep" and (hit := wider_hit(output)) is not None:
                self.meant[call.to_text()] = self._reads.at(*hit)
            elif ok and call.name == "grep" and output.startswith(NOTHING_FOUND[0]) and self._one_file(call):
                # an empty search of one file, found nowhere else either: repeated, the read of that file
                self.meant[call.to_text()] = ToolCall("read", validate_args("read", {"path": call.arguments["path"]}))
            elif ok and call.name == "grep" and (hit := best_hit(output, definitions=True, task=self.task)) is not None:
                # a search that found a definition, repeated: the read of it (the 1.5B model grepped `def humanize`
                # four times over after its one hit had named the file and the line, dev split).  Definitions
                # only: sent to a docstring's example or a set's entry instead, it answered from those lines and
                # lost two test tasks it had passed without the redirect (read after the test run)
                self.meant[call.to_text()] = self._reads.at(*hit)
        else:  # files may have changed: a read may now show something new
            if ok or call.name not in CHANGING:  # a failed change changed nothing (a tool writes a whole file or
                self.readonly_done.clear()  # nothing): the reads still hold (97 repeats after one, task transcripts)
                self._reads.changed()
            if ok and call.name in CHANGING:  # a change meant by an earlier refusal may be made already, or moot
                self.must_change, self.meant = False, {k: v for k, v in self.meant.items() if v.name not in CHANGING}
                self.narrated = True  # then "I used the `replace` function to update …" reports it (tomli trial)
                self.must_run = self.must_run or (self.on and asks_to_run_tests(self.task))
            if call.name == "bash":
                self.must_run = False
            if not ok and self.on:  # the same failing command or change again, with nothing changed, fails again
                self.readonly_done[call.to_text()] = False
                if call.name == "replace" and not call.arguments.get("replace_all") and _renames(call) \
                        and output.removeprefix(ERROR_PREFIX).startswith(AMBIGUOUS) and INSIDE_WORDS not in output:
                    # refused because its text occurs more than once, repeated: every one replaced (the user sees
                    # them all in the preview); the 1.5B model repeated `replace` `_irregular` -> `_add_irregular`
                    # up to 11 times after that refusal, on a task that asked to rename every call (dev split).
                    # A rename only: made of any text, it replaced every "1" of a module by "2" (182 of them; a
                    # user trial on toolz, every call approved)
                    self.meant[call.to_text()] = ToolCall("replace", {**call.arguments, "replace_all": True})
            elif self.on and call.name in CHANGING:  # the same change again, with nothing else changed since: made
                # already (the 1.5B model ran replace_all `_irregular` -> `_add_irregular` three times over, each
                # adding a prefix: `_add_add_add_irregular`, dev split)
                self.readonly_done[call.to_text()] = True
        if ok and call.name == "read":
            self.must_read = False
            self._reads.read(call, output)
        if ok and call.name in ("read", *CHANGING) and (key := self.file_key(call)):
            self.known_files.add(key)

    @property
    def _reads(self) -> Reads:
        assert self.reads is not None  # set in __post_init__
        return self.reads

    def _one_file(self, call: ToolCall) -> bool:
        """Whether a call's path names one existing file (a grep of a file, not of a directory)."""
        key = self.file_key(call)
        return bool(key) and Path(key).is_file()

    def _may_change(self, call: ToolCall) -> bool:
        """Calls that change nothing, and a write that creates a file, always; an edit, or a write over an
        existing file, only once the session has read (or written) it."""
        if call.name not in CHANGING:
            return True
        key = self.file_key(call)
        if not key or key in self.known_files:
            return True
        return call.name == "write" and not Path(key).exists()


def _renames(call: ToolCall) -> bool:
    """Whether a replace swaps one name for another (`_irregular` -> `_add_irregular`), each a whole
    identifier with a letter in it."""
    old, new = call.arguments.get("old_string"), call.arguments.get("new_string")
    return all(isinstance(t, str) and _IDENTIFIER.fullmatch(t) for t in (old, new))


def asked(words: re.Pattern[str], said: str) -> bool:
    """Whether `said` (a task and its corrections) asks for what `words` match: a match with no negation
    before it in its clause ("do not rename anything", "leave the docstring alone": trials on jmespath and
    packaging)."""
    return any(not _NEGATED.search(said[max(0, m.start() - 40):m.start()]) for m in words.finditer(said))


def unasked_rename(call: ToolCall, said: str, find: Find) -> str | None:
    """The name a `replace` would rename that nothing asked to rename, else None: a function or class its
    file defines (`find`: the line of a file where a text occurs), given a name the file does not hold, while
    `said` (the task and its corrections) says neither "rename" nor that new name (a swap of one existing
    name for another, `startswith` -> `endswith`, is a fix, not a rename)."""
    if call.name != "replace" or not _renames(call) or asked(_RENAME, said):
        return None
    old, new, path = call.arguments["old_string"], call.arguments["new_string"], str(call.arguments["path"])
    if re.search(rf"(?<!\w){re.escape(new)}(?!\w)", said) or find(path, new) is not None:
        return None
    heads = (f"{kind} {old}{end}" for kind in ("def", "class") for end in ("(", ":"))
    return old if any(find(path, head) is not None for head in heads) else None


def change_verdict(rails: Rails, parsed: Parsed, call: ToolCall) -> Verdict | None:
    """The rails' verdict on a change that changes nothing, breaks a file that parses or cuts a module down, or
    needs mending; None when none of that holds (or for a call that is not a change, or one the user denied).
    The model's own change and a retry composed onto a denied change (amend.py) both meet it."""
    key = call.to_text()
    if not rails.on or call.name not in CHANGING or key in rails.denied:
        return None
    if rails.idle(call):
        # sampled again (proposed only when every sample is so): the 1.5B model's `replace` of a text by
        # itself, 14 times in 3 of 16 dev tasks, each asked about and then refused by the tool (dev split)
        return Verdict(parsed, NO_CHANGE)
    if call.name == "write" and (placed := rails.mend(call)) is not None and placed.to_text() not in rails.denied:
        # one definition written over its whole module: that definition placed in the module instead; a line
        # break inside a string literal: `\n` (once the user denied the mended write, it goes on as written)
        return Verdict(Parsed(call=placed), redirected=True)
    if rails.breaks(call) is not None:
        # an edit that would break a file that parses: mended when only its indentation or a string's line
        # break is off, else sampled again (and proposed, with the preview's warning, when every sample breaks)
        mended = rails.mend(call) if call.name != "write" else None  # a write: mended above, or not at all
        return Verdict(parsed, BREAKS_SYNTAX) if mended is None else Verdict(Parsed(call=mended), redirected=True)
    if call.name == "write" and rails.cuts(call) is not None:
        # the one function the model means to add, written over the whole module: sampled again (and
        # proposed, with the preview's warning, when every sample does it)
        return Verdict(parsed, CUTS_FILE)
    return None
