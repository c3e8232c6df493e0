"""Shardings from logical specs: every sharded dimension must divide over its mesh axes, and
optimizer state is sharded like its parameter only where it has the parameter's shape."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import PartitionSpec as P

from experiments.base import DEFAULT_SHARDING_RULES, base_config
from runtime import mesh as mesh_lib
from runtime import optimizer as optimizer_lib
from runtime.errors import UsageError

TENSOR_2 = {"data": 1, "fsdp": 1, "tensor": 2, "expert": 1}


def shaped(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, jnp.float32)


def test_a_dimension_the_mesh_axis_does_not_divide_is_named_with_what_to_change():
    # One attention head (the MQAR default) under tensor=2: 'heads' maps to 'tensor'.
    params = {
        "embed": {"embedding": shaped(32, 64)},
        "mixer": {"out": {"kernel": shaped(1, 64, 64)}},
    }
    specs = {
        "embed": {"embedding": P("vocab", "embed")},
        "mixer": {"out": {"kernel": P("heads", "kv", "embed")}},
    }
    with pytest.raises(UsageError) as raised:
        mesh_lib.check_divisible(specs, params, TENSOR_2, DEFAULT_SHARDING_RULES)
    message = str(raised.value)
    assert "\n" not in message
    for fragment in (
        "mixer/out/kernel of shape (1, 64, 64)",
        "dimension 0 (logical axis 'heads', size 1)",
        "mesh axis 'tensor' of size 2",
        "model.num_heads",
        "mesh.tensor",
        "sharding.rules",
    ):
        assert fragment in message, message


def test_dimensions_that_divide_or_are_replicated_pass():
    params = {"out": {"kernel": shaped(2, 64, 64)}, "head": {"kernel": shaped(64, 4, 1)}}
    specs = {"out": {"kernel": P("heads", "kv", "embed")}, "head": {"kernel": P(None, "vocab")}}
    mesh_lib.check_divisible(specs, params, TENSOR_2, DEFAULT_SHARDING_RULES)
    # A mesh axis already taken by an earlier dimension leaves the later one replicated, as the
    # shardings themselves do: 'heads' of size 1 after 'vocab' took 'tensor' is fine.
    mesh_lib.check_divisible(
        {"w": P("vocab", "heads")}, {"w": shaped(4, 1)}, TENSOR_2, DEFAULT_SHARDING_RULES
    )
    # ...and replicating by rule is the documented way out.
    replicated = (("heads", None), *DEFAULT_SHARDING_RULES)
    mesh_lib.check_divisible({"w": P("heads", "kv")}, {"w": shaped(1, 64)}, TENSOR_2, replicated)


def test_a_dimension_over_several_mesh_axes_needs_their_product():
    rules = (("batch", ("data", "fsdp")),)
    sizes = {"data": 2, "fsdp": 3, "tensor": 1, "expert": 1}
    mesh_lib.check_divisible({"x": P("batch")}, {"x": shaped(12)}, sizes, rules)
    with pytest.raises(UsageError, match=r"mesh axes \('data', 'fsdp'\) of total size 6"):
        mesh_lib.check_divisible({"x": P("batch")}, {"x": shaped(8)}, sizes, rules)


def test_adafactor_factored_moments_are_replicated_not_given_the_parameter_spec():
    config = base_config()
    config.optimizer.name = "adafactor"
    tx = optimizer_lib.make_optimizer(config)
    # 128 x 256 is factored (a row and a column moment); the bias keeps a (1,) placeholder there.
    params = {"dense": {"kernel": shaped(128, 256), "bias": shaped(256)}}
    specs = {"dense": {"kernel": P("embed", "mlp"), "bias": P("mlp")}}
    opt_specs = mesh_lib.optimizer_state_specs(tx, jax.eval_shape(tx.init, params), specs, params)
    mesh = mesh_lib.make_mesh(config, jax.devices()[:1])
    shardings = mesh_lib.to_shardings(opt_specs, mesh, DEFAULT_SHARDING_RULES)
    # Before: the (128,) row moment got the kernel's 2-D spec and jit refused it.
    zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), params)
    state = jax.jit(tx.init, out_shardings=shardings)(zeros)
    seen = {
        jax.tree_util.keystr(path, simple=True, separator="/"): leaf.sharding.spec
        for path, leaf in jax.tree.leaves_with_path(state)
    }
    assert seen["1/0/v_row/dense/kernel"] == P()  # shape (128,): the kernel's rows
    assert seen["1/0/v_col/dense/kernel"] == P()  # shape (256,)
    assert seen["1/0/v/dense/bias"] == P("tensor")  # the bias's shape: like it ('mlp')


def test_a_rule_naming_an_unknown_mesh_axis_is_refused():
    config = base_config()
    config.sharding.rules = (("heads", "tensr"), *DEFAULT_SHARDING_RULES)
    with pytest.raises(UsageError, match="unknown mesh axis 'tensr'; valid: data, fsdp, tensor"):
        mesh_lib.logical_rules(config)
