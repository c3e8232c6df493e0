"""A study report's two plots as PNG bytes: the primary metric's learning curves and its final
value per arm, drawn from the study's summary with analysis/figures.py."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from analysis import figures
from analysis.summary_reader import (
    arm_entry,
    arm_label,
    arm_order,
    as_float,
    as_list,
    as_mapping,
    as_pair,
    confidence_label,
    direction,
    is_baseline,
    metric_stats,
    study_blocks,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

BASELINE_COLOR = "#444c56"
# Colours for the other arms, the same in both plots (tab10 without its grey).
ARM_COLORS = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#bcbd22",
    "#17becf",
)


def _arm_colors(summary: Mapping[str, Any]) -> dict[str, str]:
    colors = {}
    others = iter(ARM_COLORS * (1 + len(arm_order(summary)) // len(ARM_COLORS)))
    for arm in arm_order(summary):
        colors[arm] = BASELINE_COLOR if is_baseline(summary, arm) else next(others)
    return colors


def _placeholder(fig: Figure, ax: Any, text: str) -> bytes:
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", color="#57606a", transform=ax.transAxes)
    return figures.png(fig)


def _floats(values: Any) -> list[float]:
    return [as_float(v) for v in as_list(values)]


def learning_curves_png(summary: Mapping[str, Any]) -> bytes:
    """The primary metric against step, one line per arm (mean over seeds) with its band."""
    metric = summary.get("metric") or ""
    fig, ax = figures.new_axes(9, 4.2)
    colors = _arm_colors(summary)
    drawn = 0
    for arm in arm_order(summary):
        curve = as_mapping(as_mapping(arm_entry(summary, arm).get("curves")).get(metric))
        steps, mean = _floats(curve.get("steps")), _floats(curve.get("mean"))
        if not steps or len(mean) != len(steps):
            continue
        width = 2.2 if is_baseline(summary, arm) else 1.6
        ax.plot(steps, mean, color=colors[arm], linewidth=width, label=arm_label(summary, arm))
        lo, hi = _floats(curve.get("lo")), _floats(curve.get("hi"))
        if len(lo) == len(steps) == len(hi):
            ax.fill_between(steps, lo, hi, color=colors[arm], alpha=0.15, linewidth=0)
        drawn += 1
    if not drawn:
        return _placeholder(fig, ax, f"no {metric or 'metric'} curves were logged")
    ax.set_xlabel("training step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} during training ({direction(summary)})", loc="left")
    ax.legend(frameon=False, loc="best", fontsize="small")
    return figures.png(fig)


def primary_metric_png(summary: Mapping[str, Any]) -> bytes:
    """Final primary metric per arm: mean bars, t-interval whiskers, seeds as dots."""
    metric = summary.get("metric") or ""
    arms = arm_order(summary)
    fig, ax = figures.new_axes(max(5.5, 1.3 * len(arms) + 2.5), 4.2)
    if not arms:
        return _placeholder(fig, ax, "no arms")
    colors = _arm_colors(summary)
    baseline = summary.get("baseline")
    # A block's baseline mean is drawn across its own block's bars only: the arms of other
    # blocks are not compared with it.
    spans = {
        b: (arms.index(members[0]), arms.index(members[-1]))
        for _, b, members in study_blocks(summary)
        if members
    }
    for x, arm in enumerate(arms):
        stats = metric_stats(arm_entry(summary, arm), metric)
        final, values = as_mapping(stats.get("final")), _floats(stats.get("final_values"))
        _draw_arm_bar(ax, x, final, values, colors[arm])
        mean = as_float(final.get("mean"))
        if arm in spans and math.isfinite(mean):
            first, last = spans[arm]
            ax.hlines(mean, first - 0.4, last + 0.4, BASELINE_COLOR, "--", linewidth=1, zorder=1)
        elif arm == baseline and math.isfinite(mean):
            ax.axhline(mean, color=BASELINE_COLOR, linestyle="--", linewidth=1, zorder=1)
    ax.set_xlim(-0.6, len(arms) - 0.4)
    marked = [is_baseline(summary, a) for a in arms]
    ax.set_xticks(
        range(len(arms)),
        [f"{a}\n(baseline)" if m else a for a, m in zip(arms, marked, strict=True)],
    )
    for tick, m in zip(ax.get_xticklabels(), marked, strict=True):
        tick.set_fontweight("bold" if m else "normal")
    ax.set_ylabel(f"final {metric}")
    conf = confidence_label(summary)
    ax.set_title(f"Final {metric} ({direction(summary)}); whiskers: {conf} t-CI", loc="left")
    ax.grid(False, axis="x")
    return figures.png(fig)


def _draw_arm_bar(
    ax: Any, x: int, final: Mapping[str, Any], values: list[float], arm_color: str
) -> None:
    mean = as_float(final.get("mean"))
    if not math.isfinite(mean):
        ax.text(x, 0, "no seeds", ha="center", va="bottom", color="#57606a", fontsize="small")
        return
    lo, hi = as_pair(final.get("t_ci"))
    ax.bar(x, mean, width=0.6, color=arm_color, alpha=0.35, edgecolor=arm_color, zorder=2)
    if math.isfinite(lo) and math.isfinite(hi):
        yerr = [[mean - lo], [hi - mean]]
        ax.errorbar(x, mean, yerr=yerr, color="#24292f", capsize=6, linewidth=1.2, zorder=3)
    finite = [v for v in values if math.isfinite(v)]
    # Seeds sit in a strip right of the whisker (one seed has none), evenly: no random jitter.
    n = len(finite)
    offsets = [0.0] if n == 1 else [0.07 + 0.14 * i / (n - 1) for i in range(n)]
    ax.scatter([x + o for o in offsets], finite, color=arm_color, edgecolor="white", s=36, zorder=4)
