"""Specifications for analysis/report/html_page.py: `report.html`, one self-contained page whose
verdicts are coloured cards and in which everything from the summary is escaped."""

from __future__ import annotations

import base64
import copy
import re

import pytest

from analysis.report.html_page import OUTCOME_COLORS
from tests.report_summary import (
    PLANTED,
    build_summary,
    md_section,
    png_size,
    render,
    rendered_reports,
)

summary = pytest.fixture(build_summary, scope="module", name="summary")
rendered = pytest.fixture(rendered_reports, scope="module", name="rendered")


def test_html_is_self_contained(rendered):
    page = rendered["html"]
    assert 'src="http' not in page and 'href="http' not in page
    assert "<script" not in page.lower()
    assert "<link" not in page.lower() and "@import" not in page
    images = re.findall(r"<img[^>]*>", page)
    assert len(images) == 2
    for tag in images:
        match = re.search(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', tag)
        assert match, f"image not embedded as a PNG data URI: {tag[:80]}"
        width, height = png_size(base64.b64decode(match.group(1)))
        assert 400 <= width <= 3000 and 250 <= height <= 2000


def test_badges_are_coloured_by_outcome(rendered):
    page = rendered["html"]
    green, _ = OUTCOME_COLORS["supported"]
    red, _ = OUTCOME_COLORS["refuted"]
    assert f'class="card claim supported" style="border-color: {green}' in page
    assert f'class="card claim refuted" style="border-color: {red}' in page
    assert f'class="card headline refuted" style="border-color: {red}' in page


def test_inconclusive_claim_and_no_claims(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["claims"][0]["verdict"] = {"outcome": "inconclusive", "reason": "not significant: ..."}
    page, _ = render(tmp_path / "a", s)
    amber, _ = OUTCOME_COLORS["inconclusive"]
    assert f'class="card claim inconclusive" style="border-color: {amber}' in page

    s["claims"] = []
    page, md = render(tmp_path / "b", s)
    assert "No claims were declared" in page and "No claims were declared" in md


def test_failed_run_log_tail_is_shown_and_escaped(rendered):
    page = rendered["html"]
    assert PLANTED not in page
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in page
    failed = page[page.index('id="failed"') :]
    assert "<pre>" in failed and "runs/hyena/seed_1" in failed
    assert "FloatingPointError: non-finite loss" in failed
    md = md_section(rendered["md"], "Failed runs")
    assert "```\nstep 150 loss 2.31" in md and PLANTED in md
    # And called out above the fold.
    assert page.index("5 runs did not complete") < page.index('<table id="arms-table">')


def test_everything_from_the_summary_is_escaped(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["study"] = "<b>study</b>"
    s["hypothesis"] = "a < b & c > d"
    s["arms"]["attention"]["overrides"] = {"model.mixer": "<img src=x onerror=alert(1)>"}
    s["claims"][0]["verdict"]["reason"] = "<i>reason</i>"
    page, _ = render(tmp_path, s)
    assert "<b>study" not in page and "&lt;b&gt;study&lt;/b&gt;" in page
    assert "a &lt; b &amp; c &gt; d" in page
    assert "<img src=x" not in page and "<i>reason" not in page
