"""The fraction of seeds that solve: exact statistics for arms whose seeds learn or do not.

Some arms are bimodal over seeds: on MQAR, Mamba-2's seeds either escape the chance plateau
within the budget or stay on it, so its final accuracy is a few values near 1 and a few near
chance. A mean and a t-test describe such an arm badly. Counting the seeds whose final metric
reaches a threshold (a study's SOLVED_AT) makes each seed a success or a failure, and exact
tests on those counts assume nothing about the metric's shape:

- `solve_fraction`: k of n seeds solve, with the Clopper-Pearson exact interval of the rate.
- `rate_test`: does an arm solve more (or less) often than a stated rate? The exact binomial test.
- `fraction_comparison`: does one arm solve more (or less) often than another? Boschloo's exact
  test: uniformly more powerful than Fisher's, whose smallest p at 3 vs 3 seeds is 0.05 (never
  below alpha 0.05) where Boschloo's is 1/64.
- `proportion_verdict`: "supported", "refuted" or "inconclusive", with the numbers.

Both tests are one-sided, in the direction the claim states. At a handful of seeds these tests
are coarse, and each result says how coarse: `min_p`, the smallest p the test can give at these
seed counts (every seed going the claimed way), and `seeds_needed`, the seeds per arm at which
the test would support the claim with probability POWER if the fractions seen were the true
rates. The scipy.stats functions do the statistics; nothing here re-derives them.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
from scipy import stats as st

from analysis.stats import POWER, Verdict, as_sample

Direction = Literal["more", "less"]
DIRECTIONS: tuple[Direction, ...] = ("more", "less")
# `seeds_needed` looks no further than this many seeds per arm: Boschloo's test costs
# milliseconds a table, and a plan of more seeds than this is another study anyway.
MAX_SEEDS_PLANNED = 32
# Planning does not test outcomes less likely than this under the rates it assumes: a table that
# never happens costs Boschloo's test as much as one that does, and adds nothing to the power.
_NEGLIGIBLE = 1e-6


@dataclasses.dataclass(frozen=True)
class Fraction:
    """How many of an arm's seeds solve, and the exact interval of its solve rate."""

    solved: int
    n: int
    solved_at: float  # the threshold on the final metric
    higher_is_better: bool  # solved means >= solved_at if True, <= solved_at if False
    confidence: float
    ci: tuple[float, float]  # Clopper-Pearson, two-sided at `confidence`

    @property
    def fraction(self) -> float:
        return self.solved / self.n


@dataclasses.dataclass(frozen=True)
class ProportionTest:
    """A claim on solve rates: `candidate` solves `direction` often than `other` (another arm)
    or than `rate` (a stated fraction), tested one-sided.

    `p` is the test of the claimed direction, unadjusted: pass it through `stats.holm` with the
    study's other claims. `p_opposite` is the same test the other way round, for a refutation.
    """

    test: str  # "exact binomial" or "Boschloo exact"
    direction: Direction
    candidate: Fraction
    other: Fraction | None  # None when the claim states a rate
    rate: float | None  # None when the claim compares two arms
    alpha: float
    p: float  # one-sided in the claimed direction, unadjusted
    p_opposite: float  # one-sided in the other direction, unadjusted
    min_p: float  # the smallest p possible at these seed counts: every seed the claimed way
    seeds_needed: int | None  # seeds per arm for POWER at alpha if the fractions were the rates
    # None: not within MAX_SEEDS_PLANNED, or never (the fractions do not go the claimed way)


def solve_fraction(
    values: Sequence[float] | np.ndarray,
    solved_at: float,
    higher_is_better: bool,
    confidence: float = 0.95,
) -> Fraction:
    """The seeds whose final value reaches `solved_at` (>= it when higher is better, <= when
    lower is), with the Clopper-Pearson exact interval of the rate at `confidence`.

    The exact interval is wide at a few seeds: 3 of 3 leaves [0.29, 1] at 95%.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    if not math.isfinite(solved_at):
        raise ValueError(f"solved_at must be a finite number; got {solved_at}")
    x = as_sample(values, "values")
    solved = int(np.sum(x >= solved_at if higher_is_better else x <= solved_at))
    interval = st.binomtest(solved, int(x.size)).proportion_ci(confidence, method="exact")
    return Fraction(
        solved=solved,
        n=int(x.size),
        solved_at=float(solved_at),
        higher_is_better=higher_is_better,
        confidence=confidence,
        ci=(float(interval.low), float(interval.high)),
    )


def rate_test(
    fraction: Fraction, rate: float, direction: Direction, alpha: float = 0.05
) -> ProportionTest:
    """The exact binomial test of "this arm solves `direction` often than `rate`": H0 "its solve
    rate is <= rate" (>= for "less") against the claimed side.

    At n seeds, all of them solving gives p = rate ** n ("more"): 0.125 at 3 seeds against 0.5,
    so a claim that an arm solves in most seeds needs 5 seeds at alpha 0.05 before any Holm
    adjustment.
    """
    _check(direction, alpha)
    if not 0 < rate < 1:
        raise ValueError(f"rate must lie in (0, 1); got {rate}")
    side, opposite = _alternatives(direction)
    k, n = fraction.solved, fraction.n
    best = n if direction == "more" else 0

    def power_at(seeds: int) -> float:
        return _binomial_power(seeds, rate, fraction.fraction, side, alpha)

    return ProportionTest(
        test="exact binomial",
        direction=direction,
        candidate=fraction,
        other=None,
        rate=float(rate),
        alpha=alpha,
        p=float(st.binomtest(k, n, rate, alternative=side).pvalue),
        p_opposite=float(st.binomtest(k, n, rate, alternative=opposite).pvalue),
        min_p=float(st.binomtest(best, n, rate, alternative=side).pvalue),
        seeds_needed=_seeds_needed(power_at, goes_the_claimed_way=_beyond(fraction, rate, side)),
    )


def fraction_comparison(
    candidate: Fraction, other: Fraction, direction: Direction, alpha: float = 0.05
) -> ProportionTest:
    """Boschloo's exact test of "the candidate arm solves `direction` often than the other":
    H0 "its solve rate is <= the other's" (>= for "less") against the claimed side.

    Boschloo's test takes Fisher's p as its statistic and maximizes over the common rate the
    null leaves open, so it is exact without conditioning on the total solved. Seeds per arm
    may differ (a seed that failed to run is not counted).
    """
    _check(direction, alpha)
    side, opposite = _alternatives(direction)
    table = _table(candidate.solved, candidate.n, other.solved, other.n)
    # Every seed the claimed way: all of the candidate's and none of the other's, or the reverse.
    best = (
        _table(candidate.n, candidate.n, 0, other.n)
        if direction == "more"
        else _table(0, candidate.n, other.n, other.n)
    )
    # "less" is "more" with the arms swapped: plan it so.
    high, low = (candidate, other) if direction == "more" else (other, candidate)

    def power_at(seeds: int) -> float:
        return _boschloo_power(seeds, high.fraction, low.fraction, alpha)

    return ProportionTest(
        test="Boschloo exact",
        direction=direction,
        candidate=candidate,
        other=other,
        rate=None,
        alpha=alpha,
        p=_boschloo_p(table, side),
        p_opposite=_boschloo_p(table, opposite),
        min_p=_boschloo_p(best, side),
        seeds_needed=_seeds_needed(power_at, goes_the_claimed_way=high.fraction > low.fraction),
    )


def proportion_verdict(
    test: ProportionTest,
    adjusted_p: float,
    adjusted_p_opposite: float,
    alpha: float = 0.05,
    names: tuple[str, ...] = ("candidate", "other"),
) -> Verdict:
    """Judge a solve-rate claim on its Holm-adjusted one-sided p.

    `adjusted_p` is `test.p` after `holm` over all the study's claims; `adjusted_p_opposite` is
    `test.p_opposite` adjusted in the claim's place in the same family, i.e. what the claim
    stated the other way round would have got. Supported when the first is below alpha, refuted
    when the second is, inconclusive otherwise, with what these seeds could resolve.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    t = test
    fractions = describe_fraction(names[0], t.candidate)
    if t.other is not None:
        fractions += f" vs {describe_fraction(names[1], t.other)}"
    else:
        fractions += f", claimed rate {t.rate:g}"
    numbers = (
        f"{fractions}; one-sided {t.test} p {t.p:.2g} (Holm-adjusted {adjusted_p:.2g}, "
        f"alpha {alpha:g})"
    )
    claimed = f"{t.direction} often"
    if math.isnan(adjusted_p):
        return Verdict("inconclusive", f"could not be tested: {numbers}")
    if adjusted_p < alpha:
        return Verdict("supported", f"{names[0]} solves significantly {claimed}: {numbers}")
    if adjusted_p_opposite < alpha:
        other_way = "less" if t.direction == "more" else "more"
        return Verdict(
            "refuted",
            f"claimed {claimed}, but {names[0]} solves significantly {other_way} often: "
            f"{numbers}; the other way round p {t.p_opposite:.2g} (Holm-adjusted "
            f"{adjusted_p_opposite:.2g})",
        )
    return Verdict("inconclusive", f"not significant: {numbers}; {resolution(t)}")


def describe_fraction(name: str, fraction: Fraction) -> str:
    """ "mamba2 1/3 seeds solve (95% exact CI [0.0084, 0.91])": the Clopper-Pearson interval."""
    low, high = fraction.ci
    return (
        f"{name} {fraction.solved}/{fraction.n} seeds solve "
        f"({fraction.confidence:.0%} exact CI [{low:.2g}, {high:.2g}])"
    )


def resolution(test: ProportionTest) -> str:
    """Whether these seeds could support the claim at all, and how many would."""
    seeds = f"{test.candidate.n}" + (f" vs {test.other.n}" if test.other is not None else "")
    if test.min_p >= test.alpha:
        reach = (
            f"at {seeds} seeds no outcome can reach alpha {test.alpha:g}: the smallest p this "
            f"test gives is {test.min_p:.2g}"
        )
    else:
        reach = f"at {seeds} seeds the smallest p this test can give is {test.min_p:.2g}"
    per_arm = " per arm" if test.other is not None else ""
    if test.seeds_needed is not None:
        plan = (
            f"about {test.seeds_needed} seeds{per_arm} would support it with power {POWER:g} "
            "(before Holm), if the fractions seen were the true rates"
        )
    elif _observed_goes_the_claimed_way(test):
        plan = f"more than {MAX_SEEDS_PLANNED} seeds{per_arm} would be needed at these fractions"
    else:
        plan = "the fractions seen do not go the claimed way, so no number of seeds would show it"
    return f"{reach}; {plan}"


# ------------------------------------------------------------------------------- internals
def _check(direction: str, alpha: float) -> None:
    if direction not in DIRECTIONS:
        raise ValueError(f'direction must be "more" or "less"; got {direction!r}')
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")


def _alternatives(direction: Direction) -> tuple[str, str]:
    """scipy's `alternative` for the claimed side and for the other side."""
    return ("greater", "less") if direction == "more" else ("less", "greater")


def _beyond(fraction: Fraction, rate: float, side: str) -> bool:
    return fraction.fraction > rate if side == "greater" else fraction.fraction < rate


def _observed_goes_the_claimed_way(test: ProportionTest) -> bool:
    seen = test.candidate.fraction
    against = test.other.fraction if test.other is not None else test.rate
    return seen > against if test.direction == "more" else seen < against


def _table(solved: int, n: int, other_solved: int, other_n: int) -> list[list[int]]:
    """The 2x2 table scipy's tests take: one column per arm, solved seeds in the first row."""
    return [[solved, other_solved], [n - solved, other_n - other_solved]]


def _boschloo_p(table: list[list[int]], alternative: str) -> float:
    return float(st.boschloo_exact(table, alternative=alternative).pvalue)


def _binomial_power(n: int, rate: float, true_rate: float, side: str, alpha: float) -> float:
    """The probability that the exact binomial test at n seeds gives p < alpha when the arm's
    true solve rate is `true_rate`. The test's p for k solved is P(X >= k) under `rate`
    ("greater"), P(X <= k) ("less"): the same tail sums scipy's binomtest takes."""
    k = np.arange(n + 1)
    if side == "greater":
        rejected = st.binom.sf(k - 1, n, rate) < alpha
        return float(st.binom.pmf(k, n, true_rate)[rejected].sum())
    rejected = st.binom.cdf(k, n, rate) < alpha
    return float(st.binom.pmf(k, n, true_rate)[rejected].sum())


def _boschloo_power(n: int, high_rate: float, low_rate: float, alpha: float) -> float:
    """The probability that Boschloo's one-sided test ("the first arm solves more often") at n
    seeds per arm gives p < alpha when the arms' true rates are `high_rate` and `low_rate`.

    The test rejects a table with a solved in the first arm and b in the second from some
    a_min(b) on, and a_min grows with b, so one walk up the staircase finds it; only the
    outcomes that are not negligible under these rates are tested.
    """
    a_values = np.arange(n + 1)
    a_mass = st.binom.pmf(a_values, n, high_rate)
    b_mass = st.binom.pmf(a_values, n, low_rate)
    a_min = int(np.argmax(st.binom.cdf(a_values, n, high_rate) > _NEGLIGIBLE))
    power, a = 0.0, a_min
    for b in np.flatnonzero(b_mass > _NEGLIGIBLE):
        while a <= n and _boschloo_p(_table(a, n, int(b), n), "greater") >= alpha:
            a += 1
        if a > n:
            break
        power += b_mass[b] * a_mass[a:].sum()
    return float(power)


def _seeds_needed(power_at: Callable[[int], float], goes_the_claimed_way: bool) -> int | None:
    """The fewest seeds (per arm) whose power reaches POWER, by doubling then bisection: exact
    tests' power zigzags with n, so read it as "about". None beyond MAX_SEEDS_PLANNED, and when
    the fractions do not go the claimed way (the power then never exceeds alpha)."""
    if not goes_the_claimed_way:
        return None
    low, high = 0, 1  # power(low) < POWER is assumed for 0 seeds
    while power_at(high) < POWER:
        if high >= MAX_SEEDS_PLANNED:
            return None
        low, high = high, min(2 * high, MAX_SEEDS_PLANNED)
    while high - low > 1:
        middle = (low + high) // 2
        if power_at(middle) >= POWER:
            high = middle
        else:
            low = middle
    return high
