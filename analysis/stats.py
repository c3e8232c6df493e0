"""Statistics over seeds: the numbers and verdicts a study report is built on.

A study trains every arm (a config variant) with a few seeds and compares each arm with the
baseline arm on a metric. With the three to five seeds a study can afford, the honest answer is
often "these seeds cannot tell", and these functions are written to say so rather than hide it.

- `summarize`: one arm over its seeds: mean, spread, a t-interval (the interval to report) and a
  percentile bootstrap interval (a distribution-free cross-check).
- `compare`: a candidate arm against the baseline arm: the difference, Welch's t-test,
  Mann-Whitney U, Cohen's d and Hedges' g, and whether the seeds could resolve a difference of
  the size seen at all.
- `holm`: Holm-Bonferroni adjustment of a study's p-values, one per claim tested.
- `verdict`: "supported", "refuted" or "inconclusive" for a claimed direction, with the numbers.
- `minimum_detectable_difference`: what difference n seeds per arm can detect (for planning).
- `one_sided_worse_test`: is a candidate worse than a baseline by more than a margin (the
  regression gate, launch/compare.py).
- `equivalence_test` and `equivalence_verdict`: are two arms within a margin of each other
  (TOST), for a claim of "no difference": a non-significant difference is not one.

Everything here is pure: sequences of floats in, frozen dataclasses out. Non-finite values are
rejected: a diverged seed is a finding the report has to state, not a number to average.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from scipy import optimize, special
from scipy import stats as st

# Power at which `minimum_detectable_difference` is quoted in comparisons: the usual 80%.
POWER = 0.8
# Up to this many ways of splitting the pooled seeds into the two arms, the Mann-Whitney null
# distribution is enumerated exactly (7 seeds per arm: 3,432 splits; 8 per arm: 12,870).
_EXACT_SPLITS = 10_000
# `seeds_per_arm_needed` looks no further than this.
_MAX_SEEDS = 10_000
# Said of a comparison whose arms each gave one value on every seed.
NO_SPREAD = (
    "no spread: every seed of each arm gave the same value, so any difference stands out "
    "exactly; check that the seed varies initialization and data order"
)


@dataclasses.dataclass(frozen=True)
class Summary:
    """One arm's metric over its seeds.

    Report `mean` with `t_ci`. The bootstrap interval is a cross-check that assumes nothing
    about the shape of the seed distribution, but at a handful of seeds it is too narrow: with
    3 seeds it is about the range of the values. When the t and bootstrap intervals disagree
    a lot, a seed is an outlier; look at the values.
    """

    n: int
    mean: float
    std: float  # sample standard deviation (ddof=1): how much seeds differ from each other
    sem: float  # standard error of the mean, std / sqrt(n): how well the mean is pinned down
    confidence: float
    t_ci: tuple[float, float]  # Student-t interval of the mean at `confidence`
    bootstrap_ci: tuple[float, float]  # percentile bootstrap interval of the mean
    ci_note: str | None  # why the intervals are NaN or a single point; None when ordinary


@dataclasses.dataclass(frozen=True)
class Comparison:
    """A candidate arm against the baseline arm on one metric.

    `difference` is candidate mean minus baseline mean whatever the metric's direction;
    `better` says whether that difference is an improvement. `welch_p` is the test a verdict
    rests on, and it is not adjusted for the other comparisons of the study: pass the study's
    p-values through `holm` first. Mann-Whitney is the rank-based cross-check; read it
    together with `mann_whitney_min_p`, the smallest p it can reach with these seed counts
    (0.1 at 3 vs 3, so at 3 seeds per arm it can never be significant at 0.05).
    """

    n_baseline: int
    n_candidate: int
    baseline_mean: float
    candidate_mean: float
    higher_is_better: bool
    confidence: float
    difference: float  # candidate mean - baseline mean
    relative_change: float  # difference / |baseline mean|; NaN when the baseline mean is 0
    better: bool  # the candidate's mean is strictly better than the baseline's
    welch_t: float
    welch_df: float
    welch_p: float  # two-sided, unadjusted
    welch_ci: tuple[float, float]  # Welch interval of `difference` at `confidence`
    mann_whitney_u: float  # seed pairs (candidate, baseline) the candidate wins; ties count half
    mann_whitney_p: float  # two-sided, exact up to 7 seeds per arm (ties included)
    mann_whitney_min_p: float  # the smallest p the Mann-Whitney test can give at these n
    pooled_sd: float  # seed-to-seed SD pooled over both arms
    cohens_d: float  # difference / pooled_sd; NaN when pooled_sd is 0
    hedges_g: float  # Cohen's d corrected for its upward bias at small n
    min_detectable_difference: float  # at alpha = 1 - confidence, power POWER, these n
    resolvable: bool  # |difference| >= min_detectable_difference
    seeds_per_arm_needed: int | None  # seeds per arm that would resolve |difference|
    resolution: str  # the two lines above in words, for the report


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The outcome for one claim, and a one-line reason that quotes the numbers."""

    outcome: Literal["supported", "refuted", "inconclusive"]
    reason: str


def summarize(
    values: Sequence[float] | np.ndarray,
    confidence: float = 0.95,
    n_bootstrap: int = 10_000,
    seed: int = 0,
) -> Summary:
    """Mean, spread and confidence intervals of one arm's metric over its seeds.

    The t-interval assumes the seed values are roughly normal; it is the one to report. The
    bootstrap interval uses the percentile method, not BCa: BCa's correction comes from a
    jackknife, which is itself noise at 3-5 seeds and is undefined when values repeat, while
    the percentile interval always lies within the values seen. It is deterministic given
    `seed`.

    Edge cases, stated in `ci_note`: with one seed, std, sem and both intervals are NaN
    (nothing measures the spread); when all seeds give the same value (a saturated metric, or
    a seed that does not reach what it should vary), std is 0 and both intervals are that value.
    """
    _check_confidence(confidence)
    x = as_sample(values, "values")
    n = x.size
    if n == 1:
        nan = math.nan
        note = "one seed: nothing measures the spread, so there is no interval"
        return Summary(1, float(x[0]), nan, nan, confidence, (nan, nan), (nan, nan), note)
    if np.ptp(x) == 0:
        # Exact, where np.mean would not be: the mean of three 0.1s is 0.10000000000000002.
        value = float(x[0])
        note = f"all {n} seeds gave the same value: the interval is that one point"
        return Summary(n, value, 0.0, 0.0, confidence, (value, value), (value, value), note)

    mean = float(x.mean())
    std = float(x.std(ddof=1))
    sem = std / math.sqrt(n)
    t_low, t_high = st.t.interval(confidence, df=n - 1, loc=mean, scale=sem)
    boot = st.bootstrap(
        (x,),
        np.mean,
        n_resamples=n_bootstrap,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    ).confidence_interval
    return Summary(
        n=n,
        mean=mean,
        std=std,
        sem=sem,
        confidence=confidence,
        t_ci=(float(t_low), float(t_high)),
        bootstrap_ci=(float(boot.low), float(boot.high)),
        ci_note=None,
    )


def compare(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    higher_is_better: bool,
    confidence: float = 0.95,
) -> Comparison:
    """Candidate arm against baseline arm on one metric; each needs at least 2 seeds.

    Welch's t-test does not assume the arms spread equally (one arm may be far noisier than
    the other). Cohen's d divides the difference by the pooled SD, so it reads "how many
    seed-to-seed SDs apart"; Hedges' g shrinks it for the bias d has at few seeds.

    `resolvable` is a sensitivity check: the smallest difference a two-sample t-test at
    alpha = 1 - confidence detects with probability POWER, given the observed pooled SD and
    these seed counts (exact power of the pooled t-test, from the noncentral t distribution).
    It comes before any multiple-comparison adjustment, so after Holm the study resolves less.
    When |difference| is below it, the seeds are too few to tell this difference from seed
    noise, and a non-significant p means "not measured", not "no effect". (A significant
    difference below it is still significant: it was caught with less than POWER odds.)
    `seeds_per_arm_needed` takes the observed SD and difference at face value; with few
    seeds both are rough, so read it as an order of magnitude for planning the next study.

    An arm whose seeds all agree (accuracy saturated at 1.0) has zero variance; Welch's test
    then rests on the other arm's spread. If both arms have zero variance, Welch's test is
    taken at its limit: p is 0 when the means differ and NaN when they are equal (df NaN).
    """
    _check_confidence(confidence)
    base = as_sample(baseline, "baseline")
    cand = as_sample(candidate, "candidate")
    if base.size < 2 or cand.size < 2:
        raise ValueError(
            f"compare needs at least 2 seeds per arm to estimate the spread; got "
            f"{base.size} baseline and {cand.size} candidate value(s) (summarize one seed instead)"
        )
    n_b, n_c = base.size, cand.size
    mean_b, var_b = _mean_and_variance(base)
    mean_c, var_c = _mean_and_variance(cand)
    difference = mean_c - mean_b

    welch_t, welch_df, welch_p, welch_ci = _welch(cand, base, difference, confidence)
    mann_whitney = _mann_whitney(cand, base)
    # The most extreme outcome possible: every candidate seed above every baseline seed.
    separated = _mann_whitney(np.arange(n_b, n_b + n_c, dtype=float), np.arange(n_b, dtype=float))

    pooled_sd = math.sqrt(((n_b - 1) * var_b + (n_c - 1) * var_c) / (n_b + n_c - 2))
    cohens_d = difference / pooled_sd if pooled_sd > 0 else math.nan
    alpha = 1 - confidence
    mdd = minimum_detectable_difference(pooled_sd, n_b, n_c, alpha=alpha, power=POWER)
    resolvable = abs(difference) >= mdd
    needed = _seeds_per_arm_needed(pooled_sd, difference, alpha)

    return Comparison(
        n_baseline=n_b,
        n_candidate=n_c,
        baseline_mean=mean_b,
        candidate_mean=mean_c,
        higher_is_better=higher_is_better,
        confidence=confidence,
        difference=difference,
        relative_change=difference / abs(mean_b) if mean_b != 0 else math.nan,
        better=difference > 0 if higher_is_better else difference < 0,
        welch_t=welch_t,
        welch_df=welch_df,
        welch_p=welch_p,
        welch_ci=welch_ci,
        mann_whitney_u=float(mann_whitney.statistic),
        mann_whitney_p=float(mann_whitney.pvalue),
        mann_whitney_min_p=float(separated.pvalue),
        pooled_sd=pooled_sd,
        cohens_d=cohens_d,
        hedges_g=cohens_d * _hedges_correction(n_b + n_c - 2),
        min_detectable_difference=mdd,
        resolvable=resolvable,
        seeds_per_arm_needed=needed,
        resolution=_describe_resolution(abs(difference), mdd, pooled_sd, n_b, n_c, alpha, needed),
    )


def holm(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values, in the order given.

    Pass every p-value of the study's claims together: with m claims, some p below 0.05 is
    likely by chance alone, and comparing adjusted p-values with alpha keeps the chance of
    any false "supported" at alpha. The i-th smallest p is multiplied by (m - i + 1), made
    non-decreasing in that order, and clipped to 1 (the same values as statsmodels'
    multipletests(method="holm")). scipy.stats has Benjamini-Hochberg but not Holm.

    A NaN p-value (a comparison that could not be tested) stays NaN but still counts in m:
    the claim was planned, so dropping it would make the others look stronger.
    """
    p = np.asarray(p_values, dtype=float)
    if p.ndim != 1:
        raise ValueError(f"p_values must be one-dimensional; got shape {p.shape}")
    if np.any((p < 0) | (p > 1)):
        raise ValueError(f"p-values must lie in [0, 1]; got {p.tolist()}")
    m = p.size
    untested = np.isnan(p)
    as_tested = np.where(untested, 1.0, p)  # sorts last and cannot pull the others up
    order = np.argsort(as_tested, kind="stable")
    scaled = (m - np.arange(m)) * as_tested[order]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    adjusted[untested] = np.nan
    return adjusted


def verdict(
    comparison: Comparison,
    adjusted_p: float,
    claim: Literal["better", "worse"] = "better",
    alpha: float = 0.05,
    names: tuple[str, str] = ("candidate", "baseline"),
) -> Verdict:
    """Judge the claim "the candidate arm is `claim` than the baseline arm" on this metric.

    `adjusted_p` is this comparison's Welch p after `holm` over all the study's claims (for a
    study with a single claim, `comparison.welch_p`). Supported: adjusted p < alpha and the
    difference goes the claimed way. Refuted: adjusted p < alpha the other way.
    Inconclusive otherwise, and the reason says whether the seeds were too few to resolve a
    difference of the size seen.
    """
    if claim not in ("better", "worse"):
        raise ValueError(f'claim must be "better" or "worse"; got {claim!r}')
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    c = comparison
    direction = "better" if c.better else "worse"
    relative = f" ({c.relative_change:+.1%})" if math.isfinite(c.relative_change) else ""
    numbers = (
        f"{names[0]} {c.candidate_mean:.4g} vs {names[1]} {c.baseline_mean:.4g}, "
        f"difference {c.difference:+.3g}{relative}, "
        f"Welch p {c.welch_p:.2g} (Holm-adjusted {adjusted_p:.2g}, alpha {alpha:g})"
    )
    if c.pooled_sd == 0:
        numbers += f"; {NO_SPREAD}"
    if math.isnan(adjusted_p):
        return Verdict("inconclusive", f"could not be tested: {numbers}")
    if adjusted_p >= alpha or c.difference == 0:
        why = c.resolution
        if c.resolvable:  # only possible through the Holm adjustment or unequal spreads
            why += "; yet it falls short of alpha (Holm adjustment, or unequal spreads)"
        return Verdict("inconclusive", f"not significant: {numbers}; {why}")
    ci = f"{c.confidence:.0%} CI of difference [{c.welch_ci[0]:+.3g}, {c.welch_ci[1]:+.3g}]"
    if direction == claim:
        return Verdict("supported", f"{names[0]} significantly {direction}: {numbers}; {ci}")
    return Verdict(
        "refuted", f"claimed {claim}, but {names[0]} significantly {direction}: {numbers}; {ci}"
    )


def minimum_detectable_difference(
    sd: float, n_baseline: int, n_candidate: int, alpha: float = 0.05, power: float = POWER
) -> float:
    """Smallest true difference a two-sided two-sample t-test detects with probability `power`.

    For seed-to-seed SD `sd` and these seed counts: 3.07 SDs at 3 seeds per arm, 2.02 at 5,
    1.32 at 10 (alpha 0.05, power 0.8). Computed exactly from the noncentral t distribution
    (the common shortcut (t_crit + t_power) * sd * sqrt(1/n_b + 1/n_c) is 5% optimistic at
    2 seeds per arm, 1% at 3).
    """
    if n_baseline < 2 or n_candidate < 2:
        raise ValueError(f"need at least 2 seeds per arm; got {n_baseline} and {n_candidate}")
    if not 0 < alpha < power < 1:
        raise ValueError(f"need 0 < alpha < power < 1; got alpha {alpha}, power {power}")
    if not sd > 0:
        return 0.0 if sd == 0 else math.nan
    df = n_baseline + n_candidate - 2
    t_crit = st.t.ppf(1 - alpha / 2, df)

    def power_minus_target(noncentrality: float) -> float:
        reject = st.nct.sf(t_crit, df, noncentrality) + st.nct.cdf(-t_crit, df, noncentrality)
        return reject - power

    # Power is alpha at noncentrality 0 and rises with it; double until it passes `power`.
    high = t_crit + 1.0
    while power_minus_target(high) < 0:
        high *= 2
    noncentrality = optimize.brentq(power_minus_target, 0.0, high)
    return float(noncentrality * sd * math.sqrt(1 / n_baseline + 1 / n_candidate))


def as_sample(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    """One arm's values over its seeds as a 1-D float array; empty or non-finite is an error."""
    x = np.asarray(values, dtype=float)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers; got {values!r}")
    if not np.all(np.isfinite(x)):
        raise ValueError(
            f"{name} has non-finite values {x.tolist()}: a diverged seed must be reported as "
            "such (or dropped, and the report must say so) before statistics over seeds"
        )
    return x


def _check_confidence(confidence: float) -> None:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")


def _mean_and_variance(x: np.ndarray) -> tuple[float, float]:
    # Equal seeds get an exact mean and a variance of exactly 0, not rounding noise (which
    # would turn Cohen's d for a saturated metric into a huge number instead of NaN).
    if np.ptp(x) == 0:
        return float(x[0]), 0.0
    return float(x.mean()), float(x.var(ddof=1))


def _welch(
    candidate: np.ndarray, baseline: np.ndarray, difference: float, confidence: float
) -> tuple[float, float, float, tuple[float, float]]:
    """Welch's t, df, two-sided p and interval of the difference (candidate - baseline)."""
    if np.ptp(candidate) == 0 and np.ptp(baseline) == 0:
        # scipy would divide rounding noise by rounding noise (np.mean of three 0.1s is not
        # 0.1) and return an arbitrary p; the limit of the test as the spread goes to 0 is exact.
        if difference == 0:
            return math.nan, math.nan, math.nan, (0.0, 0.0)
        return math.copysign(math.inf, difference), math.nan, 0.0, (difference, difference)
    with warnings.catch_warnings():
        # scipy reports an arm whose values are all equal as "precision loss ... catastrophic
        # cancellation"; its variance is 0 and Welch's test rests on the other arm's.
        if np.ptp(candidate) == 0 or np.ptp(baseline) == 0:
            warnings.filterwarnings("ignore", "Precision loss", RuntimeWarning)
        welch = st.ttest_ind(candidate, baseline, equal_var=False)
        interval = welch.confidence_interval(confidence_level=confidence)
    return (
        float(welch.statistic),
        float(welch.df),
        float(welch.pvalue),
        (float(interval.low), float(interval.high)),
    )


def _mann_whitney(candidate: np.ndarray, baseline: np.ndarray):
    # scipy's default method falls back to a normal approximation whenever values tie, and at
    # 3 vs 3 it then reports p = 0.047 where the exact p is 0.1. Ties are common here (a
    # saturated accuracy), so enumerate the splits of the pooled seeds while that is cheap;
    # n_resamples >= the number of splits makes scipy's permutation test exact (no randomness).
    splits = math.comb(candidate.size + baseline.size, candidate.size)
    if splits <= _EXACT_SPLITS:
        return st.mannwhitneyu(candidate, baseline, method=st.PermutationMethod(_EXACT_SPLITS))
    return st.mannwhitneyu(candidate, baseline, method="asymptotic")


def _hedges_correction(df: int) -> float:
    # Exact small-sample factor J(df) = Γ(df/2) / (sqrt(df/2) Γ((df-1)/2)); about
    # 1 - 3 / (4 df - 1), i.e. 0.80 at 3 seeds per arm.
    return math.exp(special.gammaln(df / 2) - special.gammaln((df - 1) / 2)) / math.sqrt(df / 2)


def _seeds_per_arm_needed(sd: float, difference: float, alpha: float) -> int | None:
    # The smallest n with minimum_detectable_difference(sd, n, n) <= |difference|, by bisection
    # (it shrinks as n grows). None when no n up to _MAX_SEEDS would do, or the difference is 0.
    def enough(n: int) -> bool:
        return minimum_detectable_difference(sd, n, n, alpha=alpha) <= abs(difference)

    if difference == 0 or not enough(_MAX_SEEDS):
        return None
    not_enough, enough_n = 1, _MAX_SEEDS  # one seed per arm never is
    while enough_n - not_enough > 1:
        middle = (not_enough + enough_n) // 2
        if enough(middle):
            enough_n = middle
        else:
            not_enough = middle
    return enough_n


def _describe_resolution(
    abs_difference: float,
    mdd: float,
    pooled_sd: float,
    n_b: int,
    n_c: int,
    alpha: float,
    needed: int | None,
) -> str:
    if pooled_sd == 0:
        return NO_SPREAD
    setting = f"n={n_b} vs {n_c}, pooled SD {pooled_sd:.3g}, alpha {alpha:g}, power {POWER:g}"
    sizes = f"|difference| {abs_difference:.3g} vs minimum detectable {mdd:.3g} ({setting})"
    if abs_difference >= mdd:
        return f"resolvable: {sizes}"
    if abs_difference == 0:
        more = "the means are equal"
    elif needed is None:
        more = f"even {_MAX_SEEDS} seeds per arm would not resolve it"
    else:
        more = f"about {needed} seeds per arm would resolve it, if this SD and difference hold"
    return f"too few seeds to resolve a difference this size: {sizes}; {more}"


# --- the regression gate's test (launch/compare.py) -------------------------------------------


@dataclasses.dataclass(frozen=True)
class WorseTest:
    """Is the candidate worse than the baseline by more than `margin`? (`one_sided_worse_test`)

    `worsening` is how much worse the candidate's mean is, in the metric's own units whatever
    its direction (negative when the candidate is better). `worsening_lower_bound` reads "with
    `confidence`, the candidate is worse by at least this much"; `significant` is exactly
    `worsening_lower_bound > margin`, i.e. `p < 1 - confidence`.
    """

    n_baseline: int
    n_candidate: int
    higher_is_better: bool
    margin: float
    confidence: float
    difference: float  # candidate mean - baseline mean
    worsening: float  # baseline - candidate if higher is better, else candidate - baseline
    t: float  # (worsening - margin) / Welch standard error
    df: float  # Welch-Satterthwaite degrees of freedom; NaN when neither arm has spread
    p: float  # one-sided, unadjusted; NaN when untestable (no spread, worsening == margin)
    worsening_lower_bound: float  # one-sided lower confidence bound on the true worsening
    significant: bool  # p < 1 - confidence: worse by more than the margin


def one_sided_worse_test(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    higher_is_better: bool,
    margin: float = 0.0,
    confidence: float = 0.95,
) -> WorseTest:
    """One-sided Welch t-test of "the candidate is worse than the baseline by more than `margin`".

    With w = the true worsening (baseline mean - candidate mean when higher is better,
    candidate mean - baseline mean when lower is better), it tests H0: w <= margin ("at most
    `margin` worse") against H1: w > margin at alpha = 1 - confidence, using
    t = (observed worsening - margin) / sqrt(var_b / n_b + var_c / n_c) with Welch's df, and
    p = P(T_df >= t). This is scipy's `ttest_ind(equal_var=False)` on the candidate shifted by
    the margin toward "better" (`alternative="less"` when higher is better, "greater" when
    lower is better). `margin` is in the metric's units and must be >= 0; each arm needs at
    least 2 values.

    When neither arm has any spread the test is taken at its limit, as `compare` does: p is 0
    when the worsening exceeds the margin, 1 when it falls short, and NaN (not significant)
    when it equals it, e.g. identical deterministic runs compared at margin 0.
    """
    _check_confidence(confidence)
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0; got {margin}")
    welch = _welch_difference(baseline, candidate)
    difference = welch.difference
    worsening = -difference if higher_is_better else difference
    t, p = _one_sided_welch(worsening - margin, welch)
    lower = worsening - welch.quantile(confidence) * welch.se
    return WorseTest(
        n_baseline=welch.n_baseline,
        n_candidate=welch.n_candidate,
        higher_is_better=higher_is_better,
        margin=float(margin),
        confidence=confidence,
        difference=difference,
        worsening=worsening,
        t=t,
        df=welch.df,
        p=p,
        worsening_lower_bound=lower,
        significant=bool(p < 1 - confidence),  # NaN compares False: untestable is not flagged
    )


# --- one-sided Welch tests: the gate's, and the two of an equivalence test --------------------


@dataclasses.dataclass(frozen=True)
class _WelchDifference:
    """Candidate mean minus baseline mean, its Welch standard error and degrees of freedom."""

    n_baseline: int
    n_candidate: int
    baseline_mean: float
    candidate_mean: float
    se: float
    df: float  # Welch-Satterthwaite; NaN when neither arm has spread (se == 0)

    @property
    def difference(self) -> float:
        return self.candidate_mean - self.baseline_mean

    def quantile(self, level: float) -> float:
        """The t quantile at `level` for these df; 0 without spread, where bounds are the point."""
        return float(st.t.ppf(level, self.df)) if self.se > 0 else 0.0


def _welch_difference(
    baseline: Sequence[float] | np.ndarray, candidate: Sequence[float] | np.ndarray
) -> _WelchDifference:
    base = as_sample(baseline, "baseline")
    cand = as_sample(candidate, "candidate")
    if base.size < 2 or cand.size < 2:
        raise ValueError(
            f"a t-test needs at least 2 values per arm; got {base.size} baseline and "
            f"{cand.size} candidate value(s)"
        )
    mean_b, var_b = _mean_and_variance(base)
    mean_c, var_c = _mean_and_variance(cand)
    se_b, se_c = var_b / base.size, var_c / cand.size
    se = math.sqrt(se_b + se_c)
    df = (
        (se_b + se_c) ** 2 / (se_b**2 / (base.size - 1) + se_c**2 / (cand.size - 1))
        if se > 0
        else math.nan
    )
    return _WelchDifference(int(base.size), int(cand.size), mean_b, mean_c, se, df)


def _one_sided_welch(excess: float, welch: _WelchDifference) -> tuple[float, float]:
    """t and p of H0 "the true `excess` is <= 0" against H1 "> 0", `excess` being a shift of the
    difference by a margin. Without spread the test is taken at its limit: p is 0 when the
    excess is positive, 1 when negative, NaN (untestable) when it is exactly 0."""
    if welch.se == 0:
        t = math.copysign(math.inf, excess) if excess != 0 else math.nan
        return t, 0.0 if excess > 0 else 1.0 if excess < 0 else math.nan
    t = excess / welch.se
    return t, float(st.t.sf(t, welch.df))


# --- equivalence: a claim that two arms do not differ ---------------------------------------


@dataclasses.dataclass(frozen=True)
class EquivalenceTest:
    """Are the two arms' means within `margin` of each other? (`equivalence_test`, TOST)

    `p` is the larger of the two one-sided p-values: equivalence is shown at level alpha
    exactly when `p < alpha`, which is when the (1 - 2 alpha) Welch interval of the difference,
    `ci`, lies inside (-margin, +margin).
    """

    n_baseline: int
    n_candidate: int
    margin: float  # in the metric's units, > 0
    alpha: float
    baseline_mean: float
    candidate_mean: float
    difference: float  # candidate mean - baseline mean
    df: float  # Welch-Satterthwaite; NaN when neither arm has spread
    t_lower: float  # against H0 "difference <= -margin"
    p_lower: float
    t_upper: float  # against H0 "difference >= +margin"
    p_upper: float
    p: float  # max(p_lower, p_upper), unadjusted; NaN when untestable
    ci: tuple[float, float]  # the (1 - 2 alpha) Welch interval of `difference`
    equivalent: bool  # p < alpha, before any multiple-comparison adjustment


def equivalence_test(
    baseline: Sequence[float] | np.ndarray,
    candidate: Sequence[float] | np.ndarray,
    margin: float,
    alpha: float = 0.05,
) -> EquivalenceTest:
    """Two one-sided Welch t-tests (TOST) of "the arms' means differ by less than `margin`".

    With d the true difference (candidate - baseline), it rejects H0 "d <= -margin" and H0
    "d >= +margin", each with a one-sided Welch test at `alpha`; equivalence is shown only when
    both are rejected. Each test is scipy's `ttest_ind(equal_var=False)` on the candidate
    shifted by the margin (`alternative="greater"` for +margin, `"less"` for -margin). A study
    whose seeds are too few or too noisy cannot show equivalence, however close its means: a
    non-significant difference is not evidence of none. Each arm needs at least 2 values.

    When neither arm has any spread the tests are taken at their limit, as `compare` does:
    equivalent when |difference| < margin, not when it exceeds it, untestable (NaN p) when it
    equals it.
    """
    if not (math.isfinite(margin) and margin > 0):
        raise ValueError(f"margin must be a finite number > 0; got {margin}")
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must lie in (0, 0.5); got {alpha}")
    welch = _welch_difference(baseline, candidate)
    difference = welch.difference
    t_lower, p_lower = _one_sided_welch(difference + margin, welch)
    t_upper, p_upper = _one_sided_welch(margin - difference, welch)
    p = float(np.max([p_lower, p_upper]))  # np.max, unlike max(), keeps a NaN
    half_width = welch.quantile(1 - alpha) * welch.se
    return EquivalenceTest(
        n_baseline=welch.n_baseline,
        n_candidate=welch.n_candidate,
        margin=float(margin),
        alpha=alpha,
        baseline_mean=welch.baseline_mean,
        candidate_mean=welch.candidate_mean,
        difference=difference,
        df=welch.df,
        t_lower=t_lower,
        p_lower=p_lower,
        t_upper=t_upper,
        p_upper=p_upper,
        p=p,
        ci=(difference - half_width, difference + half_width),
        equivalent=bool(p < alpha),  # NaN compares False: untestable is not equivalent
    )


def equivalence_verdict(
    test: EquivalenceTest,
    adjusted_p: float,
    alpha: float = 0.05,
    names: tuple[str, str] = ("candidate", "baseline"),
) -> Verdict:
    """Judge the claim "the candidate arm matches the baseline arm within the test's margin".

    `adjusted_p` is the test's `p` after `holm` over all the study's claims. Supported only when
    it is below alpha: TOST rejected both "lower by the margin or more" and "higher by the
    margin or more". Otherwise inconclusive, never refuted: failing to show equivalence does
    not show a difference (that is a "beats" claim's job).
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); got {alpha}")
    t = test
    level = f"{1 - 2 * t.alpha:.0%}"
    numbers = (
        f"{names[0]} {t.candidate_mean:.4g} vs {names[1]} {t.baseline_mean:.4g}, "
        f"difference {t.difference:+.3g}, margin ±{t.margin:.3g}; TOST p {t.p:.2g} "
        f"(lower {t.p_lower:.2g}, upper {t.p_upper:.2g}; Holm-adjusted {adjusted_p:.2g}, "
        f"alpha {alpha:g}); {level} CI of difference [{t.ci[0]:+.3g}, {t.ci[1]:+.3g}]"
    )
    if math.isnan(adjusted_p):
        return Verdict("inconclusive", f"could not be tested: {numbers}")
    if adjusted_p < alpha:
        return Verdict("supported", f"equivalent within ±{t.margin:.3g}: {numbers}")
    return Verdict(
        "inconclusive",
        f"equivalence not shown (a difference of the margin or more is not ruled out): {numbers}",
    )
