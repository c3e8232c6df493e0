"""The decoding benchmark's plot (`launch.benchmark --decode`) as PNG bytes: time per generated
token against the context, one line per mixer, one panel per batch size, and last the same
generation by recomputing the whole prefix for every token. The top row is wall-clock time (the
quickest run), the bottom row this process's CPU time (the median run): on a machine that other
work keeps busy the two part, and CPU time is what the mixers themselves cost. Both axes are
logarithmic and every panel shares the time axis, so a line's slope is how its cost grows with
the context and the gap to the last panel is what a cache saves."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from analysis import figures
from analysis.study_plots import ARM_COLORS

CLOCK_NAMES = {"wall": "wall-clock", "cpu": "CPU time"}


def _per_token(row: Mapping[str, Any], kind: str, clock: str, statistic: str) -> float | None:
    """A row's time per token on `clock` by `statistic`, with the cache or recomputing."""
    figure = row["seconds_per_token"] if kind == "cache" else row["recompute"]
    if figure is None:
        return None
    if kind != "cache":
        figure = figure["seconds_per_token"]
    return figure[clock][statistic]


def decoding_png(result: Mapping[str, Any]) -> bytes:
    rows = result["rows"]
    labels = list(result["mixers"])
    colors = {label: ARM_COLORS[i % len(ARM_COLORS)] for i, label in enumerate(labels)}
    panels = [(b, "cache") for b in sorted({r["batch"] for r in rows})]
    panels += [(b, "recompute") for b in sorted({r["batch"] for r in rows if r["recompute"]})]
    contexts = sorted({r["context"] for r in rows})
    headline = result["headline"]  # clock -> the statistic its figures are read by
    fig = figures.new_figure(3.2 * len(panels) + 1.8, 6.4)
    grid = fig.subplots(len(headline), len(panels), sharex=True, sharey=True, squeeze=False)
    for axes, (clock, statistic) in zip(grid, headline.items(), strict=True):
        for ax, (batch, kind) in zip(axes, panels, strict=True):
            figures.style(ax)
            for label in labels:
                points = sorted(
                    (r["context"], _per_token(r, kind, clock, statistic))
                    for r in rows
                    if r["mixer"] == label and r["batch"] == batch
                )
                points = [(c, t) for c, t in points if t is not None]
                if points:
                    ax.plot(
                        [c for c, _ in points],
                        [1e3 * t for _, t in points],
                        marker="o",
                        label=label,
                        color=colors[label],
                    )
            what = "with the cache" if kind == "cache" else "recomputing the prefix"
            ax.set_title(f"{what}, batch {batch}", fontsize=9)
            ax.set_xscale("log", base=2)
            ax.set_xticks(contexts, [str(c) for c in contexts], fontsize=8)
            ax.minorticks_off()
            ax.set_yscale("log")
            ax.set_xlabel("context (tokens)", fontsize=8)
            ax.label_outer()  # the x label under the bottom row only
        axes[0].set_ylabel(f"ms per token, {CLOCK_NAMES[clock]} ({statistic})", fontsize=8)
    handles, names = grid[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside right center", fontsize=8, frameon=False)
    return figures.png(fig)
