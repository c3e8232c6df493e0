"""Every arm of the MQAR study trains through `launch.train`, sharded over 8 devices.

Registry-wide through the study file: an arm added to experiments/mqar_mixers.py is covered
without editing this file.
"""

from __future__ import annotations

import numpy as np
import pytest

from experiments import mqar_mixers
from tests.conftest import TINY, metrics, run_train

SHORT = [
    "--config.train.steps=4",
    "--config.train.log_every=2",
    "--config.eval.every=4",
    "--config.checkpoint.every=4",
    "--config.eval.num_batches=1",
]
MESH = ["--config.mesh.data=2", "--config.mesh.fsdp=2", "--config.mesh.tensor=2"]


@pytest.mark.parametrize("arm", list(mqar_mixers.ARMS))
def test_every_arm_trains_on_a_data_fsdp_tensor_mesh(data_dir, tmp_path, arm):
    # TINY's data and width, the arm's own depth and layer pattern.
    tiny = [a for a in TINY[1:] if not a.startswith("--config.model.num_layers")]
    base = [f"--config=experiments/mqar_mixers.py:{arm}", *tiny]
    result = run_train(data_dir, tmp_path / "run", *SHORT, *MESH, devices=8, base=base)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    assert [r["step"] for r in rows] == [2, 4]
    assert all(np.isfinite(r["train/loss"]) for r in rows)
    assert np.isfinite(rows[-1]["eval/loss"])
