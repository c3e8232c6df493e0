"""Sharding changes where numbers are computed, not which numbers: meshes agree with 1 device."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import metrics, run_train

STEPS = [
    "--config.train.steps=20",
    "--config.train.log_every=1",
    "--config.eval.every=10",
    "--config.checkpoint.every=20",
    "--config.model.num_heads=2",
    "--config.model.d_ff=64",
]


def losses(workdir) -> np.ndarray:
    return np.array([r["train/loss"] for r in metrics(workdir)])


@pytest.fixture(scope="module")
def single_device(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one") / "run"
    result = run_train(data_dir, workdir, *STEPS, devices=1)
    assert result.returncode == 0, result.stderr[-3000:]
    return losses(workdir)


@pytest.mark.parametrize(
    "mesh",
    [
        ["--config.mesh.data=8"],
        ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"],
    ],
    ids=["data=8", "data=2,fsdp=2,tensor=2"],
)
def test_mesh_reproduces_single_device_loss_curve(data_dir, tmp_path, single_device, mesh):
    result = run_train(data_dir, tmp_path / "run", *STEPS, *mesh, devices=8)
    assert result.returncode == 0, result.stderr[-3000:]
    sharded = losses(tmp_path / "run")
    assert len(sharded) == len(single_device) == 20
    relative = np.abs(sharded - single_device) / np.abs(single_device)
    assert relative.max() <= 1e-5, relative
    # The curve must actually move, or agreement would prove nothing.
    assert single_device[-1] < single_device[0]


def test_gradient_accumulation_matches_one_big_batch(data_dir, tmp_path, single_device):
    result = run_train(data_dir, tmp_path / "run", *STEPS, "--config.train.grad_accum_steps=4")
    assert result.returncode == 0, result.stderr[-3000:]
    relative = np.abs(losses(tmp_path / "run") - single_device) / np.abs(single_device)
    assert relative.max() <= 1e-5, relative
