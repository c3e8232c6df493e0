"""Specifications for analysis/calibration.py, the calibration suite of `launch.evaluate`.

Expected values come from outside the module: arithmetic worked by hand in the comments,
scikit-learn's `calibration_curve`, `brier_score_loss` and `log_loss`, and synthetic items whose
labels are drawn from a known softmax, so the true calibration (and temperature) is known.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import special
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss, log_loss

from analysis import calibration as cal

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLANTED_TEMPERATURE = 2.5


def sample_labels(rng: np.random.Generator, logits: np.ndarray, temperature: float) -> np.ndarray:
    """One label per row drawn from softmax(logits / temperature), by inverting the CDF."""
    probs = special.softmax(logits / temperature, axis=1)
    below = probs.cumsum(axis=1) < rng.random((len(probs), 1))
    return np.minimum(below.sum(axis=1), probs.shape[1] - 1)


@pytest.fixture(scope="module")
def synthetic():
    """20000 items over 10 classes: labels drawn from softmax(z) (the logits z are calibrated)
    and from softmax(z / 2.5) (then z is overconfident by exactly a temperature of 2.5)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0.0, 3.0, size=(20000, 10))
    calibrated = sample_labels(rng, logits, 1.0)
    overconfident = sample_labels(rng, logits, PLANTED_TEMPERATURE)
    return logits, calibrated, overconfident


# --- top label ----------------------------------------------------------------------------


def test_top_label_is_the_largest_softmax_probability_and_its_class():
    # softmax([0, log 3]) = [1/4, 3/4]; softmax([1000, 0]) overflows a naive exp.
    confidence, prediction = cal.top_label([[0.0, np.log(3.0)], [1000.0, 0.0], [2.0, 2.0]])
    np.testing.assert_allclose(confidence, [0.75, 1.0, 0.5])
    np.testing.assert_array_equal(prediction, [1, 0, 0])


# --- bins, ECE and MCE on hand-computed cases ---------------------------------------------


def test_equal_width_ece_and_mce_by_hand():
    # Two bins [0, 0.5) and [0.5, 1]; 0.6, 0.8, 1.0 fall in the second.
    #   bin 0: conf 0.2, 0.4 -> mean 0.3; correct [0, 1] -> acc 0.5;
    #          gap |0.5 - 0.3| = 0.2, weight 2/5
    #   bin 1: conf 0.6, 0.8, 1.0 -> mean 0.8; correct [1, 1, 0] -> acc 2/3;
    #          gap |2/3 - 0.8| = 2/15, weight 3/5
    #   ECE = 2/5 * 0.2 + 3/5 * 2/15 = 0.08 + 0.08 = 0.16;  MCE = max(0.2, 2/15) = 0.2
    confidence = [0.2, 0.4, 0.6, 0.8, 1.0]
    correct = [False, True, True, True, False]
    bins = cal.reliability_bins(confidence, correct, 2, "equal_width")
    assert bins["edges"] == [0.0, 0.5, 1.0]
    assert bins["count"] == [2, 3]
    assert bins["mean_confidence"] == pytest.approx([0.3, 0.8])
    assert bins["accuracy"] == pytest.approx([0.5, 2 / 3])
    assert cal.expected_calibration_error(confidence, correct, 2, "equal_width") == pytest.approx(
        0.16
    )
    assert cal.max_calibration_error(confidence, correct, 2, "equal_width") == pytest.approx(0.2)


def test_equal_mass_ece_and_mce_by_hand():
    # Quantiles of [0.1, 0.2, 0.3, 0.9] at 0, 1/2, 1 (linear interpolation): the median sits at
    # position 1.5, between 0.2 and 0.3, so the edges are [0.1, 0.25, 0.9].
    #   bin 0: conf 0.1, 0.2 -> mean 0.15; correct [1, 0] -> acc 0.5; gap 0.35, weight 1/2
    #   bin 1: conf 0.3, 0.9 -> mean 0.6;  correct [0, 1] -> acc 0.5; gap 0.1,  weight 1/2
    #   ECE = 0.5 * 0.35 + 0.5 * 0.1 = 0.225;  MCE = 0.35
    # Equal-width bins tell a different story on the same items:
    #   [0, 0.5): 0.1, 0.2, 0.3 -> mean 0.2, acc 1/3, gap 2/15, weight 3/4
    #   [0.5, 1]: 0.9           -> acc 1, gap 0.1, weight 1/4
    #   ECE = 3/4 * 2/15 + 1/4 * 0.1 = 0.1 + 0.025 = 0.125
    confidence = [0.1, 0.2, 0.3, 0.9]
    correct = [1, 0, 0, 1]
    bins = cal.reliability_bins(confidence, correct, 2, "equal_mass")
    assert bins["edges"] == pytest.approx([0.1, 0.25, 0.9])
    assert bins["count"] == [2, 2]
    assert bins["mean_confidence"] == pytest.approx([0.15, 0.6])
    assert bins["accuracy"] == pytest.approx([0.5, 0.5])
    assert cal.expected_calibration_error(confidence, correct, 2, "equal_mass") == pytest.approx(
        0.225
    )
    assert cal.max_calibration_error(confidence, correct, 2, "equal_mass") == pytest.approx(0.35)
    assert cal.expected_calibration_error(confidence, correct, 2, "equal_width") == pytest.approx(
        0.125
    )


def test_bins_are_left_closed_and_the_last_bin_is_closed():
    # Four bins [0, .25), [.25, .5), [.5, .75), [.75, 1]: 0.5 sits on an edge and belongs to
    # the bin above it; 1.0 belongs to the last bin. Empty bins say None, never NaN.
    bins = cal.reliability_bins([0.5, 1.0], [True, False], 4, "equal_width")
    assert bins["count"] == [0, 0, 1, 1]
    assert bins["mean_confidence"] == [None, None, 0.5, 1.0]
    assert bins["accuracy"] == [None, None, 1.0, 0.0]
    # Only non-empty bins count: ECE = 1/2 * |1 - 0.5| + 1/2 * |0 - 1| = 0.75, MCE = 1.
    assert cal.expected_calibration_error([0.5, 1.0], [True, False], 4) == pytest.approx(0.75)
    assert cal.max_calibration_error([0.5, 1.0], [True, False], 4) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "confidence, num_bins, edges, count",
    [
        # All tied: one closed bin [0.7, 0.7] rather than four, three of them empty.
        ([0.7] * 5, 4, [0.7, 0.7], [5]),
        # Quantile positions 0, 5/3, 10/3, 5 give edges 0.5, 0.5, 0.5 + 1/3 * 0.4, 0.9; the
        # repeated 0.5 merges, and the four tied 0.5s share the first bin.
        ([0.5, 0.5, 0.5, 0.5, 0.9, 0.9], 3, [0.5, 0.5 + 0.4 / 3, 0.9], [4, 2]),
        # Interpolated edges 0, .25, .5, .75, 1 leave the middle two bins empty: merged away.
        ([0.0, 1.0], 4, [0.0, 0.25, 1.0], [1, 1]),
    ],
)
def test_equal_mass_keeps_ties_together_and_leaves_no_bin_empty(confidence, num_bins, edges, count):
    correct = [True] * len(confidence)
    bins = cal.reliability_bins(confidence, correct, num_bins, "equal_mass")
    assert bins["edges"] == pytest.approx(edges)
    assert bins["count"] == count
    assert None not in bins["mean_confidence"] + bins["accuracy"]
    assert np.isfinite(cal.expected_calibration_error(confidence, correct, num_bins, "equal_mass"))


# --- bins against scikit-learn's calibration_curve ----------------------------------------
# sklearn closes its bins on the right ((e_i, e_i+1]), we on the left; on continuous random
# confidences no value falls exactly on an edge, so the two must agree bin for bin.


def test_equal_width_bins_match_sklearn_uniform_strategy():
    rng = np.random.default_rng(1)
    confidence = 0.5 + 0.5 * rng.random(2000)  # so the bins below 0.5 are empty
    correct = rng.random(2000) < confidence**2
    bins = cal.reliability_bins(confidence, correct, 15, "equal_width")
    accuracy, mean_confidence = calibration_curve(correct, confidence, n_bins=15)
    filled = np.array(bins["count"]) > 0
    assert 0 < filled.sum() < 15
    np.testing.assert_allclose(np.array(bins["accuracy"])[filled].astype(float), accuracy)
    np.testing.assert_allclose(
        np.array(bins["mean_confidence"])[filled].astype(float), mean_confidence
    )


def test_equal_mass_bins_match_sklearn_quantile_strategy():
    rng = np.random.default_rng(2)
    # 1000 items, 10 bins: quantile positions 99.9, 199.8, ... are never whole, so every
    # interior edge lies strictly between two confidences and the closing side cannot matter.
    confidence = rng.beta(5.0, 2.0, 1000)
    correct = rng.random(1000) < confidence
    bins = cal.reliability_bins(confidence, correct, 10, "equal_mass")
    accuracy, mean_confidence = calibration_curve(
        correct, confidence, n_bins=10, strategy="quantile"
    )
    assert bins["count"] == [100] * 10
    np.testing.assert_allclose(bins["edges"], np.percentile(confidence, np.linspace(0, 100, 11)))
    np.testing.assert_allclose(bins["accuracy"], accuracy)
    np.testing.assert_allclose(bins["mean_confidence"], mean_confidence)


# --- proper scoring rules against scikit-learn --------------------------------------------


@pytest.mark.parametrize("num_classes", [5, 256])
def test_brier_and_nll_match_sklearn(num_classes):
    rng = np.random.default_rng(num_classes)
    logits = rng.normal(0.0, 2.0, size=(400, num_classes))
    labels = rng.integers(0, num_classes, 400)
    probs = special.softmax(logits, axis=1)
    classes = np.arange(num_classes)  # not every class occurs among 400 labels of 256
    expected = brier_score_loss(labels, probs, labels=classes, scale_by_half=False)
    assert cal.brier_score(logits, labels) == pytest.approx(expected, rel=1e-10)
    assert cal.brier_score(probs, labels, from_logits=False) == pytest.approx(expected, rel=1e-10)
    # For more than two classes sklearn's default does not halve either.
    assert cal.brier_score(logits, labels) == pytest.approx(
        brier_score_loss(labels, probs, labels=classes), rel=1e-10
    )
    assert cal.negative_log_likelihood(logits, labels) == pytest.approx(
        log_loss(labels, probs, labels=classes), rel=1e-10
    )


def test_brier_sums_over_classes_and_is_not_halved_for_two_classes():
    # [0.7, 0.2, 0.1] with label 0: 0.3^2 + 0.2^2 + 0.1^2 = 0.09 + 0.04 + 0.01 = 0.14.
    assert cal.brier_score([[0.7, 0.2, 0.1]], [0], from_logits=False) == pytest.approx(0.14)
    # Certain and wrong costs 2, the top of the range [0, 2].
    assert cal.brier_score([[0.0, 1.0]], [0], from_logits=False) == pytest.approx(2.0)
    # Two classes: twice sklearn's default (halved) binary Brier score.
    probs = np.array([[0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    labels = np.array([0, 0, 1])
    ours = cal.brier_score(probs, labels, from_logits=False)
    assert ours == pytest.approx(brier_score_loss(labels, probs, scale_by_half=False))
    assert ours == pytest.approx(2 * brier_score_loss(labels, probs[:, 1]))


# --- temperature scaling ------------------------------------------------------------------


def test_fit_temperature_recovers_a_planted_temperature(synthetic):
    logits, _, overconfident = synthetic
    temperature = cal.fit_temperature(logits, overconfident)
    assert temperature == pytest.approx(PLANTED_TEMPERATURE, rel=0.04)
    assert cal.negative_log_likelihood(logits / temperature, overconfident) <= (
        cal.negative_log_likelihood(logits, overconfident)
    )
    assert cal.fit_temperature(logits, overconfident) == temperature  # deterministic


def test_fit_temperature_of_calibrated_logits_is_one(synthetic):
    logits, calibrated, _ = synthetic
    assert cal.fit_temperature(logits, calibrated) == pytest.approx(1.0, rel=0.03)


def test_calibrated_logits_have_small_ece(synthetic):
    logits, calibrated, _ = synthetic
    report = cal.calibration_report(logits, calibrated)
    # Sampling noise alone, ~1300 items a bin, leaves an ECE near 0.01.
    assert report["ece_equal_width"] < 0.02
    assert report["ece_equal_mass"] < 0.02


def test_temperature_scaling_repairs_an_overconfident_model(synthetic):
    logits, _, overconfident = synthetic
    temperature = cal.fit_temperature(logits, overconfident)
    report = cal.calibration_report(logits, overconfident, temperature=temperature)
    after = report["after_temperature"]
    assert report["mean_confidence"] > report["accuracy"] + 0.2
    assert report["ece_equal_width"] > 0.2
    assert report["ece_equal_mass"] > 0.2
    assert after["temperature"] == temperature
    assert after["ece_equal_width"] < 0.02
    assert after["ece_equal_mass"] < 0.02
    assert after["nll"] < report["nll"]
    assert after["brier"] < report["brier"]
    # Dividing logits by T > 0 never changes which class is largest.
    assert after["accuracy"] == report["accuracy"]


# --- the report and the diagram -----------------------------------------------------------


def test_report_is_plain_json_with_every_metric():
    rng = np.random.default_rng(3)
    logits = rng.normal(0.0, 4.0, size=(200, 7))  # confident: many low bins empty
    labels = rng.integers(0, 7, 200)
    report = cal.calibration_report(logits, labels, num_bins=15)
    json.dumps(report, allow_nan=False)  # NaN or a numpy scalar would fail here
    assert "after_temperature" not in report
    assert report["num_items"] == 200 and report["num_classes"] == 7
    confidence, prediction = cal.top_label(logits)
    assert report["accuracy"] == pytest.approx(np.mean(prediction == labels))
    assert report["mean_confidence"] == pytest.approx(confidence.mean())
    assert report["brier"] == pytest.approx(cal.brier_score(logits, labels))
    assert report["nll"] == pytest.approx(cal.negative_log_likelihood(logits, labels))
    correct = prediction == labels
    for strategy in cal.STRATEGIES:
        bins = report["bins"][strategy]
        assert sum(bins["count"]) == 200
        assert report[f"ece_{strategy}"] == pytest.approx(
            cal.expected_calibration_error(confidence, correct, 15, strategy)
        )
        assert report[f"mce_{strategy}"] == pytest.approx(
            cal.max_calibration_error(confidence, correct, 15, strategy)
        )
    assert 0 in report["bins"]["equal_width"]["count"]


def test_reliability_diagram_is_a_png_even_with_empty_bins():
    rng = np.random.default_rng(4)
    logits = rng.normal(0.0, 4.0, size=(300, 5))
    labels = rng.integers(0, 5, 300)
    report = cal.calibration_report(logits, labels, temperature=3.0)
    report = json.loads(json.dumps(report, allow_nan=False))  # drawn from stored JSON
    before = report["bins"]["equal_width"]
    after = report["after_temperature"]["bins"]["equal_width"]
    assert 0 in before["count"] and 0 in after["count"]
    assert cal.reliability_diagram_png(before, after, "toy").startswith(PNG_MAGIC)
    only_before = cal.reliability_diagram_png(report["bins"]["equal_mass"], None, "")
    assert only_before.startswith(PNG_MAGIC)


# --- bad input ----------------------------------------------------------------------------

LOGITS = np.zeros((4, 3))
LABELS = np.array([0, 1, 2, 0])


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: cal.calibration_report(LOGITS, [0, 1, 2, 3]), r"labels must lie in \[0, 3\)"),
        (lambda: cal.negative_log_likelihood(LOGITS, [0, -1, 2, 0]), r"labels must lie in"),
        (lambda: cal.fit_temperature(LOGITS, LABELS[:3]), r"labels must have shape \[N\]"),
        (lambda: cal.brier_score(LOGITS, LABELS.astype(float)), "labels must be integers"),
        (lambda: cal.top_label(np.zeros(3)), r"logits must have shape \[N, C\]"),
        (lambda: cal.top_label([[0.0, np.nan]]), "logits must be finite"),
        (
            lambda: cal.brier_score(np.full((4, 3), 0.5), LABELS, from_logits=False),
            "must sum to 1",
        ),
        (lambda: cal.reliability_bins([0.5, 0.6], [True], 2), "correct must have the shape"),
        (lambda: cal.reliability_bins([0.5, 1.5], [True, True], 2), r"confidence must lie in"),
        (lambda: cal.reliability_bins([0.5], [2], 2), "correct must be booleans"),
        (lambda: cal.reliability_bins([0.5], [True], 0), "num_bins must be an integer >= 1"),
        (lambda: cal.calibration_report(LOGITS, LABELS, num_bins=0), "num_bins must be"),
        (
            lambda: cal.expected_calibration_error([0.5], [True], 2, "quantile"),
            "unknown binning strategy 'quantile'",
        ),
        (
            lambda: cal.calibration_report(LOGITS, LABELS, temperature=0.0),
            "temperature must be finite and > 0",
        ),
    ],
)
def test_bad_input_is_a_clear_value_error(call, message):
    with pytest.raises(ValueError, match=message):
        call()
