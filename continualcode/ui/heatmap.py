"""Per-token heatmaps of one learning step: which tokens the correction suppressed or reinforced.

Inputs are the completion as decoded token pieces plus three aligned per-token lists:
`student_lp[t]` (the model's log-prob of token t), `teacher_lp[t]` (the same model conditioned on
the correction) and `advantage[t]` (= teacher − student: what the update pushes up or down).
Three renderings of the same picture:

- `render_terminal`: a rich `Text` for the terminal, each token on a coloured background;
  pieces are made readable first (`readable_piece`: special tokens as [end], raw byte-level BPE
  pieces as their text) and every control character is shown, never obeyed (ui/visible.py);
- `write_html`: a standalone page, one `<span class="tok">` per token with the raw values in
  `data-student` / `data-teacher` / `data-adv` and a tooltip (for inspection and tests);
- `write_png`: the tokens laid out as wrapped coloured boxes (for the session's heatmaps/ dir).

Colour: red = suppressed (A < 0), green = reinforced (A > 0); intensity is |A| over a robust max
(the 95th percentile of |A|, at least 0.5) so one outlier does not wash out the rest.
Files are written atomically.  matplotlib is imported lazily and only through its object API
(Figure + Agg canvas), so importing this module touches no global plotting state.
"""

from __future__ import annotations

import html
import io
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

from rich.style import Style
from rich.text import Text

from continualcode.fsio import atomic_write
from continualcode.ui.visible import visible

RGB = tuple[int, int, int]
NEG: RGB = (215, 48, 39)  # suppressed
POS: RGB = (26, 152, 80)  # reinforced
PAPER: RGB = (255, 255, 255)  # zero advantage on HTML/PNG
INK: RGB = (52, 52, 52)  # zero advantage in the terminal
FG: RGB = (235, 235, 235)  # terminal text
MIN_SCALE = 0.5
PNG_COLS = 100
PNG_MAX_ROWS = 200


# ---------------------------------------------------------------------------------------------
# Shared: scale, colour, visible text


def _check(tokens: Sequence[str], **series: Sequence[float]) -> None:
    for name, values in series.items():
        if len(values) != len(tokens):
            raise ValueError(f"{name} has {len(values)} values for {len(tokens)} tokens")


def _finite(x: float) -> float:
    x = float(x)
    return x if math.isfinite(x) else 0.0


def advantage_scale(advantage: Sequence[float]) -> float:
    """The robust max of |A|: its 95th percentile (linear interpolation), at least MIN_SCALE."""
    mags = sorted(abs(_finite(a)) for a in advantage)
    if not mags:
        return MIN_SCALE
    pos = 0.95 * (len(mags) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(mags) - 1)
    p95 = mags[lo] + (mags[hi] - mags[lo]) * (pos - lo)
    return max(p95, MIN_SCALE)


def advantage_color(a: float, scale: float, *, base: RGB = PAPER) -> RGB:
    """Blend `base` toward red (A < 0) or green (A > 0); any nonzero A shows at least a tint."""
    a = _finite(a)
    if a == 0.0:
        return base
    mix = 0.15 + 0.85 * min(abs(a) / scale, 1.0)
    target = NEG if a < 0 else POS
    return (
        round(base[0] + (target[0] - base[0]) * mix),
        round(base[1] + (target[1] - base[1]) * mix),
        round(base[2] + (target[2] - base[2]) * mix),
    )


def _hex(rgb: RGB) -> str:
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def _ink_for(bg: RGB) -> RGB:
    """Black or white text, whichever reads better on `bg`."""
    luminance = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    return (0, 0, 0) if luminance > 140 else (255, 255, 255)


SPECIAL = re.compile(r"<\|([A-Za-z0-9_.\-]{1,40})\|>|</s>|<s>|<eos>|<bos>")
END_TOKENS = frozenset({"im_end", "endoftext", "eot_id", "end_of_text", "eom_id", "end", "</s>", "<eos>"})


def _byte_level_decoder() -> dict[str, int]:
    """The GPT-2 byte-level BPE alphabet, reversed: a raw token's characters (Ġ for a space, Ċ for a
    newline, …) back to the bytes they stand for."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table, n = {}, 0
    for b in range(256):
        if b in printable:
            table[chr(b)] = b
        else:
            table[chr(256 + n)] = b
            n += 1
    return table


_BYTE_LEVEL = _byte_level_decoder()


def readable_piece(token: str) -> str:
    """A token piece as a reader wants it: special tokens as [name] (an end-of-turn one as [end]), and a
    raw byte-level BPE piece ("Ġx", "ĊĠ") as the text it stands for."""

    def special(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(0)
        return "[end]" if name in END_TOKENS else f"[{name.strip('<>/')}]"

    token = SPECIAL.sub(special, token)
    if any("\u0100" <= ch <= "\u0143" for ch in token) and all(ch in _BYTE_LEVEL for ch in token):
        token = bytes(_BYTE_LEVEL[ch] for ch in token).decode("utf-8", "replace")
    return token


def _visible_lines(token: str) -> list[str]:
    """A token's text made readable and visible, split at its real line breaks (each shown as ⏎);
    every other control character is escaped (ui/visible.py)."""
    token = readable_piece(token)
    if token == "":
        return ["∅"]
    shown = visible(token).replace("\t", "→   ").replace("\n", "⏎\n")
    return shown.split("\n")


# ---------------------------------------------------------------------------------------------
# Terminal


def render_terminal(tokens: Sequence[str], advantage: Sequence[float], *, width: int = 100) -> Text:
    """The completion as rich Text, each token's background coloured by its advantage.

    Lines are broken between tokens at `width` columns (and at the completion's own newlines).
    """
    _check(tokens, advantage=advantage)
    scale = advantage_scale(advantage)
    text = Text(no_wrap=False)
    col = 0
    for tok, a in zip(tokens, advantage, strict=True):
        bg = advantage_color(a, scale, base=INK)
        style = Style(color=_hex(FG), bgcolor=_hex(bg), bold=abs(_finite(a)) >= scale)
        lines = _visible_lines(tok)
        for i, piece in enumerate(lines):
            if i > 0:
                text.append("\n")
                col = 0
            if not piece:
                continue
            if col > 0 and col + len(piece) > width:
                text.append("\n")
                col = 0
            text.append(piece, style=style)
            col += len(piece)
    return text


# ---------------------------------------------------------------------------------------------
# HTML

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
.legend { margin: 0.5em 0 1em; font-size: 0.9em; }
.swatch { display: inline-block; width: 1em; height: 1em; vertical-align: middle; margin: 0 0.3em; }
.ramp { display: inline-block; width: 12em; height: 0.9em; vertical-align: middle;
        background: linear-gradient(to right, %(neg)s, #ffffff, %(pos)s); border: 1px solid #ccc; }
pre.completion { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 13px;
                 line-height: 1.6; white-space: pre-wrap; word-break: break-all; }
.tok { border-radius: 2px; padding: 1px 0; }
.tok:hover { outline: 1px solid #333; }
"""


def write_html(
    path: Path,
    tokens: Sequence[str],
    student_lp: Sequence[float],
    teacher_lp: Sequence[float],
    advantage: Sequence[float],
    *,
    title: str,
) -> Path:
    """A standalone HTML heatmap: one `<span class="tok">` per token, values in data-* attributes."""
    _check(tokens, student_lp=student_lp, teacher_lp=teacher_lp, advantage=advantage)
    scale = advantage_scale(advantage)
    spans = []
    for tok, s, t, a in zip(tokens, student_lp, teacher_lp, advantage, strict=True):
        s, t, a = float(s), float(t), float(a)
        bg = advantage_color(a, scale)
        tip = f"student {s:.4f}\nteacher {t:.4f}\nadvantage {a:.4f}"
        shown = "\n".join(_visible_lines(tok))
        spans.append(
            f'<span class="tok" style="background:{_hex(bg)};color:{_hex(_ink_for(bg))}"'
            f' title="{html.escape(tip)}" data-student="{s!r}" data-teacher="{t!r}" data-adv="{a!r}">'
            f"{html.escape(shown, quote=False)}</span>"
        )
    finite = [_finite(a) for a in advantage]
    n = len(finite)
    stats = (
        f"{n} tokens · mean A {sum(finite) / n:+.4f} · "
        f"{sum(a > 0 for a in finite)} reinforced, {sum(a < 0 for a in finite)} suppressed"
        if n
        else "no tokens"
    )
    esc_title = html.escape(title)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc_title}</title>
<style>{_CSS % {"neg": _hex(NEG), "pos": _hex(POS)}}</style></head>
<body>
<h1>{esc_title}</h1>
<div class="legend">
<span class="swatch" style="background:{_hex(NEG)}"></span>suppressed (A &lt; 0)
<span class="swatch" style="background:{_hex(POS)}"></span>reinforced (A &gt; 0)
&nbsp; <span>&minus;{scale:.3g}</span> <span class="ramp"></span> <span>+{scale:.3g}</span>
(A = teacher log-prob &minus; student log-prob; colour saturates at the 95th percentile of |A|).
Hover a token for its values.<br>{stats}
</div>
<pre class="completion">{"".join(spans)}</pre>
</body></html>
"""
    return atomic_write(Path(path), page.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# PNG


def _layout(
    tokens: Sequence[str], advantage: Sequence[float], cols: int, max_rows: int
) -> tuple[list[tuple[int, int, str, float]], int, int]:
    """Place tokens on a grid of `cols` character cells: (row, col, text, A) boxes, rows, dropped."""
    boxes: list[tuple[int, int, str, float]] = []
    row = col = 0
    for k, (tok, a) in enumerate(zip(tokens, advantage, strict=True)):
        for i, piece in enumerate(_visible_lines(tok)):
            if i > 0:
                row, col = row + 1, 0
            while piece:
                if col > 0 and col + len(piece) > cols:
                    row, col = row + 1, 0
                if row >= max_rows:
                    return boxes, max_rows, len(tokens) - k
                chunk, piece = piece[: cols - col], piece[cols - col :]
                boxes.append((row, col, chunk, _finite(a)))
                col += len(chunk)
    return boxes, row + 1, 0


def write_png(path: Path, tokens: Sequence[str], advantage: Sequence[float], *, title: str) -> Path:
    """The completion as wrapped, coloured character boxes with a colour-scale legend, as a PNG."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.collections import PatchCollection
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    _check(tokens, advantage=advantage)
    scale = advantage_scale(advantage)
    boxes, rows, dropped = _layout(tokens, advantage, PNG_COLS, PNG_MAX_ROWS)
    rows = max(rows, 1)

    # 1) geometry in inches: one monospace cell per character
    cell_w, cell_h, side, top, bottom = 0.075, 0.19, 0.25, 0.85, 0.3
    fig_w, fig_h = PNG_COLS * cell_w + 2 * side, rows * cell_h + top + bottom
    fontsize = cell_w * 72 / 0.602  # DejaVu Sans Mono advance = 0.602 em
    fig = Figure(figsize=(fig_w, fig_h), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((side / fig_w, bottom / fig_h, PNG_COLS * cell_w / fig_w, rows * cell_h / fig_h))
    ax.set_xlim(0, PNG_COLS)
    ax.set_ylim(rows, 0)
    ax.set_axis_off()

    # 2) coloured boxes, then the token text on top
    rects = [Rectangle((c + 0.04, r + 0.06), len(s) - 0.08, 0.88) for r, c, s, _ in boxes]
    colors = [tuple(v / 255 for v in advantage_color(a, scale)) for _, _, _, a in boxes]
    ax.add_collection(PatchCollection(rects, facecolors=colors, edgecolors="none"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "Glyph ... missing from font": drawn as a box, harmless
        row_text: dict[int, str] = {}
        for r, _, s, _ in boxes:  # boxes of a row are contiguous from column 0
            row_text[r] = row_text.get(r, "") + s
        for r, line in row_text.items():  # one text per row: cheap, and monospace keeps cells aligned
            ax.text(
                0,
                r + 0.5,
                line,
                fontsize=fontsize,
                family="DejaVu Sans Mono",
                va="center",
                ha="left",
                parse_math=False,
            )
        if dropped:
            ax.text(
                0,
                rows + 0.6,
                f"… {dropped} more tokens not shown",
                fontsize=fontsize,
                va="top",
                parse_math=False,
            )

        # 3) title and a colour ramp legend
        fig.text(side / fig_w, 1 - 0.12 / fig_h, title, fontsize=11, va="top", ha="left", parse_math=False)
        ramp_w, ramp_right, ramp_mid = 2.0, fig_w - side - 0.8, 1 - 0.55 / fig_h
        leg = fig.add_axes(
            ((ramp_right - ramp_w) / fig_w, ramp_mid - 0.07 / fig_h, ramp_w / fig_w, 0.14 / fig_h)
        )
        ramp = [[advantage_color(scale * (i / 127.5 - 1), scale) for i in range(256)]]
        leg.imshow(ramp, aspect="auto", extent=(-scale, scale, 0, 1))
        leg.set_yticks([])
        leg.set_xticks([-scale, 0, scale], [f"−{scale:.2g}", "0", f"+{scale:.2g}"])
        leg.tick_params(labelsize=7, length=2, pad=1)
        for x, label, ha in (
            (ramp_right - ramp_w - 0.06, "suppressed", "right"),
            (ramp_right + 0.06, "reinforced", "left"),
        ):
            fig.text(x / fig_w, ramp_mid, label, fontsize=7, va="center", ha=ha)

        buf = io.BytesIO()
        fig.savefig(buf, format="png")  # glyphs are drawn (and missed) here
    return atomic_write(Path(path), buf.getvalue())
