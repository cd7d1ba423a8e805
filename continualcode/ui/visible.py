"""Text bound for the terminal, made harmless: every control character shown, none obeyed.

File contents, bash output and model-written text reach the screen in previews, diffs, tool results,
answers and errors; a raw ESC there can erase a line of the approval diff, hide text (SGR 8), write
the clipboard (OSC 52) or retitle the window, and a lone carriage return can overwrite what was
printed.  `visible` is the one function every terminal-bound string goes through (ui/terminal.py,
ui/heatmap.py, ui/metrics_view.py); after it the only control characters left are newline and tab.

What it shows, and how:
- C0 controls but newline and tab, DEL, and C1 controls (U+0080-U+009F, CSI among them): `\\xNN`,
  so ESC is `\\x1b`;
- a carriage return: `\\r`, except in a CRLF line ending (dropped: it moves nothing);
- Unicode format characters (bidirectional overrides and isolates, zero-width characters, the
  byte order mark: category Cf) and the line/paragraph separators U+2028/U+2029: `\\uXXXX`, so
  "Trojan Source" reordering cannot make the approved code read differently from what runs.
It knows nothing of rich; callers still escape rich markup.
"""

from __future__ import annotations

import re

# every format character (Unicode category Cf, as of Unicode 15), the line/paragraph separators, and
# lone surrogates (which no terminal can print)
_FORMAT = (
    "\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff"
    "\U000110bd\U000110cd\U00013430-\U0001343f\U0001bca0-\U0001bca3\U0001d173-\U0001d17a"
    "\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_FORMAT}]")


def _show(m: re.Match[str]) -> str:
    code = ord(m.group(0))
    if code == 0x0D:
        return "\\r"
    if code <= 0xFF:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}"


def visible(text: str) -> str:
    """`text` with every control character shown as an escape (see the module docstring)."""
    return _UNSAFE.sub(_show, text.replace("\r\n", "\n"))
