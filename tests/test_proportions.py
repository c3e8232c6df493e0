"""Specifications for analysis/proportions.py: the fraction of seeds that solve, its exact
interval, and the exact tests of solve-rate claims, against values worked out by hand."""

from __future__ import annotations

import itertools
import math

import pytest
from scipy import stats as st

from analysis import proportions
from analysis.proportions import fraction_comparison, proportion_verdict, rate_test, solve_fraction


def fraction(solved: int, n: int):
    """k of n seeds solving at threshold 0.9: ones solve, zeros do not."""
    return solve_fraction([1.0] * solved + [0.0] * (n - solved), 0.9, higher_is_better=True)


# --- who solves, and the exact interval ------------------------------------------------------


def test_a_seed_solves_when_its_final_value_reaches_the_threshold_in_the_metrics_direction():
    accuracy = solve_fraction([0.9, 0.8999, 0.97], 0.9, higher_is_better=True)
    assert (accuracy.solved, accuracy.n, accuracy.fraction) == (2, 3, 2 / 3)
    loss = solve_fraction([0.9, 0.8999, 0.97], 0.9, higher_is_better=False)
    assert (loss.solved, loss.n) == (2, 3)


@pytest.mark.parametrize(
    ("solved", "n", "low", "high"),
    [
        # All n solve: the lower bound solves p ** n = alpha / 2.
        (3, 3, 0.025 ** (1 / 3), 1.0),
        (5, 5, 0.025 ** (1 / 5), 1.0),
        # None solve: the mirror image.
        (0, 3, 0.0, 1 - 0.025 ** (1 / 3)),
        # One of three: 1 - (1 - p) ** 3 = alpha / 2 below; (1 - p) ** 3 + 3 p (1 - p) ** 2 =
        # alpha / 2 above, whose root is 0.9057 (Clopper-Pearson tables).
        (1, 3, 1 - 0.975 ** (1 / 3), 0.905700675949),
    ],
)
def test_the_interval_of_the_solve_rate_is_clopper_pearsons(solved, n, low, high):
    interval = fraction(solved, n).ci
    assert interval == pytest.approx((low, high), abs=1e-9)


def test_three_of_three_seeds_leave_the_rate_anywhere_above_0_29():
    assert fraction(3, 3).ci == pytest.approx((0.2924, 1.0), abs=5e-5)


@pytest.mark.parametrize(
    ("values", "solved_at", "confidence", "match"),
    [
        ([], 0.9, 0.95, "non-empty"),
        ([0.95, math.nan], 0.9, 0.95, "diverged seed"),
        ([0.95], math.inf, 0.95, "solved_at"),
        ([0.95], 0.9, 1.0, "confidence"),
    ],
)
def test_solve_fraction_rejects_what_it_cannot_count(values, solved_at, confidence, match):
    with pytest.raises(ValueError, match=match):
        solve_fraction(values, solved_at, True, confidence)


# --- one arm against a rate: the exact binomial test -----------------------------------------


def test_every_seed_solving_against_one_half_gives_p_one_half_to_the_n():
    test = rate_test(fraction(3, 3), 0.5, "more")
    assert (test.p, test.min_p, test.p_opposite) == pytest.approx((0.125, 0.125, 1.0))
    assert rate_test(fraction(5, 5), 0.5, "more").p == pytest.approx(0.5**5)
    # Two of three: P(X >= 2) = 3/8 + 1/8 under a rate of one half.
    assert rate_test(fraction(2, 3), 0.5, "more").p == pytest.approx(0.5)


def test_solving_less_often_than_a_rate_is_the_lower_tail():
    test = rate_test(fraction(0, 3), 0.5, "less")
    assert (test.p, test.min_p, test.p_opposite) == pytest.approx((0.125, 0.125, 1.0))


def test_a_rate_claim_says_how_many_seeds_all_solving_would_show_it():
    # 0.5 ** 4 = 0.0625 misses alpha 0.05; 0.5 ** 5 = 0.031 does.
    assert rate_test(fraction(3, 3), 0.5, "more").seeds_needed == 5
    # A fraction on the wrong side of the rate is never shown, however many seeds.
    assert rate_test(fraction(1, 3), 0.5, "more").seeds_needed is None


def test_the_planned_power_of_the_binomial_test_is_its_rejection_region_under_the_rate_seen():
    # At 10 seeds against 0.5 the test rejects from 9 solved on (P(X >= 9) = 11/1024; P(X >= 8)
    # = 56/1024 misses 0.05): the power at a true rate of 0.8 is P(X >= 9 | 0.8).
    power = proportions._binomial_power(10, 0.5, 0.8, "greater", 0.05)
    assert power == pytest.approx(0.8**10 + 10 * 0.8**9 * 0.2)
    assert st.binomtest(9, 10, 0.5, alternative="greater").pvalue == pytest.approx(11 / 1024)


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, math.nan])
def test_a_rate_must_lie_strictly_between_0_and_1(rate):
    with pytest.raises(ValueError, match="rate"):
        rate_test(fraction(3, 3), rate, "more")


# --- two arms: Boschloo's exact test ---------------------------------------------------------


def test_three_of_three_against_none_of_three_gives_one_in_64():
    # Only the observed table is as extreme; under a common rate r it has probability
    # r ** 3 (1 - r) ** 3, largest at r = 1/2. (Fisher's exact test would give 1/20 = 0.05.)
    test = fraction_comparison(fraction(3, 3), fraction(0, 3), "more")
    assert (test.p, test.min_p, test.p_opposite) == pytest.approx((1 / 64, 1 / 64, 1.0))


def test_three_of_three_against_one_of_three_gives_seven_in_64():
    # Fisher's p orders the tables; those at least as extreme as (3, 1) are (3, 0), (3, 1) and
    # (2, 0), of probability r^3 (1-r)^3 + 3 r^4 (1-r)^2 + 3 r^2 (1-r)^4: 7/64 at r = 1/2.
    # (Fisher's own p is 3/15 = 0.2.)
    test = fraction_comparison(fraction(3, 3), fraction(1, 3), "more")
    assert test.p == pytest.approx(7 / 64)
    assert fraction_comparison(fraction(1, 3), fraction(3, 3), "less").p == pytest.approx(7 / 64)
    assert fraction_comparison(fraction(1, 3), fraction(3, 3), "more").p_opposite == (
        pytest.approx(7 / 64)
    )


def test_two_seeds_per_arm_can_never_support_a_comparison():
    # The most extreme table at 2 vs 2 has probability (1/2)^4 = 1/16 > 0.05.
    test = fraction_comparison(fraction(2, 2), fraction(0, 2), "more")
    assert test.min_p == pytest.approx(1 / 16)
    assert test.seeds_needed == 3  # 1/64 at 3 vs 3, when every seed goes the claimed way


def _brute_force_power(n: int, high_rate: float, low_rate: float, alpha: float = 0.05) -> float:
    """Every table of n seeds per arm, tested one by one."""
    power = 0.0
    for a, b in itertools.product(range(n + 1), repeat=2):
        table = [[a, b], [n - a, n - b]]
        if st.boschloo_exact(table, alternative="greater").pvalue < alpha:
            power += st.binom.pmf(a, n, high_rate) * st.binom.pmf(b, n, low_rate)
    return power


def test_the_planned_power_of_boschloos_test_is_that_of_every_table_tested():
    planned = proportions._boschloo_power(4, 0.9, 0.3, 0.05)
    assert planned == pytest.approx(_brute_force_power(4, 0.9, 0.3), abs=1e-5)
    assert planned > 0.3  # a real power, not the trivial 0


def test_three_of_three_against_one_of_three_would_need_about_six_seeds_per_arm():
    test = fraction_comparison(fraction(3, 3), fraction(1, 3), "more")
    assert test.seeds_needed == 6
    # At true rates 1 and 1/3 only the tables with every candidate seed solving occur.
    for n, enough in ((5, False), (6, True)):
        power = sum(
            st.binom.pmf(b, n, 1 / 3)
            for b in range(n + 1)
            if st.boschloo_exact([[n, b], [0, n - b]], alternative="greater").pvalue < 0.05
        )
        assert bool(power >= proportions.POWER) == enough


# --- verdicts --------------------------------------------------------------------------------


def unadjusted_verdict(test, names):
    """The verdict of a claim alone in its study: Holm leaves its p-values as they are."""
    return proportion_verdict(test, test.p, test.p_opposite, 0.05, names)


def test_a_comparison_is_supported_on_its_holm_adjusted_one_sided_p():
    test = fraction_comparison(fraction(3, 3), fraction(0, 3), "more")
    v = proportion_verdict(test, 2 * test.p, 1.0, 0.05, ("attention", "mamba"))
    assert v.outcome == "supported"
    assert v.reason.startswith("attention solves significantly more often: attention 3/3 seeds ")
    assert "(95% exact CI [0.29, 1]) vs mamba 0/3 seeds solve (95% exact CI [0, 0.71])" in v.reason
    assert "one-sided Boschloo exact p 0.016 (Holm-adjusted 0.031, alpha 0.05)" in v.reason
    adjusted_too_far = proportion_verdict(test, 4 * test.p, 1.0, 0.05, ("attention", "mamba"))
    assert adjusted_too_far.outcome == "inconclusive"


def test_a_comparison_the_seeds_contradict_is_refuted():
    test = fraction_comparison(fraction(0, 3), fraction(3, 3), "more")
    v = proportion_verdict(test, 1.0, test.p_opposite, 0.05, ("mamba", "attention"))
    assert v.outcome == "refuted"
    assert v.reason.startswith("claimed more often, but mamba solves significantly less often")
    assert "the other way round p 0.016" in v.reason


def test_an_inconclusive_comparison_says_what_more_seeds_would_do():
    test = fraction_comparison(fraction(3, 3), fraction(1, 3), "more")
    v = unadjusted_verdict(test, ("deltanet", "mamba2"))
    assert v.outcome == "inconclusive"
    assert "at 3 vs 3 seeds the smallest p this test can give is 0.016" in v.reason
    assert "about 6 seeds per arm would support it with power 0.8 (before Holm)" in v.reason


def test_a_rate_claim_no_outcome_of_three_seeds_can_support_says_so():
    test = rate_test(fraction(3, 3), 0.5, "more")
    v = unadjusted_verdict(test, ("attention",))
    assert v.outcome == "inconclusive"
    assert "attention 3/3 seeds solve (95% exact CI [0.29, 1]), claimed rate 0.5" in v.reason
    assert "at 3 seeds no outcome can reach alpha 0.05: the smallest p this test gives is 0.12" in (
        v.reason
    )
    assert "about 5 seeds would support it" in v.reason


def test_fractions_that_do_not_go_the_claimed_way_are_never_shown():
    test = fraction_comparison(fraction(0, 3), fraction(0, 3), "more")
    v = unadjusted_verdict(test, ("deltanet", "mamba2"))
    assert v.outcome == "inconclusive"
    assert "do not go the claimed way, so no number of seeds would show it" in v.reason


def test_an_untested_claim_is_inconclusive():
    test = fraction_comparison(fraction(3, 3), fraction(0, 3), "more")
    v = proportion_verdict(test, math.nan, math.nan, 0.05, ("a", "b"))
    assert v.outcome == "inconclusive" and v.reason.startswith("could not be tested")


@pytest.mark.parametrize(("direction", "alpha"), [("most", 0.05), ("more", 1.5)])
def test_tests_reject_an_unknown_direction_or_alpha(direction, alpha):
    with pytest.raises(ValueError):
        fraction_comparison(fraction(3, 3), fraction(0, 3), direction, alpha)
