"""Every model family of the zoo trains sharded with the loss it has on one device.

Registry-wide through the study file: an arm added to experiments/mqar_mixers.py is covered
without editing this file. tests/sharded_losses.py runs every case in one process with 8 CPU
devices: the same first SGD steps on 1 device and on the mesh (data=2,fsdp=2,tensor=2; the MoE
arm also with its experts split over an expert axis), from the same parameters on the same
batches.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from tests.conftest import REPO, train_env
from tests.sharded_losses import SEQUENCE_CASES, VISION_CASES

pytestmark = pytest.mark.long(seconds=270)

CASES = [
    *[(case, "data=2,fsdp=2,tensor=2") for case in (*SEQUENCE_CASES, *VISION_CASES)],
    ("moe", "data=2,tensor=2,expert=2"),
]


@pytest.fixture(scope="module")
def all_losses(data_dir) -> dict:
    """Every case, computed in one process with 8 CPU devices."""
    result = subprocess.run(
        [sys.executable, "-m", "tests.sharded_losses", *(f"{c}@{m}" for c, m in CASES)],
        cwd=REPO,
        env=train_env(data_dir, devices=8),
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("case", "mesh"), CASES, ids=[f"{c}-{m}" for c, m in CASES])
def test_every_family_trains_sharded_with_its_single_device_loss(all_losses, case, mesh):
    losses = all_losses[f"{case}@{mesh}"]
    assert "error" not in losses, losses.get("error")
    single, sharded = np.array(losses["single"]), np.array(losses["sharded"])
    assert np.isfinite(single).all()
    # The bar DESIGN.md sets for sharded runs; the same data and init, only sum orders differ.
    np.testing.assert_allclose(sharded[:, 0], single[:, 0], rtol=1e-5, err_msg="loss")
    np.testing.assert_allclose(sharded[:, 1], single[:, 1], rtol=1e-5, err_msg="gradient norm")
