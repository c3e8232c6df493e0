"""Specifications for analysis/stats.py, the statistics over seeds a study report rests on.

Every expected value is computed independently of the module: textbook formulas written out
in numpy, Holm's procedure worked by hand, exact enumeration of the Mann-Whitney null
distribution, Cohen's published power table, and simulation.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as st

from analysis import stats

# Five seeds of an accuracy, and two arms with unequal seed counts and spreads.
FIVE_SEEDS = [0.71, 0.74, 0.69, 0.75, 0.72]
BASELINE = [0.61, 0.64, 0.60, 0.63]
CANDIDATE = [0.70, 0.66, 0.73]
# Three seeds per arm whose means differ by less than the seed-to-seed noise.
NOISE_BASELINE = [0.800, 0.810, 0.790]
NOISE_CANDIDATE = [0.805, 0.800, 0.815]


def sample_variance(x: list[float]) -> float:
    mean = sum(x) / len(x)
    return sum((v - mean) ** 2 for v in x) / (len(x) - 1)


def exact_mann_whitney_p(candidate: list[float], baseline: list[float]) -> float:
    """Two-sided p from all ways of splitting the pooled values into the two arms' sizes."""

    def u(cand: list[float], base: list[float]) -> float:
        return sum((c > b) + 0.5 * (c == b) for c in cand for b in base)

    pooled = candidate + baseline
    observed = u(candidate, baseline)
    null = []
    for chosen in itertools.combinations(range(len(pooled)), len(candidate)):
        rest = [pooled[i] for i in range(len(pooled)) if i not in chosen]
        null.append(u([pooled[i] for i in chosen], rest))
    null = np.array(null)
    return min(1.0, 2 * min(np.mean(null >= observed), np.mean(null <= observed)))


# --- summarize -------------------------------------------------------------------------------


@pytest.mark.parametrize("confidence", [0.90, 0.95])
def test_summarize_matches_textbook_formulas(confidence):
    n = len(FIVE_SEEDS)
    mean = sum(FIVE_SEEDS) / n
    std = math.sqrt(sample_variance(FIVE_SEEDS))
    sem = std / math.sqrt(n)
    half_width = st.t.ppf(1 - (1 - confidence) / 2, n - 1) * sem

    s = stats.summarize(FIVE_SEEDS, confidence=confidence)

    assert s.n == n and s.confidence == confidence and s.ci_note is None
    assert s.mean == pytest.approx(mean, rel=1e-12)
    assert s.std == pytest.approx(std, rel=1e-12)
    assert s.sem == pytest.approx(sem, rel=1e-12)
    assert s.t_ci == pytest.approx((mean - half_width, mean + half_width), rel=1e-12)


def test_bootstrap_ci_is_a_deterministic_percentile_interval_of_the_mean():
    values = np.array([0.612, 0.655, 0.631, 0.702, 0.598, 0.644, 0.671, 0.627])

    first = stats.summarize(values, seed=3)
    again = stats.summarize(values, seed=3)
    other_seed = stats.summarize(values, seed=4)

    assert first.bootstrap_ci == again.bootstrap_ci
    assert first.bootstrap_ci != other_seed.bootstrap_ci
    low, high = first.bootstrap_ci
    assert values.min() <= low < first.mean < high <= values.max()
    # A percentile bootstrap by hand, with its own random numbers: the same interval up to
    # resampling noise (a tenth of the standard error).
    resampled = values[np.random.default_rng(123).integers(0, values.size, (20_000, values.size))]
    reference = np.percentile(resampled.mean(axis=1), [2.5, 97.5])
    assert first.bootstrap_ci == pytest.approx(reference, abs=0.1 * first.sem)


@pytest.mark.filterwarnings("error")
def test_one_seed_has_no_interval():
    s = stats.summarize([0.83])

    assert (s.n, s.mean) == (1, 0.83)
    assert all(math.isnan(v) for v in (s.std, s.sem, *s.t_ci, *s.bootstrap_ci))
    assert "one seed" in s.ci_note


@pytest.mark.filterwarnings("error")
def test_identical_seeds_give_a_point_interval_and_say_so():
    s = stats.summarize([0.1, 0.1, 0.1])

    assert s.mean == 0.1  # exactly: np.mean([0.1] * 3) is 0.10000000000000002
    assert (s.std, s.sem) == (0.0, 0.0)
    assert s.t_ci == s.bootstrap_ci == (0.1, 0.1)
    assert "same value" in s.ci_note


@pytest.mark.parametrize(
    "values, confidence",
    [([], 0.95), ([0.5, float("nan")], 0.95), ([0.5, float("inf")], 0.95), ([0.5, 0.6], 1.0)],
)
def test_summarize_rejects_what_it_cannot_summarize(values, confidence):
    with pytest.raises(ValueError):
        stats.summarize(values, confidence=confidence)


# --- compare ---------------------------------------------------------------------------------


def test_welch_test_matches_the_textbook_formula():
    n_b, n_c = len(BASELINE), len(CANDIDATE)
    mean_b, mean_c = sum(BASELINE) / n_b, sum(CANDIDATE) / n_c
    a, b = sample_variance(BASELINE) / n_b, sample_variance(CANDIDATE) / n_c
    se = math.sqrt(a + b)
    t = (mean_c - mean_b) / se
    df = (a + b) ** 2 / (a**2 / (n_b - 1) + b**2 / (n_c - 1))  # Welch-Satterthwaite
    half_width = st.t.ppf(0.975, df) * se

    c = stats.compare(BASELINE, CANDIDATE, higher_is_better=True)

    assert c.difference == pytest.approx(mean_c - mean_b, rel=1e-12)
    assert c.relative_change == pytest.approx((mean_c - mean_b) / mean_b, rel=1e-12)
    assert c.welch_t == pytest.approx(t, rel=1e-10)
    assert c.welch_df == pytest.approx(df, rel=1e-10)
    assert c.welch_p == pytest.approx(2 * st.t.sf(abs(t), df), rel=1e-8)
    assert c.welch_ci == pytest.approx((c.difference - half_width, c.difference + half_width))


def test_effect_sizes_match_hand_computation():
    n_b, n_c = len(BASELINE), len(CANDIDATE)
    df = n_b + n_c - 2
    pooled_sd = math.sqrt(
        ((n_b - 1) * sample_variance(BASELINE) + (n_c - 1) * sample_variance(CANDIDATE)) / df
    )
    d = (sum(CANDIDATE) / n_c - sum(BASELINE) / n_b) / pooled_sd
    correction = math.gamma(df / 2) / (math.sqrt(df / 2) * math.gamma((df - 1) / 2))

    c = stats.compare(BASELINE, CANDIDATE, higher_is_better=True)

    assert c.pooled_sd == pytest.approx(pooled_sd, rel=1e-12)
    assert c.cohens_d == pytest.approx(d, rel=1e-12)
    assert c.hedges_g == pytest.approx(d * correction, rel=1e-10)
    # Hedges' familiar approximation of the correction, 1 - 3 / (4 df - 1), agrees closely.
    assert c.hedges_g / c.cohens_d == pytest.approx(1 - 3 / (4 * df - 1), abs=0.005)


def test_better_follows_the_metric_direction_while_difference_stays_candidate_minus_baseline():
    baseline_loss, candidate_loss = [2.31, 2.35, 2.29], [2.20, 2.24, 2.22]

    as_loss = stats.compare(baseline_loss, candidate_loss, higher_is_better=False)
    as_score = stats.compare(baseline_loss, candidate_loss, higher_is_better=True)

    assert as_loss.difference == as_score.difference == pytest.approx(-0.0966667, abs=1e-6)
    assert as_loss.better and not as_score.better


@pytest.mark.parametrize("n_baseline, n_candidate", [(2, 2), (3, 3), (3, 5), (5, 5), (7, 7)])
def test_mann_whitney_min_p_is_the_exact_floor(n_baseline, n_candidate):
    # Every candidate seed above every baseline seed is 1 of C(n_b + n_c, n_c) equally likely
    # splits under the null, and the two-sided p doubles it.
    floor = min(1.0, 2 / math.comb(n_baseline + n_candidate, n_candidate))
    baseline = np.linspace(0.5, 0.6, n_baseline)
    candidate = np.linspace(0.55, 0.65, n_candidate)  # overlapping: min p must not depend on it

    c = stats.compare(baseline, candidate, higher_is_better=True)

    assert c.mann_whitney_min_p == pytest.approx(floor, rel=1e-12)


def test_at_three_seeds_per_arm_mann_whitney_can_never_reach_0_05():
    c = stats.compare([0.60, 0.61, 0.62], [0.90, 0.91, 0.92], higher_is_better=True)

    assert c.mann_whitney_min_p == pytest.approx(0.1)
    assert c.mann_whitney_p == pytest.approx(0.1)  # the best possible outcome
    assert c.mann_whitney_u == 9  # all 3 x 3 pairs favour the candidate
    assert c.welch_p < 0.001  # while the t-test sees the separation


@pytest.mark.parametrize(
    "baseline, candidate",
    [
        ([0.81, 0.83, 0.80], [0.82, 0.85, 0.84]),
        ([0.80, 0.82, 0.82], [0.82, 0.84, 0.85]),  # a tie across arms
        ([1.0, 1.0, 1.0], [0.90, 0.95, 0.97]),  # saturated baseline
        # Ties everywhere: a normal approximation would say p = 0.047 here.
        ([1.0, 1.0, 1.0], [0.5, 0.5, 0.5]),
    ],
)
def test_mann_whitney_p_is_exact_even_with_ties(baseline, candidate):
    c = stats.compare(baseline, candidate, higher_is_better=True)

    assert c.mann_whitney_p == pytest.approx(exact_mann_whitney_p(candidate, baseline))


def test_minimum_detectable_difference_matches_cohens_power_table():
    # Cohen (1988), Table 2.4.1: seeds per arm for power 0.80 at two-sided alpha 0.05.
    for n_per_arm, effect in [(393, 0.2), (64, 0.5), (26, 0.8)]:
        in_sds = stats.minimum_detectable_difference(1.0, n_per_arm, n_per_arm)
        assert in_sds == pytest.approx(effect, abs=0.01)
    # It is a multiple of the seed-to-seed SD.
    assert stats.minimum_detectable_difference(2.5, 64, 64) == pytest.approx(
        2.5 * stats.minimum_detectable_difference(1.0, 64, 64)
    )


def test_minimum_detectable_difference_is_detected_80_percent_of_the_time():
    mdd = stats.minimum_detectable_difference(1.0, 3, 3)
    rng = np.random.default_rng(0)
    baseline = rng.normal(0.0, 1.0, size=(40_000, 3))
    candidate = rng.normal(mdd, 1.0, size=(40_000, 3))

    rejected = st.ttest_ind(candidate, baseline, axis=1).pvalue < 0.05

    assert mdd == pytest.approx(3.07, abs=0.005)  # in SDs, at 3 seeds per arm
    assert rejected.mean() == pytest.approx(0.8, abs=0.01)  # 5 simulation standard errors


def test_too_few_seeds_to_resolve_a_small_difference_is_said_plainly():
    c = stats.compare(NOISE_BASELINE, NOISE_CANDIDATE, higher_is_better=True)
    k = c.seeds_per_arm_needed

    assert not c.resolvable
    assert abs(c.difference) < c.min_detectable_difference
    assert c.min_detectable_difference == pytest.approx(
        stats.minimum_detectable_difference(c.pooled_sd, 3, 3)
    )
    assert c.resolution.startswith("too few seeds")
    # The smallest seed count per arm whose detectable difference is as small as the one seen.
    assert k is not None and k > 3 and f"about {k} seeds per arm" in c.resolution
    assert stats.minimum_detectable_difference(c.pooled_sd, k, k) <= abs(c.difference)
    assert stats.minimum_detectable_difference(c.pooled_sd, k - 1, k - 1) > abs(c.difference)


def test_a_large_difference_is_resolvable():
    c = stats.compare([0.60, 0.62, 0.61], [0.90, 0.91, 0.92], higher_is_better=True)

    assert c.resolvable and c.resolution.startswith("resolvable")


@pytest.mark.filterwarnings("error")
def test_an_arm_whose_seeds_all_agree_is_compared_on_the_other_arms_spread():
    saturated, candidate = [1.0, 1.0, 1.0], [0.90, 0.95, 0.97]
    # With one variance 0, Welch's statistic is the one-sample t of the other arm, df = n - 1.
    t = (sum(candidate) / 3 - 1.0) / math.sqrt(sample_variance(candidate) / 3)

    c = stats.compare(saturated, candidate, higher_is_better=True)

    assert c.welch_df == pytest.approx(2.0)
    assert c.welch_p == pytest.approx(2 * st.t.sf(abs(t), 2), rel=1e-8)
    assert c.pooled_sd == pytest.approx(math.sqrt(sample_variance(candidate) / 2))


@pytest.mark.filterwarnings("error")
def test_arms_without_any_spread_are_judged_exactly_not_on_rounding_noise():
    # np.mean([0.1] * 3) - np.mean([0.1] * 2) is 2e-17, not 0.
    same = stats.compare([0.1, 0.1], [0.1, 0.1, 0.1], higher_is_better=True)
    apart = stats.compare([0.1, 0.1], [0.7, 0.7, 0.7], higher_is_better=True)

    assert same.difference == 0.0
    assert math.isnan(same.welch_p) and math.isnan(same.cohens_d)
    assert stats.verdict(same, same.welch_p).outcome == "inconclusive"
    assert apart.welch_p == 0.0 and math.isnan(apart.cohens_d)
    assert "no spread" in apart.resolution
    assert "no spread" in stats.verdict(apart, apart.welch_p).reason


@pytest.mark.parametrize("baseline, candidate", [([0.5], [0.6, 0.7]), ([0.5, 0.6], [0.7])])
def test_compare_needs_two_seeds_per_arm(baseline, candidate):
    with pytest.raises(ValueError, match="at least 2 seeds per arm"):
        stats.compare(baseline, candidate, higher_is_better=True)


# --- holm ------------------------------------------------------------------------------------


def test_holm_worked_example():
    # Sorted: 0.005 x 4 = 0.02, 0.01 x 3 = 0.03, 0.03 x 2 = 0.06, 0.04 x 1 = 0.04 -> raised to
    # 0.06 so adjusted values never decrease with the raw ones.
    adjusted = stats.holm([0.01, 0.04, 0.03, 0.005])

    np.testing.assert_allclose(adjusted, [0.03, 0.06, 0.06, 0.02], rtol=1e-12)


@pytest.mark.parametrize(
    "p_values, expected",
    [
        # 0.01 x 4 = 0.04, 0.2 x 3 = 0.6, 0.5 x 2 = 1.0, 0.6 x 1 = 0.6 -> 1.0 (monotone, clipped)
        ([0.2, 0.5, 0.01, 0.6], [0.6, 1.0, 0.04, 1.0]),
        # Ties: 0.02 x 3 = 0.06, 0.02 x 2 = 0.04 -> 0.06, 0.5 x 1 = 0.5
        ([0.02, 0.02, 0.5], [0.06, 0.06, 0.5]),
        ([0.3], [0.3]),
        ([], []),
    ],
)
def test_holm_is_monotone_and_clipped_to_one(p_values, expected):
    np.testing.assert_allclose(stats.holm(p_values), expected, rtol=1e-12)


def test_holm_keeps_an_untested_claim_in_the_family():
    # m stays 3: 0.01 x 3 = 0.03, 0.04 x 2 = 0.08.
    np.testing.assert_allclose(stats.holm([0.01, np.nan, 0.04]), [0.03, np.nan, 0.08])


@pytest.mark.parametrize("p_values", [[0.2, 1.2], [-0.1], [[0.1, 0.2]]])
def test_holm_rejects_values_that_are_not_p_values(p_values):
    with pytest.raises(ValueError):
        stats.holm(p_values)


# --- verdict ---------------------------------------------------------------------------------


def test_verdict_on_a_planted_clear_improvement():
    c = stats.compare(
        [0.80, 0.81, 0.79, 0.80, 0.805], [0.90, 0.91, 0.89, 0.905, 0.90], higher_is_better=True
    )
    adjusted = stats.holm([c.welch_p, 0.5, 0.9])[0]

    supported = stats.verdict(c, adjusted, claim="better")
    refuted = stats.verdict(c, adjusted, claim="worse")

    assert supported.outcome == "supported"
    assert f"Holm-adjusted {adjusted:.2g}" in supported.reason
    assert "difference +0.1 (+12.5%)" in supported.reason
    assert refuted.outcome == "refuted"


def test_verdict_names_the_arms_it_compares():
    c = stats.compare([0.1, 0.12, 0.11], [0.5, 0.52, 0.51], higher_is_better=True)
    v = stats.verdict(c, c.welch_p, names=("deltanet", "mamba2"))
    assert v.reason.startswith("deltanet significantly better: deltanet 0.51 vs mamba2 0.11")


def test_verdict_on_a_planted_clear_regression_of_a_loss():
    c = stats.compare([2.31, 2.35, 2.29, 2.33], [2.52, 2.49, 2.55, 2.50], higher_is_better=False)

    assert not c.better
    assert stats.verdict(c, c.welch_p, claim="better").outcome == "refuted"
    assert stats.verdict(c, c.welch_p, claim="worse").outcome == "supported"


def test_verdict_on_noise_is_inconclusive_and_blames_the_seed_count():
    c = stats.compare(NOISE_BASELINE, NOISE_CANDIDATE, higher_is_better=True)

    v = stats.verdict(c, c.welch_p, claim="better")

    assert v.outcome == "inconclusive"
    assert "not significant" in v.reason and "too few seeds" in v.reason


def test_verdict_judges_the_holm_adjusted_p_not_the_raw_one():
    c = stats.compare([0.80, 0.82, 0.81, 0.79, 0.80], [0.82, 0.83, 0.81, 0.84, 0.82], True)
    adjusted = stats.holm([c.welch_p, 0.2, 0.3])[0]  # three claims: 0.024 x 3

    assert 0.01 < c.welch_p < 0.05 < adjusted
    assert stats.verdict(c, c.welch_p).outcome == "supported"
    assert stats.verdict(c, adjusted).outcome == "inconclusive"


def test_verdict_rejects_an_unknown_claim():
    c = stats.compare(NOISE_BASELINE, NOISE_CANDIDATE, higher_is_better=True)

    with pytest.raises(ValueError, match="claim"):
        stats.verdict(c, c.welch_p, claim="different")


# --- equivalence (TOST) ----------------------------------------------------------------------

# Two arms of unequal seed counts and spreads whose means are 0.002 apart.
CLOSE_BASELINE = [0.801, 0.806, 0.797, 0.803]
CLOSE_CANDIDATE = [0.796, 0.804, 0.799]


def test_tost_is_two_one_sided_welch_tests_of_the_shifted_candidate():
    # The reference: scipy's one-sided Welch tests, the candidate shifted by the margin.
    margin = 0.01
    t = stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, margin)
    base, cand = np.array(CLOSE_BASELINE), np.array(CLOSE_CANDIDATE)
    lower = st.ttest_ind(cand + margin, base, equal_var=False, alternative="greater")
    upper = st.ttest_ind(cand - margin, base, equal_var=False, alternative="less")

    assert t.p_lower == pytest.approx(lower.pvalue, rel=1e-9)
    assert t.p_upper == pytest.approx(upper.pvalue, rel=1e-9)
    assert t.t_lower == pytest.approx(lower.statistic, rel=1e-9)
    assert t.t_upper == pytest.approx(-upper.statistic, rel=1e-9)
    assert t.df == pytest.approx(lower.df, rel=1e-9)
    assert t.p == max(t.p_lower, t.p_upper)
    assert t.difference == pytest.approx(cand.mean() - base.mean(), abs=1e-15)


def test_tost_rejects_exactly_when_its_90_percent_interval_lies_inside_the_margin():
    two_sided = st.ttest_ind(CLOSE_CANDIDATE, CLOSE_BASELINE, equal_var=False)
    interval = two_sided.confidence_interval(confidence_level=0.90)
    for margin in (0.005, 0.0075, 0.01, 0.02):
        t = stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, margin, alpha=0.05)
        assert t.ci == pytest.approx((interval.low, interval.high), rel=1e-9)
        inside = -margin < interval.low and interval.high < margin
        assert t.equivalent == inside == (t.p < 0.05)
    assert not stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, 0.005).equivalent
    assert stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, 0.02).equivalent


def test_equal_means_with_noisy_seeds_are_not_shown_equivalent():
    # No significant difference (p ~ 1) is not evidence of no difference.
    noisy_a, noisy_b = [0.70, 0.80, 0.90], [0.90, 0.70, 0.80]
    assert stats.compare(noisy_a, noisy_b, True).welch_p > 0.9
    t = stats.equivalence_test(noisy_a, noisy_b, margin=0.05)
    assert t.difference == pytest.approx(0, abs=1e-12)
    assert not t.equivalent and t.p > 0.05


def test_arms_without_spread_are_judged_at_the_limit():
    same = stats.equivalence_test([0.5, 0.5, 0.5], [0.52, 0.52], margin=0.05)
    assert same.equivalent and same.p == 0.0 and same.ci == (same.difference, same.difference)
    far = stats.equivalence_test([0.5, 0.5, 0.5], [0.6, 0.6], margin=0.05)
    assert not far.equivalent and far.p == 1.0
    on_the_margin = stats.equivalence_test([0.5, 0.5], [0.75, 0.75], margin=0.25)
    assert math.isnan(on_the_margin.p) and not on_the_margin.equivalent


@pytest.mark.parametrize(
    ("margin", "alpha", "match"),
    [
        (0.0, 0.05, "margin"),
        (-0.1, 0.05, "margin"),
        (math.inf, 0.05, "margin"),
        (0.1, 0.5, "alpha"),
    ],
)
def test_equivalence_test_rejects_a_margin_or_alpha_it_cannot_use(margin, alpha, match):
    with pytest.raises(ValueError, match=match):
        stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, margin, alpha=alpha)


def test_equivalence_verdict_is_supported_only_when_the_adjusted_tost_rejects():
    t = stats.equivalence_test(CLOSE_BASELINE, CLOSE_CANDIDATE, margin=0.01)
    names = ("mamba", "attention")
    supported = stats.equivalence_verdict(t, t.p, names=names)
    assert supported.outcome == "supported"
    assert supported.reason.startswith("equivalent within ±0.01: mamba 0.7997 vs attention 0.8018")
    assert f"TOST p {t.p:.2g}" in supported.reason and "90% CI of difference" in supported.reason

    adjusted = stats.holm([t.p, 0.5, 0.9])[0]
    assert t.p < 0.05 < adjusted
    held_back = stats.equivalence_verdict(t, adjusted, names=names)
    assert held_back.outcome == "inconclusive" and "equivalence not shown" in held_back.reason
    assert f"Holm-adjusted {adjusted:.2g}" in held_back.reason


def test_equivalence_verdict_is_never_refuted():
    far = stats.equivalence_test([0.50, 0.51, 0.49], [0.80, 0.81, 0.79], margin=0.05)
    assert far.p > 0.99
    assert stats.equivalence_verdict(far, far.p).outcome == "inconclusive"
    untested = stats.equivalence_test([0.5, 0.5], [0.75, 0.75], margin=0.25)
    verdict = stats.equivalence_verdict(untested, untested.p)
    assert verdict.outcome == "inconclusive" and verdict.reason.startswith("could not be tested")
