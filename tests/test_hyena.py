"""Hyena: long convolutions against a plain loop, the filters' decay, both conv paths agree."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

from models.hyena import (
    DEFAULTS,
    Hyena,
    decay_window,
    direct_causal_conv,
    fft_causal_conv,
    positional_features,
)

T = 13


def reference_conv(u: np.ndarray, h: np.ndarray) -> np.ndarray:
    """y[b, t, c] = sum_{s <= t} h[t - s, c] u[b, s, c], float64 loops."""
    u, h = np.asarray(u, np.float64), np.asarray(h, np.float64)
    y = np.zeros_like(u)
    for t in range(u.shape[1]):
        for s in range(t + 1):
            y[:, t] += h[t - s] * u[:, s]
    return y


@pytest.mark.parametrize("length", [1, T, 64 + 1])
@pytest.mark.parametrize("conv", [fft_causal_conv, direct_causal_conv], ids=["fft", "direct"])
def test_long_convolution_matches_a_direct_causal_convolution(conv, length):
    u = jax.random.normal(jax.random.key(0), (2, length, 5))
    h = jax.random.normal(jax.random.key(1), (length, 5)) / np.sqrt(length)
    np.testing.assert_allclose(conv(u, h), reference_conv(u, h), rtol=1e-5, atol=1e-5)


def mixer(seq_len=T, dtype=jnp.float32, **options) -> Hyena:
    return Hyena(
        d_model=16,
        num_heads=4,
        options=FrozenDict({**DEFAULTS, **options}),
        seq_len=seq_len,
        dtype=dtype,
    )


def init(model: Hyena, length: int):
    return model.init(jax.random.key(0), jnp.zeros((1, length, model.d_model), model.dtype))


def filters(model: Hyena) -> jax.Array:
    variables = init(model, model.seq_len)
    return model.apply(variables, method=lambda m: m.filter())  # [N, L, d]


def test_positional_features_and_window_follow_safari():
    z = positional_features(8, 5)
    assert z.shape == (8, 5)
    np.testing.assert_allclose(z[:, 0], np.linspace(0, 1, 8))  # normalised time
    np.testing.assert_allclose(z[:, 1] ** 2 + z[:, 3] ** 2, 1.0, rtol=1e-6)  # cos / -sin pairs
    window = decay_window(100, 6, DEFAULTS)
    np.testing.assert_allclose(window[0], 1.0)
    # The slowest channel reaches `target` at slow_decay_pct of the length, the fastest at fast.
    np.testing.assert_allclose(window[-1, 0], 1e-2 ** (1 / 1.5), rtol=1e-5)
    np.testing.assert_allclose(window[-1, -1], 1e-2 ** (1 / 0.3), rtol=1e-5)
    assert np.all(np.diff(window, axis=0) <= 0)


def test_modulated_filters_decay_along_time():
    length = 128
    quarter = length // 4
    decayed = np.abs(filters(mixer(length)))
    flat = np.abs(filters(mixer(length, modulate=False)))
    assert decayed.shape == (1, length, 16)  # order 2: one filter
    early, late = decayed[:, :quarter].mean(), decayed[:, -quarter:].mean()
    assert late < 0.1 * early, (early, late)
    assert flat[:, -quarter:].mean() > 0.3 * flat[:, :quarter].mean()


def stepped(model: Hyena, variables, x: jax.Array, max_len: int) -> tuple[jax.Array, dict]:
    state = model.apply(variables, x.shape[0], max_len, method="init_state")
    outputs = []
    for t in range(x.shape[1]):
        positions = jnp.full(x.shape[0], t, jnp.int32)
        y, state = model.apply(variables, x[:, t], state, positions, method="step")
        outputs.append(y)
    return jnp.stack(outputs, axis=1), state


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("long_conv", ["fft", "direct"])
def test_recurrent_and_parallel_forms_agree(long_conv, order):
    model = mixer(long_conv=long_conv, order=order)
    x = jax.random.normal(jax.random.key(1), (2, T, 16))
    variables = init(model, T)
    parallel = model.apply(variables, x)
    outputs, state = stepped(model, variables, x, T)
    np.testing.assert_allclose(outputs, parallel, rtol=1e-5, atol=1e-5)
    # Prefill a prompt, then step: the same outputs and the same state.
    prompt = 6
    empty = model.apply(variables, 2, T, method="init_state")
    start, lengths = jnp.zeros(2, jnp.int32), jnp.full(2, prompt)
    out, prefilled = model.apply(variables, x[:, :prompt], empty, start, lengths, method="prefill")
    np.testing.assert_allclose(out, parallel[:, :prompt], rtol=1e-5, atol=1e-5)
    _, state_after_prompt = stepped(model, variables, x[:, :prompt], T)
    for a, b in zip(jax.tree.leaves(prefilled), jax.tree.leaves(state_after_prompt), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_fft_and_direct_paths_compute_the_same_mixer():
    x = jax.random.normal(jax.random.key(1), (2, T, 16))
    variables = init(mixer(), T)
    np.testing.assert_allclose(
        mixer(long_conv="fft").apply(variables, x),
        mixer(long_conv="direct").apply(variables, x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_shorter_inputs_use_the_first_filter_taps():
    model = mixer(seq_len=32)
    x = jax.random.normal(jax.random.key(1), (2, 32, 16))
    variables = init(model, 32)
    np.testing.assert_allclose(
        model.apply(variables, x[:, :T]), model.apply(variables, x)[:, :T], rtol=1e-5, atol=1e-5
    )
    with pytest.raises(ValueError, match="exceeds the filter length"):
        model.apply(variables, jnp.zeros((1, 33, 16)))


def test_parameters_counts_and_options():
    boxed = init(mixer(dtype=jnp.bfloat16), T)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        assert leaf.value.dtype == jnp.float32
        named = [n for n in leaf.names if n is not None]
        assert len(named) == len(set(named)), leaf.names
    real = sum(leaf.value.size for leaf in leaves)
    for use_bias in (False, True):  # use_bias does not apply to Hyena
        assert Hyena.param_count(16, 4, FrozenDict(DEFAULTS), T, use_bias) == real
    assert Hyena.state_size(16, 4, FrozenDict(DEFAULTS), T) == 16 * T + 3 * 2 * 16
    for bad in ({"emb_dim": 4}, {"emb_dim": 1}, {"long_conv": "fast"}, {"order": 1}):
        with pytest.raises(ValueError, match="hyena"):
            Hyena.param_count(16, 4, FrozenDict({**DEFAULTS, **bad}), T, False)
