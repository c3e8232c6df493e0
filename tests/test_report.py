"""Specifications for analysis/report.py: a study's summary rendered as Markdown and HTML.

The summary is built by hand in the shape the study aggregator writes (`summary.json`), with
its statistics computed by analysis.stats from fixed seed values so that every number in it is
consistent, and then passed through JSON as the aggregator's file would be.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
import math
import re
import struct
from pathlib import Path

import pytest

from analysis import report, stats

METRIC = "eval/accuracy"
SEEDS = [0, 1, 2]
# Final eval/accuracy and eval/loss per seed; `linear` completed one seed, `hyena` none.
FINAL_ACCURACY = {
    "attention": [0.912, 0.951, 0.925],
    "deltanet": [0.981, 0.975, 0.988],
    "mamba": [0.701, 0.783, 0.742],
    "linear": [0.552],
    "hyena": [],
}
FINAL_LOSS = {
    "attention": [0.41, 0.33, 0.38],
    "deltanet": [0.09, 0.11, 0.08],
    "mamba": [1.02, 0.87, 0.95],
    "linear": [1.71],
    "hyena": [],
}
CLAIMS = [("deltanet", "beats", "mamba"), ("mamba", "beats", "attention")]
PLANTED = '<script>alert("pwned")</script>'
STEPS = [100, 200, 300, 400, 500, 600]


def _summary_dict(values: list[float]) -> dict:
    return dataclasses.asdict(stats.summarize(values, n_bootstrap=1000))


def _metric_entry(values: list[float], higher_is_better: bool) -> dict:
    best = [v + (0.004 if higher_is_better else -0.004) for v in values]
    return {
        "final": _summary_dict(values),
        "best": _summary_dict(best),
        "final_values": values,
        "best_values": best,
    }


def _curve(finals: list[float]) -> dict:
    # Curves rise towards each seed's final value; the band spans the lowest to highest seed.
    per_seed = [[f * (1 - math.exp(-s / 150)) for s in STEPS] for f in finals]
    columns = list(zip(*per_seed, strict=True))
    return {
        "steps": STEPS,
        "mean": [sum(c) / len(c) for c in columns],
        "lo": [min(c) for c in columns],
        "hi": [max(c) for c in columns],
        "n": [len(c) for c in columns],
        "band": "min-max over seeds",
    }


def _arm(name: str) -> dict:
    accuracy, loss = FINAL_ACCURACY[name], FINAL_LOSS[name]
    done, failed = len(accuracy), len(SEEDS) - len(accuracy)
    runs = [
        {
            "seed": s,
            "workdir": f"runs/{name}/seed_{s}",
            "status": "completed" if s < done else "failed",
            "last_step": 600 if s < done else 150,
            "wall_seconds": 123.4 if s < done else 31.0,
        }
        for s in SEEDS
    ]
    return {
        "overrides": {"model.mixer": name},
        "config_hash": hashlib.sha256(name.encode()).hexdigest(),
        "config_hashes": [hashlib.sha256(name.encode()).hexdigest()],
        "seeds_planned": len(SEEDS),
        "seeds_completed": done,
        "runs": runs,
        "metrics": (
            {METRIC: _metric_entry(accuracy, True), "eval/loss": _metric_entry(loss, False)}
            if done
            else {}
        ),
        "curves": {METRIC: _curve(accuracy)} if done else {},
        "compute": {
            "steps": 600 * done + 150 * failed,
            "tokens": 4096 * (600 * done + 150 * failed),
            "wall_seconds": 123.4 * done + 31.0 * failed,
            "flops": 2.1e11 * done,
        },
    }


def build_summary() -> dict:
    """A study of five arms: three complete, one with a single seed, one with none."""
    arms = {name: _arm(name) for name in FINAL_ACCURACY}

    comparisons, p_values = {}, []
    for name in arms:
        if name == "attention":
            continue
        if len(FINAL_ACCURACY[name]) < 2:
            n = len(FINAL_ACCURACY[name])
            comparisons[name] = {
                "comparison": None,
                "holm_p": None,
                "note": f"not compared: {n} completed seed(s), a comparison needs 2",
            }
            p_values.append(math.nan)
            continue
        c = stats.compare(FINAL_ACCURACY["attention"], FINAL_ACCURACY[name], True)
        comparisons[name] = {"comparison": dataclasses.asdict(c), "holm_p": None, "note": None}
        p_values.append(c.welch_p)
    for name, p in zip(comparisons, stats.holm(p_values), strict=True):
        comparisons[name]["holm_p"] = None if math.isnan(p) else float(p)

    claim_comparisons = [
        stats.compare(FINAL_ACCURACY[other], FINAL_ACCURACY[cand], True)
        for cand, _, other in CLAIMS
    ]
    adjusted = stats.holm([c.welch_p for c in claim_comparisons])
    claims = []
    for (cand, relation, other), c, p in zip(CLAIMS, claim_comparisons, adjusted, strict=True):
        v = stats.verdict(c, float(p), "better")
        claims.append(
            {
                "candidate": cand,
                "relation": relation,
                "other": other,
                "metric": METRIC,
                "text": f"arm `{cand}` {relation} arm `{other}` on {METRIC}",
                "comparison": dataclasses.asdict(c),
                "adjusted_p": float(p),
                "verdict": dataclasses.asdict(v),
            }
        )

    summary = {
        "study": "mqar_mixers",
        "study_file": "experiments/mqar_mixers.py",
        "setting": "small",
        "created": "2026-11-28T22:50:00+00:00",
        "hypothesis": "Delta-rule recurrence recalls associations that selective SSMs lose: "
        "DeltaNet reaches a higher MQAR accuracy than Mamba at the same width.",
        "metric": METRIC,
        "higher_is_better": True,
        "baseline": "attention",
        "confidence": 0.95,
        "alpha": 0.05,
        "seeds": SEEDS,
        "overrides": ["--config.train.steps=600"],
        # The aggregator's rule: supported if every claim is, refuted if any is.
        "verdict": "refuted",
        "claims": claims,
        "arms": arms,
        "comparisons": comparisons,
        "compute": {
            key: sum(a["compute"][key] for a in arms.values())
            for key in ("steps", "tokens", "wall_seconds", "flops")
        },
        "provenance": {
            "commits": ["952cd44e0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"],
            "dirty": False,
            "datasets": {"mqar": "mqar-1.0.0-3f9a0c1d2e4b"},
            "config_hashes": {name: a["config_hash"] for name, a in arms.items()},
            "versions": {"jax": "0.10.2", "flax": "0.12.8"},
        },
        "failed_runs": [
            {
                "arm": "hyena",
                "seed": s,
                "workdir": f"runs/hyena/seed_{s}",
                "status": "failed",
                "log_tail": f"step 150 loss 2.31\n{PLANTED}\nFloatingPointError: non-finite loss",
            }
            for s in SEEDS
        ]
        + [
            {
                "arm": "linear",
                "seed": s,
                "workdir": f"runs/linear/seed_{s}",
                "status": "diverged",
                "log_tail": "non-finite loss at step 150",
            }
            for s in (1, 2)
        ],
    }
    # As the aggregator's summary.json would give it back: tuples become lists, NaN stays NaN.
    return json.loads(json.dumps(summary))


def nan_to_none(value):
    """The summary as strict JSON would carry it: every NaN a null."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


@pytest.fixture(scope="module")
def summary() -> dict:
    return build_summary()


@pytest.fixture(scope="module")
def rendered(summary, tmp_path_factory) -> dict[str, str]:
    study_dir = tmp_path_factory.mktemp("study")
    paths = report.write_reports(str(study_dir), summary)
    texts = {kind: Path(paths[kind]).read_text(encoding="utf-8") for kind in ("md", "html")}
    return {**texts, "paths": paths}


def render(directory: Path, summary: dict) -> tuple[str, str]:
    """(HTML page, Markdown) of `summary` rendered into `directory`."""
    paths = report.write_reports(str(directory), summary)
    return tuple(Path(paths[kind]).read_text(encoding="utf-8") for kind in ("html", "md"))


def without_data_uris(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)


def html_section(page: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}">.*?</table>', page, re.S)
    assert match, f"no table {table_id!r} in the page"
    return match.group(0)


def md_section(text: str, heading: str) -> str:
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {heading!r} in the markdown"
    return match.group(1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])


# --- files ----------------------------------------------------------------------------------


def test_writes_both_reports_and_both_plots(rendered):
    paths = rendered["paths"]
    assert set(paths) >= {"md", "html", "learning_curves", "primary_metric"}
    assert paths["md"].endswith("report.md") and paths["html"].endswith("report.html")
    for key in ("learning_curves", "primary_metric"):
        assert paths[key].endswith(f"plots/{key}.png")
        with open(paths[key], "rb") as f:
            width, height = png_size(f.read())
        assert 400 <= width <= 3000 and 250 <= height <= 2000


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


def test_markdown_links_the_plots(rendered):
    assert "(plots/learning_curves.png)" in rendered["md"]
    assert "(plots/primary_metric.png)" in rendered["md"]


# --- verdict first --------------------------------------------------------------------------


def test_verdicts_and_claims_come_before_the_arms_table(rendered, summary):
    page = rendered["html"]
    table_at = page.index('<table id="arms-table">')
    for claim in summary["claims"]:
        outcome = claim["verdict"]["outcome"]
        badge = re.search(rf'<span class="badge"[^>]*>{outcome}</span>', page)
        assert badge and badge.start() < table_at
        words = report.inline_html(claim["text"])
        assert page.index(words) < table_at
        assert page.index(report.inline_html(claim["verdict"]["reason"])) < table_at
    md = rendered["md"]
    for claim in summary["claims"]:
        assert md.index(claim["verdict"]["outcome"].upper()) < md.index("## Arms")


def test_overall_verdict_and_hypothesis_come_first(rendered, summary):
    page, md = rendered["html"], rendered["md"]
    headline = page.index('class="card headline refuted"')
    assert headline < page.index('class="card claim')
    assert page.index(report.inline_html(summary["hypothesis"])) < page.index('class="card claim')
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


def test_badges_are_coloured_by_outcome(rendered):
    page = rendered["html"]
    green, _ = report.OUTCOME_COLORS["supported"]
    red, _ = report.OUTCOME_COLORS["refuted"]
    assert f'class="card claim supported" style="border-color: {green}' in page
    assert f'class="card claim refuted" style="border-color: {red}' in page
    assert f'class="card headline refuted" style="border-color: {red}' in page


def test_inconclusive_claim_and_no_claims(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["claims"][0]["verdict"] = {"outcome": "inconclusive", "reason": "not significant: ..."}
    page, _ = render(tmp_path / "a", s)
    amber, _ = report.OUTCOME_COLORS["inconclusive"]
    assert f'class="card claim inconclusive" style="border-color: {amber}' in page

    s["claims"] = []
    page, md = render(tmp_path / "b", s)
    assert "No claims were declared" in page and "No claims were declared" in md


# --- the arms table -------------------------------------------------------------------------


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
        report.fmt_signed(c["difference"]),
        report.fmt_percent(c["relative_change"]),
        report.fmt_p(c["welch_p"]),
        report.fmt_p(mamba["holm_p"]),
        report.fmt_p(c["mann_whitney_p"]),
        report.fmt_number(c["cohens_d"], 3),
    ):
        assert f">{expected}<" in row
    final = summary["arms"]["mamba"]["metrics"][METRIC]["final"]
    half = (final["t_ci"][1] - final["t_ci"][0]) / 2
    assert f"{final['mean']:.4g} ± {half:.4g}" in row


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
        assert f"<td>{report.arm_label(summary, arm)}</td>" in table
    assert "<td>attention (baseline)</td>" in table
    assert "eval/loss" in md_section(rendered["md"], "Other metrics")


# --- compute, provenance, failures ----------------------------------------------------------


def test_compute_is_readable(rendered, summary):
    table = html_section(rendered["html"], "compute-table")
    total = summary["compute"]
    assert report.fmt_large(total["flops"]) in table
    assert report.fmt_duration(total["wall_seconds"]) in table
    assert "Total" in table


def test_provenance_lists_commits_datasets_hashes_overrides_and_seeds(rendered, summary):
    md = md_section(rendered["md"], "Provenance")
    prov = summary["provenance"]
    assert prov["commits"][0] in md
    assert prov["datasets"]["mqar"] in md
    assert "--config.train.steps=600" in md
    assert "0, 1, 2" in md
    for arm, full_hash in prov["config_hashes"].items():
        assert full_hash[: report.HASH_CHARS] in md and arm in md
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


def test_no_failed_runs_says_none(tmp_path, summary):
    s = copy.deepcopy(summary)
    s["failed_runs"] = []
    _, md = render(tmp_path, s)
    assert md_section(md, "Failed runs").strip() == "none"


def test_minimal_summary_renders(tmp_path):
    s = {"study": "bare", "metric": METRIC, "baseline": "a", "arms": {"a": {}, "b": {}}}
    page, _ = render(tmp_path, s)
    assert "<td>a (baseline)</td>" in page and "<td>b</td>" in page


# --- formatting -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "p, expected", [(0.0123, "0.012"), (3.1e-5, "3.1e-05"), (0.5, "0.5"), (None, "—")]
)
def test_p_values(p, expected):
    assert report.fmt_p(p) == expected


@pytest.mark.parametrize(
    "value, expected", [(1.2e12, "1.2e12"), (7372800, "7.37e6"), (1800, "1,800"), (None, "—")]
)
def test_large_numbers(value, expected):
    assert report.fmt_large(value) == expected


@pytest.mark.parametrize(
    "seconds, expected", [(45.23, "45.2s"), (200, "3m 20s"), (7500, "2h 05m"), (math.nan, "—")]
)
def test_durations(seconds, expected):
    assert report.fmt_duration(seconds) == expected


def test_metrics_show_four_significant_digits():
    assert report.fmt_number(0.912345) == "0.9123"
    assert report.fmt_number(float("nan")) == "—"
    assert report.mean_pm({"n": 3, "mean": 0.5, "t_ci": [0.4, 0.6]}) == "0.5 ± 0.1"
