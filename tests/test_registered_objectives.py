"""A name a config can choose must train: every registered objective trains end to end.

Registry-wide: each name in `objectives.OBJECTIVES` needs a training case here (the experiment
whose data it scores); a newly registered objective without one fails the first test, so an
objective that cannot yet be fed (distillation before teacher logits are wired) stays unregistered.
"""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
import pytest

import objectives
from experiments import digits_mlp
from runtime import assembly
from runtime import mesh as mesh_lib
from tests.conftest import tiny_overrides


def tiny_sequence_config() -> ml_collections.ConfigDict:
    from experiments.mqar_mixers import get_config

    config = get_config()
    config.update_from_flattened_dict(tiny_overrides())
    return config


def tiny_image_config() -> ml_collections.ConfigDict:
    config = digits_mlp.get_config()
    config.model.d_model = 16
    config.train.batch_size = 16
    return config


# Objective -> the tiny config whose data it scores.
CASES = {
    "next_token_xent": tiny_sequence_config,
    "classification_xent": tiny_image_config,
}


def test_every_registered_objective_has_a_training_case():
    assert set(objectives.OBJECTIVES.names()) == set(CASES)


@pytest.mark.parametrize("name", objectives.OBJECTIVES.names())
def test_registered_objective_trains_end_to_end(name, data_dir):
    config = CASES[name]()
    config.objective.name = name
    config.data.dir = data_dir
    exp = assembly.build(config, jax.devices()[:1])
    state = assembly.fresh_state(exp)
    losses = []
    with exp.context():
        for _ in range(3):
            batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
            state, metrics = exp.train_step(state, batch)
            losses.append(float(metrics["loss"]))
    assert np.isfinite(losses).all(), losses
    assert int(state.step) == 3
