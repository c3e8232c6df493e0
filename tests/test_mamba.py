"""Mamba: the parallel scan against a plain loop, the recurrent form against the parallel one."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

from models.mamba import DEFAULTS, Mamba, selective_scan, selective_step

T = 13


def scan_inputs(b=2, t=T, e=6, n=4, seed=0):
    keys = jax.random.split(jax.random.key(seed), 7)
    x = jax.random.normal(keys[0], (b, t, e))
    delta = jax.nn.softplus(jax.random.normal(keys[1], (b, t, e)) - 1.0)
    A = -jnp.exp(jax.random.normal(keys[2], (e, n)))
    B = jax.random.normal(keys[3], (b, t, n))
    C = jax.random.normal(keys[4], (b, t, n))
    D = jax.random.normal(keys[5], (e,))
    h0 = jax.random.normal(keys[6], (b, e, n))
    return x, delta, A, B, C, D, h0


def reference_scan(x, delta, A, B, C, D, h0=None):
    """selective_scan_ref semantics, one time step at a time in float64 numpy."""
    x, delta, A, B, C, D = (np.asarray(a, np.float64) for a in (x, delta, A, B, C, D))
    b, t, e = x.shape
    h = np.zeros((b, e, A.shape[1])) if h0 is None else np.asarray(h0, np.float64)
    ys = []
    for i in range(t):
        decay = np.exp(delta[:, i, :, None] * A)
        h = decay * h + delta[:, i, :, None] * B[:, i, None, :] * x[:, i, :, None]
        ys.append(np.einsum("ben,bn->be", h, C[:, i]) + D * x[:, i])
    return np.stack(ys, axis=1), h


@pytest.mark.parametrize("method", ["associative", "sequential"])
@pytest.mark.parametrize("with_initial_state", [False, True])
def test_both_scans_match_a_float64_loop(with_initial_state, method):
    x, delta, A, B, C, D, h0 = scan_inputs()
    h0 = h0 if with_initial_state else None
    y, final = selective_scan(x, delta, A, B, C, D, h0, method)
    y_ref, final_ref = reference_scan(x, delta, A, B, C, D, h0)
    np.testing.assert_allclose(y, y_ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(final, final_ref, rtol=1e-5, atol=1e-5)


def test_sequential_scan_gradients_equal_autodiff_of_stepping():
    """The sequential scan's own backward pass against autodiff through a scan of
    `selective_step`, for every input including A and the initial state."""
    x, delta, A, B, C, D, h0 = scan_inputs()

    def stepped(x, delta, A, B, C, D, h0):
        def body(h, xs):
            y, h = selective_step(*xs[:2], A, *xs[2:], D, h)
            return h, y

        xs = tuple(jnp.moveaxis(a, 1, 0) for a in (x, delta, B, C))
        h, y = jax.lax.scan(body, h0, xs)
        return jnp.moveaxis(y, 0, 1), h

    def loss(fn):
        def weighted(*args):
            y, h = fn(*args)
            return jnp.sum(y * jnp.cos(jnp.arange(y.size).reshape(y.shape))) + jnp.sum(jnp.sin(h))

        return jax.jit(jax.grad(weighted, argnums=tuple(range(7))))

    sequential = lambda x, delta, A, B, C, D, h0: selective_scan(  # noqa: E731
        x, delta, A, B, C, D, h0, "sequential"
    )
    args = (x, delta, A, B, C, D, h0)
    names = ["x", "delta", "A", "B", "C", "D", "h0"]
    grads, expected = loss(sequential)(*args), loss(stepped)(*args)
    for name, ours, autodiff in zip(names, grads, expected, strict=True):
        scale = float(jnp.max(jnp.abs(autodiff)))
        np.testing.assert_allclose(ours, autodiff, rtol=1e-5, atol=1e-5 * scale, err_msg=name)


def test_stepping_from_a_nonzero_state_equals_the_scan_from_that_state():
    x, delta, A, B, C, D, h0 = scan_inputs(seed=3)
    state, ys = h0, []
    for t in range(x.shape[1]):
        y, state = selective_step(x[:, t], delta[:, t], A, B[:, t], C[:, t], D, state)
        ys.append(y)
    y_scan, final_scan = selective_scan(x, delta, A, B, C, D, initial_state=h0)
    np.testing.assert_allclose(jnp.stack(ys, axis=1), y_scan, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(state, final_scan, rtol=1e-5, atol=1e-5)
    # Splitting the sequence and carrying the state across the split changes nothing.
    y1, h1 = selective_scan(x[:, :5], delta[:, :5], A, B[:, :5], C[:, :5], D, h0)
    y2, h2 = selective_scan(x[:, 5:], delta[:, 5:], A, B[:, 5:], C[:, 5:], D, h1)
    np.testing.assert_allclose(jnp.concatenate([y1, y2], axis=1), y_scan, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(h2, final_scan, rtol=1e-5, atol=1e-5)


def mixer(dtype=jnp.float32, **options) -> Mamba:
    return Mamba(
        d_model=32,
        num_heads=4,
        options=FrozenDict({**DEFAULTS, **options}),
        seq_len=T,
        dtype=dtype,
    )


def init(model: Mamba, x: jax.Array):
    return model.init(jax.random.key(0), x)


def test_initialisation_follows_the_reference():
    model = mixer()
    x = jax.random.normal(jax.random.key(1), (2, T, 32))
    params = nn.unbox(init(model, x)["params"])
    dt = jax.nn.softplus(params["dt_proj"]["bias"])
    assert params["dt_proj"]["bias"].shape == (64,)
    assert float(dt.min()) >= DEFAULTS["dt_min"] * (1 - 1e-4)
    assert float(dt.max()) <= DEFAULTS["dt_max"] * (1 + 1e-4)
    np.testing.assert_allclose(
        -jnp.exp(params["A_log"]), -jnp.tile(jnp.arange(1.0, 17.0), (64, 1)), rtol=1e-6
    )
    np.testing.assert_array_equal(params["D"], jnp.ones(64))
    assert params["dt_proj"]["kernel"].shape == (2, 64)  # dt_rank = ceil(32 / 16)
    assert float(jnp.abs(params["dt_proj"]["kernel"]).max()) <= 2**-0.5
    assert params["x_proj"]["kernel"].shape == (64, 2 + 2 * 16)


def test_every_parameter_is_float32_with_distinct_logical_names():
    x = jnp.zeros((1, T, 32))
    boxed = init(mixer(dtype=jnp.bfloat16), x)["params"]
    leaves = jax.tree.leaves(boxed, is_leaf=lambda v: isinstance(v, nn.LogicallyPartitioned))
    for leaf in leaves:
        assert isinstance(leaf, nn.LogicallyPartitioned)
        assert leaf.value.dtype == jnp.float32
        named = [n for n in leaf.names if n is not None]
        assert len(named) == len(set(named)), leaf.names
    y = mixer(dtype=jnp.bfloat16).apply({"params": nn.unbox(boxed)}, x.astype(jnp.bfloat16))
    assert y.dtype == jnp.bfloat16


def stepped(model: Mamba, params, x: jax.Array) -> jax.Array:
    state = model.apply(params, x.shape[0], x.shape[1], method="init_state")
    outputs = []
    for t in range(x.shape[1]):
        y, state = model.apply(params, x[:, t], state, jnp.full(x.shape[0], t), method="step")
        outputs.append(y)
    return jnp.stack(outputs, axis=1)


@pytest.mark.parametrize("scan", ["associative", "sequential"])
def test_parallel_and_recurrent_forms_agree_in_outputs_and_gradients(scan):
    model = mixer(d_state=8, dt_rank=3, scan=scan)
    x = jax.random.normal(jax.random.key(1), (2, T, 32))
    weights = jax.random.normal(jax.random.key(2), (2, T, 32))
    params = nn.unbox(init(model, x))

    def loss(params, form):
        y = model.apply(params, x) if form == "parallel" else stepped(model, params, x)
        return jnp.sum(weights * y)

    np.testing.assert_allclose(
        stepped(model, params, x), model.apply(params, x), rtol=1e-5, atol=1e-5
    )
    grads = {form: jax.grad(loss)(params, form) for form in ("parallel", "step")}
    for g_par, g_step in zip(
        jax.tree.leaves(grads["parallel"]), jax.tree.leaves(grads["step"]), strict=True
    ):
        scale = max(float(jnp.abs(g_par).max()), 1.0)
        np.testing.assert_allclose(g_step, g_par, rtol=1e-5, atol=1e-5 * scale)


def test_prefill_state_equals_the_state_after_stepping():
    model = mixer()
    x = jax.random.normal(jax.random.key(1), (2, 7, 32))
    params = nn.unbox(init(model, x))
    state = model.apply(params, 2, T, method="init_state")
    start, lengths = jnp.zeros(2, jnp.int32), jnp.full(2, x.shape[1])
    _, prefilled = model.apply(params, x, state, start, lengths, method="prefill")
    for t in range(x.shape[1]):
        _, state = model.apply(params, x[:, t], state, jnp.full(x.shape[0], t), method="step")
    for name in ("conv", "ssm"):
        np.testing.assert_allclose(prefilled[name], state[name], rtol=1e-5, atol=1e-6)


def test_analytic_counts():
    model = mixer()
    params = nn.unbox(init(model, jnp.zeros((1, T, 32)))["params"])
    real = sum(p.size for p in jax.tree.leaves(params))
    options = FrozenDict(DEFAULTS)
    assert Mamba.param_count(32, 4, options, T, use_bias=False) == real
    assert Mamba.param_count(32, 4, options, T, use_bias=True) == real  # use_bias does not apply
    assert Mamba.state_size(32, 4, options, T) == 64 * 16 + 3 * 64
    with pytest.raises(ValueError, match="dt_min"):
        Mamba.param_count(32, 4, FrozenDict({**DEFAULTS, "dt_min": 0.5}), T, False)
    with pytest.raises(ValueError, match="mamba.scan 'parallel'; valid: associative, sequential"):
        Mamba.param_count(32, 4, FrozenDict({**DEFAULTS, "scan": "parallel"}), T, False)
