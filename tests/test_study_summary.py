"""Specifications for `analysis.study.summarize_study`, over run directories written by hand
(tests/fabricated_runs.py): what a study's summary compares, and how its claims are judged.

The MAD study (experiments/mad_tasks.py) blocks its arms by task: every arm is compared with
attention on its own task, and with nothing on another task.
"""

from __future__ import annotations

import numpy as np
import pytest

from analysis import stats
from experiments.mad_tasks import MEMORIZATION_MARGIN, TASKS
from tests.fabricated_runs import mad_summary, mad_values


@pytest.fixture(scope="module")
def summary(tmp_path_factory) -> dict:
    return mad_summary(tmp_path_factory.mktemp("study") / "mad")


def test_the_mad_study_compares_each_arm_only_with_attention_on_its_own_task(summary):
    assert summary["block_by"] == "data.name" and summary["baseline"] is None
    comparisons = summary["comparisons"]
    assert set(comparisons) == {a for a in summary["arms"] if not a.startswith("attention-")}
    for arm, entry in comparisons.items():
        task = arm.split("-", 1)[1]
        baseline = f"attention-{task}"
        assert entry["baseline"] == baseline
        c = entry["comparison"]
        assert c["baseline_mean"] == pytest.approx(np.mean(mad_values(baseline)))
        assert c["candidate_mean"] == pytest.approx(np.mean(mad_values(arm)))
        assert c["n_baseline"] == c["n_candidate"] == 3


def test_holm_runs_over_every_comparison_made_all_blocks_together(summary):
    comparisons = summary["comparisons"]
    assert len(comparisons) == 5 * len(TASKS)
    raw = [e["comparison"]["welch_p"] for e in comparisons.values()]
    assert [e["holm_p"] for e in comparisons.values()] == pytest.approx(stats.holm(raw).tolist())


def test_the_summary_lists_each_block_with_its_baseline_first(summary):
    assert list(summary["blocks"]) == list(TASKS)
    for task, block in summary["blocks"].items():
        assert block["baseline"] == f"attention-{task}"
        assert block["arms"][0] == block["baseline"]
        assert sorted(block["arms"]) == sorted(a for a in summary["arms"] if a.endswith(task))


def test_memorization_is_claimed_equal_and_decided_by_tost(summary):
    claims = {c["relation"]: c for c in summary["claims"]}
    matches = claims["matches"]
    assert (matches["candidate"], matches["other"]) == (
        "mamba-memorization",
        "attention-memorization",
    )
    assert matches["margin"] == MEMORIZATION_MARGIN
    expected = stats.equivalence_test(
        mad_values("attention-memorization"), mad_values("mamba-memorization"), MEMORIZATION_MARGIN
    )
    assert matches["equivalence"]["p"] == pytest.approx(expected.p)
    # One family of claims: the recall claims' Welch p-values and the TOST p together.
    raw = [
        c["equivalence"]["p"] if c["relation"] == "matches" else c["comparison"]["welch_p"]
        for c in summary["claims"]
    ]
    assert [c["adjusted_p"] for c in summary["claims"]] == pytest.approx(stats.holm(raw).tolist())
    assert matches["verdict"]["outcome"] == "supported"
    assert "equivalent within ±0.0625" in matches["verdict"]["reason"]
    assert summary["verdict"] == "supported"


def test_equivalence_that_noisy_seeds_cannot_show_is_inconclusive(tmp_path):
    def noisy_memorization(arm: str) -> list[float]:
        if arm == "mamba-memorization":
            return [0.80, 0.99, 0.90]  # the same mean as attention's, far noisier
        return [0.85, 0.95, 0.90] if arm == "attention-memorization" else mad_values(arm)

    summary = mad_summary(tmp_path / "mad", noisy_memorization)
    (matches,) = [c for c in summary["claims"] if c["relation"] == "matches"]
    assert matches["comparison"]["welch_p"] > 0.5  # no difference found ...
    assert matches["verdict"]["outcome"] == "inconclusive"  # ... is not equivalence shown
    assert "equivalence not shown" in matches["verdict"]["reason"]
    assert summary["verdict"] == "inconclusive"
