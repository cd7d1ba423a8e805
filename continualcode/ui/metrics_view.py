"""The `/metrics` readout: what learning has done so far in this session, as one rich Table.

Input is the session's metrics log (one dict per learning step, oldest first, as the learner logs
it; its seconds are `sec_total`).  Three sections: the last step's values, running totals (steps,
corrections, means), and sparklines of loss and KL to the base model over the most recent steps.
Missing keys show as "–"; this module only formats, it computes nothing the learner did not log.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.markup import escape
from rich.table import Table

from continualcode.ui.visible import visible

BLOCKS = "▁▂▃▄▅▆▇█"
SPARK_STEPS = 40  # the sparklines show at most this many recent steps

# (key, label) of the last step's values, in display order
LAST_STEP_FIELDS = (
    ("loss", "loss"),
    ("pg_loss", "pg loss"),
    ("kl_loss", "kl loss"),
    ("kl_ref", "KL to base"),
    ("adv_mean", "adv mean"),
    ("adv_abs_mean", "adv mean |A|"),
    ("adv_pos_frac", "adv > 0 frac"),
    ("grad_norm", "grad norm"),
    ("sec_total", "seconds"),
)


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(visible(str(value)))
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e4 or abs(value) < 1e-3):
        return f"{value:.3e}"
    return f"{value:.4f}"


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None


def sparkline(values: list[float]) -> str:
    """One block character per value, scaled from the min (▁) to the max (█).

    A constant series is a row of ▄; a non-finite value is a space.
    """
    finite = [v for v in values if v is not None and math.isfinite(v)]
    if not finite:
        return " " * len(values)
    lo, hi = min(finite), max(finite)
    out = []
    for v in values:
        if v is None or not math.isfinite(v):
            out.append(" ")
        elif hi == lo:
            out.append(BLOCKS[3])
        else:
            out.append(BLOCKS[round((v - lo) / (hi - lo) * (len(BLOCKS) - 1))])
    return "".join(out)


def _corrections(metrics: Sequence[dict]) -> int:
    """Distinct correction_id values; a step without one counts as its own correction."""
    ids = {m["correction_id"] for m in metrics if m.get("correction_id") is not None}
    return len(ids) + sum(1 for m in metrics if m.get("correction_id") is None)


def metrics_table(metrics: list[dict]) -> Table:
    """The /metrics table for a session's metrics log (one dict per learning step)."""
    table = Table(title="learning", show_header=True, header_style="bold", title_justify="left")
    table.add_column("metric", style="cyan", no_wrap=True)
    table.add_column("value", justify="right", no_wrap=True)
    if not metrics:
        table.add_row("no learning steps yet", "")
        return table

    # 1) the last step
    last = metrics[-1]
    step = last.get("step", len(metrics))
    table.add_row(f"[bold]last step ({step})[/bold]", "")
    for key, label in LAST_STEP_FIELDS:
        table.add_row(f"  {label}", _fmt(last.get(key)))

    # 2) running totals
    loss = [_num(m.get("loss")) for m in metrics]
    kl_ref = [_num(m.get("kl_ref")) for m in metrics]
    seconds = [_num(m.get("sec_total")) for m in metrics]
    table.add_section()
    table.add_row("[bold]totals[/bold]", "")
    table.add_row("  steps", str(len(metrics)))
    table.add_row("  corrections", str(_corrections(metrics)))
    table.add_row("  mean loss", _fmt(_mean(loss)))
    table.add_row("  KL to base (last)", _fmt(next((v for v in reversed(kl_ref) if v is not None), None)))
    table.add_row("  KL to base (mean)", _fmt(_mean(kl_ref)))
    table.add_row("  seconds / step", _fmt(_mean(seconds)))

    # 3) trends
    recent = len(metrics[-SPARK_STEPS:])
    table.add_section()
    table.add_row(f"[bold]trend (last {recent})[/bold]", "")
    table.add_row("  loss", sparkline([math.nan if v is None else v for v in loss[-SPARK_STEPS:]]))
    table.add_row("  KL to base", sparkline([math.nan if v is None else v for v in kl_ref[-SPARK_STEPS:]]))
    return table
