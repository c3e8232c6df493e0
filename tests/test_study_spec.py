"""Specifications for runtime/study_spec.py: what a study file may declare, checked before
anything runs; each mistake is one line naming what is wrong (a UsageError).

Blocks: a study with BLOCK_BY compares an arm only with its own block's baseline.
"""

from __future__ import annotations

import pytest

from experiments import mad_tasks, mqar_mixers
from launch import study as study_cli
from runtime.errors import UsageError
from runtime.study_spec import load_study

# Two tasks x two mixers, blocked by task.
ARMS = {
    "attention-recall": {"model.mixer": "attention", "data.name": "recall"},
    "mamba-recall": {"model.mixer": "mamba", "data.name": "recall"},
    "attention-copy": {"model.mixer": "attention", "data.name": "copy"},
    "mamba-copy": {"model.mixer": "mamba", "data.name": "copy"},
}
BLOCKED = {
    "ARMS": ARMS,
    "BLOCK_BY": "data.name",
    "BASELINE": {"recall": "attention-recall", "copy": "attention-copy"},
    "SEEDS": 3,
    "METRIC": "eval/accuracy",
    "HIGHER_IS_BETTER": True,
    "HYPOTHESIS": "Mamba copies as well as attention.",
    "CLAIMS": [("mamba-copy", "matches", "attention-copy", 0.05)],
}


class Source(str):
    """A value written into the study file as this Python source, not as its repr."""

    def __repr__(self) -> str:
        return str(self)


def study_file(tmp_path, **changes) -> str:
    declared = {k: v for k, v in {**BLOCKED, **changes}.items() if v is not None}
    path = tmp_path / "study.py"
    path.write_text("".join(f"{name} = {value!r}\n" for name, value in declared.items()))
    return str(path)


def load_error(tmp_path, **changes) -> str:
    with pytest.raises(UsageError) as error:
        load_study(study_file(tmp_path, **changes))
    message = str(error.value)
    assert "\n" not in message
    return message


def test_a_blocked_study_gives_each_arm_its_blocks_baseline(tmp_path):
    spec = load_study(study_file(tmp_path))
    assert spec.block_by == "data.name" and spec.baseline is None
    assert spec.baselines == {"recall": "attention-recall", "copy": "attention-copy"}
    assert spec.baseline_of("mamba-copy") == "attention-copy"
    assert spec.baseline_of("attention-recall") == "attention-recall"
    (claim,) = spec.claims
    assert (claim.relation, claim.margin) == ("matches", 0.05)
    assert claim.text == "arm `mamba-copy` matches arm `attention-copy` within ±0.05"


def test_a_study_without_blocks_has_one_baseline(tmp_path):
    spec = load_study(study_file(tmp_path, BLOCK_BY=None, BASELINE="attention-recall", CLAIMS=[]))
    assert spec.block_by is None and spec.baseline == "attention-recall"
    assert all(spec.baseline_of(arm) == "attention-recall" for arm in ARMS)


def test_the_mad_study_blocks_by_task_with_attention_as_each_tasks_baseline():
    spec = load_study(mad_tasks.__file__)
    assert spec.baselines == {task: f"attention-{task}" for task in mad_tasks.TASKS}
    for arm in spec.arms:
        assert spec.baseline_of(arm) == f"attention-{arm.split('-', 1)[1]}"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"BASELINE": "attention-recall"},
            "with BLOCK_BY, BASELINE maps each block (a value of 'data.name') to its baseline "
            "arm, e.g. {'recall': <arm>}; got 'attention-recall'",
        ),
        (
            {"BLOCK_BY": None},
            "BASELINE maps blocks to baselines but the study declares no BLOCK_BY",
        ),
        (
            {"BLOCK_BY": "data.nmae"},
            "BLOCK_BY 'data.nmae' is not a key any arm sets (did you mean 'data.name'?); "
            "the arms set: data.name, model.mixer",
        ),
        (
            {"ARMS": {**ARMS, "gla-copy": {"model.mixer": "gla"}}},
            "arm 'gla-copy' does not set BLOCK_BY key 'data.name'",
        ),
        (
            {"BASELINE": {"recall": "attention-recall"}},
            "block 'copy' (data.name) has no baseline in BASELINE; its arms: attention-copy, "
            "mamba-copy",
        ),
        (
            {"BASELINE": {**BLOCKED["BASELINE"], "sort": "attention-sort"}},
            "BASELINE names block 'sort', which no arm is in; blocks (data.name): recall, copy",
        ),
        (
            {"BASELINE": {"recall": "attention-recall", "copy": "atention-copy"}},
            "BASELINE of block 'copy' is 'atention-copy', not an arm (did you mean "
            "'attention-copy'?)",
        ),
        (
            {"BASELINE": {"recall": "attention-recall", "copy": "attention-recall"}},
            "BASELINE of block 'copy' is arm 'attention-recall', which is in block 'recall'",
        ),
        (
            {"CLAIMS": [("mamba-copy", "beats", "attention-recall")]},
            "claim ('mamba-copy', 'beats', 'attention-recall') compares arms of different "
            "blocks (data.name 'copy' vs 'recall'); a claim compares arms of one block",
        ),
    ],
)
def test_blocks_are_checked(tmp_path, changes, message):
    assert message in load_error(tmp_path, **changes)


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (("mamba-copy", "matches", "attention-copy"), "must be (arm, relation, arm) with"),
        (("mamba-copy", "beats", "attention-copy", 0.05), "or (arm, 'matches', arm, margin)"),
        (("mamba-copy", "equals", "attention-copy", 0.05), "must be (arm, relation, arm) with"),
        (("mamba-copy", "matches", "attention-copy", 0), "the margin of 'matches' must be a"),
        (("mamba-copy", "matches", "attention-copy", "5%"), "> 0 in the metric's units, got '5%'"),
    ],
)
def test_claims_take_a_margin_exactly_when_they_claim_no_difference(tmp_path, claim, message):
    assert message in load_error(tmp_path, CLAIMS=[claim])


# --- claims on how often arms solve -----------------------------------------------------------


def test_solve_rate_claims_compare_two_arms_or_hold_one_to_a_rate(tmp_path):
    claims = [
        ("mamba-copy", "solves more often than", "attention-copy"),
        ("mamba-recall", "solves less often than", 0.5),
    ]
    spec = load_study(study_file(tmp_path, SOLVED_AT=0.9, CLAIMS=claims))
    assert spec.solved_at == 0.9
    two_arms, one_arm = spec.claims
    assert (two_arms.other, two_arms.rate) == ("attention-copy", None)
    assert two_arms.text == "arm `mamba-copy` solves more often than arm `attention-copy`"
    assert (one_arm.other, one_arm.rate) == (None, 0.5)
    assert one_arm.text == "arm `mamba-recall` solves in fewer than 50% of seeds"


def test_the_mqar_study_counts_the_seeds_that_reach_0_9():
    spec = load_study(mqar_mixers.__file__)
    assert spec.solved_at == mqar_mixers.SOLVED_AT == 0.9
    relations = {(c.candidate, c.relation, c.other) for c in spec.claims}
    assert ("deltanet", "solves more often than", "mamba2") in relations
    assert all(c.candidate in mqar_mixers.MAIN_ARMS for c in spec.claims)
    assert all(c.other in mqar_mixers.MAIN_ARMS for c in spec.claims)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"CLAIMS": [("mamba-copy", "solves more often than", "attention-copy")]},
            "counts the seeds that solve, but the study declares no SOLVED_AT",
        ),
        ({"SOLVED_AT": "90%"}, "SOLVED_AT must be a finite number, the final METRIC value"),
        ({"SOLVED_AT": True}, "SOLVED_AT must be a finite number"),
        ({"SOLVED_AT": Source('float("nan")')}, "SOLVED_AT must be a finite number"),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba-copy", "solves more often than", 1.0)]},
            "a rate to solve more or less often than must be a fraction of seeds strictly "
            "between 0 and 1, got 1.0",
        ),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba-copy", "solves less often than", 0)]},
            "strictly between 0 and 1, got 0",
        ),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba-copy", "solves more often than", "mamba")]},
            "claim names arm 'mamba'; valid: attention-recall, mamba-recall, attention-copy",
        ),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba", "solves more often than", 0.5)]},
            "claim names arm 'mamba'; valid:",
        ),
        (
            {
                "SOLVED_AT": 0.9,
                "CLAIMS": [("mamba-copy", "solves more often than", "attention-recall")],
            },
            "compares arms of different blocks (data.name 'copy' vs 'recall')",
        ),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba-copy", "solves more often than", "mamba-copy")]},
            "compares arm 'mamba-copy' with itself",
        ),
        (
            {"SOLVED_AT": 0.9, "CLAIMS": [("mamba-copy", "solves", 0.9)]},
            "or (arm, 'solves more often than' | 'solves less often than', arm or rate)",
        ),
        (
            {
                "SOLVED_AT": 0.9,
                "CLAIMS": [("mamba-copy", "solves more often than", "attention-copy", 0.9)],
            },
            "must be (arm, relation, arm) with",
        ),
    ],
)
def test_solve_rate_claims_are_checked(tmp_path, changes, message):
    assert message in load_error(tmp_path, **changes)


def test_launch_study_stops_on_a_bad_solve_rate_claim_with_one_line_before_any_run(
    tmp_path, capsys
):
    path = study_file(tmp_path, CLAIMS=[("mamba-copy", "solves more often than", 0.5)])
    workdir = tmp_path / "study"
    with pytest.raises(SystemExit) as exit_:
        study_cli.main(["launch.study", path, f"--workdir={workdir}"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not workdir.exists()


def test_a_chosen_arm_brings_its_own_blocks_baseline():
    args, overrides = study_cli.parse_args(
        ["launch.study", mad_tasks.__file__, "--workdir=unused", "--arms=mamba-noisy_recall"]
    )
    _, arms, _, _ = study_cli.plan(args, overrides)
    assert arms == ["attention-noisy_recall", "mamba-noisy_recall"]
