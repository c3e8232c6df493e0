"""Matplotlib figures as PNG bytes, drawn the same way for reports and evaluation suites.

A bare `Figure`, never pyplot: no global figure registry, no backend switching, nothing leaks
between plots. PNGs carry no date or software metadata, so the same numbers give the same bytes.
Matplotlib is imported by `new_figure`, on first use: `launch.train` imports this module through
the evaluation suites, and a run that draws nothing should not pay a second of start-up for it.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

GRID_COLOR = "#d8dee4"


def style(ax: Any) -> Any:
    ax.spines[["top", "right"]].set_visible(False)
    ax.grid(True, color=GRID_COLOR, linewidth=0.6)
    ax.set_axisbelow(True)
    return ax


def new_figure(width: float, height: float, dpi: int = 110) -> Figure:
    """A bare, constrained-layout figure; the one place matplotlib is imported."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=dpi, layout="constrained")


def new_axes(width: float, height: float, columns: int = 1) -> tuple[Figure, Any]:
    """A figure with `columns` styled axes side by side (one Axes, or an array of them)."""
    fig = new_figure(width, height)
    axes = fig.subplots(1, columns)
    for ax in [axes] if columns == 1 else axes:
        style(ax)
    return fig, axes


def png(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", metadata={"Software": None})
    return buffer.getvalue()


def curves_png(curves: Mapping[str, Sequence[Mapping[str, float]]]) -> bytes:
    """One panel per curve: accuracy against the curve's x (points {"x", "accuracy"})."""
    fig, axes = new_axes(4.2 * len(curves), 3.2, columns=len(curves))
    for ax, (label, points) in zip(
        [axes] if len(curves) == 1 else axes, curves.items(), strict=True
    ):
        xs = [p["x"] for p in points]
        ax.plot(xs, [p["accuracy"] for p in points], marker="o", color="#1f77b4")
        ax.set_xlabel(label)
        ax.set_ylabel("accuracy")
        ax.set_ylim(-0.02, 1.02)
        if len(points) == 1:
            ax.set_title("not applicable beyond the clean point", fontsize=9, color="#57606a")
    return png(fig)
