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


def study_blocks(summary: Mapping[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(block, its baseline, its arms with the baseline first) for each block of a study whose
    arms are compared only within blocks (`block_by`); [] for a study without blocks."""
    if not summary.get("block_by"):
        return []
    arms = as_mapping(summary.get("arms"))
    out = []
    for name, entry in as_mapping(summary.get("blocks")).items():
        baseline = as_mapping(entry).get("baseline")
        members = [a for a in as_list(as_mapping(entry).get("arms")) if a in arms]
        ordered = ([baseline] if baseline in members else []) + [
            a for a in members if a != baseline
        ]
        out.append((str(name), str(baseline), ordered))
    return out


def is_baseline(summary: Mapping[str, Any], arm: str) -> bool:
    """Whether other arms are compared with `arm`: the baseline, or a block's."""
    return arm == summary.get("baseline") or any(arm == b for _, b, _ in study_blocks(summary))


def arm_order(summary: Mapping[str, Any]) -> list[str]:
    """The arms, baseline first, then in the summary's order; with blocks, block by block,
    each baseline first."""
    arms = list(as_mapping(summary.get("arms")))
    if summary.get("block_by"):
        grouped = [a for _, _, members in study_blocks(summary) for a in members]
        return grouped + [a for a in arms if a not in grouped]
    baseline = summary.get("baseline")
    return ([baseline] if baseline in arms else []) + [a for a in arms if a != baseline]


def arm_entry(summary: Mapping[str, Any], arm: str) -> Mapping[str, Any]:
    return as_mapping(as_mapping(summary.get("arms")).get(arm))


def arm_label(summary: Mapping[str, Any], arm: str) -> str:
    """The arm's name, marked when it is a baseline (in every table, not only by colour)."""
    return f"{arm} (baseline)" if is_baseline(summary, arm) else arm


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
