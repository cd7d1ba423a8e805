"""Terminal injection: no control sequence from a file, a command or the model reaches the terminal.

Every kind of text the display prints (the approval preview and diff, tool results, answers,
malformed-reply notes, errors, info lines, the learn summary and its token heatmap, /metrics, the
non-interactive input's complaints) is rendered through a real rich Console with real escape
sequences in it: erase-line (ESC[2K), hidden text (ESC[8m), an OSC 52 clipboard write, a window
title, cursor movement, the 8-bit CSI (0x9b), a carriage-return overwrite and a right-to-left
override.  Rendered without colour (rich then emits no escape at all), the output must hold no ESC,
no CR, no BEL, no C1 control and no bidi override, and show each of them as visible text (\\x1b …);
rendered in colour, only rich's own SGR colour codes may remain.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest
from rich.console import Console

from continualcode.events import AssistantText, ErrorShown, Info, Learned, Proposal, ToolOutput
from continualcode.records import ToolCall
from continualcode.tools import Workspace
from continualcode.ui.metrics_view import metrics_table
from continualcode.ui.terminal import Display, LineInput
from continualcode.ui.visible import visible

ERASE = "\x1b[2K"
HIDE = "\x1b[8m"
OSC52 = "\x1b]52;c;cm0gLXJmIH4=\x07"
TITLE = "\x1b]0;all good\x07"
UP = "\x1b[1A"
CSI8 = "\x9b2K"
RLO = "\u202e"
PAYLOAD = (f"safe = 1{ERASE}\nevil(){HIDE} # hidden\n{OSC52}{TITLE}{UP}line\n{CSI8}x\n"
           f"rm -rf ~ \rls -la\naccess = {RLO}nimda{RLO}\n")
RAW = ("\x1b", "\r", "\x07", "\x9b", "\u202e")
SGR = re.compile(r"\x1b\[[0-9;]*m")


def console(color: bool = False) -> Console:
    return Console(file=io.StringIO(), force_terminal=True, color_system="truecolor" if color else None,
                   width=140, highlight=False)


def output(c: Console) -> str:
    f = c.file
    assert isinstance(f, io.StringIO)
    return f.getvalue()


def assert_harmless(text: str, *, color: bool = False) -> None:
    if color:
        text = SGR.sub("", text)  # rich's own colours: the only escapes allowed
    for ch in RAW:
        assert ch not in text, f"raw {ch!r} reached the terminal: {text!r}"
    for shown in ("\\x1b[2K", "\\x1b[8m", "\\x1b]52;c;", "\\x07", "\\x9b", "\\r", "\\u202e"):
        assert shown in text, f"{shown} is not shown: {text!r}"


def every_event(display: Display, ws: Workspace) -> None:
    """Every printing path of the display, each fed the payload."""
    (ws.root / "f.py").write_text("x = 0\n")
    edit = {"path": "f.py", "start_line": 1, "end_line": 1, "content": PAYLOAD}
    display.proposal(ToolCall("edit_lines", edit), ws.preview("edit_lines", edit))
    (ws.root / "g.py").write_text(PAYLOAD)
    display.proposal(ToolCall("write", {"path": "g.py", "content": "y\n"}),
                     ws.preview("write", {"path": "g.py", "content": "y\n"}))
    cmd = {"command": f"echo '{PAYLOAD}'"}
    display.proposal(ToolCall("bash", cmd), ws.preview("bash", cmd))
    display.proposal(ToolCall(f"bash{ERASE}", {}), f"error: unknown tool{OSC52}")
    display.show(ToolOutput("read", True, ws.run("read", {"path": "g.py"}).output))
    printf = PAYLOAD.replace("\x1b", "\\033").replace("\x07", "\\007").replace("\x9b", "\\233").replace("\n", "\\n")
    display.show(ToolOutput("bash", True, ws.run("bash", {"command": f"printf '{printf}'"}).output))
    display.show(AssistantText(PAYLOAD))
    display.show(Proposal("text", 3, "stop", None, error=f"bad JSON {PAYLOAD}"))
    display.show(ErrorShown(PAYLOAD))
    display.show(Info(PAYLOAD))
    tokens = ["<tool_call>", ERASE, "evil", HIDE, OSC52, "\r", CSI8, RLO, "ls", "<|im_end|>"]
    display.show(Learned({"step": 1, "loss": 0.5, "kl_after": 0.01, "sec_total": 1.5},
                         {"tokens": tokens, "advantage": [0.5] * len(tokens)}))
    display.show(Learned({"step": 2, "rolled_back": f"KL too high {PAYLOAD}"}))
    display.console.print(metrics_table([{"step": 1, "loss": 0.5, "kind": PAYLOAD}]))
    LineInput(display, io.StringIO(f"{ERASE}what{OSC52}\nq\n")).decide(ToolCall("read", {"path": "f.py"}), "read f.py")


@pytest.mark.parametrize("color", [False, True], ids=["no-colour", "truecolor"])
def test_no_control_sequence_reaches_the_terminal(tmp_path: Path, color: bool):
    c = console(color)
    every_event(Display(c), Workspace(tmp_path))
    out = output(c)
    assert_harmless(out, color=color)
    assert "evil()" in out and "nimda" in out and "rm -rf ~ " in out  # shown, not hidden
    assert "[end]" in out and "<|im_end|>" not in out  # the heatmap's special token, readable


def test_rich_alone_would_pass_escape_sequences():
    """Why the test above means something: rich strips CR and BEL but passes ESC through."""
    c = console()
    c.print(f"a{ERASE}b{OSC52}")
    assert "\x1b[2K" in output(c)


def test_visible_shows_every_control_and_keeps_text():
    assert visible("tab\there\nnext") == "tab\there\nnext"
    assert visible("crlf\r\nline") == "crlf\nline"  # a CRLF ending moves nothing: dropped
    assert visible("a\r\r\nb") == "a\\r\nb"
    assert visible("\x1b[2K\x00\x7f\x85\x9b") == "\\x1b[2K\\x00\\x7f\\x85\\x9b"
    assert visible("\u202eabc\u2066\u200b\ufeff\u2028") == "\\u202eabc\\u2066\\u200b\\ufeff\\u2028"
    assert visible("\U000e0041") == "\\U000e0041"  # tag characters ("ASCII smuggling")
    assert visible("\ud800") == "\\ud800"  # a lone surrogate cannot be printed at all
    text = "café 漢字 ✓ — “quotes” ñ"
    assert visible(text) == text


def test_line_input_says_when_it_waits_for_an_answer() -> None:
    """Piped, the session gave no sign that a call waited for an answer (a user trial): each decision now
    ends its proposal with the answers a line may hold, once, and reads the next line."""
    from continualcode.decide import Approve, Deny
    from continualcode.ui.terminal import LINE_HELP

    c = console()
    answers = LineInput(Display(c), io.StringIO("n grep first\ny\n"))
    assert answers.decide(ToolCall("read", {"path": "f.py"}), "read f.py") == Deny("grep first")
    assert answers.decide(ToolCall("read", {"path": "g.py"}), "read g.py") == Approve()
    assert output(c).count(LINE_HELP) == 2 and output(c).index("f.py") < output(c).index(LINE_HELP)
