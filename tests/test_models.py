"""Model tests: every registered family on a tiny config, then sequence-model properties."""

from __future__ import annotations

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import models
from experiments.base import base_config
from models import blocks
from registry import UnknownNameError

# One fake dataset spec that fits every family: each reads only the fields it needs.
SPEC = types.SimpleNamespace(vocab_size=37, seq_len=8, num_classes=10, image_shape=(6, 6, 1))
BATCH = 2


def tiny_config(name: str, **overrides) -> ml_collections.ConfigDict:
    """The real `model` section of the base config, made tiny; dotted keys reach sub-sections."""
    config = base_config().model
    config.update(dict(name=name, num_layers=2, d_model=32, num_heads=4, d_ff=64))
    config.update_from_flattened_dict(overrides)
    config.lock()
    return config


def random_inputs(model: nn.Module, seed: int = 0) -> jax.Array:
    """Random inputs of the shape and dtype the model's `example_inputs` declares."""
    example = model.example_inputs(BATCH)
    key = jax.random.key(seed)
    if jnp.issubdtype(example.dtype, jnp.integer):
        return jax.random.randint(key, example.shape, 0, SPEC.vocab_size, example.dtype)
    return jax.random.normal(key, example.shape, example.dtype)


def init(model: nn.Module, inputs: jax.Array):
    return model.init(jax.random.key(0), inputs, train=False)


RULES = (("batch", "data"), ("embed", None), ("mlp", None), ("heads", None))


def one_device_mesh():
    mesh = jax.sharding.Mesh(
        np.array(jax.devices()[:1]), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    return jax.set_mesh(mesh)


def is_spec(x) -> bool:
    return isinstance(x, jax.sharding.PartitionSpec)


# ---------------------------------------------------------------- registry-wide


@pytest.mark.parametrize("name", models.MODELS.names())
def test_forward_shapes_and_dtypes(name):
    model = models.build_model(tiny_config(name, dropout_rate=0.1), SPEC, jnp.float32)
    inputs = random_inputs(model)
    variables = init(model, inputs)
    forward = jax.jit(model.apply, static_argnames="train")
    for train in (False, True):
        logits = forward(variables, inputs, train=train, rngs={"dropout": jax.random.key(1)})
        assert logits.dtype == jnp.float32
        assert logits.shape[0] == BATCH
        assert logits.shape[-1] in (SPEC.vocab_size, SPEC.num_classes)
        assert np.all(np.isfinite(logits))
    assert models.count_params(variables["params"]) > 0


@pytest.mark.parametrize("name", models.MODELS.names())
def test_params_are_float32_and_logically_named(name):
    model = models.build_model(tiny_config(name), SPEC, jnp.bfloat16)
    # Shapes, dtypes and names only: no need to compute the values.
    variables = jax.eval_shape(functools.partial(init, model), model.example_inputs(BATCH))
    boxed = jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)
    )
    assert boxed
    for path, leaf in boxed:
        assert isinstance(leaf, nn.LogicallyPartitioned), jax.tree_util.keystr(path)
    specs = nn.get_partition_spec(variables)["params"]
    values = nn.unbox(variables)["params"]
    for (path, spec), value in zip(
        jax.tree_util.tree_leaves_with_path(specs, is_leaf=is_spec),
        jax.tree.leaves(values),
        strict=True,
    ):
        where = jax.tree_util.keystr(path)
        assert value.dtype == jnp.float32, where
        assert len(spec) == value.ndim, where
        assert all(isinstance(n, str) for n in spec), where


@pytest.mark.parametrize("name", models.MODELS.names())
def test_bfloat16_compute_is_close_to_float32(name):
    f32 = models.build_model(tiny_config(name), SPEC, jnp.float32)
    bf16 = models.build_model(tiny_config(name), SPEC, jnp.bfloat16)
    inputs = random_inputs(f32)
    variables = init(f32, inputs)
    ref = f32.apply(variables, inputs, train=False)
    out = bf16.apply(variables, inputs, train=False)
    assert out.dtype == jnp.float32
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(out, ref, atol=0.05 * max(scale, 1.0))


@pytest.mark.parametrize("name", models.MODELS.names())
def test_constraints_apply_under_rules_and_mesh(name):
    """The loop's context (rules + mesh + jit) must give the same logits as plain apply."""
    model = models.build_model(tiny_config(name), SPEC, jnp.float32)
    inputs = random_inputs(model)
    variables = init(model, inputs)
    ref = model.apply(variables, inputs, train=False)
    with one_device_mesh(), nn.logical_axis_rules(RULES):
        sharded = jax.jit(lambda x: model.init(jax.random.key(0), x, train=False))(inputs)
        out = jax.jit(lambda v, x: model.apply(v, x, train=False))(sharded, inputs)
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-5)


def test_constraint_is_noop_without_rules_and_real_with_them():
    x = jnp.arange(24.0).reshape(2, 3, 4)
    assert blocks.constrain(x) is x
    assert "sharding_constraint" not in jax.jit(blocks.constrain).lower(x).as_text()
    with one_device_mesh(), nn.logical_axis_rules(RULES):
        assert "sharding_constraint" in jax.jit(blocks.constrain).lower(x).as_text()


def test_unknown_model_name_lists_valid_names():
    with pytest.raises(UnknownNameError, match="lm") as info:
        models.build_model(tiny_config("no_such_model"), SPEC, jnp.float32)
    for name in models.MODELS.names():
        assert name in str(info.value)


def test_unknown_positional_lists_valid_options():
    with pytest.raises(ValueError, match="rope, learned, none"):
        models.build_model(tiny_config("lm", positional="alibi"), SPEC, jnp.float32)


def test_gated_short_conv_without_a_short_conv_is_rejected():
    with pytest.raises(ValueError, match="short_conv_gate needs a short conv"):
        models.build_model(tiny_config("lm", short_conv_gate=True), SPEC, jnp.float32)


def test_count_params_counts_scalars():
    params = {"a": jnp.zeros((3, 4)), "b": {"c": jnp.zeros((5,))}}
    assert models.count_params(params) == 17


# ---------------------------------------------------------------- the sequence model


@pytest.mark.parametrize("positional", ["rope", "learned", "none"])
@pytest.mark.parametrize("tie", [False, True])
def test_attention_lm_is_causal(positional, tie):
    config = tiny_config("lm", positional=positional, tie_embeddings=tie)
    model = models.build_model(config, SPEC, jnp.float32)
    tokens = random_inputs(model)
    variables = init(model, tokens)
    t = 5
    changed = tokens.at[:, t].set((tokens[:, t] + 1) % SPEC.vocab_size)
    before = model.apply(variables, tokens, train=False)
    after = model.apply(variables, changed, train=False)
    np.testing.assert_array_equal(before[:, :t], after[:, :t])
    assert not np.allclose(before[:, t], after[:, t])


def test_tied_embeddings_have_no_unembedding():
    model = models.build_model(tiny_config("lm", tie_embeddings=True), SPEC, jnp.float32)
    params = init(model, model.example_inputs(BATCH))["params"]
    assert "unembed" not in params and "embed" in params


def numpy_rope(x: np.ndarray, positions: np.ndarray, base: float = 10_000.0) -> np.ndarray:
    """Hand-written rotate-half RoPE: pair (i, i + D/2) is rotated by pos * base**(-2i/D)."""
    out = np.empty_like(x)
    half = x.shape[-1] // 2
    for t, pos in enumerate(positions):
        for i in range(half):
            theta = pos * base ** (-2.0 * i / x.shape[-1])
            c, s = np.cos(theta), np.sin(theta)
            a, b = x[t, ..., i], x[t, ..., i + half]
            out[t, ..., i] = a * c - b * s
            out[t, ..., i + half] = b * c + a * s
    return out


def test_rope_matches_rotate_half_reference():
    x = np.random.default_rng(0).normal(size=(6, 3, 8)).astype(np.float32)  # [T, H, D]
    positions = np.arange(6)
    np.testing.assert_allclose(
        blocks.apply_rope(jnp.asarray(x), jnp.asarray(positions)),
        numpy_rope(x, positions),
        rtol=1e-5,
        atol=1e-5,
    )


def test_rope_scores_depend_only_on_offset():
    rng = np.random.default_rng(1)
    q = jnp.asarray(rng.normal(size=(1, 1, 16)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(1, 1, 16)), jnp.float32)

    def score(m: int, n: int) -> float:
        qm = blocks.apply_rope(q, jnp.array([m]))
        kn = blocks.apply_rope(k, jnp.array([n]))
        return float(jnp.sum(qm * kn))

    for m, n in [(3, 1), (7, 7), (2, 9)]:
        for shift in (1, 5, 40):
            assert score(m, n) == pytest.approx(score(m + shift, n + shift), rel=1e-4, abs=1e-4)
    assert score(3, 1) != pytest.approx(score(3, 2), rel=1e-3)


@pytest.mark.parametrize("policy", ["full", "dots", "dots_no_batch"])
@pytest.mark.parametrize("train", [False, True])
def test_remat_matches_plain(train, policy):
    # Rematerialisation trades memory for recomputation; it never changes a number.
    rate = 0.1 if train else 0.0
    plain = models.build_model(tiny_config("lm", dropout_rate=rate), SPEC, jnp.float32)
    remat = models.build_model(
        tiny_config("lm", dropout_rate=rate, remat=policy), SPEC, jnp.float32
    )
    tokens = random_inputs(plain)
    variables = init(plain, tokens)
    assert jax.tree.structure(variables) == jax.tree.structure(init(remat, tokens))
    rngs = {"dropout": jax.random.key(3)}

    def loss(model, v):
        return jnp.mean(model.apply(v, tokens, train=train, rngs=rngs) ** 2)

    np.testing.assert_allclose(
        remat.apply(variables, tokens, train=train, rngs=rngs),
        plain.apply(variables, tokens, train=train, rngs=rngs),
        rtol=1e-5,
        atol=1e-6,
    )
    grads_plain = jax.grad(lambda v: loss(plain, v))(variables)
    grads_remat = jax.grad(lambda v: loss(remat, v))(variables)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
        nn.unbox(grads_plain),
        nn.unbox(grads_remat),
    )


def test_an_unknown_remat_policy_lists_the_valid_ones():
    with pytest.raises(ValueError, match="valid: none, full, dots, dots_no_batch"):
        models.build_model(tiny_config("lm", remat="some"), SPEC, jnp.float32)
