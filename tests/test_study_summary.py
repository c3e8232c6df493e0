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
from tests.fabricated_runs import (
    DROPS_VALUES,
    METRIC,
    drops_summary,
    mad_summary,
    mad_values,
    solves_summary,
)


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


# --- claims on how often arms solve ------------------------------------------------------------


@pytest.fixture(scope="module")
def solves(tmp_path_factory) -> dict:
    return solves_summary(tmp_path_factory.mktemp("study") / "solves")


def test_each_arm_counts_its_seeds_that_reach_solved_at_with_an_exact_interval(solves):
    assert solves["solved_at"] == 0.9
    counted = {
        arm: (entry["metrics"][METRIC]["solved"]["solved"], entry["metrics"][METRIC]["solved"]["n"])
        for arm, entry in solves["arms"].items()
    }
    assert counted == {"attention": (3, 3), "deltanet": (3, 3), "mamba2": (1, 3), "mamba": (0, 3)}
    interval = solves["arms"]["mamba2"]["metrics"][METRIC]["solved"]["ci"]
    assert interval == pytest.approx([1 - 0.975 ** (1 / 3), 0.9057007], abs=1e-6)


def test_solve_rate_claims_join_the_holm_family_with_their_one_sided_exact_p(solves):
    deltanet, mamba, attention = solves["claims"]
    welch = attention["comparison"]["welch_p"]
    # Boschloo: 3/3 vs 1/3 is 7/64; Mamba's 0/3 vs attention's 3/3 is 1 the claimed way.
    raw = [7 / 64, 1.0, welch]
    assert [deltanet["proportions"]["p"], mamba["proportions"]["p"]] == pytest.approx(raw[:2])
    assert [c["adjusted_p"] for c in solves["claims"]] == pytest.approx(stats.holm(raw).tolist())
    assert deltanet["text"] == (
        "arm `deltanet` solves more often than arm `mamba2` (a seed solves when its final "
        "eval/accuracy ≥ 0.9)"
    )
    assert deltanet["verdict"]["outcome"] == "inconclusive"
    assert "about 6 seeds per arm would support it" in deltanet["verdict"]["reason"]
    assert attention["verdict"]["outcome"] == "supported"


def test_a_solve_rate_claim_the_seeds_contradict_is_refuted_in_its_place_in_the_family(solves):
    mamba = solves["claims"][1]
    welch = solves["claims"][2]["comparison"]["welch_p"]
    # The claim stated the other way round (1/64), Holm-adjusted among the same three p-values.
    assert mamba["adjusted_p_opposite"] == pytest.approx(stats.holm([7 / 64, 1 / 64, welch])[1])
    assert mamba["adjusted_p_opposite"] < 0.05
    assert mamba["verdict"]["outcome"] == "refuted"
    assert solves["verdict"] == "refuted"


@pytest.mark.parametrize(
    ("seeds", "outcome", "p"), [(3, "inconclusive", 0.5**3), (5, "supported", 0.5**5)]
)
def test_a_claim_that_an_arm_solves_in_most_seeds_needs_five_seeds(tmp_path, seeds, outcome, p):
    summary = solves_summary(
        tmp_path / "study",
        claims=[("attention", "solves more often than", 0.5)],
        values={"attention": [0.99] * seeds},
    )
    (claim,) = summary["claims"]
    assert claim["text"].startswith("arm `attention` solves in more than 50% of seeds")
    assert claim["proportions"]["p"] == pytest.approx(p)
    assert claim["verdict"]["outcome"] == outcome
    if outcome == "inconclusive":
        assert "at 3 seeds no outcome can reach alpha 0.05" in claim["verdict"]["reason"]
        assert "about 5 seeds would support it" in claim["verdict"]["reason"]


def test_a_solve_rate_claim_on_an_arm_without_completed_seeds_is_not_tested(tmp_path):
    summary = solves_summary(
        tmp_path / "study",
        claims=[("deltanet", "solves more often than", "mamba2")],
        values={"attention": [0.99] * 3, "deltanet": [0.99] * 3, "mamba2": []},
    )
    (claim,) = summary["claims"]
    assert claim["adjusted_p"] is None and claim["proportions"] is None
    assert claim["verdict"] == {
        "outcome": "inconclusive",
        "reason": "not tested: mamba2 has no completed seed with the metric",
    }


# --- claims on differences of drops ------------------------------------------------------------


@pytest.fixture(scope="module")
def drops(tmp_path_factory) -> dict:
    return drops_summary(tmp_path_factory.mktemp("study") / "drops")


def test_quantized_runs_are_read_as_finished_runs(drops):
    assert drops["arms"]["mamba-int8"]["seeds_completed"] == 3
    assert drops["arms"]["mamba-int8"]["metrics"]["eval/bits_per_byte"]["final_seeds"] == [0, 1, 2]
    assert drops["comparisons"]["mamba-int8"]["baseline"] == "mamba-float"


def test_a_drop_claim_compares_the_pairs_per_seed_drops_by_welch(drops):
    (claim,) = drops["claims"]
    # Lower is better: a drop is how much higher the int8 arm's bits per byte is, seed by seed.
    assert claim["drops"]["mamba-int8"]["values"] == pytest.approx([0.05, 0.06, 0.07])
    assert claim["drops"]["attention-int8"]["values"] == pytest.approx([0.01, 0.012, 0.011])
    expected = stats.compare([0.01, 0.012, 0.011], [0.05, 0.06, 0.07], higher_is_better=True)
    assert claim["comparison"]["welch_p"] == pytest.approx(expected.welch_p)
    assert claim["verdict"]["outcome"] == "supported"
    assert claim["verdict"]["reason"].startswith("significantly larger drop")
    assert drops["verdict"] == "supported"


def test_unpaired_the_same_runs_show_no_difference_between_the_arms(drops):
    """Seed-to-seed spread hides the drop from the arm-against-baseline Welch test: the pairing
    by seed is what the drop claim adds."""
    assert drops["comparisons"]["mamba-int8"]["comparison"]["welch_p"] > 0.5


def test_a_drop_claim_joins_the_holm_family_and_can_be_refuted(tmp_path):
    claims = [
        (("attention-int8", "attention-float"), "drops more than", ("mamba-int8", "mamba-float")),
        (("mamba-int8", "mamba-float"), "drops less than", ("attention-int8", "attention-float")),
        ("mamba-int8", "beats", "mamba-float"),
    ]
    summary = drops_summary(tmp_path / "study", claims=claims)
    first, second, third = summary["claims"]
    raw = [c["comparison"]["welch_p"] for c in summary["claims"]]
    assert [c["adjusted_p"] for c in summary["claims"]] == pytest.approx(stats.holm(raw).tolist())
    assert first["verdict"]["outcome"] == second["verdict"]["outcome"] == "refuted"
    assert first["verdict"]["reason"].startswith("claimed larger, but significantly smaller")
    assert third["verdict"]["outcome"] == "inconclusive"
    assert summary["verdict"] == "refuted"


def test_a_drop_pairs_only_the_seeds_that_finished_in_both_arms(tmp_path):
    values = {**DROPS_VALUES, "mamba-int8": [1.95, None, 1.77]}  # seed 1 was never quantized
    summary = drops_summary(tmp_path / "study", values=values)
    (claim,) = summary["claims"]
    assert claim["drops"]["mamba-int8"]["seeds"] == [0, 2]
    assert claim["drops"]["mamba-int8"]["values"] == pytest.approx([0.05, 0.07])


def test_a_drop_claim_with_fewer_than_two_pairs_is_not_tested(tmp_path):
    values = {**DROPS_VALUES, "mamba-int8": [1.95]}
    (claim,) = drops_summary(tmp_path / "study", values=values)["claims"]
    assert claim["comparison"] is None and claim["adjusted_p"] is None
    assert claim["verdict"]["outcome"] == "inconclusive"
    assert claim["verdict"]["reason"].startswith("not tested: 1 seeds of mamba-int8")
