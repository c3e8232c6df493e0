"""The pieces of launch/ that are pure functions: config checks, mesh shapes, optimizers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from experiments.base import base_config
from runtime import optimizer as optimizer_lib
from runtime.config import apply_overrides, check_override_keys, differing_keys, flatten
from runtime.errors import UsageError
from runtime.mesh import mesh_shape


def test_override_of_unknown_key_suggests_the_closest_one():
    config = base_config()
    check_override_keys(config, ["--config.model.d_model=8", "--config.train=x"])
    with pytest.raises(UsageError, match="unknown config key 'train.stpes'.*'train.steps'"):
        check_override_keys(config, ["--config.train.stpes=3"])


def test_overrides_from_a_file_are_checked_and_name_their_entry():
    config = base_config()
    apply_overrides(config, {"optimizer.learning_rate": 0.5, "data.mqar.seq_len": 32}, "ARMS['a']")
    assert (config.optimizer.learning_rate, config.data.mqar.seq_len) == (0.5, 32)
    with pytest.raises(
        UsageError,
        match=r"unknown config key 'optimizer.learnig_rate' in ARMS\['b'\]"
        r" \(did you mean 'optimizer.learning_rate'\?\)",
    ):
        apply_overrides(config, {"optimizer.learnig_rate": 0.1}, "ARMS['b']")
    with pytest.raises(UsageError, match=r"SETTINGS\['hard'\]: .*learning_rate"):
        apply_overrides(config, {"optimizer.learning_rate": "fast"}, "SETTINGS['hard']")
    assert config.optimizer.learning_rate == 0.5 and "learnig_rate" not in config.optimizer


def test_differing_keys_are_named_by_their_dotted_path():
    assert differing_keys({"a": {"b": 1, "c": 2}}, {"a": {"b": 1, "c": 3}, "d": 0}) == ["a.c", "d"]


def test_flatten_keeps_tuples_as_values():
    flat = flatten(base_config())
    assert flat["model.d_model"] == 64
    assert isinstance(flat["sharding.rules"], tuple)


class Mesh:  # the `mesh` section of a config, as attributes
    def __init__(self, data: int, fsdp: int, tensor: int, expert: int = 1):
        self.mesh = {"data": data, "fsdp": fsdp, "tensor": tensor, "expert": expert}


@pytest.mark.parametrize(
    ("sizes", "devices", "shape"),
    [
        ((-1, 1, 1), 8, (8, 1, 1, 1)),
        ((2, 2, 2), 8, (2, 2, 2, 1)),
        ((2, -1, 2), 8, (2, 2, 2, 1)),
        ((-1, 1, 1), 1, (1, 1, 1, 1)),
        ((2, 1, 2, -1), 8, (2, 1, 2, 2)),
    ],
)
def test_mesh_shape_resolves_minus_one(sizes, devices, shape):
    assert mesh_shape(Mesh(*sizes), devices) == shape


@pytest.mark.parametrize(
    ("sizes", "message"),
    [
        ((3, 1, 1), "needs 3 devices but 8"),
        ((-1, 3, 1), "does not divide"),
        ((-1, -1, 1), "at most one -1"),
        ((0, 1, 1), "positive"),
    ],
)
def test_impossible_meshes_are_refused(sizes, message):
    with pytest.raises(UsageError, match=message):
        mesh_shape(Mesh(*sizes), 8)


def test_weight_decay_skips_vectors_ssm_decay_rates_and_embeddings_unless_asked():
    matrix, vector = np.zeros((2, 2)), np.zeros(2)
    params = {
        "embed": {"embedding": matrix},
        "block": {"norm": {"scale": vector}, "dense": {"kernel": matrix, "bias": vector}},
        "ssm": {"A_log": matrix, "D": vector},
    }
    mask = optimizer_lib.decay_mask(params, decay_embeddings=False)
    assert mask == {
        "embed": {"embedding": False},
        "block": {"norm": {"scale": False}, "dense": {"kernel": True, "bias": False}},
        "ssm": {"A_log": False, "D": False},
    }
    assert optimizer_lib.decay_mask(params, decay_embeddings=True)["embed"]["embedding"]


@pytest.mark.parametrize("name", optimizer_lib.OPTIMIZERS.names())
@pytest.mark.parametrize("schedule", optimizer_lib.SCHEDULES.names())
def test_every_optimizer_and_schedule_minimises_a_quadratic(name, schedule):
    config = base_config()
    config.optimizer.name = name
    config.optimizer.schedule = schedule
    config.optimizer.learning_rate = 0.05
    config.optimizer.warmup_steps = 5
    config.train.steps = 200
    tx = optimizer_lib.make_optimizer(config)
    params = {"dense": {"kernel": jnp.full((4, 4), 3.0), "bias": jnp.ones(4)}}
    loss = lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p))  # noqa: E731
    opt_state = tx.init(params)
    start = loss(params)
    for _ in range(200):
        updates, opt_state = tx.update(jax.grad(loss)(params), opt_state, params)
        params = optax.apply_updates(params, updates)
    assert loss(params) < 0.5 * start


def test_schedules_warm_up_then_end_at_the_requested_fraction():
    config = base_config()
    config.train.steps = 100
    config.optimizer.warmup_steps = 10
    config.optimizer.learning_rate = 1.0
    config.optimizer.end_lr_fraction = 0.1
    for name, end in [("cosine", 0.1), ("linear", 0.1), ("constant", 1.0)]:
        config.optimizer.schedule = name
        lr = optimizer_lib.learning_rate_schedule(config)
        assert float(lr(0)) == 0.0
        assert np.isclose(float(lr(10)), 1.0)
        assert np.isclose(float(lr(100)), end, atol=1e-6), name
