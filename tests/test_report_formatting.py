"""Specifications for analysis/report/formatting.py: numbers as the report shows them."""

from __future__ import annotations

import math

import pytest

from analysis.report.formatting import (
    fmt_duration,
    fmt_large,
    fmt_number,
    fmt_p,
    fmt_seed_values,
    fraction_ci,
    mean_pm,
)


@pytest.mark.parametrize(
    "p, expected", [(0.0123, "0.012"), (3.1e-5, "3.1e-05"), (0.5, "0.5"), (None, "—")]
)
def test_p_values(p, expected):
    assert fmt_p(p) == expected


@pytest.mark.parametrize(
    "value, expected", [(1.2e12, "1.2e12"), (7372800, "7.37e6"), (1800, "1,800"), (None, "—")]
)
def test_large_numbers(value, expected):
    assert fmt_large(value) == expected


@pytest.mark.parametrize(
    "seconds, expected", [(45.23, "45.2s"), (200, "3m 20s"), (7500, "2h 05m"), (math.nan, "—")]
)
def test_durations(seconds, expected):
    assert fmt_duration(seconds) == expected


def test_metrics_show_four_significant_digits():
    assert fmt_number(0.912345) == "0.9123"
    assert fmt_number(float("nan")) == "—"
    assert mean_pm({"n": 3, "mean": 0.5, "t_ci": [0.4, 0.6]}) == "0.5 ± 0.1"


@pytest.mark.parametrize(
    "values, expected",
    [
        # One number of decimals per cell, three significant digits at the values' typical size,
        # so that a seed at 1.0 does not lose its zeros beside 0.999.
        ([0.9991, 0.998, 1.0], "0.999 0.998 1.000"),
        ([0.081, 0.997, 0.079], "0.081 0.997 0.079"),
        ([1.71, 2.3], "1.71 2.30"),
        ([150.2, 160.9], "150 161"),
        ([1e-5, 2.5e-5], "1e-05 2.5e-05"),
        ([0.5, None], "0.500 —"),
        ([], "—"),
    ],
)
def test_each_seeds_value_is_shown_to_a_common_number_of_decimals(values, expected):
    assert fmt_seed_values(values) == expected


def test_a_solve_fraction_shows_the_count_and_its_exact_interval():
    assert fraction_ci({"solved": 1, "n": 3, "ci": [0.0084037, 0.9057]}) == "1/3 [0.0084, 0.91]"
    assert fraction_ci({"solved": 3, "n": 3, "ci": [0.2924, 1.0]}) == "3/3 [0.29, 1]"
    assert fraction_ci({}) == "—"
