"""Specifications for runtime/study_spec.py: what a study file may declare, checked before
anything runs; each mistake is one line naming what is wrong (a UsageError).

Blocks: a study with BLOCK_BY compares an arm only with its own block's baseline.
"""

from __future__ import annotations

import pytest

from experiments import compress_lm, mad_tasks, mqar_mixers
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


# --- derived arms (run_of) and claims on drops -------------------------------------------------

# The copy block's mixers, each with a quantized arm and a distilled student of its float run.
DERIVED = {
    "attention-copy": {"model.mixer": "attention", "data.name": "copy"},
    "attention-ptq": {
        "model.mixer": "attention",
        "data.name": "copy",
        "quant.mode": "ptq_int8",
        "quant.source": Source("run_of('attention-copy')"),
    },
    "attention-student": {
        "model.mixer": "attention",
        "data.name": "copy",
        "model.d_model": 32,
        "objective.distillation.teacher": Source("run_of('attention-copy')"),
    },
    "mamba-copy": {"model.mixer": "mamba", "data.name": "copy"},
    "mamba-ptq": {
        "model.mixer": "mamba",
        "data.name": "copy",
        "quant.mode": "ptq_int8",
        "quant.source": Source("run_of('mamba-copy')"),
    },
}
DROP_CLAIM = (("mamba-ptq", "mamba-copy"), "drops more than", ("attention-ptq", "attention-copy"))


def derived_file(tmp_path, arms=None, claims=(), **changes) -> str:
    """A study of DERIVED's arms blocked by mixer, with run_of imported as study files do."""
    path = study_file(
        tmp_path,
        ARMS=DERIVED if arms is None else arms,
        BLOCK_BY="model.mixer",
        BASELINE={"attention": "attention-copy", "mamba": "mamba-copy"},
        CLAIMS=list(claims),
        **changes,
    )
    written = tmp_path / "study.py"
    written.write_text("from runtime.study_spec import run_of\n" + written.read_text())
    return path


def derived_error(tmp_path, arms=None, claims=()) -> str:
    with pytest.raises(UsageError) as error:
        load_study(derived_file(tmp_path, arms, claims))
    assert "\n" not in str(error.value)
    return str(error.value)


def test_an_arm_may_need_another_arms_run_of_the_same_seed(tmp_path):
    spec = load_study(derived_file(tmp_path))
    assert spec.run_refs == {
        "attention-ptq": {"quant.source": "attention-copy"},
        "attention-student": {"objective.distillation.teacher": "attention-copy"},
        "mamba-ptq": {"quant.source": "mamba-copy"},
    }
    # A post-training mode makes the arm's run launch.quantize of its source's run.
    assert spec.quantized == {"attention-ptq": "attention-copy", "mamba-ptq": "mamba-copy"}
    assert spec.needs("attention-student") == ["attention-copy"]
    assert spec.needs("attention-copy") == []


def test_get_config_applies_an_arms_overrides_without_its_run_of_values():
    from runtime.study_spec import ArmRun, own_overrides

    overrides = {"model.mixer": "mamba", "objective.distillation.teacher": ArmRun("mamba-float")}
    assert own_overrides(overrides) == {"model.mixer": "mamba"}


@pytest.mark.parametrize(
    ("changed", "message"),
    [
        (
            {"attention-student": {"model.mixer": "attention", "quant.source": 0}},
            None,  # no run_of: an ordinary arm
        ),
        (
            {
                "attention-student": {
                    "model.mixer": "attention",
                    "objective.distillation.teacher": Source("run_of('atention-copy')"),
                }
            },
            "arm 'attention-student' sets 'objective.distillation.teacher' to "
            "run_of('atention-copy'), which is not an arm (did you mean 'attention-copy'?)",
        ),
        (
            {
                "attention-copy": {
                    "model.mixer": "attention",
                    "finetune.from_run": Source("run_of('attention-student')"),
                }
            },
            "arms need each other's runs in a cycle: attention-copy -> attention-student -> "
            "attention-copy",
        ),
        (
            {"mamba-ptq": {"model.mixer": "mamba", "quant.mode": "ptq_int8"}},
            "arm 'mamba-ptq' sets quant.mode='ptq_int8', so its run is launch.quantize of another "
            "arm's run: it must set 'quant.source' to run_of(<that arm>)",
        ),
        (
            {
                "mamba-ptq": {
                    "model.mixer": "mamba",
                    "model.d_model": 32,
                    "quant.mode": "ptq_int8",
                    "quant.source": Source("run_of('mamba-copy')"),
                }
            },
            "arm 'mamba-ptq' quantizes arm 'mamba-copy''s run, so it must set what 'mamba-copy' "
            "sets outside quant.*; they differ in model.d_model",
        ),
    ],
)
def test_derived_arms_are_checked_at_load(tmp_path, changed, message):
    arms = {
        arm: {k: v for k, v in overrides.items() if k != "data.name"}
        for arm, overrides in {**DERIVED, **changed}.items()
    }
    if message is None:
        assert load_study(derived_file(tmp_path, arms)).needs("attention-student") == []
    else:
        assert message in derived_error(tmp_path, arms)


def test_a_drop_claim_pairs_each_arm_with_the_arm_it_drops_from(tmp_path):
    (claim,) = load_study(derived_file(tmp_path, claims=[DROP_CLAIM])).claims
    assert (claim.candidate, claim.other, claim.drop_from) == (
        "mamba-ptq",
        "attention-ptq",
        ("mamba-copy", "attention-copy"),
    )
    assert claim.text == (
        "the drop from `mamba-copy` to `mamba-ptq` exceeds the drop from `attention-copy` to "
        "`attention-ptq`"
    )


@pytest.mark.parametrize(
    ("claim", "message"),
    [
        (
            (
                ("mamba-ptq", "attention-copy"),
                "drops more than",
                ("attention-ptq", "attention-copy"),
            ),
            "the pair ('mamba-ptq', 'attention-copy') spans blocks (model.mixer 'mamba' vs "
            "'attention'); a drop is within one block",
        ),
        (
            ("mamba-ptq", "drops more than", ("attention-ptq", "attention-copy")),
            "each side of 'drops more than' is a pair (arm, the arm it drops from), got "
            "'mamba-ptq'",
        ),
        (
            (("mamba-ptq", "mamba-cpy"), "drops less than", ("attention-ptq", "attention-copy")),
            "claim names arm 'mamba-cpy'",
        ),
        (
            (("mamba-ptq", "mamba-copy"), "drops more than", ("mamba-ptq", "mamba-copy")),
            "compares a drop with itself",
        ),
    ],
)
def test_drop_claims_are_checked(tmp_path, claim, message):
    assert message in derived_error(tmp_path, claims=[claim])


def test_launch_study_stops_on_a_cycle_of_derived_arms_with_one_line(tmp_path, capsys):
    arms = {
        "attention-copy": {
            "model.mixer": "attention",
            "objective.distillation.teacher": Source("run_of('attention-copy')"),
        },
        "mamba-copy": {"model.mixer": "mamba"},
    }
    workdir = tmp_path / "study"
    with pytest.raises(SystemExit) as exit_:
        study_cli.main(["launch.study", derived_file(tmp_path, arms), f"--workdir={workdir}"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "in a cycle: attention-copy -> attention-copy" in err
    assert not workdir.exists()


def test_slurm_refuses_a_study_with_derived_arms():
    args, overrides = study_cli.parse_args(
        ["launch.study", compress_lm.__file__, "--workdir=unused", "--backend=slurm"]
    )
    with pytest.raises(UsageError, match="one Slurm job array cannot order"):
        study_cli.plan(args, overrides)


def test_a_chosen_derived_arm_brings_the_arms_it_needs_first():
    args, overrides = study_cli.parse_args(
        ["launch.study", compress_lm.__file__, "--workdir=unused", "--arms=mamba-distilled"]
    )
    _, arms, _, _ = study_cli.plan(args, overrides)
    assert arms == ["mamba-float", "mamba-distilled"]


def test_the_compression_study_derives_each_mixers_arms_from_its_own_float_run():
    spec = load_study(compress_lm.__file__)
    assert spec.block_by == "model.mixer"
    for mixer in compress_lm.MIXERS:
        float_arm = f"{mixer}-float"
        assert spec.baselines[mixer] == float_arm
        for mode in ("ptq_int8_weights", "ptq_int8"):
            assert spec.quantized[f"{mixer}-{mode}"] == float_arm
        assert spec.run_refs[f"{mixer}-distilled"] == {"objective.distillation.teacher": float_arm}
        student = compress_lm.get_config(f"{mixer}-distilled")
        teacher = compress_lm.get_config(float_arm)
        assert 2 * student.model.d_model == teacher.model.d_model
        assert student.objective.distillation.teacher == ""  # launch.study fills it in
        pruned = compress_lm.get_config(f"{mixer}-pruned,quick")
        assert pruned.prune.sparsity == 0.5 and pruned.prune.end_step <= pruned.train.steps
    assert all(c.drop_from for c in spec.claims)
