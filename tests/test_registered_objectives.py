"""A name a config can choose must train: every registered objective trains end to end.

Registry-wide: each name in `objectives.OBJECTIVES` needs a training case here (the experiment
whose data it scores, and whatever else it is fed: distillation's teacher run); a newly registered
objective without one fails the first test, so an objective that cannot yet be fed stays
unregistered.
"""

from __future__ import annotations

from pathlib import Path

import jax
import ml_collections
import numpy as np
import pytest

import objectives
from experiments import digits_mlp
from runtime import assembly, checkpoint
from runtime import mesh as mesh_lib
from runtime.config import to_json
from runtime.workdir import claim_workdir
from tests.conftest import tiny_overrides


def tiny_sequence_config(request: pytest.FixtureRequest) -> ml_collections.ConfigDict:
    from experiments.mqar_mixers import get_config

    config = get_config()
    config.update_from_flattened_dict(tiny_overrides())
    return config


def tiny_image_config(request: pytest.FixtureRequest) -> ml_collections.ConfigDict:
    config = digits_mlp.get_config()
    config.model.d_model = 16
    config.train.batch_size = 16
    return config


def tiny_distillation_config(request: pytest.FixtureRequest) -> ml_collections.ConfigDict:
    """A wider student distilled from a freshly initialised tiny teacher run."""
    config = tiny_sequence_config(request)
    config.model.d_model = 48
    config.objective.distillation.teacher = str(request.getfixturevalue("teacher_run"))
    return config


# Objective -> the tiny config whose data it scores.
CASES = {
    "next_token_xent": tiny_sequence_config,
    "classification_xent": tiny_image_config,
    "distillation": tiny_distillation_config,
}


@pytest.fixture(scope="module")
def teacher_run(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory as launch.train leaves one (config.json, a sealed checkpoint) around an
    untrained tiny model: all a student needs of a teacher."""
    workdir = tmp_path_factory.mktemp("teacher") / "run"
    config = tiny_sequence_config(None)
    config.data.dir = data_dir
    exp = assembly.build(config, jax.devices()[:1])
    claim_workdir(str(workdir), to_json(config))
    checkpoints = checkpoint.Checkpoints(str(workdir), 1, async_save=False)
    try:
        checkpoints.save(1, assembly.fresh_state(exp), exp.train_iter)
    finally:
        checkpoints.close()
    return workdir


def test_every_registered_objective_has_a_training_case():
    assert set(objectives.OBJECTIVES.names()) == set(CASES)


@pytest.mark.parametrize("name", objectives.OBJECTIVES.names())
def test_registered_objective_trains_end_to_end(name, data_dir, request):
    config = CASES[name](request)
    config.objective.name = name
    config.data.dir = data_dir
    exp = assembly.build(config, jax.devices()[:1])
    state = assembly.fresh_state(exp)
    losses = []
    with exp.context():
        for _ in range(3):
            batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
            state, metrics = exp.train_step(state, batch, *exp.step_extras)
            losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all(), losses
    assert int(state.step) == 3
