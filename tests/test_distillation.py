"""Distillation, wired: `objective.name=distillation` with `objective.distillation.teacher=<run>`
trains a student of another mixer, width and depth against a trained teacher run, which it only
reads; the loss is the KL to the teacher's logits computed in the step; a distilled run resumes
bitwise; evaluation scores the student on the hard labels and needs no teacher."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest

import models
from runtime import assembly, checkpoint_seal
from runtime import mesh as mesh_lib
from runtime import teacher as teacher_lib
from runtime.errors import UsageError
from runtime.workdir import run_config
from tests.conftest import metrics, run_module, run_train
from tests.test_train_cli import assert_usage_error

pytestmark = pytest.mark.long(seconds=75)

STEPS = [
    "--config.train.steps=6",
    "--config.train.log_every=3",
    "--config.checkpoint.every=3",
    "--config.eval.every=6",
]
# The teacher is TINY's one-layer attention model at width 32; the student is two layers of
# linear attention at width 48.
STUDENT = [
    "--config.model.mixer=linear",
    "--config.model.d_model=48",
    "--config.model.num_layers=2",
    "--config.objective.name=distillation",
    "--config.objective.temperature=2.0",
    "--config.objective.alpha=0.5",
]


def file_digests(directory: Path) -> dict[str, str]:
    return {
        str(path.relative_to(directory)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.rglob("*"))
        if path.is_file()
    }


def saved_params(workdir: Path, step: int) -> dict[str, np.ndarray]:
    """A checkpoint's parameters as Orbax reads them, without archlab's code."""
    path = (workdir / "checkpoints" / str(step) / "state").resolve()
    with ocp.PyTreeCheckpointer() as checkpointer:
        state = checkpointer.restore(path)
    assert set(state) == {"step", "params", "opt_state", "rng"}  # a train state, nothing more
    return {k: np.asarray(v) for k, v in ocp.tree.to_flat_dict(state["params"], sep="/").items()}


def student_command(teacher: Path) -> list[str]:
    return [*STEPS, *STUDENT, f"--config.objective.distillation.teacher={teacher}"]


@pytest.fixture(scope="module")
def teacher(data_dir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A trained teacher run and the digest of every file in it, taken before any student."""
    workdir = tmp_path_factory.mktemp("teacher") / "run"
    result = run_train(data_dir, workdir, *STEPS)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, file_digests(workdir)


@pytest.fixture(scope="module")
def student(data_dir, teacher, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("student") / "run"
    result = run_train(data_dir, workdir, *student_command(teacher[0]))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_a_student_of_another_mixer_width_and_depth_distils_end_to_end(teacher, student):
    rows = metrics(student)
    train = [r for r in rows if "train/kl" in r]
    assert [r["step"] for r in train] == [3, 6]
    assert all(np.isfinite(r["train/kl"]) and r["train/kl"] > 0 for r in train)
    # The loss trained on mixes T^2 KL and the hard-label cross-entropy (alpha 0.5, T 2);
    # train/loss stays the cross-entropy, comparable with any other run's.
    for r in train:
        mixed = 0.5 * 4.0 * r["train/kl"] + 0.5 * r["train/loss"]
        assert r["train/total_loss"] == pytest.approx(mixed, rel=1e-5)
    assert "eval/accuracy" in rows[-1] and "eval/kl" not in rows[-1]

    record = json.loads((student / "manifest.json").read_text())
    assert record["teacher"] == {
        "workdir": str(teacher[0].resolve()),
        "step": 6,
        "checkpoint_sha256": checkpoint_seal.fingerprint(str(teacher[0] / "checkpoints" / "6")),
        "num_params": json.loads((teacher[0] / "manifest.json").read_text())["num_params"],
        "model": {
            "name": "lm",
            "mixer": "attention",
            "layer_pattern": "",
            "d_model": 32,
            "num_layers": 1,
        },
    }
    # The student's checkpoints hold the student alone: its own parameters, none of the teacher's.
    params = saved_params(student, 6)
    assert sum(p.size for p in params.values()) == record["num_params"]
    assert params["embed/embedding"].shape == (32, 48)
    layers = {key.split("/")[0] for key in params}
    assert layers == {"embed", "block_0", "block_1", "final_norm", "unembed"}


def test_the_teacher_run_is_left_bitwise_unchanged(teacher, student):
    workdir, before = teacher
    assert file_digests(workdir) == before


def test_a_distilled_run_resumes_bitwise(data_dir, teacher, student, tmp_path):
    """A student stopped after its step-3 checkpoint (its later checkpoint gone) and rerun
    ends bitwise where the uninterrupted one did."""
    resumed = tmp_path / "resumed"
    shutil.copytree(student, resumed)
    shutil.rmtree(resumed / "checkpoints" / "6")
    result = run_train(data_dir, resumed, *student_command(teacher[0]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at step 3" in result.stdout
    assert metrics(resumed) == metrics(student)
    a, b = saved_params(student, 6), saved_params(resumed, 6)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    attempts = json.loads((resumed / "manifest.json").read_text())["attempts"]
    assert [a["resumed_from_step"] for a in attempts] == [None, 3]


def test_a_student_on_a_sharded_mesh_distils_as_on_one_device(data_dir, teacher, student, tmp_path):
    """The teacher's parameters follow the student's sharding rules on its data x fsdp x tensor
    mesh, and the run's numbers stay those of one device."""
    sharded = tmp_path / "sharded"
    mesh = ["--config.mesh.fsdp=2", "--config.mesh.tensor=2"]
    result = run_train(data_dir, sharded, *student_command(teacher[0]), *mesh, devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    one, four = metrics(student), metrics(sharded)
    assert [r.keys() for r in one] == [r.keys() for r in four]
    for a, b in zip(one, four, strict=True):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5), (a["step"], key)


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def test_the_loss_is_the_kl_to_the_teachers_logits_and_the_teacher_stays_fixed(
    data_dir, teacher, student
):
    """With alpha 0 the step's loss is T^2 KL(teacher || student) at temperature T, from logits
    computed here by each model on the batch; the step leaves the teacher's parameters as its
    checkpoint has them, and evaluation scores the hard labels alone."""
    config = run_config(str(student))
    config.data.dir = data_dir
    config.objective.alpha = 0.0
    config.objective.temperature = 3.0
    exp = assembly.build(config, jax.devices()[:1])
    state = assembly.fresh_state(exp)
    student_params = jax.device_get(state.params)
    with exp.context():
        batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
    positions = batch["score_positions"]

    teacher_config = run_config(str(teacher[0]))
    teacher_model = models.build_model(
        teacher_config.model, assembly.data_shapes(teacher_config), jnp.float32
    )
    flat = saved_params(teacher[0], 6)
    teacher_params = ocp.tree.from_flat_dict(flat, sep="/")
    teacher_logits = teacher_model.apply(
        {"params": teacher_params}, batch["inputs"], train=False, positions=positions
    )
    student_logits = exp.model.apply(
        {"params": student_params}, batch["inputs"], train=False, positions=positions
    )
    log_p = np_log_softmax(np.asarray(teacher_logits, np.float64) / 3.0)
    log_q = np_log_softmax(np.asarray(student_logits, np.float64) / 3.0)
    mask = np.take_along_axis(np.asarray(batch["loss_mask"]), np.asarray(positions), axis=1)
    kl = ((np.exp(log_p) * (log_p - log_q)).sum(-1) * mask).sum() / mask.sum()

    with exp.context():
        _, step_metrics = exp.train_step(state, batch, *exp.step_extras)
        eval_metrics = exp.eval_step(student_params, batch)
    assert float(step_metrics["kl"]) == pytest.approx(kl, rel=1e-5)
    assert float(step_metrics["total_loss"]) == pytest.approx(9.0 * kl, rel=1e-5)

    after = {
        k: np.asarray(v)
        for k, v in ocp.tree.to_flat_dict(jax.device_get(exp.teacher.params), sep="/").items()
    }
    assert after.keys() == flat.keys()
    for key in flat:
        assert after[key].tobytes() == flat[key].tobytes(), key

    # Evaluation: the hard-label cross-entropy of the student, with no teacher term.
    assert "kl" not in eval_metrics
    targets = np.take_along_axis(np.asarray(batch["targets"]), np.asarray(positions), axis=1)
    log_probs = np_log_softmax(np.asarray(student_logits, np.float64))
    nll = -np.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    assert float(eval_metrics["loss"]) == pytest.approx((nll * mask).sum() / mask.sum(), rel=1e-5)


def test_a_resumed_student_reads_the_teacher_checkpoint_it_started_with(teacher):
    workdir = str(teacher[0])
    newest = teacher_lib.checkpoint_to_read(workdir, None)
    assert newest == (6, checkpoint_seal.fingerprint(os.path.join(workdir, "checkpoints", "6")))
    older = checkpoint_seal.fingerprint(os.path.join(workdir, "checkpoints", "3"))
    assert teacher_lib.checkpoint_to_read(workdir, {"step": 3, "checkpoint_sha256": older}) == (
        3,
        older,
    )
    with pytest.raises(
        UsageError,
        match="is not the one pinned .*a student resumes only from the teacher it started with",
    ):
        teacher_lib.checkpoint_to_read(workdir, {"step": 3, "checkpoint_sha256": "0" * 64})
    with pytest.raises(UsageError, match="no checkpoint at step 2 .*start a new --workdir"):
        teacher_lib.checkpoint_to_read(workdir, {"step": 2, "checkpoint_sha256": older})


def test_evaluating_a_distilled_student_needs_no_teacher(data_dir, student, tmp_path):
    """launch.evaluate scores the student on the hard labels even once its teacher is gone."""
    copy = tmp_path / "student"
    shutil.copytree(student, copy)
    config = json.loads((copy / "config.json").read_text())
    config["objective"]["distillation"]["teacher"] = str(tmp_path / "gone")
    (copy / "config.json").write_text(json.dumps(config))
    result = run_module(data_dir, "launch.evaluate", f"--workdir={copy}", "--suite=calibration")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((copy / "eval" / "summary.json").read_text())
    assert summary["step"] == 6 and 0 <= summary["accuracy"] <= 1


@pytest.mark.parametrize(
    ("problem", "fragments"),
    [
        ("missing", ["objective.distillation.teacher=", "is not a run directory"]),
        ("vocabulary", ["the teacher predicts 32 tokens", "has 64", "one vocabulary"]),
    ],
)
def test_a_teacher_that_cannot_teach_is_a_one_line_error(
    data_dir, teacher, tmp_path, problem, fragments
):
    if problem == "missing":
        overrides = student_command(tmp_path / "no_such_run")
    else:
        overrides = [*student_command(teacher[0]), "--config.data.mqar.vocab_size=64"]
    workdir = tmp_path / "run"
    assert_usage_error(run_train(data_dir, workdir, *overrides), *fragments)
    assert not workdir.exists(), "nothing is written before the teacher is known to be good"


def test_teacher_and_objective_go_together_and_need_a_checkpoint(data_dir, teacher, tmp_path):
    config = run_config(str(teacher[0]))
    config.data.dir = data_dir
    config.objective.name = "distillation"
    with pytest.raises(UsageError, match="needs objective.distillation.teacher="):
        assembly.check(config)
    config.objective.name = "next_token_xent"
    config.objective.distillation.teacher = str(teacher[0])
    with pytest.raises(UsageError, match="is set but objective 'next_token_xent' takes no"):
        assembly.check(config)
    untrained = tmp_path / "untrained"
    untrained.mkdir()
    shutil.copy(teacher[0] / "config.json", untrained / "config.json")
    config.objective.name = "distillation"
    config.objective.distillation.teacher = str(untrained)
    with pytest.raises(UsageError, match=r"teacher='.*untrained': run .* has no checkpoint"):
        assembly.build(config, jax.devices()[:1])
