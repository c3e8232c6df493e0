"""Calibration: whether a model's confidence means what it says.

`launch.evaluate` hands this module the logits [N, C] and integer labels [N] of the N items it
scored (classification examples, or the scored positions of a sequence task) and stores what
comes back as JSON, next to a reliability diagram.

- `top_label`: each item's confidence (its largest softmax probability) and prediction.
- `reliability_bins`: items grouped by confidence, in equal-width or equal-mass bins, with each
  bin's count, mean confidence and accuracy: the data behind a reliability diagram.
- `expected_calibration_error`, `max_calibration_error`: the count-weighted mean and the largest
  gap between a bin's accuracy and its mean confidence (Naeini et al. 2015, Guo et al. 2017).
- `brier_score`, `negative_log_likelihood`: proper scoring rules. ECE alone can be gamed (a
  model that always predicts the majority class with its base rate has ECE 0); these cannot.
- `fit_temperature`: temperature scaling (Guo et al. 2017), one scalar T > 0 that divides the
  logits; it changes confidences, never predictions.
- `calibration_report`: all of the above as one JSON-serializable dict, optionally also after
  dividing the logits by a temperature fitted elsewhere (on held-out data, or it flatters).
- `reliability_diagram_png`: the diagram, before and after temperature scaling.

Conventions:

- Bins are left-closed, [e_i, e_i+1), and the last bin is closed, so a confidence exactly on an
  edge belongs to the bin above it and a confidence of 1 to the last bin. scikit-learn's
  `calibration_curve` closes its bins on the right instead; the two agree unless a confidence
  falls exactly on an interior edge.
- Equal-mass edges are the confidences' quantiles with linear interpolation (numpy's default,
  as in scikit-learn's "quantile" strategy). Tied confidences always share a bin; quantile edges
  that coincide, and bins that hold no item (few items, many bins), are merged, so equal-mass
  bins are never empty and there may be fewer of them than asked for.
- An empty equal-width bin has count 0 and mean confidence and accuracy None (JSON null): NaN
  is not JSON, and a missing bin would shift the others.
- The Brier score is Brier's (1950) multiclass score, the mean over items of
  sum_c (p_c - onehot_c)^2, in [0, 2], for every C including C = 2. That is scikit-learn's
  `brier_score_loss(..., scale_by_half=False)`; its default ("auto") halves binary problems only.
- Everything is computed in float64, so the logits are copied once (N * C * 8 bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import numpy as np
from numpy.typing import ArrayLike
from scipy import special

from analysis import figures

STRATEGIES = ("equal_width", "equal_mass")
# Wide enough for any model worth calibrating; the fit lands on a bound only when the logits'
# scale is hopeless (e.g. every item right with a large margin wants T -> 0).
TEMPERATURE_BOUNDS = (0.05, 20.0)
# How far a row of given probabilities may sum from 1 (float32 softmax over many classes).
PROBABILITY_SUM_TOLERANCE = 1e-4


class Bins(TypedDict):
    """A reliability diagram's data; lists so that it is JSON as it stands."""

    strategy: str
    edges: list[float]  # ascending, one more than the bins
    count: list[int]
    mean_confidence: list[float | None]  # None for an empty bin
    accuracy: list[float | None]


def top_label(logits: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Each item's confidence (largest softmax probability) [N] and predicted class [N]."""
    return _top_label(special.log_softmax(_check_logits(logits), axis=1))


def reliability_bins(
    confidence: ArrayLike, correct: ArrayLike, num_bins: int = 15, strategy: str = "equal_width"
) -> Bins:
    """Items grouped by confidence: per bin, how many, how confident and how often right.

    "equal_width" splits [0, 1] into `num_bins` bins of equal width; most of them may be empty
    for a confident model. "equal_mass" puts (as nearly as ties allow) the same number of items
    in each bin, so every bin's accuracy rests on the same evidence.
    """
    confidence, correct = _check_confidence(confidence, correct)
    num_bins = _check_num_bins(num_bins)
    if strategy == "equal_width":
        edges = np.linspace(0.0, 1.0, num_bins + 1)
    elif strategy == "equal_mass":
        edges = _equal_mass_edges(confidence, num_bins)
    else:
        raise ValueError(f"unknown binning strategy {strategy!r}; expected one of {STRATEGIES}")
    index = _bin_index(confidence, edges)
    size = edges.size - 1
    count = np.bincount(index, minlength=size)

    def per_bin_mean(values: np.ndarray) -> list[float | None]:
        sums = np.bincount(index, weights=values, minlength=size)
        return [float(s / n) if n else None for s, n in zip(sums, count, strict=True)]

    return Bins(
        strategy=strategy,
        edges=[float(e) for e in edges],
        count=[int(n) for n in count],
        mean_confidence=per_bin_mean(confidence),
        accuracy=per_bin_mean(correct),
    )


def expected_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, num_bins: int = 15, strategy: str = "equal_width"
) -> float:
    """sum_b (n_b / N) |accuracy_b - confidence_b|: the typical confidence-accuracy gap."""
    return _ece(reliability_bins(confidence, correct, num_bins, strategy))


def max_calibration_error(
    confidence: ArrayLike, correct: ArrayLike, num_bins: int = 15, strategy: str = "equal_width"
) -> float:
    """max_b |accuracy_b - confidence_b| over non-empty bins: the worst gap, however few items."""
    return _mce(reliability_bins(confidence, correct, num_bins, strategy))


def brier_score(scores: ArrayLike, labels: ArrayLike, *, from_logits: bool = True) -> float:
    """Mean over items of sum_c (p_c - onehot_c)^2, in [0, 2] (not halved, see module doc).

    `scores` are logits, or probabilities [N, C] (rows summing to 1) with from_logits=False.
    """
    if from_logits:
        logits, labels = _check_logits_labels(scores, labels)
        probs = special.softmax(logits, axis=1)
    else:
        probs, labels = _check_logits_labels(scores, labels, "probabilities")
        row_sums = probs.sum(axis=1)
        if probs.min() < 0 or probs.max() > 1:
            raise ValueError("probabilities must lie in [0, 1] (pass from_logits=True for logits)")
        if np.max(np.abs(row_sums - 1.0)) > PROBABILITY_SUM_TOLERANCE:
            raise ValueError("each row of probabilities must sum to 1")
    return _brier(probs, labels)


def negative_log_likelihood(logits: ArrayLike, labels: ArrayLike) -> float:
    """Mean over items of -log softmax(logits)[label], in nats."""
    logits, labels = _check_logits_labels(logits, labels)
    return _nll(special.log_softmax(logits, axis=1), labels)


def fit_temperature(logits: ArrayLike, labels: ArrayLike) -> float:
    """The T > 0 that minimizes the NLL of softmax(logits / T) (Guo et al. 2017).

    Fit it on held-out items and apply it elsewhere; T > 1 means the model was overconfident.
    The result lies in TEMPERATURE_BOUNDS and is deterministic.
    """
    logits, labels = _check_logits_labels(logits, labels)

    def nll(log_t: float) -> float:
        return _nll(special.log_softmax(logits / np.exp(log_t), axis=1), labels)

    from scipy import optimize  # here, not at the top: most importers never fit a temperature

    # The NLL is convex in 1/T, hence unimodal in log T, so a bounded scalar search finds the
    # global minimum; searching log T treats T = 0.5 and T = 2 as equally far from 1.
    result = optimize.minimize_scalar(
        nll, bounds=np.log(TEMPERATURE_BOUNDS), method="bounded", options={"xatol": 1e-6}
    )
    return float(np.exp(result.x))


def calibration_report(
    logits: ArrayLike, labels: ArrayLike, *, num_bins: int = 15, temperature: float | None = None
) -> dict[str, Any]:
    """Every calibration metric of these items, with both strategies' bins, as a JSON dict.

    With a temperature, the same metrics for logits / temperature follow under
    "after_temperature" (with the temperature itself); accuracy is the same there by design.
    """
    logits, labels = _check_logits_labels(logits, labels)
    num_bins = _check_num_bins(num_bins)
    report = _metrics(logits, labels, num_bins)
    if temperature is not None:
        if not (np.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be finite and > 0, got {temperature}")
        report["after_temperature"] = {
            "temperature": float(temperature),
            **_metrics(logits / temperature, labels, num_bins),
        }
    return report


def reliability_diagram_png(
    before_bins: Bins, after_bins: Bins | None = None, title: str = ""
) -> bytes:
    """A reliability diagram as PNG bytes: accuracy against confidence per bin, the diagonal a
    calibrated model would follow, and below it how many items each bin holds.

    Takes `reliability_bins` output or the same read back from a report's JSON; empty bins are
    left out of the curve and show as zero counts.
    """
    fig = figures.new_figure(5.0, 6.0, dpi=100)
    curve, counts = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    curve.plot([0, 1], [0, 1], linestyle="--", color="#888888", label="calibrated")
    for name, bins, color in (
        ("before", before_bins, "#d62728"),
        ("after temperature", after_bins, "#1f77b4"),
    ):
        if bins is None:
            continue
        curve.plot(
            _floats(bins["mean_confidence"]),
            _floats(bins["accuracy"]),
            marker="o",
            color=color,
            label=f"{name} (ECE {_ece(bins):.3f})",
        )
        counts.stairs(bins["count"], bins["edges"], color=color, label=name)
    curve.set(xlim=(0, 1), ylim=(0, 1), ylabel="accuracy", title=title)
    curve.legend(loc="upper left")
    counts.set(xlabel="confidence", ylabel="items per bin")
    for ax in (curve, counts):
        figures.style(ax)
    return figures.png(fig)


# --- computation on checked arrays --------------------------------------------------------


def _metrics(logits: np.ndarray, labels: np.ndarray, num_bins: int) -> dict[str, Any]:
    log_probs = special.log_softmax(logits, axis=1)  # once, for every metric below
    confidence, prediction = _top_label(log_probs)
    correct = prediction == labels
    width = reliability_bins(confidence, correct, num_bins, "equal_width")
    mass = reliability_bins(confidence, correct, num_bins, "equal_mass")
    return {
        "num_items": int(labels.size),
        "num_classes": int(logits.shape[1]),
        "accuracy": float(correct.mean()),
        "mean_confidence": float(confidence.mean()),
        "ece_equal_width": _ece(width),
        "ece_equal_mass": _ece(mass),
        "mce_equal_width": _mce(width),
        "mce_equal_mass": _mce(mass),
        "brier": _brier(np.exp(log_probs), labels),
        "nll": _nll(log_probs, labels),
        "num_bins": num_bins,
        "bins": {"equal_width": width, "equal_mass": mass},
    }


def _top_label(log_probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    prediction = np.argmax(log_probs, axis=1)
    # log_softmax's maximum is -log(sum exp(x - max)) <= 0, so this never exceeds 1.
    return np.exp(np.max(log_probs, axis=1)), prediction


def _brier(probs: np.ndarray, labels: np.ndarray) -> float:
    errors = probs.copy()
    errors[np.arange(labels.size), labels] -= 1.0
    return float(np.mean(np.sum(errors**2, axis=1)))


def _nll(log_probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.mean(log_probs[np.arange(labels.size), labels]))


def _bin_index(confidence: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # side="right" makes bins [e_i, e_i+1); values at or above the last interior edge, the top
    # edge included, land in the last bin.
    return np.searchsorted(edges[1:-1], confidence, side="right")


def _equal_mass_edges(confidence: np.ndarray, num_bins: int) -> np.ndarray:
    # Sorted because searchsorted needs ascending edges and interpolation does not promise them.
    edges = np.sort(np.quantile(confidence, np.linspace(0.0, 1.0, num_bins + 1)))
    count = np.bincount(_bin_index(confidence, edges), minlength=num_bins)
    # Ties repeat an edge, making zero-width bins, and with few items an interpolated bin can
    # hold nothing. Dropping an empty bin's upper edge merges it into the next bin without
    # moving any item; the last bin always holds the maximum, so the top edge stays, and
    # identical confidences end up in one closed bin [c, c].
    return np.concatenate([edges[:1], edges[1:][count > 0]])


def _weighted_gaps(bins: Bins) -> tuple[np.ndarray, np.ndarray]:
    """Each non-empty bin's share of the items and its |accuracy - mean confidence|."""
    count = np.asarray(bins["count"], dtype=np.float64)
    filled = count > 0
    gaps = np.abs(_floats(bins["accuracy"]) - _floats(bins["mean_confidence"]))
    return count[filled] / count.sum(), gaps[filled]


def _ece(bins: Bins) -> float:
    weights, gaps = _weighted_gaps(bins)
    return float(np.sum(weights * gaps))


def _mce(bins: Bins) -> float:
    return float(np.max(_weighted_gaps(bins)[1]))


def _floats(values: Sequence[float | None]) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values], dtype=np.float64)


# --- input checks: one clear ValueError before anything is computed ------------------------


def _check_logits(logits: ArrayLike, name: str = "logits") -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim != 2 or 0 in logits.shape:
        raise ValueError(f"{name} must have shape [N, C] with N, C >= 1, got {logits.shape}")
    if not np.all(np.isfinite(logits)):
        raise ValueError(f"{name} must be finite (a NaN or inf would poison every metric)")
    return logits


def _check_logits_labels(
    logits: ArrayLike, labels: ArrayLike, name: str = "logits"
) -> tuple[np.ndarray, np.ndarray]:
    logits = _check_logits(logits, name)
    labels = np.asarray(labels)
    num_items, num_classes = logits.shape
    if labels.shape != (num_items,):
        raise ValueError(
            f"labels must have shape [N] = ({num_items},) to match {name} of shape "
            f"{logits.shape}, got {labels.shape}"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for {num_classes} classes, "
            f"got values from {labels.min()} to {labels.max()}"
        )
    return logits, labels


def _check_confidence(confidence: ArrayLike, correct: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    confidence = np.asarray(confidence, dtype=np.float64)
    correct = np.asarray(correct)
    if confidence.ndim != 1 or confidence.size == 0:
        raise ValueError(f"confidence must have shape [N] with N >= 1, got {confidence.shape}")
    if correct.shape != confidence.shape:
        raise ValueError(
            f"correct must have the shape of confidence {confidence.shape}, got {correct.shape}"
        )
    if not (np.all(np.isfinite(confidence)) and confidence.min() >= 0 and confidence.max() <= 1):
        raise ValueError("confidence must lie in [0, 1]")
    if not np.all((correct == 0) | (correct == 1)):
        raise ValueError("correct must be booleans (or 0 and 1)")
    return confidence, correct.astype(np.float64)


def _check_num_bins(num_bins: int) -> int:
    if not isinstance(num_bins, int | np.integer) or num_bins < 1:
        raise ValueError(f"num_bins must be an integer >= 1, got {num_bins!r}")
    return int(num_bins)
