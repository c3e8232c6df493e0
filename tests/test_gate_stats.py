"""Specifications for `analysis.stats.one_sided_worse_test`, the regression gate's test.

Reference values come from scipy.stats.ttest_ind(equal_var=False, alternative=...) on the
candidate shifted by the margin toward "better", which is the test the function documents.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from analysis import stats

BASELINE = [0.81, 0.79, 0.80, 0.82]
WORSE = [0.74, 0.76, 0.73]  # about 0.06 below the baseline
NOISY = [0.70, 0.85, 0.78, 0.90, 0.72]


def scipy_reference(baseline, candidate, higher_is_better, margin, confidence=0.95):
    """(p, df, worsening lower bound) from scipy, the candidate shifted by the margin."""
    cand = np.asarray(candidate, dtype=float)
    if higher_is_better:  # worse = lower; H1: mean(cand + margin) < mean(base)
        result = st.ttest_ind(cand + margin, baseline, equal_var=False, alternative="less")
        bound = margin - result.confidence_interval(confidence).high
    else:  # worse = higher; H1: mean(cand - margin) > mean(base)
        result = st.ttest_ind(cand - margin, baseline, equal_var=False, alternative="greater")
        bound = margin + result.confidence_interval(confidence).low
    return float(result.pvalue), float(result.df), float(bound), float(result.statistic)


@pytest.mark.parametrize("higher_is_better", [True, False])
@pytest.mark.parametrize("margin", [0.0, 0.02, 0.1])
@pytest.mark.parametrize(("baseline", "candidate"), [(BASELINE, WORSE), (BASELINE, NOISY)])
def test_matches_scipy_welch_one_sided(baseline, candidate, higher_is_better, margin):
    result = stats.one_sided_worse_test(baseline, candidate, higher_is_better, margin=margin)
    p, df, bound, statistic = scipy_reference(baseline, candidate, higher_is_better, margin)
    assert result.p == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert result.df == pytest.approx(df, rel=1e-9)
    assert result.worsening_lower_bound == pytest.approx(bound, rel=1e-9, abs=1e-12)
    # scipy's statistic is (shifted candidate - baseline) / se; ours is (worsening - margin) / se.
    assert result.t == pytest.approx(-statistic if higher_is_better else statistic, rel=1e-9)
    assert result.significant == (p < 0.05) == (bound > margin)


def test_planted_regression_is_significant_and_margin_absorbs_it():
    flagged = stats.one_sided_worse_test(BASELINE, WORSE, higher_is_better=True)
    assert flagged.significant
    assert flagged.difference == pytest.approx(np.mean(WORSE) - np.mean(BASELINE))
    assert flagged.worsening == pytest.approx(-flagged.difference)
    # A margin larger than the whole drop: "at most 0.1 worse" cannot be rejected.
    assert not stats.one_sided_worse_test(BASELINE, WORSE, True, margin=0.1).significant


def test_direction_decides_what_worse_means():
    # The same numbers read as a loss: the candidate went down, which is better.
    as_loss = stats.one_sided_worse_test(BASELINE, WORSE, higher_is_better=False)
    assert as_loss.worsening < 0
    assert not as_loss.significant
    assert as_loss.p > 0.99
    # And the loss going up is flagged.
    assert stats.one_sided_worse_test(WORSE, BASELINE, higher_is_better=False).significant


def test_confidence_sets_alpha():
    # A borderline drop: significant at 90%, not at 99%.
    baseline, candidate = [1.0, 1.2, 0.9, 1.1], [0.95, 0.85, 1.0, 0.9]
    p = scipy_reference(baseline, candidate, True, 0.0)[0]
    assert 0.01 < p < 0.10
    assert stats.one_sided_worse_test(baseline, candidate, True, confidence=0.90).significant
    assert not stats.one_sided_worse_test(baseline, candidate, True, confidence=0.99).significant


def test_one_arm_without_spread_rests_on_the_other():
    saturated = [1.0, 1.0, 1.0]
    result = stats.one_sided_worse_test(saturated, WORSE, higher_is_better=True)
    variance = np.var(WORSE, ddof=1) / len(WORSE)
    worsening = 1.0 - np.mean(WORSE)
    assert result.df == pytest.approx(len(WORSE) - 1)
    assert result.t == pytest.approx(worsening / math.sqrt(variance))
    assert result.p == pytest.approx(st.t.sf(result.t, len(WORSE) - 1))


def test_no_spread_at_all_takes_the_limit():
    same = [0.5, 0.5, 0.5]
    identical = stats.one_sided_worse_test(same, same, higher_is_better=True)
    assert math.isnan(identical.p) and not identical.significant  # identical runs pass
    assert identical.worsening == 0.0
    lower = stats.one_sided_worse_test(same, [0.4, 0.4], higher_is_better=True, margin=0.05)
    assert lower.p == 0.0 and lower.significant
    within = stats.one_sided_worse_test(same, [0.4, 0.4], higher_is_better=True, margin=0.2)
    assert within.p == 1.0 and not within.significant


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"baseline": [0.8], "candidate": WORSE}, "at least 2 values"),
        ({"baseline": BASELINE, "candidate": [0.7]}, "at least 2 values"),
        ({"margin": -0.01}, "margin"),
        ({"margin": math.inf}, "margin"),
        ({"candidate": [0.7, math.nan]}, "non-finite"),
        ({"confidence": 1.0}, "confidence"),
    ],
)
def test_bad_arguments_raise(kwargs, message):
    arguments = {"baseline": BASELINE, "candidate": WORSE, "higher_is_better": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        stats.one_sided_worse_test(**arguments)
