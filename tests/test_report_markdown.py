"""Specifications for analysis/report/markdown.py: `report.md`, the report as plain text."""

from __future__ import annotations

import copy

import pytest

from tests.report_summary import build_summary, md_section, render, rendered_reports

summary = pytest.fixture(build_summary, scope="module", name="summary")
rendered = pytest.fixture(rendered_reports, scope="module", name="rendered")


def test_markdown_links_the_plots(rendered):
    assert "(plots/learning_curves.png)" in rendered["md"]
    assert "(plots/primary_metric.png)" in rendered["md"]


def test_no_failed_runs_says_none(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["failed_runs"] = []
    _, md = render(tmp_path, s)
    assert md_section(md, "Failed runs").strip() == "none"
