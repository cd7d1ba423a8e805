"""Tests of the renderers in continualcode.ui: heatmaps (terminal, HTML, PNG), curves, /metrics.

The HTML is parsed back with html.parser and its data attributes compared to the inputs; PNGs are
checked for the signature and loaded back with matplotlib.image.imread.
"""

from __future__ import annotations

import math
from html.parser import HTMLParser
from pathlib import Path

import matplotlib.image as mpimg
import pytest
from rich.console import Console

from continualcode.ui import heatmap
from continualcode.ui.heatmap import (
    advantage_color,
    advantage_scale,
    readable_piece,
    render_terminal,
    write_html,
    write_png,
)
from continualcode.ui.metrics_view import metrics_table, sparkline
from continualcode.ui.plots import plot_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

TOKENS = ["def", " f", "(x", "):", "\n", "    return", ' "<b>&\'"', " +", " 1", "\t", ""]
STUDENT = [-0.1, -2.5, -0.01, -0.3, -0.05, -1.25, -3.0, -0.7, -0.2, -1.0, -0.4]
TEACHER = [-0.1, -0.5, -0.02, -0.9, -0.05, -0.25, -6.0, -0.2, -0.1, -1.0, -0.3]
ADV = [t - s for s, t in zip(STUDENT, TEACHER, strict=True)]


class _TokParser(HTMLParser):
    """Collects (attrs, text) of every <span class="tok">."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.toks: list[tuple[dict[str, str | None], str]] = []
        self._open: dict[str, str | None] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "span" and a.get("class") == "tok":
            self._open, self._text = a, []

    def handle_endtag(self, tag: str) -> None:
        if tag == "span" and self._open is not None:
            self.toks.append((self._open, "".join(self._text)))
            self._open = None

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            self._text.append(data)


def _rgb(hex_color: str) -> tuple[int, int, int]:
    h = hex_color.lstrip("#")
    return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)


# ---------------------------------------------------------------------------------------------------
# Scale and colour


def test_scale_is_robust_and_floored() -> None:
    assert advantage_scale([]) == 0.5
    assert advantage_scale([0.01, -0.02]) == 0.5
    big = [1.0] * 99 + [1000.0]
    assert advantage_scale(big) == pytest.approx(1.0)  # one outlier does not set the scale
    assert advantage_scale([float("nan"), 2.0, -2.0]) == pytest.approx(2.0)


def test_colour_direction() -> None:
    r, g, _ = advantage_color(-1.0, 1.0)
    assert r > g
    r, g, _ = advantage_color(1.0, 1.0)
    assert g > r
    assert advantage_color(0.0, 1.0) == (255, 255, 255)
    weak, strong = advantage_color(-0.1, 1.0), advantage_color(-0.9, 1.0)
    assert strong[1] < weak[1]  # stronger suppression is more saturated


# ---------------------------------------------------------------------------------------------------
# Terminal


def test_terminal_styles_red_negative_green_positive() -> None:
    toks, adv = ["good", " bad", " meh", " ok"], [1.0, -1.0, 0.0, 0.2]
    text = render_terminal(toks, adv)
    assert text.plain == "good bad meh ok"
    assert len(text.spans) == 4
    by_text = {text.plain[s.start : s.end]: s.style for s in text.spans}
    for piece, want in (("good", "green"), (" bad", "red"), (" ok", "green")):
        style = by_text[piece]
        assert not isinstance(style, str) and style.bgcolor is not None
        rgb = style.bgcolor.get_truecolor()
        assert (rgb.green > rgb.red) if want == "green" else (rgb.red > rgb.green), piece
    meh = by_text[" meh"]
    assert not isinstance(meh, str) and meh.bgcolor is not None
    neutral = meh.bgcolor.get_truecolor()
    assert neutral.red == neutral.green == neutral.blue


def test_terminal_newlines_visible_and_wrapping() -> None:
    text = render_terminal(["a", "\n", "b", "\t", "c"], [0.1, 0.1, 0.1, 0.1, 0.1])
    assert text.plain == "a⏎\nb→   c"
    wrapped = render_terminal(["abcd"] * 10, [0.0] * 10, width=10)
    assert wrapped.plain.split("\n") == ["abcdabcd"] * 5
    with pytest.raises(ValueError):
        render_terminal(["a", "b"], [0.0])


def test_terminal_shows_special_and_byte_level_tokens_readably() -> None:
    tokens = ["<tool_call>", "Ċ", '{"', "ĠĠx", "Ġ=", "Ġ\"", "ĠÃ©", '"', "ĊĠ", "<|im_end|>", "<|endoftext|>",
              "<|im_start|>", "</s>"]
    plain = render_terminal(tokens, [0.1] * len(tokens)).plain
    assert plain == '<tool_call>⏎\n{"  x = " é"⏎\n [end][end][im_start][end]'
    for raw in ("<|", "|>", "Ġ", "Ċ"):
        assert raw not in plain
    # ordinary text is left alone (a piece is byte-level only when it holds a shifted byte like Ġ)
    assert readable_piece("café") == "café" and readable_piece("Ã©") == "Ã©"
    assert readable_piece("ĠæĿ") == " \ufffd"  # part of a character: shown as one replacement mark
    assert readable_piece("a<|b") == "a<|b"


def test_terminal_shows_control_characters_in_tokens() -> None:
    plain = render_terminal(["a\x1b[2K", "\r", "\x9b", "\u202e"], [0.1] * 4).plain
    assert "\x1b" not in plain and "\r" not in plain and "\x9b" not in plain and "\u202e" not in plain
    assert plain == "a\\x1b[2K\\r\\x9b\\u202e"


# ---------------------------------------------------------------------------------------------------
# HTML


def test_html_one_span_per_token_with_values(tmp_path: Path) -> None:
    out = write_html(tmp_path / "h" / "step1.html", TOKENS, STUDENT, TEACHER, ADV, title="step <1> & co")
    assert out == tmp_path / "h" / "step1.html"
    page = out.read_text(encoding="utf-8")
    assert page.count('class="tok"') == len(TOKENS)
    assert "<b>" not in page and "&lt;b&gt;" in page  # token text escaped
    assert "step &lt;1&gt; &amp; co" in page  # title escaped

    parser = _TokParser()
    parser.feed(page)
    assert len(parser.toks) == len(TOKENS)
    for (attrs, shown), tok, s, t, a in zip(parser.toks, TOKENS, STUDENT, TEACHER, ADV, strict=True):
        assert float(attrs["data-student"] or "nan") == pytest.approx(s, abs=1e-12)
        assert float(attrs["data-teacher"] or "nan") == pytest.approx(t, abs=1e-12)
        assert float(attrs["data-adv"] or "nan") == pytest.approx(a, abs=1e-12)
        title = attrs["title"] or ""
        assert f"{s:.4f}" in title and f"{t:.4f}" in title and f"{a:.4f}" in title
        if tok and tok not in ("\n", "\t"):
            assert shown == tok  # round-trips through the escaping
    assert parser.toks[4][1] == "⏎\n"
    bad = parser.toks[6][0]["style"] or ""
    r, g, _ = _rgb(bad.split("background:")[1][:7])
    assert r > g  # A = -3: suppressed
    good = parser.toks[1][0]["style"] or ""
    r, g, _ = _rgb(good.split("background:")[1][:7])
    assert g > r  # A = +2: reinforced
    assert not list(out.parent.glob(".*.tmp"))


def test_html_rejects_misaligned_inputs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="teacher_lp"):
        write_html(tmp_path / "x.html", TOKENS, STUDENT, TEACHER[:-1], ADV, title="x")


# ---------------------------------------------------------------------------------------------------
# PNGs


def _assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 0 and img.shape[1] > 0


def test_heatmap_png(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = write_png(tmp_path / "step1.png", TOKENS, ADV, title="cost $5 and 50% off")  # no mathtext
    _assert_png(p)
    long = [f" tok{i}" + ("\n" if i % 13 == 0 else "") for i in range(1500)]
    _assert_png(write_png(tmp_path / "long.png", long, [math.sin(i) for i in range(1500)], title="long"))
    _assert_png(write_png(tmp_path / "empty.png", [], [], title="empty"))
    monkeypatch.setattr(heatmap, "PNG_MAX_ROWS", 5)  # the "… more tokens not shown" path
    _assert_png(write_png(tmp_path / "cut.png", long[:200], [1.0] * 200, title="cut"))


def test_plot_curves_png(tmp_path: Path) -> None:
    metrics = [
        {"step": i + 1, "loss": 1 / (i + 1), "pg_loss": 0.5, "kl_ref": 0.01 * i, "adv_mean": 0.1,
         "adv_abs_mean": 0.3, "adv_min": -1.0, "adv_max": 2.0}
        for i in range(12)
    ]  # fmt: skip
    del metrics[3]["pg_loss"]
    metrics[5]["loss"] = None
    _assert_png(plot_curves(metrics, tmp_path / "curves.png", title="session"))
    _assert_png(plot_curves([], tmp_path / "none.png"))
    _assert_png(plot_curves([{"loss": 1.0}], tmp_path / "one.png"))


# ---------------------------------------------------------------------------------------------------
# /metrics


def _render(table: object) -> str:
    console = Console(record=True, width=100, color_system=None)
    console.print(table)
    return console.export_text()


def _rows(out: str) -> dict[str, str]:
    """label -> value of a rendered two-column table; the first occurrence of a label wins."""
    rows: dict[str, str] = {}
    for line in out.splitlines():
        cells = line.split("│")
        if len(cells) == 4:
            rows.setdefault(cells[1].strip(), cells[2].strip())
    return rows


def test_metrics_table_values_and_totals() -> None:
    metrics = [
        {"step": 1, "loss": 0.5, "kl_ref": 0.001, "sec_total": 2.0, "correction_id": "a"},
        {"step": 2, "loss": 0.25, "kl_ref": 0.003, "sec_total": 4.0, "correction_id": "a"},
        {"step": 3, "loss": 0.75, "pg_loss": 0.7, "kl_loss": 0.05, "kl_ref": 0.002, "adv_mean": -0.125,
         "adv_abs_mean": 0.375, "adv_pos_frac": 0.4, "grad_norm": 1.5, "sec_total": 3.0, "correction_id": "b"},
    ]  # fmt: skip
    out = _render(metrics_table(metrics))
    lines = _rows(out)
    assert lines["last step (3)"] == ""
    assert lines["loss"] == "0.7500"
    assert lines["pg loss"] == "0.7000"
    assert lines["kl loss"] == "0.0500"
    assert lines["KL to base"] == "0.0020"
    assert lines["adv mean"] == "-0.1250"
    assert lines["adv mean |A|"] == "0.3750"
    assert lines["adv > 0 frac"] == "0.4000"
    assert lines["grad norm"] == "1.5000"
    assert lines["seconds"] == "3.0000"  # the learner's sec_total
    assert lines["steps"] == "3"
    assert lines["corrections"] == "2"
    assert lines["mean loss"] == "0.5000"
    assert lines["KL to base (last)"] == "0.0020"
    assert lines["KL to base (mean)"] == "0.0020"
    assert lines["seconds / step"] == "3.0000"
    assert sparkline([0.5, 0.25, 0.75]) in out


def test_metrics_table_without_correction_ids_and_empty() -> None:
    out = _render(metrics_table([{"loss": 1.0}, {"loss": 2.0}]))
    rows = _rows(out)
    assert rows["corrections"] == rows["steps"] == "2"  # no correction_id: one per step
    assert rows["mean loss"] == "1.5000"
    assert rows["pg loss"] == "–"  # missing values shown as a dash
    assert "no learning steps yet" in _render(metrics_table([]))


def test_sparkline() -> None:
    assert sparkline([]) == ""
    assert sparkline([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]) == "▁▂▃▄▅▆▇█"
    assert sparkline([0.0, 1.0]) == "▁█"
    assert sparkline([3.0, 3.0, 3.0]) == "▄▄▄"
    assert sparkline([0.0, float("nan"), 1.0]) == "▁ █"
    assert len(sparkline([float(i % 5) for i in range(50)])) == 50
