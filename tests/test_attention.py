"""Attention against JAX's reference implementation, and GQA against MHA."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

from models.attention import DEFAULTS, Attention, attend


def qkv(heads: int, kv_heads: int, t: int = 11, d: int = 8):
    keys = jax.random.split(jax.random.key(0), 3)
    q = jax.random.normal(keys[0], (2, t, heads, d))
    k = jax.random.normal(keys[1], (2, t, kv_heads, d))
    v = jax.random.normal(keys[2], (2, t, kv_heads, d))
    return q, k, v


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2), (4, 1)], ids=["mha", "gqa", "mqa"])
@pytest.mark.parametrize("window", [0, 3])
def test_attend_matches_jax_dot_product_attention(heads, kv_heads, window):
    q, k, v = qkv(heads, kv_heads)
    positions = jnp.arange(q.shape[1])
    ours = attend(q, k, v, positions, positions, window)
    reference = jax.nn.dot_product_attention(
        q, k, v, is_causal=True, local_window_size=(window - 1, 0) if window else None
    )
    np.testing.assert_allclose(ours, reference, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("heads", "kv_heads"), [(4, 4), (4, 2)], ids=["mha", "gqa"])
def test_attend_gradients_match_jax_dot_product_attention(heads, kv_heads):
    """Normalising after the values are mixed gives the reference gradients (and holding the
    row maximum out of autodiff, which only saves backward work, changes none)."""
    q, k, v = qkv(heads, kv_heads)
    positions = jnp.arange(q.shape[1])
    weights = jax.random.normal(jax.random.key(3), q.shape)

    def loss(fn):
        return lambda q, k, v: jnp.sum(fn(q, k, v) * weights)

    ours = jax.grad(loss(lambda q, k, v: attend(q, k, v, positions, positions, 0)), (0, 1, 2))
    reference = jax.grad(
        loss(lambda q, k, v: jax.nn.dot_product_attention(q, k, v, is_causal=True)), (0, 1, 2)
    )
    for a, b in zip(ours(q, k, v), reference(q, k, v), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_attend_is_stable_when_scores_are_huge():
    """Scores around 1e4 overflow exp() unless the row maximum is subtracted first."""
    q, k, v = qkv(4, 4)
    positions = jnp.arange(q.shape[1])
    ours = attend(q * 100.0, k * 100.0, v, positions, positions, 0)
    reference = jax.nn.dot_product_attention(q * 100.0, k * 100.0, v, is_causal=True)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


def test_attend_bfloat16_matches_float32_within_bfloat16_precision():
    q, k, v = qkv(4, 2)
    positions = jnp.arange(q.shape[1])
    as_bf16 = [x.astype(jnp.bfloat16) for x in (q, k, v)]
    ours = attend(*as_bf16, positions, positions, 0)
    assert ours.dtype == jnp.bfloat16
    reference = attend(*[x.astype(jnp.float32) for x in as_bf16], positions, positions, 0)
    np.testing.assert_allclose(ours.astype(jnp.float32), reference, rtol=2e-2, atol=2e-2)


def mixer(num_kv_heads: int) -> Attention:
    options = FrozenDict({**DEFAULTS, "num_kv_heads": num_kv_heads})
    return Attention(d_model=32, num_heads=4, options=options, seq_len=9, rope=True)


def test_gqa_equals_mha_whose_key_and_value_heads_are_repeated():
    x = jax.random.normal(jax.random.key(1), (2, 9, 32))
    gqa = mixer(num_kv_heads=2)
    params = nn.unbox(gqa.init(jax.random.key(0), x)["params"])
    mha_params = dict(params)
    for name in ("key", "value"):  # kernel [d_model, kv_heads, head_dim]: repeat each kv head
        mha_params[name] = {"kernel": jnp.repeat(params[name]["kernel"], 2, axis=1)}
    np.testing.assert_allclose(
        mixer(num_kv_heads=4).apply({"params": mha_params}, x),
        gqa.apply({"params": params}, x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_num_kv_heads_must_divide_num_heads():
    with pytest.raises(ValueError, match="must divide"):
        Attention.param_count(32, 4, {**DEFAULTS, "num_kv_heads": 3}, 9, False)
