"""Specifications for runtime/study_spec.py: what a study file may declare, checked before
anything runs; each mistake is one line naming what is wrong (a UsageError).

Blocks: a study with BLOCK_BY compares an arm only with its own block's baseline.
"""

from __future__ import annotations

import pytest

from experiments import mad_tasks
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


def test_a_chosen_arm_brings_its_own_blocks_baseline():
    args, overrides = study_cli.parse_args(
        ["launch.study", mad_tasks.__file__, "--workdir=unused", "--arms=mamba-noisy_recall"]
    )
    _, arms, _, _ = study_cli.plan(args, overrides)
    assert arms == ["attention-noisy_recall", "mamba-noisy_recall"]
