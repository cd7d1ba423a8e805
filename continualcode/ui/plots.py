"""Learning curves of a session: what each online step did, as one PNG.

Input is the session's metrics log (`journal.read_metrics`): one dict per learning step.  Four
panels over steps: the total loss and its policy-gradient part, the KL to the frozen base model
(how far the adapter has drifted), and the advantage statistics (mean, mean |A|, min–max band).
The x axis is each entry's "step" when present, else its position (1, 2, ...).  Missing or
non-numeric values are gaps, never errors; an empty log gives a figure that says so.

matplotlib is imported lazily and used only through Figure + the Agg canvas (no pyplot state);
the file is written atomically.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from continualcode.fsio import atomic_write

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def _num(value: Any) -> float:
    """A finite-or-NaN float for plotting; anything non-numeric becomes NaN (a gap)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    return float(value)


def _series(metrics: Sequence[dict], key: str) -> list[float]:
    return [_num(m.get(key)) for m in metrics]


def _steps(metrics: Sequence[dict]) -> list[float]:
    steps = _series(metrics, "step")
    return [s if not math.isnan(s) else float(i + 1) for i, s in enumerate(steps)]


def _has(values: Sequence[float]) -> bool:
    return any(not math.isnan(v) for v in values)


def _panel(
    ax: Axes, x: list[float], lines: list[tuple[str, list[float]]], title: str, *, band: bool = False
) -> None:
    """Plot the series that have any data; with none (and no band drawn), say "no data"."""
    shown = [(label, ys) for label, ys in lines if _has(ys)]
    for label, ys in shown:
        ax.plot(x, ys, marker="o", markersize=3, linewidth=1.3, label=label)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if shown or band:
        ax.legend(fontsize=8, loc="best")
    else:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="gray")


def plot_curves(metrics: list[dict], path: Path, *, title: str = "") -> Path:
    """Write the learning curves of `metrics` (one dict per step) as a PNG at `path`."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(10, 7), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    if title:
        fig.suptitle(title, fontsize=12)
    if not metrics:
        fig.text(0.5, 0.5, "no learning steps yet", ha="center", va="center", fontsize=14, color="gray")
    else:
        x = _steps(metrics)
        ax_loss, ax_pg, ax_kl, ax_adv = fig.subplots(2, 2, sharex=True).flat

        # 1) losses
        _panel(ax_loss, x, [("loss", _series(metrics, "loss"))], "loss")
        _panel(ax_pg, x, [("pg_loss", _series(metrics, "pg_loss"))], "policy-gradient loss")
        # 2) drift from the base model
        _panel(
            ax_kl,
            x,
            [("kl_ref", _series(metrics, "kl_ref")), ("kl_loss", _series(metrics, "kl_loss"))],
            "KL to base",
        )
        # 3) advantages: mean and mean |A| as lines, min..max as a band
        lo, hi = _series(metrics, "adv_min"), _series(metrics, "adv_max")
        band = _has(lo) and _has(hi)
        if band and len(x) > 1:
            ax_adv.fill_between(x, lo, hi, alpha=0.2, color="tab:purple", label="min..max", linewidth=0)
        elif band:  # a one-step band has no width: draw it as a bar
            ax_adv.vlines(x, lo, hi, alpha=0.3, color="tab:purple", label="min..max", linewidth=8)
        _panel(
            ax_adv,
            x,
            [("adv_mean", _series(metrics, "adv_mean")), ("adv_abs_mean", _series(metrics, "adv_abs_mean"))],
            "advantage",
            band=band,
        )
        ax_adv.axhline(0.0, color="gray", linewidth=0.8)
        for ax in (ax_kl, ax_adv):
            ax.set_xlabel("step")
        ax_adv.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(set(x)) == 1:
            ax_adv.set_xlim(x[0] - 1, x[0] + 1)

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return atomic_write(Path(path), buf.getvalue())
