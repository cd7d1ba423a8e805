"""The session: query → parse → ask the approver → execute, or learn and retry.  No terminal I/O.

One tool call per turn.  For each proposed call the `Approver` answers with one `Decision`:
- Approve:   execute the call (no learning).  `always=True` also auto-approves that tool later.
- Deny:      with correction text, the learning event: the `Learner` is called exactly once with a
             `Correction`, then the agent retries with the updated weights.  The failed attempt
             and the correction stay in the conversation, so the retry honours them in context
             too.  An empty correction denies without learning and ends the task.
- Edit:      the edited arguments are executed; the learner gets the argument diff as implicit
             correction text and the edited call as a demonstration.
- Feedback:  free-form text kept in the session and handed to the learner with the next
             correction; the same call is then asked about again.
- Abort:     the task ends here.
The decisions and the asking (with the speculative prefill while the user reads) are in `decide.py`.
Learning is one injected callable (`Learner`); the session knows nothing of losses.
Everything that happens is reported as a typed event (`events.py`) through `on_event` (the journal and the UI).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

from continualcode.answer import ECHOED, NOT_MEANT, barely_meant, denied_again, echoed, gave_up, out_of_turns, request
from continualcode.backends.base import Backend, Guided
from continualcode.context import ERROR_PREFIX, follow_up, task_meta, task_overview
from continualcode.decide import Abort, Approve, Approver, Decision, Deny, Edit, Feedback, ask
from continualcode.events import (
    AssistantText,
    CorrectionMade,
    Decided,
    ErrorShown,
    Event,
    EventSink,
    Info,
    Learned,
    LearnStarted,
    MessageAdded,
    Proposal,
    Thinking,
    ToolOutput,
    UserTask,
)
from continualcode.intent import asks_a_question
from continualcode.rails import CHANGING, DENIAL, DENIED, LOOP_ERROR, LOOP_NOTE, READ_ONLY, REPEAT_ERROR
from continualcode.records import FRESH, TASK_REMINDER, Correction, Message, Sample, ToolCall
from continualcode.referred import named_lines
from continualcode.render import Parsed, Renderer
from continualcode.retrieve import HEAD as RETRIEVED
from continualcode.settle import settle_now
from continualcode.speculate import Warmable
from continualcode.textcall import call_in_text, looks_like_call
from continualcode.tools import Workspace
from continualcode.tools.base import one_line
from continualcode.workspace_rails import workspace_rails

__all__ = ["Abort", "Approve", "Approver", "Decision", "Deny", "Edit", "Feedback", "SamplingConfig", "Session"]

Learner = Callable[[Correction], dict[str, Any] | None]
Mode = Literal["any", "calls", "text"]  # what the grammar admits: a call or words (as the rails allow), or one


@dataclass
class SamplingConfig:
    temperature: float = 0.3
    top_p: float = 0.95
    max_tokens: int = 512
    constrained: bool = True
    max_turns: int = 12
    max_malformed: int = 3
    max_repeats: int = 2  # re-samples of a call the user denied in the task, or of a repeated read-only call
    guard_rails: bool = True  # rails.py: act before answering a change or test-run task; read before changing
    repo_map: int = 0  # characters of the classes-and-functions map in the first task's overview (0: none)
    retrieve: int = 0  # characters of the code matching the task's words shown with the listing (retrieve.py)
    remind_task: bool = True  # each tool result and denial ends with the task it serves (TASK_REMINDER)
    speculate: bool = True  # prefill the next prompt while the user reads a proposal (speculate.py)
    earlier_tasks: str = "none"  # what a new task sees of the session's earlier ones: whole, recap or none
    retry_guidance: float = 0.0  # the retry after a correction, weighed towards what the correction says
    ask_for_answer: bool = False  # a reply in words the model barely meant is asked again (answer.py)


REPEAT_TEMPERATURE = 0.7  # the least temperature of a re-sample after a repeated call
# The task ends ("looping") when one repeated call comes back for this many notes: on the dev split the 0.5B
# model, told the result was above, proposed the same grep 25-33 times until max_turns (~80 s of samples).
MAX_LOOP_NOTES = 3
LOOPING = "stopped: the model kept repeating {call} after its result was shown; rephrase the task or name the file"
TEXT_CALL_ERROR = ("a tool call written as text: make the call with <tool_call> tags and a known tool, "
                   "or answer in plain words")
CUT_OFF = ("the reply was cut off at {n} tokens before its call ended: make a shorter call (to change a file, "
           "change only the lines that change, with replace or edit_lines)")


@dataclass(frozen=True)
class Turn:
    """One sampled proposal: the student's exact prompt, its sample, the decoded text, what it parsed to."""

    prompt_ids: list[int]
    sample: Sample
    text: str
    parsed: Parsed
    message: str  # what goes into the conversation: the text, or the proper call for a call spelled out as text
    repeat: bool = False  # a read-only call whose result the conversation already holds
    redirected: bool = False  # not the sampled tokens (an unseen file's read, a re-indented edit); learned from still


@dataclass
class TaskResult:
    status: Literal["answered", "max_turns", "denied", "aborted", "malformed", "looping"]
    text: str = ""
    calls: list[ToolCall] = field(default_factory=list)


def reminded(text: str, task: str, on: bool) -> str:
    """`text` (a tool result, or a denial's correction) closed by the task it serves when `on` (`remind_task`)."""
    return text + TASK_REMINDER.format(task=task) if on and task else text


def args_diff(before: dict[str, Any], after: dict[str, Any]) -> str:
    """A readable correction text from an argument edit."""
    changed = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    return "; ".join(f"{k}: {json.dumps(before.get(k))} -> {json.dumps(after.get(k))}" for k in changed)


@dataclass
class _TaskState:
    """What one task's loop carries between turns."""

    result: TaskResult
    malformed: int = 0
    turn: int = 0
    pending: Correction | None = None  # the last denial, for learning from an approved retry
    loops: dict[str, int] = field(default_factory=dict)  # per repeated call: the notes it was answered with


class Session:
    """Conversation state and the one-call-per-turn loop."""

    def __init__(
        self,
        backend: Backend,
        renderer: Renderer,
        workspace: Workspace,
        approver: Approver,
        *,
        learner: Learner | None = None,
        sampling: SamplingConfig | None = None,
        auto_approve: Sequence[str] = (),
        on_event: EventSink | None = None,
        seed: int | None = None,
        learn_from_approved_retry: bool = False,
        overview: bool = True,
        notes: Callable[[str], str] | None = None,
    ) -> None:
        self.backend = backend
        self.renderer = renderer
        self.workspace = workspace
        self.approver = approver
        self.learner = learner
        self.sampling = sampling or SamplingConfig()
        self.auto_approve = set(auto_approve)
        self.on_event: EventSink = on_event or (lambda _e: None)
        self.messages: list[Message] = []  # the whole conversation; the model sees `context.compact` of it
        self.feedback: list[str] = []
        self.seed = seed
        self.learn_from_approved_retry = learn_from_approved_retry
        self.overview = overview
        self.notes = notes or (lambda _task: "")  # asked at each task: what opens its user turn (app.py: its rules)
        self.rails = workspace_rails(workspace, self.sampling.guard_rails)
        self._n_samples = 0
        self._constraints: dict[tuple[bool, bool, tuple[str, ...] | None], Any] = {}
        self._contrast: Callable[[], list[int]] | None = None  # after a correction: the retry's prompt without it

    def _emit(self, event: Event) -> None:
        self.on_event(event)

    def _constraint(self, allow_text: bool, allow_calls: bool = True) -> Any:
        """The grammar of the next sample (no tools that change files in a question: docs/agent.md)."""
        if not self.sampling.constrained:
            return None
        only = _unchanging(self.renderer.tools) if allow_calls and self.rails.asks_only else None
        if (key := (allow_text, allow_calls, only)) not in self._constraints:
            self._constraints[key] = self.renderer.constraint(allow_text=key[0], allow_calls=key[1], only=only)
        return self._constraints[key]

    def query(self, *, temperature: float | None = None, mode: Mode = "any") -> tuple[list[int], Sample, str]:
        """Sample one assistant turn for the current conversation (at `temperature`, default the config's)."""
        prompt_ids = self.renderer.prompt_ids(self.messages)
        # text only after a tool result that worked (after a failed call the model must try again: rails)
        if mode == "text":  # an answer asked for: words, no call
            constraint = self._constraint(True, False)  # (allow_text, allow_calls)
        else:
            last = self.messages[-1] if self.messages else None
            constraint = self._constraint(mode == "any" and self.rails.allow_text(last))
        seed = None if self.seed is None else self.seed + self._n_samples
        self._n_samples += 1
        s = self.sampling
        sample = _sample(  # a retry after a correction: weighed towards what the correction says
            self.backend, prompt_ids, self._contrast, s.retry_guidance, max_tokens=s.max_tokens,
            temperature=s.temperature if temperature is None else temperature, top_p=s.top_p,
            stop=self.renderer.stop_ids, constraint=constraint, seed=seed)
        return prompt_ids, sample, self.renderer.decode(sample.tokens)

    def _propose(self, mode: Mode = "any") -> Turn | None:
        """Sample, parse and report one proposal, reviewed by the rails (`rails.py`).  A call spelled out as
        text is taken as the call when it names a known tool with valid arguments, else it is malformed
        (never shown as an answer).  A reply in words the model barely meant is sampled again (answer.py).
        A call the user denied in this task, or a read-only call whose result the conversation holds, is
        sampled again, hotter, up to `max_repeats` times; then a denied one ends the task (None), a
        read-only one is answered from the conversation (`Turn.repeat`), and a call the rails refused
        before comes back as the malformed turn it is."""
        s = self.sampling
        turn: Turn | None = None
        repeat: str | None = None
        for attempt in range(1 + s.max_repeats):
            self._emit(Thinking())
            prompt_ids, sample, text = self.query(temperature=None if attempt == 0 else min(
                1.0, max(REPEAT_TEMPERATURE, s.temperature) + 0.15 * (attempt - 1)), mode=mode)
            parsed, message = self.renderer.parse(text), text
            if mode == "any" and s.ask_for_answer and (why := _not_meant(self, sample, parsed)):
                self._emit(Proposal(text, len(sample.tokens), sample.finish_reason, error=why))
                mode = _reask(self)
                self._emit(Thinking())
                prompt_ids, sample, text = self.query(mode=mode)
                parsed, message = self.renderer.parse(text), text
            words, (parsed, message) = parsed.text, _taken(parsed, message, self.renderer.tools, sample, s.max_tokens)
            verdict = self.rails.review(parsed, words)  # an error said back from the words, when it had any
            parsed, repeat = verdict.parsed, verdict.repeat
            if verdict.redirected and parsed.call is not None:
                message = parsed.call.to_text()
            self._emit(Proposal(text, len(sample.tokens), sample.finish_reason,
                                call=None if parsed.call is None else {"name": parsed.call.name,
                                                                        "arguments": parsed.call.arguments},
                                error=repeat or parsed.error))
            turn = Turn(prompt_ids, sample, text, parsed, message, repeat=repeat == LOOP_ERROR,
                        redirected=verdict.redirected)
            if repeat is None:
                return turn
        # it kept coming back: a denied call ends the task; a refused one is malformed; a read-only one is
        # answered from the conversation
        return None if repeat == REPEAT_ERROR else turn

    def _add(self, *msgs: Message) -> None:
        """Append to the conversation; each message is also an event (the journal resumes from them)."""
        for m in msgs:
            self._append(m)
            self._emit(MessageAdded.of(m))

    def resume(self, msgs: Sequence[Message]) -> None:
        """A resumed session's conversation (already in the journal: no events)."""
        for m in msgs:
            self._append(m)

    def _append(self, m: Message) -> None:
        self.messages.append(m)
        if m.role != "assistant" and not (m.role == "user" and m.content.startswith(ERROR_PREFIX)):
            self.rails.saw(m.content)  # shown as fact (not our error messages, which name what an answer got wrong)

    def add_feedback(self, text: str) -> None:
        if text := text.strip():
            self.feedback.append(text)
            self._emit(Decided("feedback", text=text))

    def _learn(self, c: Correction) -> None:
        if self.learner is None:
            return
        self._emit(CorrectionMade(c))
        self._emit(LearnStarted(c.kind))
        try:
            report = self.learner(c)
        except RuntimeError as e:  # the learner restored the adapter; the session goes on
            self._emit(ErrorShown(str(e).splitlines()[0]))
            return
        if report is not None:
            self._emit(Learned.from_report(report))

    # --- the loop -------------------------------------------------------------------------------

    def run_task(self, task: str, *, settle: bool = True) -> TaskResult:
        """Run one user task until a text answer, a denial without correction, an abort or max_turns.  A session's
        first task, and one that starts a fresh context, opens with the project's files.  Then deferred learning."""
        result = self._run_task(task)
        settle_now(self.learner if settle else None, self._emit)  # settle=False: the caller does it (settle.py)
        return result

    def _run_task(self, task: str) -> TaskResult:
        self._emit(UserTask(task))
        meta = task_meta(self.messages, self.sampling.earlier_tasks, self.notes(task))
        if (not self.messages or FRESH in meta) and self.overview and (listing := task_overview(
                self.workspace, task, outline_chars=self.sampling.repo_map, code_chars=self.sampling.retrieve)):
            self._add(Message("system", listing))
        self._add(Message("user", task, meta=meta))
        shown = self.messages[-2].content if len(self.messages) > 1 and RETRIEVED in self.messages[-2].content else ""
        self.rails.start_task(task, code=shown)
        t, self._contrast = _TaskState(TaskResult(status="max_turns")), None
        while t.turn < self.sampling.max_turns:
            context = tuple(self.messages)
            turn = self._propose()
            if turn is None:  # the denied call kept coming back
                return _after_denied_repeats(self, t)
            parsed = turn.parsed
            if parsed.error is not None:
                t.malformed += 1
                self._add(Message("assistant", turn.text), Message("user", f"error: {parsed.error}. Try again."))
                if t.malformed >= self.sampling.max_malformed:
                    return gave_up(self._emit, TaskResult("malformed", parsed.error, t.result.calls), t.malformed)
                continue
            if parsed.text is not None:
                self._add(Message("assistant", turn.text))
                self._emit(AssistantText(parsed.text))
                return TaskResult(status="answered", text=parsed.text, calls=t.result.calls)
            t.turn += 1
            end = self._handle_call(t, context, turn)
            if end is not None:
                return end
        return _answer_now(self, t) or out_of_turns(self._emit, t.result, self.sampling.max_turns)

    def _handle_call(self, t: _TaskState, context: tuple[Message, ...], turn: Turn) -> TaskResult | None:
        """Ask about one proposed call and act on the answer; a TaskResult when the task ends here."""
        call, text = turn.parsed.call, turn.message
        assert call is not None
        if turn.repeat:  # not run again, not asked about: the answer is already in the conversation
            # text may follow only where the call's own result did (an error result leaves it barred)
            ok = self.rails.readonly_done.get(call.to_text(), True)
            self._add(Message("assistant", text), self._tool_message(call, ok, LOOP_NOTE))
            n = t.loops[call.to_text()] = t.loops.get(call.to_text(), 0) + 1
            if n >= MAX_LOOP_NOTES and (end := _answer_now(self, t)) is not None:
                return end
            if n >= MAX_LOOP_NOTES:
                shown = self.workspace.preview(call.name, call.arguments).splitlines() or [call.name]
                why = LOOPING.format(call=shown[0])
                self._emit(ErrorShown(why))
                return TaskResult(status="looping", text=why, calls=t.result.calls)
            return None
        decision = _decide(self, call, text, turn.prompt_ids)
        if isinstance(decision, Abort):
            self._emit(Decided("abort"))
            return TaskResult(status="aborted", calls=t.result.calls)
        if isinstance(decision, Deny):
            self._emit(Decided("deny", text=decision.correction))
            self._add(Message("assistant", text))
            self.rails.deny(call, decision.correction)
            if not (fix := decision.correction.strip()):
                self._add(Message("user", "The user denied this call. Wait for instructions."))
                return TaskResult(status="denied", calls=t.result.calls)
            self._contrast = partial(_uncorrected, self, [*self.messages])  # rendered when a retry is guided
            fix += named_lines(self.workspace, fix, [call, *t.result.calls[::-1]]) if self.rails.on else ""
            t.pending = Correction("deny", context, turn.prompt_ids, turn.sample, turn.text, fix, tuple(self.feedback))
            if turn.redirected:  # its step scores what the model wrote (skipped, 10 of 47 denied tasks took none)
                wrote = one_line(turn.text)[:99]
                self._emit(Info(f"learning on what the model wrote (the rails replaced it): {wrote}"))
            self._learn(t.pending)
            self._add(Message("user", reminded(DENIAL.format(fix=fix), self.rails.task, self.sampling.remind_task)))
            return None
        if isinstance(decision, Edit):
            edited = ToolCall(call.name, decision.arguments)
            diff = args_diff(call.arguments, edited.arguments)
            self._emit(Decided("edit", diff=diff, arguments=decision.arguments))
            self._learn(Correction("edit", context, turn.prompt_ids, turn.sample, turn.text,
                                   f"the user edited the call's arguments: {diff}", tuple(self.feedback),
                                   demonstration=edited.to_text()))
            call, text = edited, edited.to_text()
        else:
            self._emit(Decided("approve", always=decision.always))
            if decision.always:
                self.auto_approve.add(call.name)
            p = t.pending
            if p is not None and self.learn_from_approved_retry:
                self._learn(Correction("approved_retry", p.messages, p.prompt_ids, p.sample, p.attempt_text, p.text,
                                       p.feedback, demonstration=text))
        t.pending = self._contrast = None
        self._add(Message("assistant", text))
        result = self.workspace.run(call.name, call.arguments)
        self._emit(ToolOutput(call.name, result.ok, result.output))
        self._add(message := self._tool_message(call, result.ok, result.output))
        t.result.calls.append(call)
        self.rails.ran(call, result.ok, message.content)
        return None

    def _tool_message(self, call: ToolCall, ok: bool, output: str) -> Message:
        """A tool result as the conversation keeps it: with the rails on, what `context.follow_up` adds (an empty
        search's nearest definitions, a failed replace of the task's words); closed by the task when `remind_task`."""
        output += follow_up(self.workspace, call, ok, output, self.rails.task) if self.rails.on else ""
        return Message("tool", reminded(output, self.rails.task, self.sampling.remind_task),
                       meta={"tool": call.name, "ok": ok})


def _decide(session: Session, call: ToolCall, text: str, prompt: list[int]) -> Decision:
    """The user's answer (`decide.ask`).  While they read, the prompt that follows an approval is prefilled
    (`speculate`; local backend): for a read-only call with its result, run now (reading has no effect; the
    approved call runs again and only what still matches is reused); then the base's KV of `prompt` (learning)."""
    before = list(session.messages)

    def next_prompt() -> list[int]:
        msgs = [*before, Message("assistant", text)]
        if call.name in READ_ONLY:
            r = session.workspace.run(call.name, call.arguments)
            msgs.append(session._tool_message(call, r.ok, r.output))
        return session.renderer.prompt_ids(msgs)

    warm = session.backend if session.sampling.speculate and isinstance(session.backend, Warmable) else None
    ws, args = session.workspace, call.arguments
    preview = ws.preview(call.name, args)  # once: what the user is shown, and whether the tool refuses the call
    # a call the tool refuses (its preview is the error it would return) is not asked about: it fails, changing
    # nothing, and the error goes to the model, as Claude Code checks an edit before asking (a user trial: a
    # `replace` whose text occurs 5 times waited for an approval that could only run it into that error)
    refused = preview.startswith(ERROR_PREFIX)
    # a change the preview warns about is always asked (a user trial with every tool auto-approved: a write
    # left a 785-line module with 5 lines that do not parse)
    auto = not refused and call.name in session.auto_approve and not ws.warns(call.name, args)
    if auto or refused:  # the user still sees what ran (its result follows)
        shown = json.dumps(call.arguments, ensure_ascii=False)[:150]
        session._emit(Info(f"{call.name} {shown} · {'refused by the tool' if refused else 'auto-approved'}"))
    return ask(session.approver, call, lambda: preview, auto=auto or refused,
               on_feedback=session.add_feedback, warm=warm, next_prompt=next_prompt,
               prompt=prompt if session.learner is not None else None)


def _not_meant(session: Session, sample: Sample, parsed: Parsed) -> str | None:
    """Why a reply in words is not one the model meant (answer.py), or None."""
    if barely_meant(sample, parsed):
        return NOT_MEANT.format(mass=sample.allowed_mass)
    shown = (m.content for m in session.messages if m.role != "assistant")
    return ECHOED if parsed.text is not None and echoed(parsed.text, shown) else None


def _reask(session: Session) -> Mode:
    """After a reply in words the model barely meant: for a question whose demands are met, ask for the
    answer ("text"); else the call it wanted ("calls")."""
    if asks_a_question(session.rails.task) and session.rails.owed() is None:
        session._add(request())
        return "text"
    return "calls"


def _answer_now(session: Session, t: _TaskState) -> TaskResult | None:
    """A question about to end unanswered (a loop, max_turns), asked once for its answer: the answer's
    result, or None when it is not one (`ask_for_answer`)."""
    if not (session.sampling.ask_for_answer and asks_a_question(session.rails.task)) or session.rails.owed():
        return None
    session._add(request())
    turn = session._propose("text")
    if turn is None or turn.parsed.text is None:
        return None
    session._add(Message("assistant", turn.text))
    session._emit(AssistantText(turn.parsed.text))
    return TaskResult(status="answered", text=turn.parsed.text, calls=t.result.calls)


def _after_denied_repeats(session: Session, t: _TaskState) -> TaskResult:
    """A question is asked for its answer once; else the task ends, and says so."""
    if (end := _answer_now(session, t)) is not None:
        return end
    session._add(Message("user", "The user denied this call. Wait for instructions."))
    result = TaskResult("denied", REPEAT_ERROR, t.result.calls)
    return denied_again(session._emit, result, 1 + session.sampling.max_repeats)


def _uncorrected(session: Session, messages: list[Message]) -> list[int]:
    """The retry's prompt without the correction's words (a bare DENIED, closed by the task as the real denial
    is).  Guided against it (`retry_guidance`), the retry weighs what the correction says; against the prompt
    before the denied call it would also weigh the denied call, which only the retry sees (amplified)."""
    denied = reminded(DENIED, session.rails.task, session.sampling.remind_task)
    return session.renderer.prompt_ids([*messages, Message("user", denied)])


def _sample(backend: Backend, prompt_ids: list[int], contrast: Callable[[], list[int]] | None, weight: float,
            **kw: Any) -> Sample:
    """A guided sample (`Guided`: local backend) when there is a contrast and a weight, else a plain one."""
    if contrast is not None and weight > 0 and isinstance(backend, Guided):
        return backend.sample_guided(prompt_ids, contrast(), guidance=weight, **kw)
    return backend.sample(prompt_ids, **kw)


def _taken(parsed: Parsed, text: str, tools: Sequence[dict[str, Any]], sample: Sample,
           max_tokens: int) -> tuple[Parsed, str]:
    """A reply as the session takes it, with the message the conversation keeps: a call spelled out as text
    is that call when it names a known tool with valid arguments, else malformed (never an answer); a reply
    that is no call because `max_tokens` cut it off says so (the 1.5B model wrote inflection/__init__.py
    whole, cut off at 512 tokens, told "not closed with </tool_call>" three times over, dev split)."""
    if parsed.text is not None and looks_like_call(parsed.text):
        call = call_in_text(parsed.text, tools)
        parsed = Parsed(call=call) if call is not None else Parsed(error=TEXT_CALL_ERROR)
        text = call.to_text() if call is not None else text
    if parsed.error is not None and sample.finish_reason == "length":
        parsed = Parsed(error=CUT_OFF.format(n=max_tokens))
    return parsed, text


def _unchanging(tools: Sequence[dict[str, Any]]) -> tuple[str, ...]:
    """The names of the tools that change no file."""
    return tuple(t["function"]["name"] for t in tools if t["function"]["name"] not in CHANGING)
