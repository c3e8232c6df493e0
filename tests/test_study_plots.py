"""Specifications for analysis/study_plots.py: the report's two plots, written as PNGs beside it."""

from __future__ import annotations

import pytest

from tests.report_summary import build_summary, png_size, rendered_reports

summary = pytest.fixture(build_summary, scope="module", name="summary")
rendered = pytest.fixture(rendered_reports, scope="module", name="rendered")


def test_writes_both_reports_and_both_plots(rendered):
    paths = rendered["paths"]
    assert set(paths) >= {"md", "html", "learning_curves", "primary_metric"}
    assert paths["md"].endswith("report.md") and paths["html"].endswith("report.html")
    for key in ("learning_curves", "primary_metric"):
        assert paths[key].endswith(f"plots/{key}.png")
        with open(paths[key], "rb") as f:
            width, height = png_size(f.read())
        assert 400 <= width <= 3000 and 250 <= height <= 2000
