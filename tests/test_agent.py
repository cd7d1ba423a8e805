"""The session's control flow, driven by a SCRIPTED model (a fake backend replaying fixed replies)
and a scripted user.  Model behaviour is not under test here; the loop's bookkeeping is."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from continualcode.agent import (
    TEXT_CALL_ERROR,
    Abort,
    Approve,
    Correction,
    Deny,
    Edit,
    Feedback,
    SamplingConfig,
    Session,
    args_diff,
)
from continualcode.events import AssistantText, ErrorShown, Event, Info, Proposal, ToolOutput
from continualcode.rails import (
    CHANGE_FIRST,
    DENIED,
    EXAMPLE_FILE,
    LOOP_ERROR,
    LOOP_NOTE,
    NO_CHANGE,
    PASTED,
    REPEAT_ERROR,
    RUN_FIRST,
    STAND_IN,
    pasted_argument,
)
from continualcode.records import Sample, ToolCall
from continualcode.render import Renderer
from continualcode.tools import Workspace, tool_schemas
from continualcode.workspace_rails import workspace_rails


@pytest.fixture(scope="module")
def tokenizer(cache_dir: Path):
    import transformers

    from continualcode.models import BUILTINS, ensure_converted

    return transformers.AutoTokenizer.from_pretrained(str(ensure_converted(BUILTINS["smollm2-135m"], cache_dir)))


class ScriptedModel:
    """A fake backend: `sample` returns the next scripted reply's tokens; records each prompt."""

    def __init__(self, tokenizer, replies: list[str]) -> None:
        self.tokenizer = tokenizer
        self.replies = list(replies)
        self.prompts: list[list[int]] = []
        self.step = 0

    def sample(self, prompt_ids, **kw) -> Sample:
        """A reply is its text, or (text, the share of its first token's mass a grammar would have allowed)."""
        self.prompts.append(list(prompt_ids))
        text, mass = (lambda r: r if isinstance(r, tuple) else (r, None))(self.replies.pop(0))
        toks = [*self.tokenizer.encode(text, add_special_tokens=False), self.tokenizer.eos_token_id]
        return Sample(toks, [0.0] * len(toks), "stop", allowed_mass=mass)


class ScriptedUser:
    def __init__(self, decisions) -> None:
        self.decisions = list(decisions)
        self.seen: list[tuple[ToolCall, str]] = []

    def decide(self, call, preview):
        self.seen.append((call, preview))
        return self.decisions.pop(0)


class RecordingLearner:
    def __init__(self) -> None:
        self.calls: list[Correction] = []

    def __call__(self, c: Correction):
        self.calls.append(c)
        return {"step": len(self.calls), "kind": c.kind}


def call_text(name: str, **args) -> str:
    return ToolCall(name, args).to_text()


def make(tokenizer, tmp_path, replies, decisions, **kw):
    (tmp_path / "main.py").write_text("def add(a, b):\n    return a + b\n")
    model = ScriptedModel(tokenizer, replies)
    user = ScriptedUser(decisions)
    learner = RecordingLearner()
    events: list[Event] = []
    renderer = kw.pop("renderer", None) or Renderer(tokenizer)
    s = Session(model, renderer, Workspace(tmp_path), user, learner=learner,
                sampling=SamplingConfig(constrained=False, max_turns=kw.pop("max_turns", 6),
                                        guard_rails=kw.pop("guard_rails", False),
                                        remind_task=kw.pop("remind_task", True),
                                        speculate=kw.pop("speculate", True),
                                        max_malformed=kw.pop("max_malformed", 3),
                                        earlier_tasks=kw.pop("earlier_tasks", "whole"),
                                        retrieve=kw.pop("retrieve", 0),
                                        ask_for_answer=kw.pop("ask_for_answer", False)),
                on_event=events.append, **kw)
    return s, model, user, learner, events


def spy_allow_text(s: Session) -> list[bool]:
    """Records, per sample, whether the grammar let the model answer in text (the real constraint is used)."""
    asked: list[bool] = []
    real = s._constraint
    s._constraint = lambda allow_text, calls=True: asked.append(allow_text) or real(allow_text, calls)  # type: ignore
    return asked


def test_scripted_model_deny_with_correction_learns_once_and_retries(tokenizer, tmp_path):
    write = call_text("write", path="main.py", content="x = 1\n")
    edit = call_text("edit_lines", path="main.py", start_line=3, end_line=2,
                     content="def div(a, b):\n    return a / b\n")
    s, model, _, learner, events = make(
        tokenizer, tmp_path, [write, edit, "Done."], [Deny("use edit_lines; don't overwrite"), Approve()]
    )
    r = s.run_task("add a divide function to main.py")
    assert r.status == "answered" and r.text == "Done."
    assert len(learner.calls) == 1
    c = learner.calls[0]
    assert c.kind == "deny" and c.text == "use edit_lines; don't overwrite"
    assert c.prompt_ids == model.prompts[0] and c.attempt_text == write
    # the retry saw the failed attempt and the correction in context
    retry_prompt = tokenizer.decode(model.prompts[1])
    assert f"{DENIED} Do this instead: use edit_lines; don't overwrite" in retry_prompt and '"write"' in retry_prompt
    assert (tmp_path / "main.py").read_text().endswith("def div(a, b):\n    return a / b\n")
    assert [e.TYPE for e in events].count("correction") == 1


class SettlingLearner(RecordingLearner):
    """RecordingLearner with deferred work: each correction leaves one pending item for `settle`."""

    def __init__(self, order: list[str]) -> None:
        super().__init__()
        self.pending: list[Correction] = []
        self.order = order

    def __call__(self, c: Correction):
        self.order.append("learn")
        self.pending.append(c)
        return super().__call__(c)

    def settle(self):
        self.order.append("settle")
        done, self.pending = self.pending, []
        return [{"step": 10 + i, "kind": c.kind, "deferred": True} for i, c in enumerate(done)]


def test_scripted_model_deferred_learning_settles_when_the_task_ends_not_before_the_retry(tokenizer, tmp_path):
    write = call_text("write", path="main.py", content="x = 1\n")
    edit = call_text("edit_lines", path="main.py", start_line=3, end_line=2, content="y = 2\n")
    order: list[str] = []
    s, model, _, _, events = make(tokenizer, tmp_path, [write, edit, "Done.", "Still done."],
                                  [Deny("use edit_lines"), Approve()])
    s.learner = SettlingLearner(order)
    real = model.sample
    model.sample = lambda *a, **kw: order.append("sample") or real(*a, **kw)  # type: ignore[method-assign]
    assert s.run_task("add y to main.py").status == "answered"
    assert order == ["sample", "learn", "sample", "sample", "settle"]  # the retry came before the settling
    learned = [e for e in events if e.TYPE == "learn"]
    assert [e.metrics.get("deferred", False) for e in learned] == [False, True]
    s.run_task("anything else?")  # nothing pending: no second settle
    assert order.count("settle") == 1


class GuidedScriptedModel(ScriptedModel):
    """The scripted model with the local backend's `sample_guided`: records each sample's contrast (None: plain)."""

    def __init__(self, tokenizer, replies: list[str]) -> None:
        super().__init__(tokenizer, replies)
        self.contrasts: list[tuple[list[int], float] | None] = []

    def sample(self, prompt_ids, **kw) -> Sample:
        self.contrasts.append(None)
        return super().sample(prompt_ids, **kw)

    def sample_guided(self, prompt_ids, contrast_ids, *, guidance, **kw) -> Sample:
        out = super().sample(prompt_ids, **kw)
        self.contrasts.append((list(contrast_ids), guidance))
        return out


@pytest.mark.parametrize("guidance", [0.0, 1.5])
def test_scripted_model_retry_after_a_correction_is_guided_against_the_denied_calls_prompt(
        tokenizer, tmp_path, guidance):
    """`retry_guidance`: the samples after a denial with a correction (the retry, and any re-sample of it) are
    guided against the same prompt with a bare "Denied." in place of the correction; once a call is approved,
    plain again, and a new task starts plain.  0 (or a backend without `sample_guided`) samples plainly and
    never renders the contrast (one prompt rendered per sample)."""
    write = call_text("write", path="main.py", content="x = 1\n")
    read = call_text("read", path="main.py")
    (tmp_path / "main.py").write_text("def add(a, b):\n    return a + b\n")
    model = GuidedScriptedModel(tokenizer, [write, write, read, "It adds.", read, "It adds."])
    user = ScriptedUser([Deny("read it first"), Approve(), Approve()])
    renderer, rendered = Renderer(tokenizer), []
    plain_render = renderer.prompt_ids
    renderer.prompt_ids = lambda msgs: rendered.append(len(msgs)) or plain_render(msgs)  # type: ignore[method-assign]
    s = Session(model, renderer, Workspace(tmp_path), user,  # the denied write again: sampled again
                sampling=SamplingConfig(constrained=False, guard_rails=False, retry_guidance=guidance))
    assert s.run_task("change main.py").status == "answered"
    s.run_task("what does main.py do?")
    assert len(rendered) == len(model.prompts) + (2 if guidance else 0)
    want = [None, None, None, None, None, None]
    if guidance:
        bare = tokenizer.decode(model.contrasts[1][0])
        assert bare.endswith(tokenizer.decode(model.prompts[1]).split("Do this instead: read it first")[1])
        assert f"{DENIED}\n\n(The task: change main.py)" in bare and "read it first" not in bare
        assert model.prompts[1][: len(model.prompts[0])] == model.prompts[0]  # the retry extends the first prompt
        want[1:3] = [(model.contrasts[1][0], guidance)] * 2
    assert model.contrasts == want


def test_scripted_model_a_retry_that_edits_the_denied_change_is_proposed_made_to_it(tokenizer, tmp_path):
    """The model's retry edits the text its denied change would have written (not in the file): the user is
    shown the denied change with that edit made (amend.py), the step learns from the model's own tokens, and
    approved, the file gets it.  Once the composed call is denied too, the retry is shown as the model wrote it."""
    read = call_text("read", path="main.py")
    first = call_text("replace", path="main.py", old_string="    return a + b\n",
                      new_string="    return a + b\n\ndef mul(a, b):\n    return a * b\n")
    retry = call_text("replace", path="main.py", old_string="def mul(a, b):",
                      new_string="def mul(a: int, b: int) -> int:")
    both = Renderer(tokenizer, tools=tool_schemas("both"))
    s, _, user, learner, _ = make(tokenizer, tmp_path, [read, first, retry, "Done."],
                                  [Approve(), Deny("add type hints"), Approve()], guard_rails=True, renderer=both)
    assert s.run_task("add a function mul to main.py").status == "answered"
    shown = user.seen[2][0]
    assert shown.name == "replace" and shown.arguments["old_string"] == "    return a + b\n"
    assert shown.arguments["new_string"].endswith("def mul(a: int, b: int) -> int:\n    return a * b\n")
    assert (tmp_path / "main.py").read_text() == ("def add(a, b):\n    return a + b\n\n"
                                                  "def mul(a: int, b: int) -> int:\n    return a * b\n")
    assert len(learner.calls) == 1 and learner.calls[0].attempt_text == first
    (tmp_path / "b").mkdir()
    replies = [read, first, retry, retry, call_text("bash", command="ls")]
    s, _, user, learner, events = make(tokenizer, tmp_path / "b", replies, [Approve(), Deny("add type hints"),
                                       Deny("no"), Abort()], guard_rails=True, renderer=both)
    assert s.run_task("add a function mul to main.py").status == "aborted"
    assert user.seen[2][0].arguments["old_string"] == "    return a + b\n"  # composed, denied
    assert [c.attempt_text for c in learner.calls] == [first, retry]  # each denial learned from the model's tokens
    # then the retry as the model wrote it: the tool refuses it without asking (its text is not in the file)
    assert [c.name for c, _ in user.seen] == ["read", "replace", "replace", "bash"]
    failed = [e for e in events if isinstance(e, ToolOutput) and e.name == "replace"]
    assert len(failed) == 1 and not failed[0].ok and "old_string is not in main.py" in failed[0].output


def test_scripted_model_a_retry_composed_onto_a_change_the_file_already_has_is_sampled_again(tokenizer, tmp_path):
    """A user trial (itsdangerous): the model's edit_lines was denied, its retry composed with it (amend.py) and
    the user edited that to the right line; the model's next call, a `replace` of text from the denied change by
    that same line, composed again, would leave the file as it is.  It is sampled again, never asked about."""
    read = call_text("read", path="main.py")
    wrong = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a ++ b")
    retry = call_text("replace", path="main.py", old_string="    return a ++ b", new_string="    return a -- b")
    again = call_text("replace", path="main.py", old_string="    return a ++ b", new_string="    return a - b")
    both = Renderer(tokenizer, tools=tool_schemas("both"))
    fixed = {"path": "main.py", "start_line": 2, "end_line": 2, "content": "    return a - b"}
    s, _, user, _, events = make(tokenizer, tmp_path, [read, wrong, retry, again, "Done."],
                                 [Approve(), Deny("subtract"), Edit(fixed)], guard_rails=True, renderer=both)
    assert s.run_task("make add subtract").status == "answered"
    assert (tmp_path / "main.py").read_text() == "def add(a, b):\n    return a - b\n"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines", "edit_lines"]  # the composed no-op: not asked
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NO_CHANGE]


def test_scripted_model_a_retry_composed_onto_a_denied_change_meets_the_checks_of_a_change(tokenizer, tmp_path):
    """A composed retry (amend.py) is a change like any other: one whose indentation is off is re-indented before
    it is asked about (it used to be proposed as composed, and breaking the file)."""
    read = call_text("read", path="main.py")
    wrong = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a ++ b")
    retry = call_text("replace", path="main.py", old_string="    return a ++ b", new_string="return a - b")
    both = Renderer(tokenizer, tools=tool_schemas("both"))
    s, _, user, _, _ = make(tokenizer, tmp_path, [read, wrong, retry, "Done."],
                            [Approve(), Deny("subtract"), Approve()], guard_rails=True, renderer=both)
    assert s.run_task("make add subtract").status == "answered"
    assert user.seen[2][0] == ToolCall("edit_lines", {"path": "main.py", "start_line": 2, "end_line": 2,
                                                      "content": "    return a - b"})
    assert (tmp_path / "main.py").read_text() == "def add(a, b):\n    return a - b\n"


def test_scripted_model_retry_sees_the_correction_then_the_task(tokenizer, tmp_path):
    """The denial's correction is followed by the task it serves (`remind_task`, as after a tool result):
    the retry prompt ends with the correction and the task, in that order; off, the correction alone."""
    bash = call_text("bash", command="python clean.py")
    for remind in (True, False):
        s, model, *_ = make(tokenizer, tmp_path, [bash, "ok"], [Deny("use python3 (python3 script.py)")],
                            remind_task=remind)
        s.run_task("run the clean.py script")
        last_user = tokenizer.decode(model.prompts[1]).rsplit("<|im_start|>user\n", 1)[-1]
        reminder = "\n\n(The task: run the clean.py script)" if remind else ""
        expected = f"{DENIED} Do this instead: use python3 (python3 script.py)" + reminder
        assert last_user.startswith(expected + "<|im_end|>")


def test_scripted_model_later_tasks_open_with_the_session_notes(tokenizer, tmp_path):
    """`notes` is asked at each task: what it returns opens that task's user turn, while the conversation
    keeps the task itself as the message's content (the journal, distillation prompts)."""
    notes, asked = iter(["", "Rules from the user for this project (follow them):\n- grep first"]), []
    s, model, *_ = make(tokenizer, tmp_path, ["one", "two"], [],
                        notes=lambda task: asked.append(task) or next(notes))
    s.run_task("first task")
    s.run_task("second task")
    assert asked == ["first task", "second task"]  # each task's own text: its rules are chosen by it
    first, second = (tokenizer.decode(p) for p in model.prompts)
    assert "grep first" not in first
    assert second.rsplit("<|im_start|>user\n", 1)[-1].startswith(
        "Rules from the user for this project (follow them):\n- grep first\n\nsecond task<|im_end|>")
    assert second.count("grep first") == 1  # the first task's turn is rendered as it was
    users = [m for m in s.messages if m.role == "user"]
    assert [m.content for m in users] == ["first task", "second task"] and users[1].meta["notes"].endswith("grep first")


@pytest.mark.parametrize("earlier", ["whole", "recap", "none"])
def test_scripted_model_second_task_sees_what_earlier_tasks_says_of_the_first(tokenizer, tmp_path, earlier):
    """`earlier_tasks`: whole continues the conversation; recap and none start the second task's context at it
    (the project listing kept), recap opening it with the first task and its answer.  The session keeps every
    message either way, and the rules (notes) open the second task in each mode."""
    (tmp_path / "notes.txt").write_text("hello\n")
    read = call_text("read", path="notes.txt")
    notes = iter(["", "Rules from the user for this project (follow them):\n- grep first"])
    s, model, *_ = make(tokenizer, tmp_path, [read, "It says hello.", "two"], [Approve()], earlier_tasks=earlier,
                        notes=lambda _task: next(notes))
    s.run_task("what is in notes.txt")
    (tmp_path / "later.py").write_text("x = 1\n")
    s.run_task("second task")
    second = tokenizer.decode(model.prompts[-1])
    turn = second.rsplit("<|im_start|>user\n", 1)[-1]
    assert ("what is in notes.txt" in second) == (earlier != "none")
    assert ('"notes.txt"' in second) == (earlier == "whole")  # the first task's call
    assert "notes.txt" in second  # the project listing stays in every mode, as it is now in a fresh context
    assert ("later.py" in second) == (earlier != "whole")
    recap = "Earlier tasks in this session (their changes are in the files):\n- what is in notes.txt -> It says hello."
    assert (recap in turn) == (earlier == "recap")
    assert turn.startswith("Files in the project") == (earlier != "whole")  # opens as a brand-new session's turn
    assert turn.endswith("- grep first\n\nsecond task<|im_end|>\n<|im_start|>assistant\n")
    assert [m.content for m in s.messages if m.role == "user"] == ["what is in notes.txt", "second task"]
    # listing, task, call, result, answer, (listing,) task, answer: nothing dropped
    assert len(s.messages) == 7 + (earlier != "whole")


def test_scripted_model_approve_never_learns(tokenizer, tmp_path):
    s, _, _, learner, _ = make(tokenizer, tmp_path, [call_text("read", path="main.py"), "It adds."], [Approve()])
    assert s.run_task("what is in main.py").status == "answered"
    assert learner.calls == []
    assert s.messages[-2].role == "tool" and "return a + b" in s.messages[-2].content


def test_scripted_model_edit_passes_diff_and_demonstration(tokenizer, tmp_path):
    s, _, _, learner, _ = make(
        tokenizer, tmp_path, [call_text("read", path="mian.py"), "ok"], [Edit({"path": "main.py"})]
    )
    s.run_task("read main.py")
    (c,) = learner.calls
    assert c.kind == "edit" and 'path: "mian.py" -> "main.py"' in c.text
    assert c.demonstration == call_text("read", path="main.py")
    # the edited call is what ran and what the conversation remembers
    assert s.messages[-3].content == call_text("read", path="main.py")
    assert "return a + b" in s.messages[-2].content


def test_scripted_model_feedback_accumulates_and_reaches_next_correction(tokenizer, tmp_path):
    w = call_text("write", path="main.py", content="")
    s, _, user, learner, _ = make(
        tokenizer, tmp_path, [w, "fine"], [Feedback("this project uses Poetry"), Deny("don't empty the file")]
    )
    s.run_task("clean up")
    assert s.feedback == ["this project uses Poetry"]
    assert learner.calls[0].feedback == ("this project uses Poetry",)
    assert len(user.seen) == 2 and user.seen[0][0] == user.seen[1][0]  # asked again about the same call


def test_scripted_model_empty_deny_does_not_learn_and_ends_task(tokenizer, tmp_path):
    s, _, _, learner, _ = make(tokenizer, tmp_path, [call_text("bash", command="rm -rf x")], [Deny("")])
    assert s.run_task("clean").status == "denied"
    assert learner.calls == []


def test_scripted_model_abort_and_always_allow(tokenizer, tmp_path):
    r1, r2 = call_text("read", path="main.py"), call_text("glob", pattern="*.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [r1, r1, r2], [Approve(always=True), Abort()])
    s.run_task("look")
    assert s.auto_approve == {"read"}
    assert len(user.seen) == 2  # the second read was not asked about; the glob was, and aborted


def test_scripted_model_malformed_reply_becomes_retry_message(tokenizer, tmp_path):
    s, _, _, _, events = make(tokenizer, tmp_path, ['<tool_call>\n{"name": "nope"}\n</tool_call>', "ok"], [])
    r = s.run_task("do it")
    assert r.status == "answered"
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert errors and "unknown tool" in errors[0]
    assert any(m.role == "user" and m.content.startswith("error: unknown tool") for m in s.messages)


def test_scripted_model_gives_up_after_repeated_malformed_and_says_why(tokenizer, tmp_path):
    from continualcode.events import ErrorShown

    s, _, _, _, events = make(tokenizer, tmp_path, [call_text("nope")] * 3, [])
    assert s.run_task("x").status == "malformed"
    said = [e.text for e in events if isinstance(e, ErrorShown)]  # not in silence (tomli trial)
    assert len(said) == 1 and said[0].startswith("stopped: 3 replies in this task were neither a call that could "
                                                 "run nor an answer (the last: unknown tool") and "follow-up" in said[0]


def test_scripted_model_max_turns(tokenizer, tmp_path):
    rd = [call_text("read", path="main.py", offset=k) for k in (1, 2, 3)]
    s, _, _, _, events = make(tokenizer, tmp_path, rd, [Approve()] * 3, max_turns=2)
    r = s.run_task("loop")
    assert r.status == "max_turns" and len(r.calls) == 2
    from continualcode.events import ErrorShown
    said = [e.text for e in events if isinstance(e, ErrorShown)]  # the task does not end in silence
    assert said == ["stopped after 2 tool calls without an answer (max_turns=2): type a follow-up to go on, or "
                    "raise max_turns"]


def test_scripted_model_approved_retry_is_offered_to_learner(tokenizer, tmp_path):
    w, e = call_text("write", path="a.py", content="1"), call_text("read", path="main.py")
    s, _, _, learner, _ = make(tokenizer, tmp_path, [w, e, "done"], [Deny("read it first"), Approve()],
                               learn_from_approved_retry=True)
    s.run_task("x")
    assert [c.kind for c in learner.calls] == ["deny", "approved_retry"]
    assert learner.calls[1].demonstration == e and learner.calls[1].attempt_text == w


def test_correction_round_trips_through_json(tokenizer, tmp_path):
    import json

    w = call_text("write", path="a.py", content="1")
    s, _, _, learner, _ = make(tokenizer, tmp_path, [w, "done"], [Deny("no")])
    s.run_task("x")
    c = learner.calls[0]
    assert Correction.from_dict(json.loads(json.dumps(c.to_dict()))) == c


def test_args_diff():
    assert args_diff({"a": 1, "b": "x"}, {"a": 1, "b": "y", "c": True}) == 'b: "x" -> "y"; c: null -> true'


def test_config_learning_defaults_match_learnconfig():
    import dataclasses

    from continualcode.config import Config
    from continualcode.learn.types import LearnConfig

    cfg, lc = Config(), LearnConfig()
    shared = [f.name for f in dataclasses.fields(LearnConfig) if hasattr(cfg, f.name)]
    assert len(shared) >= 11
    assert all(getattr(cfg, n) == getattr(lc, n) for n in shared)
    assert cfg.learn_config() == lc


# --- calls written as text, repeated denied calls ---------------------------------------------------


def test_scripted_model_call_spelled_out_as_fenced_json_is_taken_as_the_call(tokenizer, tmp_path):
    fenced = '```json\n{"name": "read", "arguments": {"path": "main.py"}}\n```'
    s, _, user, _, events = make(tokenizer, tmp_path, [call_text("glob", pattern="*.py"), fenced, "It adds."],
                                 [Approve(), Approve()])
    r = s.run_task("what does main.py do?")
    assert r.status == "answered" and r.text == "It adds."
    assert [c.name for c, _ in user.seen] == ["glob", "read"]  # asked as a call, executed
    assert not any(isinstance(e, AssistantText) and "```" in e.text for e in events)
    # the conversation holds the proper call, so later turns imitate the right format
    said = [m.content for m in s.messages if m.role == "assistant"]
    assert said[1] == ToolCall("read", {"path": "main.py", "offset": 1, "limit": 400}).to_text()


def test_scripted_model_call_to_an_unknown_tool_in_text_is_never_an_answer(tokenizer, tmp_path):
    fake = '```json\n{"name": "slugify", "arguments": {"text": "Hello"}}\n```'
    s, _, _, _, events = make(tokenizer, tmp_path, [call_text("glob", pattern="*.py"), fake, "It adds two numbers."],
                              [Approve()])
    r = s.run_task("what does main.py do?")
    assert r.status == "answered" and r.text == "It adds two numbers."
    answers = [e.text for e in events if isinstance(e, AssistantText)]
    assert answers == ["It adds two numbers."]
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert errors == [TEXT_CALL_ERROR]


def test_scripted_model_denied_call_is_never_proposed_again(tokenizer, tmp_path):
    w = call_text("write", path="main.py", content="x = 1\n")
    e = call_text("edit_lines", path="main.py", start_line=3, end_line=2, content="y = 2\n")
    s, model, user, _, events = make(tokenizer, tmp_path, [w, w, e, "Done."],
                                           [Deny("use edit_lines"), Approve()])
    assert s.run_task("add y").status == "answered"
    assert [c.name for c, _ in user.seen] == ["write", "edit_lines"]  # the repeat was sampled again, unseen
    assert [e.error for e in events if isinstance(e, Proposal)].count(REPEAT_ERROR) == 1
    assert len(model.prompts) == 4


def test_scripted_model_that_keeps_repeating_a_denied_call_ends_the_task_and_says_so(tokenizer, tmp_path):
    from continualcode.answer import DENIED_AGAIN

    w = call_text("write", path="main.py", content="x = 1\n")
    s, _, user, _, events = make(tokenizer, tmp_path, [w] * 4, [Deny("use edit_lines")])
    r = s.run_task("add y")
    assert r.status == "denied" and r.text == REPEAT_ERROR
    assert len(user.seen) == 1
    assert [e.text for e in events if isinstance(e, ErrorShown)] == [DENIED_AGAIN.format(n=3)]


def test_scripted_model_a_read_the_user_denied_is_not_put_in_place_of_a_change_again(tokenizer, tmp_path):
    """The rails put the read of a file in place of a change to it unseen; once the user denied that read ("do
    not read files"), the same change again is sampled again, not turned into the denied read (iso8601 trial)."""
    (tmp_path / "util.py").write_text("def inc(x):\n    return x + 1\n")
    ed = call_text("edit_lines", path="util.py", start_line=2, end_line=2, content="    return x + 2\n")
    run = call_text("bash", command="echo checked")
    s, _, user, _, events = make(tokenizer, tmp_path, [ed, ed, run, *["Done."] * 3],
                                 [Deny("do not read files"), Approve()], guard_rails=True)
    s.run_task("make inc in util.py add 2")
    assert [(c.name, c.arguments.get("path")) for c, _ in user.seen] == [("read", "util.py"), ("bash", None)]
    assert [e.error for e in events if isinstance(e, Proposal)].count(REPEAT_ERROR) == 1


def test_scripted_model_a_question_whose_denied_read_keeps_coming_back_is_asked_for_its_answer(tokenizer, tmp_path):
    """A user trial on iso8601: after a read, "you already read it: answer in one sentence" denied the next read;
    the grammar barred words after a denial, and the retry was the denied read three times, then silence.  Now
    words are allowed after a denial once a read has worked, and a question whose denied call keeps coming back
    is asked for its answer once."""
    rd, again = call_text("read", path="main.py"), call_text("grep", pattern="add")
    replies = [rd, again, again, again, again, "add returns a + b."]  # asked, denied, then 3 times more
    s, _, user, _, events = make(tokenizer, tmp_path, replies, [Approve(), Deny("answer in one sentence")],
                                 ask_for_answer=True, guard_rails=True)
    asked = spy_allow_text(s)
    r = s.run_task("what does add in main.py return?")
    assert (r.status, r.text) == ("answered", "add returns a + b.")
    assert len(user.seen) == 2 and asked[:3] == [False, True, True]  # words allowed after the read and the denial
    assert not [e for e in events if isinstance(e, ErrorShown)]


def test_scripted_model_repeated_read_is_sampled_again_then_answered_from_the_conversation(tokenizer, tmp_path):
    rd, gl = call_text("read", path="main.py"), call_text("glob", pattern="*.py")
    # the same read four times in a row: re-sampled twice, then answered with a note, never run or asked again
    s, _, user, _, events = make(tokenizer, tmp_path, [rd, rd, rd, rd, gl, "It adds."], [Approve(), Approve()])
    assert s.run_task("what is in main.py").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "glob"]
    assert [e.error for e in events if isinstance(e, Proposal)].count(LOOP_ERROR) == 3
    assert any(m.role == "tool" and m.content.startswith(LOOP_NOTE) for m in s.messages)
    assert sum(isinstance(e, ToolOutput) and e.name == "read" for e in events) == 1


def test_scripted_model_a_read_inside_lines_shown_through_the_files_end_is_a_repeat(tokenizer, tmp_path):
    """A user trial on tomli: asked to add a function at the end of a 691-line module, the 1.5B model read from
    lines 650, 651 and 691 after a read had shown 649 to the end.  With the rails on, a read that starts inside
    lines shown through the file's end, or past that end, is a repeat (sampled again); one inside a window that
    stopped short of the end runs, and so does one after a change (and every one with the rails off)."""
    (tmp_path / "long.py").write_text("".join(f"x{i} = {i}\n" for i in range(100)))
    top, tail = call_text("read", path="long.py", offset=1, limit=50), call_text("read", path="long.py", offset=60)
    inside, short = call_text("read", path="long.py", offset=80), call_text("read", path="long.py", offset=30)
    past = call_text("read", path="long.py", offset=117)  # past the end shown (a user trial on tenacity)
    replies = [top, tail, inside, past, short, "long.py sets x0 to x99."]
    s, _, user, _, events = make(tokenizer, tmp_path, list(replies), [Approve()] * 3, guard_rails=True)
    assert s.run_task("what is in long.py").status == "answered"
    assert [c.arguments["offset"] for c, _ in user.seen] == [1, 60, 30]  # 30: the window 1-50 stopped short
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [LOOP_ERROR, LOOP_ERROR]
    s, _, user, _, _ = make(tokenizer, tmp_path, list(replies), [Approve()] * 5)  # rails off
    seen = [c.arguments["offset"] for c, _ in (s.run_task("what is in long.py"), user.seen)[1]]
    assert seen == [1, 60, 80, 117, 30]
    edit = call_text("edit_lines", path="long.py", start_line=101, end_line=100, content="y = 1\n")
    s, _, user, _, _ = make(tokenizer, tmp_path, [tail, edit, inside, "Added y."], [Approve()] * 3, guard_rails=True)
    s.run_task("add y = 1 at the end of long.py")
    assert [c.arguments.get("offset") for c, _ in user.seen] == [60, None, 80]  # the change: the tail may differ


def test_scripted_model_that_keeps_repeating_a_read_after_the_notes_ends_the_task_looping(tokenizer, tmp_path):
    """One call answered with the note three times ends the task, said to the user in one line; other
    calls between the repeats do not reset the count."""
    from continualcode.agent import MAX_LOOP_NOTES
    from continualcode.events import ErrorShown

    rd, gl = call_text("read", path="main.py"), call_text("glob", pattern="*.py")
    replies = [rd, *[rd] * 3, gl, *[rd] * 3, *[rd] * 3, "unreached"]
    s, model, user, _, events = make(tokenizer, tmp_path, replies, [Approve(), Approve()], max_turns=12)
    r = s.run_task("what is in main.py")
    assert MAX_LOOP_NOTES == 3 and r.status == "looping"
    assert [c.name for c, _ in user.seen] == ["read", "glob"]
    assert sum(m.role == "tool" and m.content.startswith(LOOP_NOTE) for m in s.messages) == 3
    shown = [e.text for e in events if isinstance(e, ErrorShown)]
    assert shown == [r.text] and r.text.startswith("stopped: the model kept repeating read main.py")
    assert model.replies == ["unreached"]


def test_scripted_model_repeated_failing_bash_is_sampled_again_but_a_passing_one_runs_again(tokenizer, tmp_path):
    """A bash command that failed, proposed again with nothing changed, is treated like a repeated read (the
    0.5B model ran `stats.py`, not a command, four times); one that worked may run again (tests, twice)."""
    bad, ok = call_text("bash", command="exit 3"), call_text("bash", command="true")
    gl = call_text("glob", pattern="*.py")
    s, _, user, _, events = make(tokenizer, tmp_path, [bad, bad, bad, bad, ok, ok, gl, "Two files."],
                                 [Approve()] * 4, guard_rails=True)
    assert s.run_task("list the files").status == "answered"
    assert [c.arguments.get("command", c.name) for c, _ in user.seen] == ["exit 3", "true", "true", "glob"]
    assert [e.error for e in events if isinstance(e, Proposal)].count(LOOP_ERROR) == 3
    note = next(m for m in s.messages if m.role == "tool" and m.content.startswith(LOOP_NOTE))
    assert note.meta["ok"] is False


def test_scripted_model_replacing_the_tasks_reported_output_is_told_to_find_the_code_that_makes_it(tokenizer, tmp_path):
    """A replace of the task's own words that the file does not hold (the symptom quoted as the code) gets the
    symptom note in its result, with the rails on; without them the tool's error alone."""
    from continualcode.context import SYMPTOM

    bad = call_text("replace", path="main.py", old_string="returns 5", new_string="returns 6")
    task = "add(2, 3) returns 5 but should return 6. Fix it."
    head = SYMPTOM.split("{old}")[1].split("{path}")[0]
    both = Renderer(tokenizer, tools=tool_schemas("both"))
    for rails in (True, False):
        run = tmp_path / str(rails)
        run.mkdir()
        s, _, _, _, _ = make(tokenizer, run, [call_text("read", path="main.py"), bad, *["Cannot."] * 6],
                             [Approve(), Approve()], guard_rails=rails, renderer=both)
        s.run_task(task)
        result = next(m for m in s.messages if m.role == "tool" and "old_string" in m.content)
        assert result.content.startswith("error: old_string is not in main.py")
        assert (head in result.content) is rails


def test_scripted_model_repeating_a_replace_refused_as_ambiguous_is_proposed_with_replace_all(tokenizer, tmp_path):
    """A replace refused because its text occurs more than once (not asked about: the tool refuses it), proposed
    again: the user is asked about the same replace with replace_all (every occurrence, shown in the preview);
    without the rails it is the plain repeat."""
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    source = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2), add(3, 4))\n"
    rd = call_text("read", path="main.py")
    rename = call_text("replace", path="main.py", old_string="add", new_string="plus")
    s, _, user, _, events = make(tokenizer, tmp_path, [rd, rename, rename, "Renamed."],
                                 [Approve(), Approve(), Approve()], guard_rails=True, renderer=both)
    (tmp_path / "main.py").write_text(source)
    assert s.run_task("Rename add to plus everywhere in main.py.").status == "answered"
    assert [bool(c.arguments.get("replace_all")) for c, _ in user.seen if c.name == "replace"] == [True]
    assert any(m.content.startswith("error: old_string occurs 3 times") for m in s.messages)  # not asked: it fails
    assert (tmp_path / "main.py").read_text() == source.replace("add", "plus")
    replaces = [e.call for e in events if isinstance(e, Proposal) and e.call and e.call["name"] == "replace"]
    assert [bool(c["arguments"].get("replace_all")) for c in replaces] == [False, True]
    plain = tmp_path / "plain"
    plain.mkdir()
    s2, _, user2, _, _ = make(tokenizer, plain, [rd, rename, rename, "Renamed."], [Approve()] * 3, renderer=both)
    (plain / "main.py").write_text(source)
    s2.run_task("Rename add to plus everywhere in main.py.")
    assert all(not c.arguments.get("replace_all") for c, _ in user2.seen)


def test_scripted_model_a_repeat_redirected_onto_the_denied_replace_all_is_sampled_again(tokenizer, tmp_path):
    """A user trial on packaging: the rename made replace_all (a replace refused as ambiguous, repeated) was
    denied; the retry was the plain rename again, which the rails redirected to the same replace_all, and the user
    was asked about the call just denied.  A redirect onto a denied call is a repeat of it: sampled again."""
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    source = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2), add(3, 4))\n"
    rd = call_text("read", path="main.py")
    rename = call_text("replace", path="main.py", old_string="add", new_string="plus")
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, rename, rename, rename, *["Left as it is."] * 6],
                            [Approve(), Deny("do not rename anything")], guard_rails=True, renderer=both)
    (tmp_path / "main.py").write_text(source)
    s.run_task("Rename add to plus everywhere in main.py.")  # (the text answers after it: refused, no change made)
    assert [(c.name, bool(c.arguments.get("replace_all"))) for c, _ in user.seen] == [("read", False),
                                                                                      ("replace", True)]
    assert (tmp_path / "main.py").read_text() == source


def test_scripted_model_repeating_an_ambiguous_replace_of_text_that_is_no_name_is_not_made_replace_all(
        tokenizer, tmp_path):
    """Only a rename becomes replace_all: in a user trial on toolz the repeated `replace` of "1" by "2" was made
    replace_all by the rails and, approved, changed 182 places of a module."""
    from continualcode.rails import LOOP_ERROR
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    source = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2), add(1, 4))\n"
    rd = call_text("read", path="main.py")
    digit = call_text("replace", path="main.py", old_string="1", new_string="2")
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, digit, digit, *["Cannot."] * 6], [Approve(), Approve()],
                            guard_rails=True, renderer=both)
    (tmp_path / "main.py").write_text(source)
    s.run_task("Fix the second call in main.py.")
    assert [c.name for c, _ in user.seen] == ["read"]  # refused by the tool: neither it nor its repeat asked
    assert any(LOOP_ERROR in str(m.content) or "occurs 2 times" in m.content for m in s.messages)
    assert (tmp_path / "main.py").read_text() == source


def test_scripted_model_replace_all_of_a_text_inside_longer_words_is_refused_by_the_rails(tokenizer, tmp_path):
    """The 1.5B model set replace_all on `nd` -> `rd` in inflection's module (30 places, most inside other
    words: dev split): with the rails such a call is sent back, never asked about; without them it is asked."""
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    source = "def second(n):\n    return 'nd' if n == 2 else 'th'\n\n\nand_then = second(2)\n"
    rd = call_text("read", path="main.py")
    every = call_text("replace", path="main.py", old_string="nd", new_string="rd", replace_all=True)
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, every, *["Cannot."] * 6], [Approve()],
                            guard_rails=True, renderer=both)
    (tmp_path / "main.py").write_text(source)
    s.run_task("Fix second in main.py.")
    assert [c.name for c, _ in user.seen] == ["read"]
    refusal = next(m.content for m in s.messages if m.role == "user" and "replace_all would" in m.content)
    assert refusal.startswith("error: replace_all would also change 'nd' inside longer words (line 1: ")
    assert (tmp_path / "main.py").read_text() == source
    plain = tmp_path / "plain"
    plain.mkdir()
    s2, _, user2, _, _ = make(tokenizer, plain, [rd, every, "Done."], [Approve(), Approve()], renderer=both)
    (plain / "main.py").write_text(source)
    s2.run_task("Fix second in main.py.")
    assert [c.name for c, _ in user2.seen] == ["read", "replace"]


def test_scripted_model_renaming_to_a_longer_name_is_not_renamed_twice(tokenizer, tmp_path):
    """A rename made (`_emit` -> `_emit_element`, replace_all), the model proposed the plain replace again: the
    rule that had meant replace_all for it, from before the rename, made it `_emit_element_element` (test
    split).  A change that worked drops what earlier refusals meant, and a meant replace_all is checked
    like the model's own."""
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    source = "def add(a, b):\n    return a + b\n\n\nprint(add(1, 2), add(3, 4))\n"
    rd = call_text("read", path="main.py")
    plain = call_text("replace", path="main.py", old_string="add", new_string="add_two")
    every = call_text("replace", path="main.py", old_string="add", new_string="add_two", replace_all=True)
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, plain, every, plain, plain, *["Renamed."] * 6],
                            [Approve()] * 5, guard_rails=True, renderer=both)
    (tmp_path / "main.py").write_text(source)
    s.run_task("Rename add to add_two everywhere in main.py.")
    assert (tmp_path / "main.py").read_text() == source.replace("add", "add_two")
    # the plain replaces, ambiguous before the rename and after it, fail without being asked about
    assert [bool(c.arguments.get("replace_all")) for c, _ in user.seen if c.name == "replace"] == [True]
    # the replace_all proposed again right after it worked is the loop rail's (made already), not a refusal
    again = tmp_path / "again"
    again.mkdir()
    s2, _, user2, _, _ = make(tokenizer, again, [rd, every, every, *["Renamed."] * 6], [Approve()] * 3,
                              guard_rails=True, renderer=both)
    (again / "main.py").write_text(source)
    s2.run_task("Rename add to add_two everywhere in main.py.")
    assert not any("replace_all would" in m.content for m in s2.messages)
    assert [c.name for c, _ in user2.seen] == ["read", "replace"]
    assert (again / "main.py").read_text() == source.replace("add", "add_two")


def test_renames_is_a_name_for_a_name():
    from continualcode.rails import _renames

    def rep(old: str, new: str) -> ToolCall:
        return ToolCall("replace", {"path": "a.py", "old_string": old, "new_string": new})

    assert _renames(rep("_irregular", "_add_irregular")) and _renames(rep("x1", "y2"))
    assert not _renames(rep("1", "2")) and not _renames(rep("lambda x: None", "lambda x: x"))
    assert not _renames(rep("_", "__")) and not _renames(rep("add", "add(1)")) and not _renames(rep("a.b", "c"))


def test_a_rename_nothing_asked_for_is_refused_and_an_asked_or_swapping_one_is_not():
    """`rails.unasked_rename`: a defined function given a new name on a task that asks to fix it is refused;
    the same rename asked for (by "rename", or by naming the new name, in the task or a correction) is not,
    nor a swap to a name the file holds, nor a name the file does not define."""
    from continualcode.rails import Rails, unasked_rename
    from continualcode.reads import Reads

    text = "def ordinal(n):\n    return str(n)\n\nclass Job:\n    pass\n\ndef cardinal(n):\n    return n\n"

    def find(_path: str, part: str) -> int | None:
        at = text.find(part)
        return None if at < 0 else text.count("\n", 0, at) + 1

    def rails(task: str) -> Rails:
        r = Rails(file_key=lambda c: "w.py", reads=Reads(lambda c: "w.py", find=find))
        r.start_task(task)
        return r

    def _r(r: Rails, call: ToolCall) -> str | None:  # as the rails ask it
        return unasked_rename(call, r.said, find)

    def rep(old: str, new: str) -> ToolCall:
        return ToolCall("replace", {"path": "w.py", "old_string": old, "new_string": new})

    fix = "ordinal(13) returns '13rd'. Find the bug and fix it."
    assert _r(rails(fix), rep("ordinal", "ordinal2")) == "ordinal"
    assert _r(rails(fix), rep("Job", "JobManager")) == "Job"
    assert _r(rails(fix), rep("ordinal", "cardinal")) is None  # a name the file holds: a swap
    assert _r(rails(fix), rep("str", "repr")) is None  # not a definition of the file
    assert _r(rails(fix), ToolCall("replace", {**rep("ordinal", "x").arguments, "replace_all": True})) \
        == "ordinal"
    assert _r(rails("Rename ordinal to ordinal2."), rep("ordinal", "ordinal2")) is None
    assert _r(rails("call ordinal ordinal2 from now on"), rep("ordinal", "ordinal2")) is None
    told = rails(fix)
    told.deny(rep("a", "b"), "the new name is ordinal_of")
    assert _r(told, rep("ordinal", "ordinal_of")) is None
    said = rails(fix)
    said.deny(rep("a", "b"), "use ordinal2 for it")
    assert _r(said, rep("ordinal", "ordinal2")) is None
    refused = rails(fix)
    refused.deny(rep("a", "b"), "do not rename anything; the bug is in ordinal")  # a negated rename asks for none
    assert _r(refused, rep("ordinal", "ordinal_")) == "ordinal"


def test_asked_is_a_word_with_no_negation_before_it_in_its_clause():
    from continualcode.rails import _ABOUT_DOCS, _RENAME, asked

    assert asked(_RENAME, "Rename _emit to _emit_element") and asked(_ABOUT_DOCS, "fix the typo in the docstring")
    assert not asked(_RENAME, "do not rename anything; the bug is in x")  # jmespath and packaging trials
    assert not asked(_ABOUT_DOCS, "leave the docstring alone; the bug is on line 398")
    assert not asked(_ABOUT_DOCS, "the bug is not in the docstring") and not asked(_ABOUT_DOCS, "fix the bug")
    assert asked(_RENAME, "don't touch the docstring, but rename it")  # another clause
    assert asked(_ABOUT_DOCS, "Keep the comments. Update the docstring too")  # another sentence


def test_scripted_model_renaming_the_function_it_was_asked_to_fix_is_refused_and_samples_a_fix(tokenizer, tmp_path):
    """The 1.5B model "fixed" the function a task named by renaming it (`ordinalize` -> `ordinalize2`); the
    rename is refused (never asked about), and the model's next call, the fix, is what the user sees."""
    from continualcode.rails import UNASKED_RENAME
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    rd = call_text("read", path="words.py")
    rename = call_text("replace", path="words.py", old_string="ordinal", new_string="ordinal2")
    fix = call_text("edit_lines", path="words.py", start_line=2, end_line=2, content="    return str(n) + 'th'")
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, rename, fix, "Fixed."], [Approve()] * 2, guard_rails=True,
                            renderer=both)
    (tmp_path / "words.py").write_text("def ordinal(n):\n    return str(n) + 'rd'\n")
    assert s.run_task("ordinal(13) in words.py returns '13rd' instead of '13th'. Fix it.").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    assert any(UNASKED_RENAME.format(old="ordinal") in m.content for m in s.messages)
    assert (tmp_path / "words.py").read_text() == "def ordinal(n):\n    return str(n) + 'th'\n"


def test_scripted_model_changing_only_a_docstring_on_a_fix_task_is_refused_unless_docs_are_asked(tokenizer, tmp_path):
    """Asked to fix ordinalize(13), the 1.5B model changed its docstring's examples; a change that touches only
    docstrings is refused (never asked about) on a task that is not about them, and the model's next call, the
    fix, is what the user sees.  A task, or a correction, about the docstring lets it through."""
    from continualcode.rails import DOCS_ONLY
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    src = "def ordinal(n):\n    \"\"\">>> ordinal(1)\"\"\"\n    return str(n) + 'rd'\n"
    rd = call_text("read", path="words.py")
    doc = call_text("replace", path="words.py", old_string=">>> ordinal(1)", new_string=">>> ordinal('1')")
    fix = call_text("edit_lines", path="words.py", start_line=3, end_line=3, content="    return str(n) + 'th'")
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, doc, fix, "Fixed."], [Approve()] * 2, guard_rails=True,
                            renderer=both)
    (tmp_path / "words.py").write_text(src)
    assert s.run_task("ordinal(13) in words.py returns '13rd' instead of '13th'. Fix it.").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    assert any(DOCS_ONLY in m.content for m in s.messages)
    assert (tmp_path / "words.py").read_text() == src.replace("'rd'", "'th'")
    asked = tmp_path / "asked"
    asked.mkdir()
    s2, _, user2, _, _ = make(tokenizer, asked, [rd, doc, "Done."], [Approve()] * 2, guard_rails=True, renderer=both)
    (asked / "words.py").write_text(src)
    s2.run_task("In words.py, make the docstring example of ordinal pass a string.")
    assert [c.name for c, _ in user2.seen] == ["read", "replace"]
    assert (asked / "words.py").read_text() == src.replace(">>> ordinal(1)", ">>> ordinal('1')")


def test_scripted_model_reading_from_the_top_after_a_grep_named_a_definition_far_down_reads_it(tokenizer, tmp_path):
    """The 1.5B model read modules from line 1 right after a grep had named `def ordinalize` at line 236 (its
    window ended near line 80): such a read is asked about as the read of that definition; read from the top
    again, the file is read from the top (the definition is in view already)."""
    from continualcode.reads import HIT_CONTEXT

    far = "".join(f"x{i} = {i}\n" for i in range(200)) + "def ordinal(n):\n    return str(n)\n"
    grep = call_text("grep", pattern="def ordinal", path=".")
    top = call_text("read", path="words.py", offset=1, limit=400)
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, top, top, "ordinal returns str(n) in words.py."],
                            [Approve()] * 3, guard_rails=True)
    (tmp_path / "words.py").write_text(far)
    assert s.run_task("what does ordinal(3) in words.py return?").status == "answered"
    reads = [c.arguments for c, _ in user.seen if c.name == "read"]
    assert reads == [{"path": "words.py", "offset": 201 - HIT_CONTEXT, "limit": 400},
                     {"path": "words.py", "offset": 1, "limit": 400}]
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "words.py").write_text(far)
    s2, _, user2, _, _ = make(tokenizer, plain, [grep, top, "ordinal returns str(n)."], [Approve()] * 2)
    s2.run_task("what does ordinal(3) in words.py return?")
    assert [c.arguments.get("offset") for c, _ in user2.seen if c.name == "read"] == [1]  # without the rails


def test_scripted_model_changing_an_unseen_file_first_reads_where_the_change_would_go(tokenizer, tmp_path):
    """The 1.5B model proposed a change to a file it had not seen in each of the 8 dev change tasks; the read
    put in its place starts where the change would go (the line its replace quotes, past the read's window),
    from the statement holding it; a quote the file does not hold reads from the top."""
    from continualcode.tools import tool_schemas

    both = Renderer(tokenizer, tools=tool_schemas("both"))
    far = "".join(f"x{i} = {i}\n" for i in range(200)) + "class Jobs:\n    def __init__(self):\n        self.n = 0\n"
    quote = call_text("replace", path="jobs.py", old_string="def __init__(self):", new_string="def __init__(s):")
    symptom = call_text("replace", path="jobs.py", old_string="len(jobs) fails", new_string="len(jobs) works")
    for change, offset in ((quote, 202 - 5), (symptom, 1)):  # five lines above the line quoted (HIT_CONTEXT)
        run = tmp_path / str(offset)
        run.mkdir()
        (run / "jobs.py").write_text(far)
        s, _, user, _, _ = make(tokenizer, run, [change, *["Done."] * 6], [Approve()], guard_rails=True,
                                renderer=both)
        s.run_task("Rename the argument of Jobs.__init__ in jobs.py.")
        assert user.seen[0][0].arguments == {"path": "jobs.py", "offset": offset, "limit": 400}
    # denied, the read in its place teaches from the tokens the model wrote, and the user is told so
    s, _, _, learner, events = make(tokenizer, run, [quote, *["Done."] * 6], [Deny("grep first")], guard_rails=True,
                                    renderer=both)
    s.run_task("Rename the argument of Jobs.__init__ in jobs.py.")
    assert [c.attempt_text for c in learner.calls] == [quote]
    said = [e.text for e in events if isinstance(e, Info)]
    assert said[:1] == ["learning on what the model wrote (the rails replaced it): " + " ".join(quote.split())[:99]]


def test_reads_before_a_change_starts_where_it_would_go():
    from continualcode.reads import Reads

    r = Reads(lambda c: str(c.arguments.get("path", "")), read_back=80,
              find=lambda path, text: {"def f():": 300, "x = 1": 10}.get(text))
    whole = ToolCall("read", {"path": "a.py", "limit": 400})

    def change(name: str, **args: object) -> ToolCall:
        return ToolCall(name, {"path": "a.py", **args})

    assert r.before_change(change("replace", old_string="\n  def f():\n    pass", new_string=""), whole
                           ).arguments["offset"] == 295  # its first line that is not blank, past the window
    assert r.before_change(change("replace", old_string="x = 1", new_string="x = 2"), whole) is whole  # in view
    assert r.before_change(change("replace", old_string="f()", new_string="g()"), whole) is whole  # too short
    assert r.before_change(change("edit_lines", start_line=500, end_line=501, content=""), whole
                           ).arguments["offset"] == 495
    r.searched("a.py:900: def g():")
    assert r.before_change(change("write", content="x"), whole).arguments["offset"] == 895  # the located one


def test_reads_locate_one_definition_a_file_from_searches_and_shown_code(tmp_path):
    """`Reads`: a search that found one definition in a file locates it (two in one file: neither); the code
    shown before a task locates its first chunk of each file; a read from the top is replaced only when the
    definition is past the read's window and no read since the last change showed it."""
    from continualcode.reads import Reads

    r = Reads(lambda c: str(c.arguments.get("path", "")), read_back=80)
    r.searched("a.py:120: def f(x):\na.py:130:     f(1)\nb.py:90: def g():\nb.py:95: def h():\nc.md:99: def k")
    assert r.located == {"a.py": 120}
    top = ToolCall("read", {"path": "a.py", "offset": 1, "limit": 400})
    at = r.instead_of(top)
    assert at is not None and at.arguments["offset"] == 115
    assert r.instead_of(ToolCall("read", {"path": "a.py", "offset": 40, "limit": 400})) is None  # not from the top
    assert r.instead_of(ToolCall("read", {"path": "b.py", "limit": 400})) is None  # nothing located there
    r.read(at, "   115\tx\n   190\ty")
    assert r.instead_of(top) is None  # shown since the last change
    r.changed()
    assert r.instead_of(top) is not None
    r.new_task("Code in this project:\nb.py, lines 300-320:\n   300\tdef g():\nb.py, lines 400-410:\n"
               "a.py, lines 60-70:\n")
    assert r.located == {"b.py": 300, "a.py": 60}
    assert r.instead_of(top) is None  # a.py's chunk is within the window of a read from the top
    r.searched("b.py:500: class B:")
    assert r.located["b.py"] == 500  # the latest search wins


def test_scripted_model_repeated_failing_edit_is_sampled_again_not_asked_about_again(tokenizer, tmp_path):
    """An edit the tool refuses is not asked about (its error goes to the model); proposed again with nothing
    changed, it is treated like a repeated read (a hand trial: edit_lines of lines 1-400 in an 8-line file, four
    times)."""
    bad = call_text("edit_lines", path="main.py", start_line=1, end_line=400, content="x = 1\n")
    good = call_text("edit_lines", path="main.py", start_line=1, end_line=2, content="x = 1\n")
    rd = call_text("read", path="main.py")
    s, _, user, _, events = make(tokenizer, tmp_path, [rd, bad, bad, good, "Done."], [Approve()] * 3,
                                 guard_rails=True)
    assert s.run_task("set x to 1 in main.py").status == "answered"
    assert [(c.name, c.arguments.get("end_line")) for c, _ in user.seen] == [("read", None), ("edit_lines", 2)]
    refused = [m.content for m in s.messages if m.role == "tool" and m.content.startswith("error: ")]
    assert len(refused) == 1 and "400" in refused[0]  # the tool's own error, as the model's result
    from continualcode.events import Info
    said = [e.text for e in events if isinstance(e, Info)]
    assert said == ['edit_lines {"path": "main.py", "start_line": 1, "end_line": 400, "content": "x = 1\\n"} · '
                    'refused by the tool']  # what ran unasked is still shown
    assert [e.error for e in events if isinstance(e, Proposal)].count(LOOP_ERROR) == 1
    assert (tmp_path / "main.py").read_text() == "x = 1\n"


def test_scripted_model_a_read_after_a_failed_change_is_a_repeat_and_after_a_made_one_runs(tokenizer, tmp_path):
    """A change the tool refused changed nothing, so the read before it still shows the file: the same read
    again is sampled again (the loop rule), not run (the 1.5B model re-read files after a failed `replace`, 97
    times in the committed task transcripts).  After a change that worked the same read runs again."""
    rd = call_text("read", path="main.py")
    bad = call_text("edit_lines", path="main.py", start_line=1, end_line=400, content="x = 1\n")
    good = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return b + a")
    s, _, user, _, events = make(tokenizer, tmp_path, [rd, bad, rd, good, rd, "Done."], [Approve()] * 4,
                                 guard_rails=True)
    assert s.run_task("swap the operands in main.py").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines", "read"]  # the refused edit ran unasked
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [LOOP_ERROR]
    reads = [m.content for m in s.messages if m.role == "tool" and m.meta.get("tool") == "read"]
    assert len(reads) == 2 and "return b + a" in reads[1]  # the second read ran, after the change


def test_words_may_follow_a_denial_that_asks_for_them_once_a_read_only_call_has_worked(tmp_path):
    from continualcode.rails import DENIED
    from continualcode.records import Message

    rails = workspace_rails(Workspace(tmp_path), True)
    rails.start_task("what does add return?")
    rd = ToolCall("read", {"path": "main.py"})
    rails.deny(rd, "answer in one sentence")
    denial = Message("user", f"{DENIED} answer in one sentence")
    assert not rails.allow_text(denial)  # no evidence yet
    rails.ran(ToolCall("read", {"path": "nope.py"}), False, "error: no such file")
    assert not rails.allow_text(denial)
    rails.ran(rd, True, "1\tdef add(a, b):")
    assert rails.allow_text(denial) and not rails.allow_text(Message("user", "answer in one sentence"))
    rails.deny(ToolCall("grep", {"pattern": "add"}), "use glob first")  # a correction that asks for a call
    assert not rails.allow_text(Message("user", f"{DENIED} use glob first"))
    rails.start_task("what does sub return?")
    assert not rails.worded


def test_scripted_model_repeating_a_failed_read_gets_a_note_that_bars_text(tokenizer, tmp_path):
    """The note for a repeat carries the repeated call's own outcome: after a read of a missing file the
    answer may not come next (the 0.5B model answered 'make a different call', quoting the note)."""
    rd, gl = call_text("read", path="nope.py"), call_text("glob", pattern="*.py")
    s, _, _, _, _ = make(tokenizer, tmp_path, [rd, rd, rd, rd, gl, "It adds."], [Approve(), Approve()])
    assert s.run_task("what is in nope.py").status == "answered"
    note = next(m for m in s.messages if m.role == "tool" and m.content.startswith(LOOP_NOTE))
    assert note.meta["ok"] is False and not s.rails.allow_text(note)
    # the repeated call's own outcome, not the latest result's: a read that worked comes between
    ok_read = call_text("read", path="main.py")
    other = tmp_path / "other"
    other.mkdir()
    s2, _, _, _, _ = make(tokenizer, other, [rd, ok_read, rd, rd, rd, gl, "It adds."], [Approve()] * 3)
    assert s2.run_task("what is in nope.py").status == "answered"
    note = next(m for m in s2.messages if m.role == "tool" and m.content.startswith(LOOP_NOTE))
    assert note.meta["ok"] is False


def test_scripted_model_a_change_made_again_right_away_is_not_run_again(tokenizer, tmp_path):
    """The 1.5B model ran replace_all `_irregular` -> `_add_irregular` again after it had worked, and again:
    `_add_add_add_irregular`.  The same change again, nothing else changed since, is sampled again and then
    answered from the conversation, never run; after another change it may run."""
    read = call_text("read", path="main.py")
    grow = call_text("edit_lines", path="main.py", start_line=3, end_line=2, content="# one more line")
    other = call_text("edit_lines", path="main.py", start_line=1, end_line=1, content="def plus(a, b):")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, grow, grow, grow, grow, other, grow, "Done."],
                                 [Approve()] * 4, guard_rails=True)
    assert s.run_task("add a line to main.py").status == "answered"
    assert [c.arguments.get("start_line") for c, _ in user.seen] == [None, 3, 1, 3]
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [LOOP_ERROR] * 3  # 1 + max_repeats
    assert sum(m.content.startswith(LOOP_NOTE) for m in s.messages if m.role == "tool") == 1  # answered, not run
    assert (tmp_path / "main.py").read_text() == "def plus(a, b):\n    return a + b\n# one more line\n# one more line\n"


def test_scripted_model_a_question_that_names_no_change_changes_no_file(tokenizer, tmp_path):
    """Asked what humanize() does with `_id`, the 1.5B model replaced `author_id` in its docstring and explained
    that: a change is refused while the task is a question naming no change; a question that names one may."""
    from continualcode.rails import ASKED_ONLY

    read = call_text("read", path="main.py")
    edit = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a - b")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, edit, "add returns a + b."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("What does the function in main.py return? Give a short example.").text == "add returns a + b."
    assert [c.name for c, _ in user.seen] == ["read"]
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [ASKED_ONLY]
    assert "a + b" in (tmp_path / "main.py").read_text()
    s, _, user, _, _ = make(tokenizer, tmp_path, [read, edit, "add now subtracts."], [Approve(), Approve()],
                            guard_rails=True)
    assert s.run_task("Can you change add to subtract?").text == "add now subtracts."
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]


def test_a_question_that_names_no_change_gets_a_grammar_without_the_tools_that_change_files(tokenizer, tmp_path):
    """The refusal alone was not enough: refused a no-op `replace` in such a task, the 1.5B model proposed it
    again and again.  The real grammar of a question naming no change admits reads and text, no change."""
    import dataclasses

    s, _, _, _, _ = make(tokenizer, tmp_path, [], [], guard_rails=True)
    s.sampling = dataclasses.replace(s.sampling, constrained=True)
    write = call_text("write", path="main.py", content="x = 1\n")
    read = call_text("read", path="main.py")

    def admits(text: str) -> bool:
        state = s._constraint(True).start()
        return all(state.accept(t) for t in tokenizer.encode(text, add_special_tokens=False))

    s.rails.start_task("What does the function in main.py return?")
    assert admits(read) and admits("It adds.") and not admits(write)
    s.rails.start_task("Can you change add to subtract?")
    assert admits(read) and admits(write)


def test_scripted_model_change_that_would_leave_the_file_as_it_is_is_never_asked_about(tokenizer, tmp_path):
    """The 1.5B model proposed `replace` of a text by itself 14 times in 3 of 16 dev tasks, each one approved by
    the user and then refused by the tool: such a change (or an edit or write of the lines the file has) is
    sampled again, and a real change goes through; it reaches the user only when every sample is one."""
    from continualcode.rails import NO_CHANGE

    read = call_text("read", path="main.py")
    same = call_text("write", path="main.py", content="def add(a, b):\n    return a + b\n")
    lines = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a + b")
    real = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return b + a")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, same, lines, real, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("swap the operands in main.py").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NO_CHANGE, NO_CHANGE]
    assert (tmp_path / "main.py").read_text() == "def add(a, b):\n    return b + a\n"
    (tmp_path / "x").mkdir()
    s2, _, user2, _, _ = make(tokenizer, tmp_path / "x", [read, same, same, same, "Done."], [Approve(), Approve()],
                              guard_rails=True)
    assert s2.run_task("swap the operands in main.py").status == "answered"
    assert [c.name for c, _ in user2.seen] == ["read", "write"]  # every sample was the same: proposed
    ws = s.workspace
    assert ws.changes_nothing("replace", {"path": "main.py", "old_string": "a", "new_string": "a"})
    assert not ws.changes_nothing("replace", {"path": "main.py", "old_string": "a", "new_string": "b"})
    assert not ws.changes_nothing("write", {"path": "new.py", "content": ""})  # creates a file
    assert not ws.changes_nothing("replace", {"path": "main.py", "old_string": " ", "new_string": " "})  # the tool's


def test_a_reply_cut_off_at_max_tokens_inside_its_call_is_told_so():
    """The 1.5B model wrote inflection/__init__.py whole, cut off at 512 tokens, and was told the call was
    not closed, three times over: the error now says it was cut off and what to do instead.  A call that
    parsed, or a reply that ended by itself, is left as it was."""
    from continualcode.agent import CUT_OFF, _taken
    from continualcode.render import Parsed
    from continualcode.tools import DEFAULT_SCHEMAS

    cut, ended = Sample([1], [0.0], "length"), Sample([1], [0.0], "stop")
    open_call = '<tool_call>\n{"name": "write", "arguments": {"path": "a.py", "content": "x = 1\\n'
    assert _taken(Parsed(error="not closed"), open_call, DEFAULT_SCHEMAS, cut, 512) == (
        Parsed(error=CUT_OFF.format(n=512)), open_call)
    assert "cut off at 512 tokens" in CUT_OFF.format(n=512)
    assert _taken(Parsed(error="not closed"), open_call, DEFAULT_SCHEMAS, ended, 512)[0].error == "not closed"
    call = ToolCall("read", {"path": "a.py"})
    assert _taken(Parsed(call=call), call.to_text(), DEFAULT_SCHEMAS, cut, 512)[0].call == call
    as_text = '{"name": "read", "arguments": {"path": "a.py"}}'  # a call spelled out as text: taken as the call
    taken, message = _taken(Parsed(text=as_text), as_text, DEFAULT_SCHEMAS, ended, 512)
    assert taken.call is not None and taken.call.name == "read" and message == taken.call.to_text()


def test_scripted_model_read_after_a_write_is_not_a_repeat(tokenizer, tmp_path):
    rd, w = call_text("read", path="main.py"), call_text("write", path="b.py", content="x = 1\n")
    s, _, user, _, events = make(tokenizer, tmp_path, [rd, w, rd, "ok"], [Approve()] * 3)
    assert s.run_task("x").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "write", "read"]
    assert not any(isinstance(e, Proposal) and e.error for e in events)


def test_scripted_model_first_task_starts_with_the_project_files(tokenizer, tmp_path):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "core.py").write_text("x = 1\n")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "secret.txt").write_text("no\n")
    s, model, _, _, _ = make(tokenizer, tmp_path, [call_text("read", path="main.py"), "ok", "ok2"], [Approve()])
    s.run_task("first")
    s.run_task("second")
    overview = [m for m in s.messages if m.role == "system"]
    assert len(overview) == 1 and "main.py\npkg/core.py" in overview[0].content  # shallowest first
    assert ".hidden" not in overview[0].content
    assert "pkg/core.py" in tokenizer.decode(model.prompts[0])


def test_scripted_model_placeholder_arguments_are_asked_again(tokenizer, tmp_path):
    bad = call_text("grep", pattern="string", path="string")
    s, _, user, _, events = make(tokenizer, tmp_path, [bad, call_text("read", path="path/to/file"),
                                                       call_text("read", path="main.py"), "It adds."], [Approve()])
    assert s.run_task("what is in main.py").status == "answered"
    assert [c.arguments["path"] for c, _ in user.seen] == ["main.py"]
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert len(errors) == 2 and all("placeholder" in e for e in errors)


def test_scripted_model_a_write_standing_in_for_the_files_lines_is_asked_again(tokenizer, tmp_path):
    """The 1.5B model wrote `<original content>` as a write's first line over a 426-line module: asked again,
    never run, never shown; a text value that only looks odd ("str", an XML tag) is a real value."""
    lazy = call_text("write", path="main.py", content="<original content of main.py>\n\ndef kebab(): pass\n")
    real = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return str(a + b)")
    s, _, user, _, events = make(tokenizer, tmp_path, [call_text("read", path="main.py"), lazy, real, "Done."],
                                 [Approve(), Approve()])
    s.run_task("make it a str")
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert errors == [STAND_IN.format(arg="content")]


def test_scripted_model_a_write_copying_reads_line_numbers_is_asked_again_with_why(tokenizer, tmp_path):
    """The 1.5B model wrote a test file as `<tool_response>` and read's numbered lines (test split): refused with
    what it copied, never run, the file untouched; the next proposal, the lines alone, runs."""
    framed = call_text("write", path="main.py", content="<tool_response>\n     1.def add(a, b):\n     2.    pass\n")
    numbered = call_text("write", path="main.py", content="     1\tdef add(a, b):\n     2\t    return a + b\n")
    plain = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return str(a + b)")
    s, _, user, _, events = make(tokenizer, tmp_path, [call_text("read", path="main.py"), framed, numbered, plain,
                                                       "Done."], [Approve(), Approve()], guard_rails=True)
    before = (tmp_path / "main.py").read_text()
    s.run_task("make it a str")
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert errors == [PASTED.format(arg="content", what="a <tool_response> tag"),
                      PASTED.format(arg="content", what="read's line numbers")]
    assert (tmp_path / "main.py").read_text() == before.replace("return a + b", "return str(a + b)")


def test_pasted_argument_leaves_real_text_alone():
    def pasted(**args: str) -> tuple[str, str] | None:
        return pasted_argument(ToolCall("write", {"path": "f", **args}))

    assert pasted(content="1. install\n2. run\n3. done\n   1. nested\n   2. list\n") is None  # markdown lists
    assert pasted(content="x = [\n     1.5,\n     2.5,\n]\n") is None  # floats aligned like read's numbers
    assert pasted(content="TAG = '<tool_response>'\n<tool_response>\nend\n") is None  # a tag inside the file
    assert pasted(content="     7\tdef f():\n") is None  # one numbered line is not a copy of a read
    assert pasted(content="a\n    10\tx\n    11\ty\n") == ("content", "read's line numbers")
    assert pasted(content="x\n</tool_call>") == ("content", "a </tool_call> tag")
    # the one line a change tool answered, written as the file (inflection's module, dev split)
    result = "replaced 9 occurrences in inflection/__init__.py (at lines 91, 419, 420, 421, 422, …; now 426 lines)"
    assert pasted(content=result) == ("content", "a change tool's result line")
    assert pasted(content="wrote 3 lines to a.py (new file)\n") == ("content", "a change tool's result line")
    assert pasted(content="# replaced 9 occurrences in x.py\n") is None  # a comment saying so is real text


def test_scripted_model_calls_naming_the_worked_examples_file_are_asked_again_unless_the_project_has_it(
        tokenizer, tmp_path):
    """The 0.5B model ran `bash app/hello.py` for "run greet.py": a call naming the example's file, which the
    session was never shown, is refused and asked again, but a search with it as `include` runs (over every
    file: grep drops an include that matches none); in a project that has that file it runs as proposed."""
    copied = [call_text("bash", command="bash app/hello.py"), call_text("read", path="app/hello.py"),
              call_text("edit_lines", path="app/hello.py", start_line=3, end_line=4, content="x = 1")]
    grep = call_text("grep", pattern="return", include="./hello.py")
    s, _, user, _, events = make(tokenizer, tmp_path, [*copied, grep, "In main.py, line 2."],
                                 [Approve()] * 3, guard_rails=True, max_malformed=4)
    assert s.run_task("where is the sum returned?").status == "answered"
    assert [(c.name, c.arguments.get("include")) for c, _ in user.seen] == [("grep", "./hello.py")]
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    # the edit is refused too, not turned into the read of that file first (which would fail: 0.5B, dev split)
    assert errors == [EXAMPLE_FILE.format(arg="command", name="app/hello.py"),
                      EXAMPLE_FILE.format(arg="path", name="app/hello.py"),
                      EXAMPLE_FILE.format(arg="path", name="app/hello.py")]
    assert "main.py:2:     return a + b" in s.messages[-2].content
    assert "matches include './hello.py' (a file-name glob such as *.py): every file was searched]" in \
        s.messages[-2].content
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "hello.py").write_text("print('hi')\n")
    s, _, user, _, _ = make(tokenizer, tmp_path, [copied[0], "It printed hi."], [Approve()], guard_rails=True)
    s.run_task("run the app")
    assert [c.arguments["command"] for c, _ in user.seen] == ["bash app/hello.py"]


def test_scripted_model_may_not_answer_right_after_a_failed_call(tokenizer, tmp_path):
    s, _, _, _, _ = make(tokenizer, tmp_path, [call_text("read", path="nope.py"), call_text("read", path="main.py"),
                                               "It adds."], [Approve(), Approve()])
    asked: list[bool] = []
    s._constraint = lambda allow_text, calls=True: asked.append(allow_text)  # type: ignore[method-assign]
    assert s.run_task("what is in main.py").status == "answered"
    assert asked == [False, False, True]  # no text at first, nor after the failed read; after the good one


def test_asks_for_change():
    from continualcode.intent import asks_for_change

    assert asks_for_change("Fix the bug in parse.py and run the tests.")
    assert asks_for_change("ordinalize(13) returns '13rd'. Find the bug, fix it.")
    assert asks_for_change("Bump the version to 1.2.3")
    assert not asks_for_change("What does humanize() do?")
    assert not asks_for_change("Where is the function that adds two numbers defined?")
    assert not asks_for_change("Explain the scheduler")


def test_scripted_model_may_not_answer_a_change_task_before_changing_a_file(tokenizer, tmp_path):
    replies = [call_text("read", path="main.py"), "Fixed it.", call_text("edit_lines", path="main.py", start_line=2,
               end_line=2, content="    return a + b  # checked\n"), "Done."]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve(), Approve()], guard_rails=True)
    asked = spy_allow_text(s)
    r = s.run_task("fix the comment in main.py")
    assert r.status == "answered" and r.text == "Done."
    assert asked == [False, False, False, True]  # text barred until the edit succeeded
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [CHANGE_FIRST]


def test_scripted_model_edit_of_an_unread_file_becomes_the_read_of_it(tokenizer, tmp_path):
    """A change to a file the session has not seen is turned into the read of that file (asked about like
    any read); the model then proposes its edit again, with the lines in view.  Denying the read teaches from
    what the model wrote: the step's completion is the model's own edit, its correction the user's words."""
    edit = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return b + a\n")
    s, _, user, _, events = make(tokenizer, tmp_path, [edit, edit, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("swap the operands in main.py").status == "answered"
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines"]
    assert not [e for e in events if isinstance(e, Proposal) and e.error]
    assert (tmp_path / "main.py").read_text().endswith("return b + a\n")
    other = tmp_path / "again"
    other.mkdir()
    s2, _, _, learner2, _ = make(tokenizer, other, [edit, "ok"], [Deny("no reading now")], guard_rails=True)
    s2.run_task("swap the operands in main.py")
    assert [(c.kind, c.attempt_text, c.text) for c in learner2.calls] == [("deny", edit, "no reading now")]
    assert learner2.calls[0].messages[-1].role == "user"  # the context before the attempt: the task
    third = tmp_path / "edited"
    third.mkdir()
    s3, _, _, learner3, _ = make(tokenizer, third, [edit, "ok"], [Edit({"path": "main.py", "offset": 2})],
                                 guard_rails=True)
    s3.run_task("swap the operands in main.py")
    [c] = learner3.calls
    assert (c.kind, c.attempt_text) == ("edit", edit)
    assert c.demonstration is not None and '"offset": 2' in c.demonstration


def test_scripted_model_must_run_the_tests_after_its_change_when_asked(tokenizer, tmp_path):
    rd = call_text("read", path="main.py")
    edit = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return b + a\n")
    test = call_text("bash", command="python -c 'import main'")
    replies = [rd, edit, "Fixed.", test, "Fixed and tested."]
    s, _, user, _, events = make(tokenizer, tmp_path, replies, [Approve()] * 3, guard_rails=True)
    r = s.run_task("Fix main.py and run the tests.")
    assert r.status == "answered" and r.text == "Fixed and tested."
    assert [c.name for c, _ in user.seen] == ["read", "edit_lines", "bash"]
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [RUN_FIRST]


def test_scripted_model_overwrite_of_an_unread_file_is_read_first_but_a_new_file_is_written(tokenizer, tmp_path):
    over = call_text("write", path="main.py", content="x = 1\n")
    new = call_text("write", path="new.py", content="y = 2\n")
    s, _, user, _, _ = make(tokenizer, tmp_path, [over, new, "Done."], [Approve(), Approve()], guard_rails=True)
    assert s.run_task("write the files").status == "answered"
    assert [(c.name, c.arguments["path"]) for c, _ in user.seen] == [("read", "main.py"), ("write", "new.py")]


def test_scripted_model_may_not_answer_right_after_a_search_that_found_nothing(tokenizer, tmp_path):
    replies = [call_text("grep", pattern="def nowhere"), call_text("grep", pattern="def "), "mul is not in main.py."]
    s, _, _, _, _ = make(tokenizer, tmp_path, replies, [Approve(), Approve()], guard_rails=True)
    asked = spy_allow_text(s)
    assert s.run_task("where is mul?").status == "answered"  # no definition shares a word with it: no hint
    assert asked == [False, False, True]


def test_scripted_model_empty_search_goes_on_to_the_nearest_definitions_then_their_read(tokenizer, tmp_path):
    (tmp_path / "names.py").write_text(
        'def camelize(text):\n    """Convert strings to CamelCase."""\n    return text\n\n\n' + 'X = 1\n' * 10 +
        'def underscore(word):\n    """Make an underscored, lowercase form: DeviceType -> device_type."""\n'
        '    return word\n')
    made_up = call_text("grep", pattern="def camel_to_snake")
    replies = [made_up, made_up, "underscore, in names.py."]
    s, _, user, _, _ = make(tokenizer, tmp_path, replies, [Approve(), Approve()], guard_rails=True)
    asked = spy_allow_text(s)
    r = s.run_task("Which function turns DeviceType into device_type, and in which file?")
    assert r.status == "answered" and asked == [False, True, True]
    first = next(m for m in s.messages if m.role == "tool").content
    assert first.startswith("no matches for 'def camel_to_snake' in .\nno definition has that name; the definitions "
                            "nearest to its words and the task's are:\nnames.py:16: def underscore(word):  # Make an "
                            "underscored, lowercase form: DeviceType -> device_type.\nnames.py:1: def camelize(text):")
    # the same empty search again: the read of the nearest definition (Python, not a test, listed first), from
    # HIT_CONTEXT lines above it
    assert [(c.name, c.arguments.get("path"), c.arguments.get("offset")) for c, _ in user.seen][1] == \
        ("read", "names.py", 11)


def test_scripted_model_answer_to_where_that_names_no_file_is_sent_back_once(tokenizer, tmp_path):
    from continualcode.rails import NAME_THE_FILE

    replies = [call_text("grep", pattern="def add"), "It is the add function.", "Still the add function."]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve()], guard_rails=True)
    r = s.run_task("Where is the function that adds two numbers?")
    assert r.status == "answered" and r.text == "Still the add function."  # once a task: the second stands
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NAME_THE_FILE]
    s2, _, _, _, events2 = make(tokenizer, tmp_path, [replies[0], "add, in main.py."], [Approve()], guard_rails=True)
    assert s2.run_task("Where is the function that adds two numbers?").text == "add, in main.py."
    assert not [e for e in events2 if isinstance(e, Proposal) and e.error]


def test_scripted_model_reply_asking_for_a_next_step_is_sent_back_once(tokenizer, tmp_path):
    """After the fix, "To continue, please provide the next step of the process." was the answer in two user trials
    (isodate, python-dotenv): sent back once a task, asking what the task found or changed; the second stands.  A
    reply that names a file reports, and stands."""
    from continualcode.rails import ASKS_NEXT
    from continualcode.replies import asks_for_next_step

    assert asks_for_next_step("To continue, please provide the next step of the process.")
    assert asks_for_next_step("To continue with the task, please provide the offset and limit for the next part.")
    assert asks_for_next_step("Done. What would you like me to do next?")
    assert not asks_for_next_step("I changed line 1 of main.py to subtract; what should I do next?")
    assert not asks_for_next_step("add now returns a - b.") and not asks_for_next_step("To continue reading, see b.py")
    (tmp_path / "main.py").write_text("def add(a, b):\n    return a + b\n")
    fix = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a - b")
    vague, report = "To continue, please provide the next step of the process.", "add in main.py now subtracts."
    replies = [call_text("read", path="main.py"), fix, vague, report]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve(), Approve()], guard_rails=True)
    assert s.run_task("make add in main.py subtract").text == report
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [ASKS_NEXT]
    (tmp_path / "main.py").write_text("def add(a, b):\n    return a + b\n")
    s, _, _, _, events = make(tokenizer, tmp_path, [*replies[:3], vague], [Approve(), Approve()], guard_rails=True)
    assert s.run_task("make add in main.py subtract").text == vague  # once a task: the second stands
    s, _, _, _, _ = make(tokenizer, tmp_path, [replies[0], vague], [Approve()])  # guard rails off: shown as it is
    assert s.run_task("what does add in main.py do?").text == vague


def test_scripted_model_may_answer_after_an_empty_search_that_showed_wider_hits(tokenizer, tmp_path):
    (tmp_path / "ops.py").write_text("def sub(a, b):\n    return a - b\n")
    replies = [call_text("grep", pattern="def sub", path="main.py"), "sub is in ops.py."]
    s, _, _, _, _ = make(tokenizer, tmp_path, replies, [Approve()], guard_rails=True)
    asked = spy_allow_text(s)
    assert s.run_task("where is sub?").status == "answered"
    assert asked == [False, True]
    assert next(m for m in s.messages if m.role == "tool").content.startswith(
        "no matches for 'def sub' in main.py\nin the whole project it matches:\nops.py:1: def sub(a, b):")


def test_scripted_model_refused_call_proposed_again_is_sampled_again_then_malformed(tokenizer, tmp_path):
    from continualcode.rails import REJECTED_AGAIN

    bad = call_text("grep", pattern="string")
    s, model, user, _, events = make(tokenizer, tmp_path, [bad] * 7, [], guard_rails=True)
    r = s.run_task("find the adder")
    assert r.status == "malformed" and user.seen == []
    errors = [e.error for e in events if isinstance(e, Proposal)]
    assert sum("placeholder" in (e or "") for e in errors) == 1 and errors.count(REJECTED_AGAIN) == 6
    assert len(model.prompts) == 7  # 1 + (1 + 2 re-samples) + (1 + 2): three malformed turns in all


def test_scripted_model_must_read_the_code_it_explains(tokenizer, tmp_path):
    from continualcode.intent import asks_to_explain

    assert asks_to_explain("What does smart_truncate do?") and asks_to_explain("Why does pluralize('sheep') work?")
    assert not asks_to_explain("Where is the function that adds two numbers defined?")
    replies = [call_text("grep", pattern="def add"), call_text("read", path="main.py"), "add returns a + b."]
    s, _, _, _, _ = make(tokenizer, tmp_path, replies, [Approve(), Approve()], guard_rails=True)
    asked = spy_allow_text(s)
    assert s.run_task("what does add do?").status == "answered"
    assert asked == [False, False, True]  # not after the grep alone: after the read


def test_scripted_model_with_the_task_s_code_shown_may_explain_after_any_call(tokenizer, tmp_path):
    """With `retrieve` on, the first prompt holds the definition the task names, numbered as read shows it,
    after the file listing; an explanation may then follow a grep (no read owed).  Off: the listing alone."""
    from continualcode.retrieve import HEAD

    replies = [call_text("grep", pattern="def add"), "add(a, b) in main.py returns a + b."]
    s, model, _, _, _ = make(tokenizer, tmp_path, replies, [Approve()], guard_rails=True, retrieve=2000)
    asked = spy_allow_text(s)
    assert s.run_task("what does add do?").status == "answered"
    assert asked == [False, True]
    first = tokenizer.decode(model.prompts[0])
    assert f"main.py\n\n{HEAD}\nmain.py, lines 1-2:\n     1\tdef add(a, b):\n     2\t    return a + b" in first
    s, model, _, _, _ = make(tokenizer, tmp_path, [call_text("grep", pattern="def add")], [Approve()],
                             guard_rails=True, max_turns=1)
    s.run_task("what does add do?")
    assert HEAD not in tokenizer.decode(model.prompts[0])


def test_ungrounded_names_are_what_no_result_showed() -> None:
    """An answer may name only functions and files the session was shown (results, tasks, listing);
    builtins and prose are free; paths count whole, without './', and by their parts."""
    from continualcode.rails import Rails

    r = Rails(file_key=lambda c: "")
    r.saw("inflection/__init__.py:42: def underscore(word):")
    assert r.ungrounded("underscore(word) in ./inflection/__init__.py, line 42, uses len() and re.sub().") == ["sub"]
    assert r.ungrounded('greet(name) in app/hello.py returns "Hello".') == ["greet", "app/hello.py"]
    assert r.ungrounded("It is defined in __init__.py as underscore.") == []
    assert r.ungrounded("It lower-cases the word (after the regex).") == []
    # methods of built-in types are free too (the 1.5B model was refused for `.readlines()` / `.strip()`)
    assert r.ungrounded("It calls f.readlines(), then line.strip().startswith('#').") == []
    r.saw("./pkg/core.py")  # a path shown with './' counts whole, as the answer writes it or not
    assert r.ungrounded("See pkg/core.py and ./pkg/core.py.") == []
    r.saw("src/tomli/_parser.py:54: def loads(s):")  # a trailing part of a shown path (a user trial, tomli)
    assert r.ungrounded("loads in tomli/_parser.py parses it.") == []
    assert r.ungrounded("loads in other/_parser.py parses it.") == ["other/_parser.py"]
    # a name alone in backticks counts (not a keyword, a builtin or one of the agent's tools); an empty search's
    # echo of its pattern shows nothing, what follows it does (the 1.5B model answered with the name it had
    # made up and grepped for in vain: "the `def compute_next_job` function", dev split)
    r.saw("no matches for 'def compute_next_job' in .\nno definition has that name; the definitions nearest to its "
          "words and the task's are:\nsched.py:700: def _schedule_next_run(self) -> None:")
    assert r.ungrounded("I used the `grep` function to find the `def compute_next_job` function.") == \
        ["compute_next_job"]
    assert r.ungrounded("It is `_schedule_next_run()`, a `def` that returns `None`, in `sched.py`.") == []
    assert r.ungrounded("It is `class Handler` (see `loads`).") == ["Handler"]


def test_scripted_model_answer_naming_what_no_result_showed_is_refused_then_grounded(tokenizer, tmp_path):
    """The worked example's `greet` in an answer about this project is sent back as an error (each
    time); the answer from the read ends the task."""
    from continualcode.rails import UNGROUNDED

    bad = "greet(name) in app/hello.py returns a greeting."
    replies = [call_text("read", path="main.py"), bad, bad, "add(a, b) in main.py returns a + b."]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve()], guard_rails=True)
    r = s.run_task("what does add do?")
    assert r.status == "answered" and r.text.startswith("add(a, b)")
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    # refused twice: the error that names `greet` does not make it something the session was shown
    assert errors == [UNGROUNDED.format(names="greet, app/hello.py")] * 2


def test_scripted_model_call_written_as_text_is_answered_from_its_prose(tokenizer, tmp_path):
    """A reply that tells how to use a tool and writes the command in a fenced block is neither a call nor an
    answer; it was told "answer in a sentence or two of your own words" (the empty answer it is not).  Now its
    prose decides what it is told: the name it made up (the 1.5B model's `XMLDictParser`, grepped for in vain),
    or that it tells how to use the tools; what the fence holds is not the prose.  Rails off: the plain error."""
    from continualcode.agent import TEXT_CALL_ERROR
    from continualcode.rails import NARRATED, UNGROUNDED
    from continualcode.replies import instead_of

    fence = "\n\n```json\ngrep -r \"def plus\" .\n```"
    made_up = "You can use the `grep` function to search for it. The function is `plus`." + fence
    narrated = "You can use the `grep` function to search for the function that adds." + fence
    grep, answer = call_text("grep", pattern="def add"), "add(a, b) in main.py adds two numbers."
    s, _, _, _, events = make(tokenizer, tmp_path, [grep, made_up, narrated, answer], [Approve()], guard_rails=True)
    assert s.run_task("which function adds two numbers?").text == answer
    errors = [e.error for e in events if isinstance(e, Proposal) and e.error]
    assert errors == [UNGROUNDED.format(names="plus"), NARRATED]
    s, _, _, _, events = make(tokenizer, tmp_path, [grep, narrated, answer], [Approve()])
    assert s.run_task("which function adds two numbers?").text == answer
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [TEXT_CALL_ERROR]
    # the pure part: prose only (a name or path in the fence is not asserted), else the error as it was
    assert instead_of("Use `main.py`." + fence, {"main.py"}, "e") == "e"
    assert instead_of("It is add." + "\n```\nplus(1)\n```", set(), "e") == "e"
    assert instead_of("Use the grep tool with the pattern def add." + fence, set(), "e") == NARRATED
    assert instead_of("It is `plus()` in `calc.py`.", {"calc.py"}, "e") == UNGROUNDED.format(names="plus")

def test_scripted_model_edit_that_breaks_the_file_is_reindented_or_sampled_again(tokenizer, tmp_path):
    """An edit whose only fault is its indentation runs re-indented (and is not learned from: not the
    model's tokens); one that breaks the file otherwise is sampled again, and proposed (the preview
    warns) when every sample breaks it."""
    from continualcode.rails import BREAKS_SYNTAX

    flat = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="return b + a")
    read = call_text("read", path="main.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [read, flat, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("swap the operands in main.py").status == "answered"
    assert user.seen[1][0].arguments["content"] == "    return b + a"
    assert (tmp_path / "main.py").read_text() == "def add(a, b):\n    return b + a\n"
    assert s.messages[-3].content == user.seen[1][0].to_text()  # the conversation holds the call that ran

    broken = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return (b")
    other = tmp_path / "other"
    other.mkdir()
    s2, _, user2, _, events2 = make(tokenizer, other, [read, broken, broken, broken, "Done."],
                                    [Approve(), Approve()], guard_rails=True)
    assert s2.run_task("break main.py").status == "answered"
    assert [e.error for e in events2 if isinstance(e, Proposal) and e.error] == [BREAKS_SYNTAX] * 3
    assert "no longer parses as Python" in user2.seen[1][1]  # the third sample is proposed, with the warning


def test_scripted_model_change_whose_string_holds_a_line_break_runs_with_the_escape(tokenizer, tmp_path):
    """The model writes code into a call's JSON as it reads it: `'\\n'.join` arrives as a quote, a line
    break and a quote, and the file would no longer parse; the change runs with `\\n` in the string."""
    read = call_text("read", path="main.py")
    joined = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return '\n'.join([a, b])")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, joined, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("change add in main.py to join its arguments with a newline").status == "answered"
    assert user.seen[1][0].arguments["content"] == "    return '\\n'.join([a, b])"
    assert (tmp_path / "main.py").read_text() == "def add(a, b):\n    return '\\n'.join([a, b])\n"
    assert not [e.error for e in events if isinstance(e, Proposal) and e.error]


def test_scripted_model_write_that_drops_most_of_a_file_is_sampled_again(tokenizer, tmp_path):
    """The 1.5B model wrote the one function it meant to add over a 1,081-line module: a write that leaves an
    existing file of 20+ lines with less than half of them is sampled again; proposed (the preview and the
    result warn) when every sample does it; an edit, or a write that keeps the file's lines, is not."""
    from continualcode.rails import CUTS_FILE

    body = "".join(f"x{i} = {i}\n" for i in range(30))
    read = call_text("read", path="big.py")
    cut = call_text("write", path="big.py", content="parse_all = None\n")  # not one definition: not placed
    keep = call_text("write", path="big.py", content=body + "parse_all = None\n")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, cut, keep, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    (tmp_path / "big.py").write_text(body)
    assert s.run_task("add parse_all to big.py").status == "answered"
    assert "warning" not in user.seen[1][1]
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [CUTS_FILE]
    assert (tmp_path / "big.py").read_text().startswith(body)

    other = tmp_path / "other"
    other.mkdir()
    s2, _, user2, _, events2 = make(tokenizer, other, [read, cut, cut, cut, "Done."], [Approve(), Approve()],
                                    guard_rails=True)
    (other / "big.py").write_text(body)
    assert s2.run_task("add parse_all to big.py").status == "answered"
    assert [e.error for e in events2 if isinstance(e, Proposal) and e.error] == [CUTS_FILE] * 3
    assert "would go from 30 lines to 1" in user2.seen[1][1]  # the third sample is proposed, with the warning


def test_scripted_model_write_of_one_definition_over_its_module_is_placed_in_the_module(tokenizer, tmp_path):
    """Asked to add parse_all, the 1.5B model wrote the function alone over parse.py, wrapped as a web page
    shows code: proposed instead, the edit that appends it (a same-named function would be replaced, a class
    of the same name gets the new methods: test_addition.py); the file keeps its lines and parses."""
    body = "".join(f"x{i} = {i}\n" for i in range(30))
    (tmp_path / "big.py").write_text(body)
    read = call_text("read", path="big.py")
    html = call_text("write", path="big.py", content="<pre><code>def parse_all(fmt, ss):<br>    return [s for s in "
                                                      "ss if s &lt; fmt]<br></code></pre>")
    s, _, user, _, events = make(tokenizer, tmp_path, [read, html, "Done."], [Approve(), Approve()],
                                 guard_rails=True)
    assert s.run_task("add parse_all to big.py").status == "answered"
    placed = user.seen[1][0]
    assert placed.name == "edit_lines" and (placed.arguments["start_line"], placed.arguments["end_line"]) == (31, 30)
    added = "\n\ndef parse_all(fmt, ss):\n    return [s for s in ss if s < fmt]\n"
    assert (tmp_path / "big.py").read_text() == body + added
    assert not [e.error for e in events if isinstance(e, Proposal) and e.error]
    # denied, the placement is not proposed again: the write goes on as written (a rewrite may be meant)
    other = tmp_path / "other"
    other.mkdir()
    (other / "big.py").write_text(body)
    s2, _, user2, _, _ = make(tokenizer, other, [read, *[html] * 7], [Approve(), Deny("rewrite it"), Deny("no")],
                                    guard_rails=True)
    assert s2.run_task("add parse_all to big.py").status == "denied"
    assert [c.name for c, _ in user2.seen] == ["read", "edit_lines", "write"]  # the write, with its warnings
    assert "no longer parses" in user2.seen[2][1] and "would go from 30 lines to 1" in user2.seen[2][1]
    assert (other / "big.py").read_text() == body


def test_scripted_model_answer_that_pastes_lines_or_says_nothing_is_refused(tokenizer, tmp_path):
    from continualcode.intent import asks_a_question
    from continualcode.rails import NOT_AN_ANSWER

    assert asks_a_question("Where is add defined?") and asks_a_question("which file has add")
    assert not asks_a_question("swap the operands in main.py")
    read = call_text("read", path="main.py")
    replies = [read, "101", "     1\tdef add(a, b):\n     2\t    return a + b",
               "main.py:1: def add(a, b):\nmain.py:2: x", "no matches for 'add' in main.py",
               "add(a, b) in main.py returns a + b."]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve()], guard_rails=True, max_malformed=5)
    r = s.run_task("which function adds two numbers?")
    assert r.status == "answered" and r.text.startswith("add(a, b) in main.py")
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NOT_AN_ANSWER] * 4
    # a null word is no answer to any task (the 0.5B model's reply after running schedule's tests); "Done." is
    run = call_text("bash", command="python3 -c 'print(2)'")
    s, _, _, _, events = make(tokenizer, tmp_path, [run, "NULL", "None.", "Done."], [Approve()], guard_rails=True,
                              max_malformed=5)
    assert s.run_task("swap the operands in main.py and check it").text == "Done."
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NOT_AN_ANSWER] * 2


def test_scripted_model_reply_telling_how_to_use_the_tools_is_asked_to_act_instead(tokenizer, tmp_path):
    """The 1.5B model answered a question its grep had just answered with "you can use the `grep` function with
    the pattern …": asked to make the call or answer from the results; an answer that says what a tool did is
    an answer.  Off (guard rails off), the narration is the answer."""
    from continualcode.rails import NARRATED, narrates_tools

    assert narrates_tools("To find it, you can use the `grep` function with the pattern `def add`.")
    assert narrates_tools("Run the bash command `pytest` to check.")
    assert not narrates_tools("I used grep: add is defined in main.py, line 1.")
    assert narrates_tools("To find it, I used the `grep` function to search for the string \"def next\" in a.py.")
    assert not narrates_tools("add reads two numbers and returns their sum.")
    grep = call_text("grep", pattern="def add")
    replies = [grep, "You can use the `grep` function with the pattern `def add` to find it.", "add is in main.py."]
    s, _, _, _, events = make(tokenizer, tmp_path, list(replies), [Approve()], guard_rails=True)
    assert s.run_task("where is add defined?").text == "add is in main.py."
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NARRATED]
    # sent back once a task: the second narration is the answer (the 1.5B model's named the file and function)
    again = "Use the grep tool: it shows add in main.py."
    s, _, _, _, events = make(tokenizer, tmp_path, [*replies[:2], again, *replies], [Approve(), Approve()],
                              guard_rails=True)
    assert s.run_task("where is add defined?").text == again
    assert s.run_task("where is add defined now?").text == replies[2]  # a new task: sent back again
    assert [e.error for e in events if isinstance(e, Proposal) and e.error] == [NARRATED, NARRATED]
    s, _, _, _, _ = make(tokenizer, tmp_path, list(replies), [Approve()])
    assert s.run_task("where is add defined?").text.startswith("You can use the `grep` function")
    # after the change the task asked for, saying which tool made it is the report (tomli trial: refused, the 1.5B
    # model's next replies were refused too, and the task ended on them)
    read = call_text("read", path="main.py")
    fix = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return b + a\n")
    report = "I used the `edit_lines` tool to swap the operands in main.py."
    s, _, _, _, events = make(tokenizer, tmp_path, [read, fix, report], [Approve(), Approve()], guard_rails=True)
    assert s.run_task("swap the operands of add in main.py").text == report
    assert not [e.error for e in events if isinstance(e, Proposal) and e.error]


def test_scripted_model_repeating_a_read_of_a_missing_path_reads_the_file_its_error_named(tokenizer, tmp_path):
    """The 0.5B model read `app/schedule.py` thirty times after 'did you mean schedule/__init__.py?'.
    Proposed again, such a call becomes the same call on the file named (asked about like any call;
    not the model's tokens, so nothing is learned from it)."""
    wrong = call_text("read", path="mian.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [wrong, wrong, "add(a, b) in main.py returns a + b."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("what does add in main.py do?").status == "answered"
    assert [c.arguments["path"] for c, _ in user.seen] == ["mian.py", "main.py"]
    assert [m.meta.get("ok") for m in s.messages if m.role == "tool"] == [False, True]


def test_scripted_model_repeating_a_grep_for_a_files_path_reads_that_file(tokenizer, tmp_path):
    """With "search with grep first" in its rules the 0.5B model grepped for the path of the file the task
    named, and repeated the empty search: its result says the pattern is a file, and proposed again the
    search becomes the read of that file."""
    grep = call_text("grep", pattern="main.py", include="main.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, grep, "add(a, b) in main.py returns a + b."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("what does add in main.py do?").status == "answered"
    assert [c.name for c, _ in user.seen] == ["grep", "read"] and user.seen[1][0].arguments["path"] == "main.py"
    first = next(m for m in s.messages if m.role == "tool").content
    assert first.startswith("no matches for 'main.py' in .\n(main.py is a file of the project: read it to see")


def test_scripted_model_repeating_an_empty_grep_that_showed_wider_hits_reads_the_first_python_hit(
        tokenizer, tmp_path):
    """The 1.5B model grepped `Job.until` in one file and repeated the empty search nine times although the
    wider search showed where `until` is defined: proposed again, the search becomes the read of the first
    Python file's hit, from a few lines above it (asked about like any call)."""
    from continualcode.reads import HIT_CONTEXT

    (tmp_path / "jobs.py").write_text("".join(f"x{i} = {i}\n" for i in range(20)) + "class Job:\n"
                                      "    def until(self, t):\n        return t\n")
    grep = call_text("grep", pattern="Job.until", path="main.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, grep, "until(t) in jobs.py returns t."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("what does Job.until do?").status == "answered"
    first = next(m for m in s.messages if m.role == "tool").content
    assert "\nthe definition of 'until', in the whole project it matches:\njobs.py:22:     def until" in first
    assert [c.name for c, _ in user.seen] == ["grep", "read"]
    assert user.seen[1][0].arguments == {"path": "jobs.py", "offset": 22 - HIT_CONTEXT, "limit": 400}
    # a Python file's hit before any other; none when the search found nothing anywhere
    from continualcode.hits import wider_hit

    wider = "no matches for 'b' in x.py\nin the whole project it matches:\nLICENSE:1: by\npkg/a.py:3: b = 1"
    assert wider_hit(wider) == ("pkg/a.py", 3)
    assert wider_hit(wider.replace("pkg/a.py:3: b = 1", "")) == ("LICENSE", 1)
    assert wider_hit("no matches for 'b' in x.py") is None and wider_hit("x.py:1: b") is None


def test_scripted_model_repeating_a_grep_that_found_its_hits_reads_the_best_hit_unless_it_was_read(
        tokenizer, tmp_path):
    """The 1.5B model grepped `def humanize` four times over after its one hit had named the file and the line:
    proposed again, a search with hits becomes the read of its best hit (asked about like any call); once a
    read has shown that line, the repeat is left to the loop rail."""
    from continualcode.rails import LOOP_ERROR
    from continualcode.reads import HIT_CONTEXT

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "words.py").write_text("".join(f"x{i} = {i}\n" for i in range(30)) + "def humanize(w):\n"
                                               "    return w.removesuffix('_id')\n")
    grep = call_text("grep", pattern="humanize", path=".")
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, grep, "humanize in pkg/words.py drops _id."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("what does humanize do?").status == "answered"
    assert [c.name for c, _ in user.seen] == ["grep", "read"]
    assert user.seen[1][0].arguments == {"path": "pkg/words.py", "offset": 31 - HIT_CONTEXT, "limit": 400}
    from continualcode.render import Parsed

    s.rails.start_task("what does humanize do with _id?")  # a new task: the read shown in the last one is gone
    found = ToolCall("grep", {"pattern": "humanize", "path": ".", "include": None})
    s.rails.ran(found, True, "pkg/words.py:31: def humanize(w):")
    first = s.rails.review(Parsed(call=found))
    assert first.redirected and first.parsed.call is not None and first.parsed.call.name == "read"
    s.rails.ran(ToolCall("read", {"path": "pkg/words.py", "offset": 20, "limit": 20}), True,
                "".join(f"{n:6d}\tx\n" for n in range(20, 33)))
    again = s.rails.review(Parsed(call=found))
    assert not again.redirected and again.parsed.call == found and again.repeat == LOOP_ERROR


def test_scripted_model_repeated_grep_reads_from_the_statement_that_holds_the_hit(tokenizer, tmp_path):
    """Sent to 5 lines above `'sheep',` (line 87 of inflection/__init__.py), the 1.5B model never saw the
    set's name, UNCOUNTABLES, 16 lines up: a hit's read starts at the function, class or statement that holds
    it, when that is at most READ_BACK lines up (here an empty grep's wider hit, repeated)."""
    from continualcode.reads import READ_BACK

    words = "".join(f"    'w{i}',\n" for i in range(20))
    (tmp_path / "words.py").write_text("import re\n\nUNCOUNTABLES = {\n" + words + "    'sheep',\n}\n")
    grep = call_text("grep", pattern="sheep", path="main.py")  # empty; the whole project's search finds it
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, grep, "sheep is in UNCOUNTABLES in words.py."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("why does pluralize('sheep') return sheep?").status == "answered"
    assert user.seen[1][0].arguments == {"path": "words.py", "offset": 3, "limit": 400}
    far = "x = [\n" + "".join(f"    {i},\n" for i in range(READ_BACK + 10)) + "    'sheep',\n]\n"
    (tmp_path / "words.py").write_text(far)
    assert s.workspace.statement_start("words.py", READ_BACK + 12) == 1
    assert s.rails.reads.at("words.py", READ_BACK + 12).arguments["offset"] == READ_BACK + 12 - 5  # too far up
    assert s.workspace.statement_start("README.md", 1) is None and s.workspace.statement_start("nope.py", 1) is None
    # a smaller read window (`read_cap`) starts the read nearer the hit, so that the window reaches it
    from continualcode.reads import READ_LINE_CHARS
    from continualcode.workspace_rails import workspace_rails

    assert s.rails.reads.read_back == READ_BACK  # 12,000 characters: 240 lines, at most READ_BACK
    small = workspace_rails(Workspace(tmp_path, read_cap=2000), on=True)
    assert small.reads.read_back == 2000 // READ_LINE_CHARS == 40
    assert small.reads.at("words.py", 30).arguments["offset"] == 1  # 29 lines up: from the statement
    assert small.reads.at("words.py", 50).arguments["offset"] == 45  # 49 lines up: 5 lines above the hit


def test_best_hit_prefers_python_then_not_a_test_then_a_definition():
    from continualcode.rails import best_hit

    hits = ("README.md:3: def humanize\ntests/test_w.py:9: def test_humanize():\npkg/w.py:40:     humanize(x)\n"
            "pkg/w.py:12: def humanize(w):\npkg/w.py:50: class Humanize:")
    assert best_hit(hits) == ("pkg/w.py", 12)
    assert best_hit(hits.replace("def humanize(w):", "y = humanize")) == ("pkg/w.py", 50)
    assert best_hit("README.md:3: humanize\ntests/test_w.py:9: x = 1") == ("tests/test_w.py", 9)
    assert best_hit("README.md:3: humanize\nCHANGES:1: humanize") == ("README.md", 3)
    assert best_hit("no matches for 'x' in .") is None
    # equals: the one in a file whose name the task says (a user trial on semver), else the first
    two = ("src/semver/_deprecated.py:279: def bump_minor(version):\n"
           "src/semver/version.py:280:     def bump_minor(self) -> \"Version\":")
    assert best_hit(two, definitions=True) == ("src/semver/_deprecated.py", 279)
    named = "Version.parse('3.4.5').bump_minor() returns 3.5.5 but it should be 3.5.0"
    assert best_hit(two, definitions=True, task=named) == ("src/semver/version.py", 280)
    assert best_hit(two, definitions=True, task="the versions bump wrong") == ("src/semver/_deprecated.py", 279)
    short = "b/ab_c.py:2: def f():\na/ab.py:1: def f():"
    assert best_hit(short, task="see ab") == ("b/ab_c.py", 2)  # a name under 3 characters names nothing
    assert best_hit(short.replace("ab.py", "abc.py"), task="see abc") == ("a/abc.py", 1)
    defs = "parse.py:29:         ... def parse_number(text):\nREADME.md:3: def x\npkg/w.py:87:     'sheep',"
    assert best_hit(defs) == ("parse.py", 29) and best_hit(defs, definitions=True) is None
    assert best_hit(hits, definitions=True) == ("pkg/w.py", 12)
    # docs' and set-up scripts' code counts as secondary too (`kinds.is_secondary`), as in the listing
    assert best_hit("docs/conf.py:5: def humanize(w):\nsetup.py:2: def humanize(w):\npkg/w.py:9: humanize(x)") == \
        ("pkg/w.py", 9)


def test_scripted_model_repeating_an_empty_grep_of_one_file_found_nowhere_reads_that_file(tokenizer, tmp_path):
    """The 0.5B model grepped parse.py for the task's own words (`'name' in parse('{name}', 'bob')`), found
    nowhere, and repeated the search until the loop rail ended the task: proposed again, an empty search of
    one file becomes the read of that file.  A search of a directory is left to the loop rail."""
    grep = call_text("grep", pattern="zzz", path="main.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [grep, grep, "add(a, b) in main.py returns a + b."],
                            [Approve(), Approve()], guard_rails=True)
    assert s.run_task("what does add in main.py do?").status == "answered"
    assert [c.name for c, _ in user.seen] == ["grep", "read"] and user.seen[1][0].arguments["path"] == "main.py"
    for path in (".", "missing.py"):
        wide = ToolCall("grep", {"pattern": "zzz", "path": path, "include": None})
        s.rails.ran(wide, True, f"no matches for 'zzz' in {path}")
        assert wide.to_text() not in s.rails.meant


@pytest.mark.parametrize("remind", [True, False])
def test_scripted_model_tool_results_end_with_the_task_when_remind_task(tokenizer, tmp_path, remind):
    """Every tool result the conversation keeps (and so every prompt, the teacher's too) closes with the task
    it serves; the tool's own output is kept whole in front of it and in the ToolOutput event."""
    rd = call_text("read", path="main.py")
    s, model, _, _, events = make(tokenizer, tmp_path, [rd, "It adds."], [Approve()], remind_task=remind)
    assert s.run_task("what does main.py do?").status == "answered"
    tool = next(m for m in s.messages if m.role == "tool")
    output = next(e for e in events if isinstance(e, ToolOutput)).output
    assert tool.content.startswith(output)
    assert tool.content.endswith("(The task: what does main.py do?)") is remind
    assert ("(The task: what does main.py do?)" in model.tokenizer.decode(model.prompts[-1])) is remind


class WarmingScriptedModel(ScriptedModel):
    """The scripted model with a `warm` (speculate.Warmable) that records what it was asked to prefill."""

    def __init__(self, tokenizer, replies: list[str]) -> None:
        super().__init__(tokenizer, replies)
        self.warmed: list[tuple[list[int], object]] = []  # the next prompts' prefills
        self.warmed_base: list[tuple[list[int], object]] = []  # the base's, of the proposals' own prompts
        self.called = threading.Event()
        self.called_base = threading.Event()

    def warm(self, prompt_ids, *, stop=None, base=False) -> int:
        (self.warmed_base if base else self.warmed).append((list(prompt_ids), stop))
        (self.called_base if base else self.called).set()
        return len(prompt_ids)


def test_scripted_model_a_change_the_preview_warns_about_is_asked_even_when_its_tool_is_auto_approved(
        tokenizer, tmp_path):
    """In a user trial with every tool auto-approved, a write left a 785-line module with 5 lines that do
    not parse (the rails had sampled it again and then proposed it with the preview's warning): such a change
    is asked about; a harmless one is still approved without asking."""
    big = "".join(f"x{i} = {i}\n" for i in range(40))
    cut = call_text("write", path="big.py", content="x0 = 0\n")
    ok = call_text("write", path="new.py", content="y = 1\n")
    rd = call_text("read", path="big.py")
    s, _, user, _, _ = make(tokenizer, tmp_path, [rd, ok, cut, "Done."], [Deny()],
                            auto_approve=("read", "write"))
    (tmp_path / "big.py").write_text(big)
    s.run_task("Write new.py with y = 1.")
    assert [c.name for c, _ in user.seen] == ["write"] and user.seen[0][0].arguments["path"] == "big.py"
    assert (tmp_path / "big.py").read_text() == big and (tmp_path / "new.py").read_text() == "y = 1\n"
    other = tmp_path / "twice"
    other.mkdir()
    pad = "def _padleft(w):\n    return 1\n\n\ndef _padright(w):\n    return 2\n"
    (other / "t.py").write_text(pad)
    swap = call_text("replace", path="t.py", old_string="_padleft", new_string="_padright", replace_all=True)
    s2, _, user2, _, _ = make(tokenizer, other, [call_text("read", path="t.py"), swap, "Done."], [Deny()],
                              auto_approve=("read", "replace"),
                              renderer=Renderer(tokenizer, tools=tool_schemas("both")))
    s2.run_task("Numbers are padded on the wrong side in t.py.")
    assert [c.name for c, _ in user2.seen] == ["replace"] and "defined twice" in user2.seen[0][1]
    assert (other / "t.py").read_text() == pad


def make_warming(tokenizer, tmp_path, replies, decisions, **kw):
    s, _, user, learner, events = make(tokenizer, tmp_path, [], decisions, **kw)
    s.backend = model = WarmingScriptedModel(tokenizer, replies)
    return s, model, user, learner, events


def test_scripted_model_an_approved_read_was_prefilled_with_its_result_while_the_user_read(tokenizer, tmp_path):
    """While the user decides on a read, the prompt that follows its approval (the read's result
    included) is prefilled: it is exactly the next sample's prompt; the approval waited for it."""
    rd = call_text("read", path="main.py")
    s, model, _, _, _ = make_warming(tokenizer, tmp_path, [rd, "It adds."], [Approve()])
    assert s.run_task("what does main.py do?").status == "answered"
    assert len(model.warmed) == 1
    warmed, stop = model.warmed[0]
    assert warmed == model.prompts[1]
    assert not stop.is_set()


def test_scripted_model_a_denied_read_stops_the_prefill_and_a_write_is_never_run_ahead(tokenizer, tmp_path):
    """A denial stops the speculation; its read result never reaches the conversation.  A call that
    changes something is not run before its approval: only the prompt up to the proposal is prefilled."""
    rd, wr = call_text("read", path="main.py"), call_text("write", path="main.py", content="x = 1\n")
    before = "def add(a, b):\n    return a + b\n"

    class Checking(ScriptedUser):  # a user who answers once the prefill has begun
        def decide(self, call, preview):
            assert model.called.wait(10)
            model.called.clear()
            assert (tmp_path / "main.py").read_text() == before  # nothing ran ahead of the answer
            return super().decide(call, preview)

    s, model, _, learner, _ = make_warming(tokenizer, tmp_path, [rd, wr], [Deny("no reading"), Deny("")])
    s.approver = Checking([Deny("no reading"), Deny("")])
    assert s.run_task("change main.py").status == "denied"
    assert [stop.is_set() for _, stop in model.warmed] == [True, True]
    assert not [m for m in s.messages if m.role == "tool"]
    warmed_write = model.tokenizer.decode(model.warmed[1][0])
    assert warmed_write.rstrip().endswith(wr.strip()) or wr.strip() in warmed_write
    assert "return a + b" not in warmed_write.split("Do this instead: no reading")[-1]
    assert len(learner.calls) == 1


@pytest.mark.parametrize("answer", ["deny", "approve"])
def test_scripted_model_while_the_user_reads_the_proposals_own_prompt_is_prefilled_for_the_base(
        tokenizer, tmp_path, answer):
    """After the next prompt, the job prefills the base's KV of the proposal's own prompt (a denial's update
    scores the denied call under the base): exactly the prompt that was sampled; the answer stops it."""
    rd = call_text("read", path="main.py")

    class Reading(ScriptedUser):  # a user who answers once the base's prefill has begun
        def decide(self, call, preview):
            assert model.called_base.wait(10)
            return super().decide(call, preview)

    decision = Deny("no reading") if answer == "deny" else Approve()
    s, model, _, learner, _ = make_warming(tokenizer, tmp_path, [rd, "It adds."], [decision, Deny("")])
    s.approver = Reading([decision, Deny("")])
    s.run_task("what does main.py do?")
    warmed, stop = model.warmed_base[0]
    assert warmed == model.prompts[0] and stop.is_set()
    assert len(learner.calls) == (answer == "deny")


@pytest.mark.parametrize("how", ["speculate=false", "always approved", "no warm"])
def test_scripted_model_no_prefill_without_a_user_to_wait_for_or_when_off(tokenizer, tmp_path, how):
    rd = call_text("read", path="main.py")
    kw = {"speculate": False} if how == "speculate=false" else {}
    s, model, _, _, _ = make_warming(tokenizer, tmp_path, [rd, "It adds."], [Approve()], **kw)
    if how == "always approved":
        s.auto_approve.add("read")
    if how == "no warm":
        s.backend = ScriptedModel(tokenizer, [rd, "It adds."])
    assert s.run_task("what does main.py do?").status == "answered"
    assert model.warmed == []


def test_scripted_model_reply_it_barely_meant_to_a_question_is_not_shown_and_the_answer_is_asked_for(tokenizer,
                                                                                                  tmp_path):
    """"NULL" drawn from 2% of the first token's mass (the model wanted a call the grammar bars) is not the
    answer: the session asks for one in words (a user turn) under a text-only grammar, and shows that.  Off
    (`ask_for_answer=false`), "NULL" is the answer."""
    from continualcode.answer import ANSWER_NOW, NOT_MEANT

    replies = [call_text("read", path="main.py"), ("NULL", 0.02), ("add in main.py returns a + b.", 0.9)]
    s, model, _, _, events = make(tokenizer, tmp_path, list(replies), [Approve()], ask_for_answer=True)
    modes: list[tuple[bool, bool]] = []
    s._constraint = lambda allow_text, calls=True: modes.append((allow_text, calls))  # type: ignore[method-assign]
    r = s.run_task("what does add do?")
    assert (r.status, r.text) == ("answered", "add in main.py returns a + b.")
    assert modes == [(False, True), (True, True), (True, False)]  # the answer asked for: words only
    asked = tokenizer.decode(model.prompts[2])
    assert ANSWER_NOW in asked and "NULL" not in asked  # the reply not meant is not kept
    assert [e.error for e in events if isinstance(e, Proposal)][1] == NOT_MEANT.format(mass=0.02)
    assert not [e for e in events if isinstance(e, AssistantText) and e.text == "NULL"]
    s, _, _, _, _ = make(tokenizer, tmp_path, list(replies), [Approve()], ask_for_answer=False)
    assert s.run_task("what does add do?").text == "NULL"


def test_scripted_model_reply_it_barely_meant_in_a_change_task_is_sampled_again_as_a_call(tokenizer, tmp_path):
    """In a task that is not a question the model that barely meant its words wanted to act: the next sample
    admits calls only, and no answer is asked for; a reply it meant ("Done.", 80%) ends the task."""
    from continualcode.answer import ANSWER_NOW

    edit = call_text("edit_lines", path="main.py", start_line=3, end_line=2, content="def neg(a):\n    return -a\n")
    s, model, _, _, _ = make(tokenizer, tmp_path, [call_text("read", path="main.py"), ("json", 0.01), edit,
                                                    ("Done.", 0.8)], [Approve(), Approve()], ask_for_answer=True)
    modes: list[tuple[bool, bool]] = []
    real = s._constraint
    s._constraint = lambda allow_text, calls=True: modes.append((allow_text, calls)) or real(allow_text, calls)  # type: ignore
    r = s.run_task("add a neg function to main.py")
    assert (r.status, r.text) == ("answered", "Done.")
    assert modes == [(False, True), (True, True), (False, True), (True, True)]
    assert "def neg(a):" in (tmp_path / "main.py").read_text()
    assert not any(ANSWER_NOW in tokenizer.decode(p) for p in model.prompts)


def test_scripted_model_question_that_would_end_unanswered_is_asked_for_its_answer_once(tokenizer, tmp_path):
    """A question that reaches max_turns, or whose model keeps repeating a read, is asked once for its
    answer; an answer that is then a call (scripted: no grammar) is none, and the task ends as it would."""
    read, grep = call_text("read", path="main.py"), call_text("grep", pattern="add")
    s, _, _, _, _ = make(tokenizer, tmp_path, [read, grep, "add returns a + b (main.py)."], [Approve(), Approve()],
                         ask_for_answer=True, max_turns=2)
    assert s.run_task("what does add do?").text == "add returns a + b (main.py)."
    loops = [read] * (1 + 3 * 3)  # the read, then three notes of three samples each
    s, _, _, _, _ = make(tokenizer, tmp_path, [*loops, "It adds a and b."], [Approve()], ask_for_answer=True)
    assert (s.run_task("what does add do?").status, s.messages[-1].content) == ("answered", "It adds a and b.")
    s, _, _, _, _ = make(tokenizer, tmp_path, [read, grep, *[read] * 3], [Approve(), Approve()], ask_for_answer=True,
                         max_turns=2)  # the read again, sampled again while it repeats
    assert s.run_task("what does add do?").status == "max_turns"
    s, _, _, _, _ = make(tokenizer, tmp_path, [read, grep], [Approve(), Approve()], max_turns=2)
    assert s.run_task("what does add do?").status == "max_turns"  # off: not asked


def test_a_reply_that_echoes_what_the_session_showed_is_not_an_answer():
    """Five words or more found whole in a message the session showed (case, spacing, a leading "error:"
    aside); a short reply that quotes a path is an answer."""
    from continualcode.answer import echoed

    shown = ["no matches\n\n(The task: What happens when a  job returns CancelJob?)",
             "error: answer the task in a sentence or two of your own words. Try again.", "Files: xmltodict.py"]
    assert echoed("The task: what happens when a job returns CancelJob?", shown)
    assert echoed("error: error:answer the task in a sentence or two", shown)
    assert not echoed("xmltodict.py", shown)  # short: a name may be the answer
    assert not echoed("When a job returns CancelJob it is unscheduled.", shown)


def test_scripted_model_answer_that_echoes_the_task_reminder_is_asked_for_again(tokenizer, tmp_path):
    """The 0.5B model answered with the reminder that closes each result; with `ask_for_answer` the session
    asks for the answer instead (meant by the grammar's measure: 90% allowed)."""
    from continualcode.answer import ECHOED

    replies = [call_text("read", path="main.py"), ("The task: what does add do in main.py?", 0.9),
               "add returns the sum of a and b."]
    s, _, _, _, events = make(tokenizer, tmp_path, replies, [Approve()], ask_for_answer=True)
    assert s.run_task("What does add do in main.py?").text == "add returns the sum of a and b."
    assert ECHOED in [e.error for e in events if isinstance(e, Proposal)]




def test_scripted_model_denial_that_names_a_line_quotes_it_for_the_retry_and_the_teacher_not_the_memory(
        tokenizer, tmp_path):
    """A correction in words that names a line ("line 2 ...") or a name: the retry's denial and the learner's
    correction carry the line as the file holds it (`referred.py`); the decision the memory keeps is the words."""
    from continualcode.events import Decided
    from continualcode.referred import HEAD

    read = call_text("read", path="main.py")
    wrong = call_text("edit_lines", path="main.py", start_line=1, end_line=1, content="def add(a, b):  # subtracts")
    right = call_text("edit_lines", path="main.py", start_line=2, end_line=2, content="    return a - b")
    said = "line 2 should subtract, not add"
    s, model, _, learner, events = make(tokenizer, tmp_path, [read, wrong, right, "Done."],
                                        [Approve(), Deny(said), Approve()], guard_rails=True)
    assert s.run_task("make add in main.py subtract").status == "answered"
    quote = HEAD + "main.py:2:     return a + b"
    assert f"Do this instead: {said}{quote}" in tokenizer.decode(model.prompts[2])
    assert learner.calls[0].text == said + quote
    assert [e.text for e in events if isinstance(e, Decided) and e.kind == "deny"] == [said]
