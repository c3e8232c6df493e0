"""Metrics per slice of the scored items, the worst slice, and the hardest examples made readable.

An item is one scored prediction: a classified image, or one scored position of a sequence. A
slice is the items sharing an attribute value (a class, a group, a bucket of query-key
distance). Slices too small to estimate an accuracy from are listed but never named worst.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

MIN_SLICE_ITEMS = 20  # below this a slice's accuracy is too noisy to call it the worst
_CHARS = " .:-=+*#%@"  # image pixels from dark to bright, for the text dump


def item_nll(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[label] per item, computed stably in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    log_norm = np.log(np.exp(z).sum(axis=1))
    return log_norm - z[np.arange(len(labels)), labels]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion: sane at 0 and n, unlike the normal
    approximation."""
    if n == 0:
        return (math.nan, math.nan)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def slice_row(label: str, correct: np.ndarray, nll: np.ndarray) -> dict[str, Any]:
    """One slice's count, accuracy with its Wilson interval, and mean NLL."""
    n = int(len(correct))
    hits = int(np.sum(correct))
    return {
        "slice": label,
        "items": n,
        "accuracy": hits / n if n else math.nan,
        "accuracy_ci": list(wilson_interval(hits, n)),
        "nll": float(np.mean(nll)) if n else math.nan,
    }


def _order(label: str) -> tuple:
    # Numeric labels ("2", "8-15") sort by their first number, others alphabetically.
    head = label.split("-")[0]
    return (0, float(head), label) if head.isdigit() else (1, 0.0, label)


def slice_table(values: np.ndarray, correct: np.ndarray, nll: np.ndarray) -> list[dict[str, Any]]:
    """A row per distinct attribute value, in natural order."""
    rows = []
    for label in sorted({str(v) for v in values}, key=_order):
        chosen = values.astype(str) == label
        rows.append(slice_row(label, correct[chosen], nll[chosen]))
    return rows


def worst_slice(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The row with the lowest accuracy among those with at least MIN_SLICE_ITEMS items."""
    eligible = [r for r in rows if r["items"] >= MIN_SLICE_ITEMS]
    return dict(min(eligible, key=lambda r: r["accuracy"])) if eligible else None


def hardest(nll: np.ndarray, count: int) -> np.ndarray:
    """Indices of the `count` items with the highest NLL, hardest first (ties: lowest index)."""
    return np.argsort(-nll, kind="stable")[:count]


def render_sequence(tokens: np.ndarray, position: int, target: int, predicted: int) -> str:
    """The input tokens with the scored position bracketed, then what was asked and answered."""
    shown = " ".join(f"[{t}]" if i == position else str(t) for i, t in enumerate(tokens))
    return f"{shown}\n  position {position}: target {target}, predicted {predicted}"


def render_image(image: np.ndarray, target: int, predicted: int) -> str:
    """An [H, W, C] image in [0, 1] as text, one character per pixel (channels averaged)."""
    gray = np.clip(image.mean(axis=-1), 0.0, 1.0)
    levels = np.minimum((gray * len(_CHARS)).astype(int), len(_CHARS) - 1)
    art = "\n".join("  " + "".join(_CHARS[v] * 2 for v in row) for row in levels)
    return f"{art}\n  label {target}, predicted {predicted}"
