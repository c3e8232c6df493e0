"""A study's summary (`summary.json`, as analysis/study.py writes it) read defensively.

The report and its plots read the summary through these helpers: an optional key may be
missing, a number may be NaN or None (JSON null), an arm may have no completed seed, and what
is not known comes back as NaN or empty rather than as an exception.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


def as_float(value: Any) -> float:
    """A number as a float; NaN for None, missing or anything that is not a number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def as_mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else []


def as_pair(value: Any) -> tuple[float, float]:
    items = as_list(value)
    return (as_float(items[0]), as_float(items[1])) if len(items) == 2 else (math.nan, math.nan)


def arm_order(summary: Mapping[str, Any]) -> list[str]:
    """The arms, baseline first, then in the summary's order."""
    arms = list(as_mapping(summary.get("arms")))
    baseline = summary.get("baseline")
    return ([baseline] if baseline in arms else []) + [a for a in arms if a != baseline]


def arm_entry(summary: Mapping[str, Any], arm: str) -> Mapping[str, Any]:
    return as_mapping(as_mapping(summary.get("arms")).get(arm))


def arm_label(summary: Mapping[str, Any], arm: str) -> str:
    """The arm's name, marked when it is the baseline (in every table, not only by colour)."""
    return f"{arm} (baseline)" if arm == summary.get("baseline") else arm


def metric_stats(arm: Mapping[str, Any], metric: str) -> Mapping[str, Any]:
    return as_mapping(as_mapping(arm.get("metrics")).get(metric))


def direction(summary: Mapping[str, Any]) -> str:
    higher = summary.get("higher_is_better")
    if higher is None:
        return "direction not stated"
    return "higher is better" if higher else "lower is better"


def confidence_label(summary: Mapping[str, Any]) -> str:
    c = as_float(summary.get("confidence"))
    return f"{c:.0%}" if math.isfinite(c) else "95%"
