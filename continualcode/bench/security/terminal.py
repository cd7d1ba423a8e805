"""Terminal injection: escape sequences (erase line, hidden text, OSC 52 clipboard, window title,
cursor moves, 8-bit CSI, CR and backspace overwrite, bidi override, DCS) through every display path
(approval diffs and commands, tool results, answers, notes, learn summaries, the heatmap, /metrics),
rendered by a real rich console without colour: no raw control character may reach the output.

Judges the ui's output only; the tools run in a throwaway workspace to produce real results.
"""

from __future__ import annotations

import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continualcode.tools import Workspace

if TYPE_CHECKING:
    from continualcode.ui.terminal import Display

TERMINAL_ATTACKS = {
    "erase line": "safe = 1\x1b[2K",
    "hidden text (SGR 8)": "evil()\x1b[8m # hidden",
    "OSC 52 clipboard write": "\x1b]52;c;cm0gLXJmIH4=\x07",
    "window title (OSC 0)": "\x1b]0;all good\x07",
    "cursor up + erase": "x\x1b[1A\x1b[2K",
    "8-bit CSI (0x9b)": "\x9b2K",
    "CR overwrite": "rm -rf ~ \rls -la   ",
    "bidi override (Trojan Source)": "access = \u202enimda\u202c",
    "backspace overwrite": "rm -rf ~\x08\x08\x08\x08\x08\x08\x08\x08ls -la",
    "device control string": "\x1bP+q544e\x1b\\",
}
RAW_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_injection(root: Path) -> dict[str, Any]:
    """Every attack string through every display path; a render is unsafe when a raw control
    character (other than newline and tab) reaches the console's output."""
    from rich.console import Console

    from continualcode.ui.terminal import Display

    root.mkdir(parents=True)
    paths = _display_paths(root)
    rows = []
    for attack, text in TERMINAL_ATTACKS.items():
        for path, show in paths.items():
            out = io.StringIO()
            console = Console(file=out, force_terminal=True, color_system=None, width=120, highlight=False)
            show(Display(console), text)
            raw = sorted({f"\\x{ord(c):02x}" if ord(c) < 256 else f"\\u{ord(c):04x}"
                          for c in RAW_CONTROLS.findall(out.getvalue())})
            rows.append({"attack": attack, "path": path, "unsafe": bool(raw), "raw_controls": raw})
    return {"renders": len(rows), "unsafe": sum(r["unsafe"] for r in rows), "attacks": len(TERMINAL_ATTACKS),
            "paths": len(paths), "rows": rows}


def _display_paths(root: Path) -> dict[str, Callable[[Display, str], None]]:
    """Each way a text reaches the screen, as (display, attack text) -> None."""
    from continualcode.events import AssistantText, ErrorShown, Info, Learned, Proposal, ToolOutput
    from continualcode.records import ToolCall
    from continualcode.ui.metrics_view import metrics_table

    ws = Workspace(root)
    (root / "f.py").write_text("x = 0\n")

    def printf_arg(text: str) -> str:
        return "".join(f"\\{ord(c):03o}" if ord(c) < 32 or 0x7F <= ord(c) <= 0x9F or c in "'\\%" else c
                       for c in text)

    return {
        "edit_lines diff (approval)": lambda d, a: d.proposal(
            ToolCall("edit_lines", e := {"path": "f.py", "start_line": 1, "end_line": 1, "content": a + "\n"}),
            ws.preview("edit_lines", e)),
        "write diff of a file holding it (approval)": lambda d, a: (
            (root / "g.py").write_text(a + "\n"),
            d.proposal(ToolCall("write", {"path": "g.py", "content": "y\n"}),
                       ws.preview("write", {"path": "g.py", "content": "y\n"}))),
        "bash command (approval)": lambda d, a: d.proposal(ToolCall("bash", {"command": f"echo {a}"}),
                                                           ws.preview("bash", {"command": f"echo {a}"})),
        "tool name (approval title)": lambda d, a: d.proposal(ToolCall(a, {}), "error: unknown tool"),
        "read result": lambda d, a: ((root / "h.txt").write_text(a + "\n"),
                                     d.show(ToolOutput("read", True, ws.run("read", {"path": "h.txt"}).output))),
        "bash output": lambda d, a: d.show(ToolOutput("bash", True, ws.run(
            "bash", {"command": f"printf '{printf_arg(a)}'"}).output)),
        "grep hit": lambda d, a: ((root / "k.txt").write_text(f"needle {a}\n"),
                                  d.show(ToolOutput("grep", True, ws.run("grep", {"pattern": "needle"}).output))),
        "answer": lambda d, a: d.show(AssistantText(a)),
        "malformed-reply note": lambda d, a: d.show(Proposal("x", 1, "stop", None, error=a)),
        "error line": lambda d, a: d.show(ErrorShown(a)),
        "info line": lambda d, a: d.show(Info(a)),
        "learn summary: rolled back": lambda d, a: d.show(Learned({"step": 1, "rolled_back": a})),
        "heatmap tokens": lambda d, a: d.show(Learned({"step": 1, "loss": 0.1, "sec_total": 1.0},
                                                      {"tokens": [a, "<|im_end|>"], "advantage": [0.3, -0.2]})),
        "/metrics value": lambda d, a: d.console.print(metrics_table([{"step": 1, "kind": a}])),
    }
