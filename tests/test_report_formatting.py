"""Specifications for analysis/report/formatting.py: numbers as the report shows them."""

from __future__ import annotations

import math

import pytest

from analysis.report.formatting import fmt_duration, fmt_large, fmt_number, fmt_p, mean_pm


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
