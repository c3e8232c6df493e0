"""Specifications for analysis/report/sections.py: what each section of a study's report says,
seen in both renderings (tests/report_summary.py builds the summary)."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest

from analysis import stats
from analysis.report.formatting import (
    HASH_CHARS,
    fmt_duration,
    fmt_large,
    fmt_number,
    fmt_p,
    fmt_percent,
    fmt_signed,
)
from analysis.report.html_page import inline_html
from analysis.runs import jsonable
from analysis.summary_reader import arm_label
from experiments.mad_tasks import MIXERS, TASKS
from tests.fabricated_runs import (
    SOLVES_VALUES,
    drops_summary,
    mad_summary,
    mad_values,
    solves_summary,
)
from tests.report_summary import (
    FINAL_ACCURACY,
    METRIC,
    build_summary,
    html_section,
    md_section,
    nan_to_none,
    render,
    rendered_reports,
    without_data_uris,
)

summary = pytest.fixture(build_summary, scope="module", name="summary")
rendered = pytest.fixture(rendered_reports, scope="module", name="rendered")


# --- verdict first --------------------------------------------------------------------------------


def test_verdicts_and_claims_come_before_the_arms_table(rendered, summary):
    page = rendered["html"]
    table_at = page.index('<table id="arms-table">')
    for claim in summary["claims"]:
        outcome = claim["verdict"]["outcome"]
        badge = re.search(rf'<span class="badge"[^>]*>{outcome}</span>', page)
        assert badge and badge.start() < table_at
        words = inline_html(claim["text"])
        assert page.index(words) < table_at
        assert page.index(inline_html(claim["verdict"]["reason"])) < table_at
    md = rendered["md"]
    for claim in summary["claims"]:
        assert md.index(claim["verdict"]["outcome"].upper()) < md.index("## Arms")


def test_overall_verdict_and_hypothesis_come_first(rendered, summary):
    page, md = rendered["html"], rendered["md"]
    headline = page.index('class="card headline refuted"')
    assert headline < page.index('class="card claim')
    assert page.index(inline_html(summary["hypothesis"])) < page.index('class="card claim')
    assert "2 claims: 1 supported, 1 refuted" in page
    assert md.index("### REFUTED: Hypothesis: Delta-rule") < md.index("**SUPPORTED**")


def test_without_an_overall_verdict_the_hypothesis_still_leads(tmp_path, summary):
    s = copy.deepcopy(summary)
    del s["verdict"]
    page, md = render(tmp_path, s)
    assert 'class="card headline' not in page
    assert page.index("Hypothesis: Delta-rule") < page.index('class="card claim')
    assert "> Hypothesis: Delta-rule" in md


def test_fixture_has_a_supported_and_a_refuted_claim(summary):
    # The colours of both outcomes get exercised: keep the fixture that way.
    outcomes = [c["verdict"]["outcome"] for c in summary["claims"]]
    assert outcomes == ["supported", "refuted"]


# --- the arms table -------------------------------------------------------------------------------


def test_every_arm_is_in_the_arms_table_baseline_first(rendered, summary):
    table = html_section(rendered["html"], "arms-table")
    md = md_section(rendered["md"], "Arms")
    for arm in summary["arms"]:
        assert f"<td>{arm}" in table
        assert re.search(rf"^\| (\*\*)?{arm}", md, re.M)
    first_row = re.search(r"<tbody><tr[^>]*><td>([^<]*)</td>", table).group(1)
    assert first_row.startswith("attention")
    md_rows = [line for line in md.splitlines() if line.startswith("| ")][1:]
    assert md_rows[0].startswith("| **attention")


def test_baseline_row_is_marked(rendered):
    table = html_section(rendered["html"], "arms-table")
    assert '<tr class="marked"><td>attention (baseline)</td>' in table
    assert table.count('class="marked"') == 1
    assert "| **attention (baseline)** |" in rendered["md"]


def test_arms_table_shows_the_comparison_numbers(rendered, summary):
    table = html_section(rendered["html"], "arms-table")
    mamba = summary["comparisons"]["mamba"]
    c = mamba["comparison"]
    row = re.search(r"<tr><td>mamba</td>.*?</tr>", table).group(0)
    for expected in (
        fmt_signed(c["difference"]),
        fmt_percent(c["relative_change"]),
        fmt_p(c["welch_p"]),
        fmt_p(mamba["holm_p"]),
        fmt_p(c["mann_whitney_p"]),
        fmt_number(c["cohens_d"], 3),
    ):
        assert f">{expected}<" in row
    final = summary["arms"]["mamba"]["metrics"][METRIC]["final"]
    half = (final["t_ci"][1] - final["t_ci"][0]) / 2
    assert f"{final['mean']:.4g} ± {half:.4g}" in row


def test_the_arms_table_shows_each_seeds_final_value_beside_the_mean(rendered):
    table = html_section(rendered["html"], "arms-table")
    arms_md = md_section(rendered["md"], "Arms")
    assert '<th class="num">Final per seed</th>' in table
    for arm, shown in (("mamba", "0.701 0.783 0.742"), ("deltanet", "0.981 0.975 0.988")):
        assert FINAL_ACCURACY[arm] == [float(v) for v in shown.split()]
        row = re.search(rf"<tr><td>{arm}</td>.*?</tr>", table).group(0)
        assert f'<td class="num">{shown}</td>' in row
        assert re.search(rf"^\| {arm} \|.*\| {shown} \|", arms_md, re.M)
    assert re.search(r"<tr><td>linear</td>.*?<td class=\"num\">0.552</td>", table)
    # A study without SOLVED_AT has no Solved column.
    assert "Solved" not in table


def test_unresolvable_difference_says_how_many_seeds_it_needs(tmp_path, summary):
    s = copy.deepcopy(summary)
    c = s["comparisons"]["deltanet"]["comparison"]
    c.update(resolvable=False, seeds_per_arm_needed=7, pooled_sd=0.01, difference=0.01)
    page, _ = render(tmp_path, s)
    assert "seeds too few: needs 7 per arm" in html_section(page, "arms-table")


def test_arm_with_one_seed_shows_dashes_not_nan(rendered):
    row = re.search(r"<tr><td>linear</td>.*?</tr>", html_section(rendered["html"], "arms-table"))
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row.group(0))
    assert cells[1] == "1/3"
    assert cells[2] == "0.552 ± —"
    assert cells[3] == "[—, —]"
    assert "not compared" in cells[-1]
    assert "not compared: 1 completed seed(s)" in rendered["html"]
    for text in (without_data_uris(rendered["html"]), rendered["md"]):
        assert not re.search(r"\bnan\b", text, re.I)


def test_nan_given_as_json_null_renders_as_dash(tmp_path, summary):
    s = nan_to_none(summary)
    page, md = render(tmp_path, s)
    row = re.search(r"<tr><td>linear</td>.*?</tr>", html_section(page, "arms-table")).group(0)
    assert "0.552 ± —" in row
    for text in (without_data_uris(page), md):
        assert not re.search(r"\bnan\b", text, re.I)
        assert not re.search(r"\b(None|null)\b", text)


def test_arm_without_completed_seeds_renders(rendered):
    table = html_section(rendered["html"], "arms-table")
    row = re.search(r"<tr><td>hyena</td>.*?</tr>", table).group(0)
    assert '<td class="num">0/3</td>' in row
    assert "no completed seeds" in row


def test_other_metrics_table(rendered, summary):
    table = html_section(rendered["html"], "metrics-table")
    assert "eval/loss" in table and METRIC not in table
    final = summary["arms"]["deltanet"]["metrics"]["eval/loss"]["final"]
    assert f"{final['mean']:.4g} ± " in table
    for arm in summary["arms"]:
        assert f"<td>{arm_label(summary, arm)}</td>" in table
    assert "<td>attention (baseline)</td>" in table
    assert "eval/loss" in md_section(rendered["md"], "Other metrics")


# --- compute, provenance, failures ----------------------------------------------------------------


def test_compute_is_readable(rendered, summary):
    table = html_section(rendered["html"], "compute-table")
    total = summary["compute"]
    assert fmt_large(total["flops"]) in table
    assert fmt_duration(total["wall_seconds"]) in table
    assert "Total" in table


def test_provenance_lists_commits_datasets_hashes_overrides_and_seeds(rendered, summary):
    md = md_section(rendered["md"], "Provenance")
    prov = summary["provenance"]
    assert prov["commits"][0] in md
    assert prov["datasets"]["mqar"] in md
    assert "--config.train.steps=600" in md
    assert "0, 1, 2" in md
    for arm, full_hash in prov["config_hashes"].items():
        assert full_hash[:HASH_CHARS] in md and arm in md
    assert "Warning" not in md


def test_provenance_warns_of_several_commits_or_a_dirty_tree(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["provenance"]["commits"].append("0123456789abcdef0123456789abcdef01234567")
    s["provenance"]["dirty"] = True
    page, md = render(tmp_path, s)
    section = page[page.index('id="provenance"') :]
    assert section.count('<div class="alert">') == 2
    assert "2 different code commits" in section and "uncommitted changes" in section
    assert "2 different code commits" in md_section(md, "Provenance")


def test_arm_with_several_configs_is_flagged(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["arms"]["mamba"]["config_hash"] = None
    s["arms"]["mamba"]["config_hashes"] = ["a" * 64, "b" * 64]
    page, _ = render(tmp_path, s)
    assert "Arm <code>mamba</code> ran with 2 different configs" in page
    table = html_section(page, "config-table")
    assert f"<code>{'a' * 12}</code>, <code>{'b' * 12}</code>" in table


def test_curve_band_is_described_as_the_summary_says(rendered):
    assert "shaded band min-max over seeds" in rendered["html"]


def test_minimal_summary_renders(tmp_path):
    s = {"study": "bare", "metric": METRIC, "baseline": "a", "arms": {"a": {}, "b": {}}}
    page, _ = render(tmp_path, s)
    assert "<td>a (baseline)</td>" in page and "<td>b</td>" in page


# --- a study whose arms are compared within blocks ------------------------------------------


@pytest.fixture(scope="module")
def mad(tmp_path_factory) -> dict:
    """The MAD study's report (blocked by task), summarized from hand-written runs."""
    mad_summary_ = mad_summary(tmp_path_factory.mktemp("mad") / "study")
    return {**rendered_reports(mad_summary_, tmp_path_factory), "summary": mad_summary_}


def test_a_blocked_report_states_its_blocking_and_the_holm_family(mad):
    md = mad["md"]
    assert "blocked by `data.name`: 6 blocks, a baseline each" in md.split("## Verdict")[0]
    arms = md_section(md, "Arms")
    assert (
        "The arms are blocked by `data.name`: each arm is compared only with the baseline of its "
        "own block (Welch's t-test), never with an arm of another block; the Holm adjustment "
        "runs over all 30 comparisons made, every block together."
    ) in " ".join(arms.split())
    headings = re.findall(r"^### Block `(\w+)`: baseline `([\w-]+)`$", arms, re.M)
    assert headings == [(task, f"attention-{task}") for task in TASKS]


def test_each_block_has_its_own_arms_table_with_its_baseline_first_and_marked(mad):
    for task in TASKS:
        table = html_section(mad["html"], f"arms-table-{task}")
        rows = re.findall(r"<tr[^>]*><td>([^<]*)</td>", table)
        assert rows[0] == f"attention-{task} (baseline)"
        assert sorted(rows[1:]) == sorted(f"{m}-{task}" for m in MIXERS if m != "attention")
        assert table.count('class="marked"') == 1
        assert f'<tr class="marked"><td>attention-{task} (baseline)</td>' in table


def test_a_blocked_arm_shows_its_difference_from_its_own_blocks_baseline(mad):
    table = html_section(mad["html"], "arms-table-noisy_recall")
    row = re.search(r"<tr><td>mamba-noisy_recall</td>.*?</tr>", table).group(0)
    own = np.mean(mad_values("mamba-noisy_recall")) - np.mean(mad_values("attention-noisy_recall"))
    assert f">{fmt_signed(own)}<" in row
    holm_p = mad["summary"]["comparisons"]["mamba-noisy_recall"]["holm_p"]
    assert f">{fmt_p(holm_p)}<" in row


def test_every_blocks_baseline_is_marked_in_the_other_tables(mad):
    baselines = [f"attention-{t} (baseline)" for t in TASKS]
    config = html_section(mad["html"], "config-table")
    assert re.findall(r'<tr class="marked"><td>([^<]*)</td>', config) == baselines
    compute = html_section(mad["html"], "compute-table")
    assert re.findall(r"<td>([^<]*\(baseline\))</td>", compute) == baselines


def test_an_equivalence_claim_is_reported_with_its_tost_numbers(mad):
    (claim,) = [c for c in mad["summary"]["claims"] if c["relation"] == "matches"]
    md = mad["md"]
    assert (
        "- **SUPPORTED** — arm `mamba-memorization` matches arm `attention-memorization` "
        "within ±0.0625 on eval/accuracy"
    ) in md
    reason = claim["verdict"]["reason"]
    assert f"TOST p {claim['equivalence']['p']:.2g}" in reason and reason in md
    assert md.index(reason) < md.index("## Arms")


# --- a study with claims on how often arms solve ------------------------------------------------


@pytest.fixture(scope="module")
def solves(tmp_path_factory) -> dict:
    """A study with SOLVED_AT 0.9 whose Mamba-2 seeds either solve or do not."""
    summary_ = solves_summary(tmp_path_factory.mktemp("solves") / "study")
    return {**rendered_reports(summary_, tmp_path_factory), "summary": summary_}


def test_a_solve_rate_claim_states_both_fractions_their_exact_intervals_and_p(solves):
    stated = (
        "deltanet 3/3 seeds solve (95% exact CI [0.29, 1]) vs mamba2 1/3 seeds solve "
        "(95% exact CI [0.0084, 0.91]); one-sided Boschloo exact p 0.11 (Holm-adjusted 0.22, "
        "alpha 0.05)"
    )
    claim = (
        "arm `deltanet` solves more often than arm `mamba2` (a seed solves when its final "
        "eval/accuracy ≥ 0.9)"
    )
    md, page = solves["md"], solves["html"]
    assert f"- **INCONCLUSIVE** — {claim}" in md
    assert stated in md and md.index(stated) < md.index("## Arms")
    assert inline_html(claim) in page and inline_html(stated) in page
    assert "Boschloo's test between two arms" in md_section(md, "Verdict")


def test_the_arms_table_of_a_solves_study_shows_who_solved_beside_each_seeds_value(solves):
    table = html_section(solves["html"], "arms-table")
    assert '<th class="num">Solved (≥ 0.9), exact\u00a0CI</th>' in table
    row = re.search(r"<tr><td>mamba2</td>.*?</tr>", table).group(0)
    assert SOLVES_VALUES["mamba2"] == [0.081, 0.997, 0.079]
    assert '<td class="num">0.081 0.997 0.079</td><td class="num">1/3 [0.0084, 0.91]</td>' in row
    arms_md = md_section(solves["md"], "Arms")
    assert re.search(r"^\| mamba \|.*\| 0.250 0.240 0.251 \| 0/3 \[0, 0.71\] \|", arms_md, re.M)
    assert "Solved: the seeds whose final value is ≥ 0.9 (the study's SOLVED_AT)" in arms_md


# --- evaluation suites ------------------------------------------------------------------------


def test_an_arm_whose_evaluation_covers_fewer_runs_than_it_has_says_so(tmp_path, summary):
    partial = copy.deepcopy(summary)
    arms = list(partial["arms"])
    for arm, runs in ((arms[0], 2), (arms[1], 1)):
        final = partial["arms"][arm]["metrics"][METRIC]["final"]
        partial["arms"][arm]["evaluation"] = {
            "runs": runs,
            "of_runs": 2,
            "headline": {"calibration/ece": {"final": final, "final_values": [0.1] * runs}},
            "not_applicable": {},
        }
    _, md = render(tmp_path, partial)
    section = md_section(md, "Evaluation suites")
    assert f"`{arms[1]}`: these numbers cover 1 of its 2 completed runs" in section
    assert f"`{arms[0]}`: these numbers cover" not in section


# --- what an arm costs -------------------------------------------------------------------------


def test_the_arms_table_shows_checkpoint_bytes_and_decoding_time_when_measured(tmp_path_factory):
    """The drops study's int8 arms, with a checkpoint's bytes and the generation suite's time per
    token written into each arm's summary as analysis/study.py puts them there."""
    summary = drops_summary(tmp_path_factory.mktemp("drops") / "study")
    plain = rendered_reports(copy.deepcopy(summary), tmp_path_factory)["md"]
    assert "Checkpoint bytes" not in plain and "Decode ms/token" not in plain
    for arm, entry in summary["arms"].items():
        int8 = arm.endswith("int8")
        entry["checkpoint_bytes"] = 450_000.0 if int8 else 2_360_000.0
        seconds = [3.4e-4, 3.5e-4, 3.6e-4] if int8 else [1.2e-4, 1.2e-4, 1.3e-4]
        entry["evaluation"]["headline"]["generation/seconds_per_token"] = {
            "final": jsonable(stats.summarize(seconds))
        }
    md = rendered_reports(summary, tmp_path_factory)["md"]
    arms = md_section(md, "Arms")
    assert "| Checkpoint bytes | Decode ms/token (mean ± CI) |" in arms
    row = next(line for line in arms.splitlines() if line.startswith("| mamba-int8 "))
    assert f"| {fmt_large(450_000.0)} | 0.35 ± 0.02484 |" in row
