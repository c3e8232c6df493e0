"""Linear attention, the gated linear attention family and the delta rule: the chunked form
against the recurrent one (outputs, final state, gradients) from a random initial state, under
weak and strong decay; the delta-rule scan against a numpy loop, and its chunked (WY) form against
the scan; the mixers' own options."""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import models
from models.delta_rule import chunked_delta_rule, delta_rule
from models.linear_attention import (
    DEFAULTS,
    TAYLOR,
    LinearAttention,
    chunk_states,
    chunked,
    l2_normalize,
    recurrent,
    retnet_log_decay,
    taylor_feature_map,
)

B, T, H, K, V = 2, 63, 3, 5, 4  # T=63: a ragged last chunk for every chunk size tested


def assert_rel(actual, expected, rtol=1e-5, what=""):
    actual, expected = np.asarray(actual), np.asarray(expected)
    assert np.all(np.isfinite(actual)), f"{what} non-finite values"
    scale = max(float(np.max(np.abs(expected))), 1e-30)
    error = float(np.max(np.abs(actual - expected))) / scale
    assert error <= rtol, f"{what} relative error {error:.1e} > {rtol:.0e}"


def inputs(log_gate: float, vector: bool, seed: int = 0):
    keys = jax.random.split(jax.random.key(seed), 5)
    q = jax.random.normal(keys[0], (B, T, H, K))
    k = jax.random.normal(keys[1], (B, T, H, K))
    v = jax.random.normal(keys[2], (B, T, H, V))
    gate_shape = (B, T, H, K) if vector else (B, T, H)
    # log-gates around `log_gate`, varying per position (and per key channel)
    g = log_gate * jax.random.uniform(keys[3], gate_shape, minval=0.5, maxval=1.5)
    state = jax.random.normal(keys[4], (B, H, K, V))
    return q, k, v, g, state


def grads_and_outputs(fn, args: tuple) -> tuple:
    """(gradients w.r.t. every input, (out, state)) of a loss that weighs all of fn's outputs
    and its final state; jitted, one compile per form instead of one per op."""

    def loss(*a):
        out, state = fn(*a)
        weights = jnp.cos(jnp.arange(out.size, dtype=jnp.float32)).reshape(out.shape)
        return jnp.sum(out * weights) + jnp.sum(jnp.sin(state)), (out, state)

    return jax.jit(jax.grad(loss, tuple(range(len(args))), has_aux=True))(*args)


@pytest.mark.parametrize("chunk_size", [1, 8, 16, 64])
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("log_gate", [-1e-3, -20.0], ids=["weak", "strong"])
def test_chunked_equals_recurrent_with_gradients(log_gate, vector, chunk_size):
    args = inputs(log_gate, vector)
    grads_c, (out_c, state_c) = grads_and_outputs(lambda *a: chunked(*a, chunk_size), args)
    grads_r, (out_r, state_r) = grads_and_outputs(recurrent, args)
    assert_rel(out_c, out_r)
    assert_rel(state_c, state_r)
    for name, gc, gr in zip(["q", "k", "v", "log_gates", "state"], grads_c, grads_r, strict=True):
        assert np.all(np.isfinite(gc)), name
        assert_rel(gc, gr, what=f"d/d{name}")


@pytest.mark.parametrize("from_state", [False, True], ids=["from_zero", "from_a_state"])
@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
@pytest.mark.parametrize("log_gate", [-1e-3, -20.0], ids=["weak", "strong"])
def test_chunk_states_at_once_equal_the_scan_over_chunks(log_gate, vector, from_state, monkeypatch):
    """The two ways across chunks (a masked product for a few chunks, a scan for many) give the
    same states and gradients."""
    n = 5
    keys = jax.random.split(jax.random.key(1), 3)
    log_carry = log_gate * jax.random.uniform(
        keys[0], (B, H, n, K) if vector else (B, H, n), minval=0.5, maxval=1.5
    )
    writes = jax.random.normal(keys[1], (B, H, n, K, V))
    start = jax.random.normal(keys[2], (B, H, K, V)) if from_state else None

    def states(*args):
        return chunk_states(*args, start)

    at_once = grads_and_outputs(states, (log_carry, writes))
    monkeypatch.setattr("models.linear_attention.PARALLEL_CHUNKS", 0)
    scanned = grads_and_outputs(states, (log_carry, writes))
    for name, a, s in zip(["d/dlog_carry", "d/dwrites"], at_once[0], scanned[0], strict=True):
        assert_rel(a, s, what=name)
    for name, a, s in zip(["final state", "entering"], at_once[1], scanned[1], strict=True):
        assert_rel(a, s, what=name)


@pytest.mark.parametrize("vector", [False, True], ids=["scalar", "vector"])
def test_chunked_from_no_state_is_chunked_from_the_zero_state(vector):
    q, k, v, g, state = inputs(-0.1, vector)
    for chunk_size in (16, 64):
        out, final = chunked(q, k, v, g, None, chunk_size)
        out_zero, final_zero = chunked(q, k, v, g, jnp.zeros_like(state), chunk_size)
        assert_rel(out, out_zero)
        assert_rel(final, final_zero)


@pytest.mark.parametrize("chunk_size", [8, 64])
def test_chunked_with_the_taylor_kernel_equals_chunked_on_the_mapped_vectors(chunk_size):
    """Scores from q.k within chunks, feature space only across them: the same outputs, state
    and gradients as mapping q and k first."""
    q, k, v, g, _ = inputs(-0.1, vector=False)
    features = taylor_feature_map(q).shape[-1]
    state = jax.random.normal(jax.random.key(5), (B, H, features, V))
    kernel_form = lambda q, k, *a: chunked(q, k, *a, chunk_size, TAYLOR)  # noqa: E731
    mapped_form = lambda q, k, *a: chunked(  # noqa: E731
        taylor_feature_map(q), taylor_feature_map(k), *a, chunk_size
    )
    grads_k, (out_k, state_k) = grads_and_outputs(kernel_form, (q, k, v, g, state))
    grads_m, (out_m, state_m) = grads_and_outputs(mapped_form, (q, k, v, g, state))
    assert_rel(out_k, out_m)
    assert_rel(state_k, state_m)
    for name, gk, gm in zip(["q", "k", "v", "log_gates", "state"], grads_k, grads_m, strict=True):
        assert_rel(gk, gm, what=f"d/d{name}")


def test_strong_decay_forgets_the_past():
    q, k, v, g, state = inputs(-20.0, vector=False)
    out, _ = chunked(q, k, v, g, state, 16)
    # with gates ~e^-20, o_t is k_t.q_t v_t up to ~e^-10 relative terms
    expected = jnp.einsum("bthk,bthk->bth", q, k)[..., None] * v
    np.testing.assert_allclose(out, expected, rtol=1e-3, atol=1e-3)


def test_ungated_linear_attention_is_the_gated_recurrence_with_unit_gates():
    """`linear` with identity map and no normaliser is retnet/gla with log-gates forced to 0:
    the same pure function, against causal (q k^T) v computed directly."""
    q, k, v, _, _ = inputs(0.0, vector=False)
    zero_state = jnp.zeros((B, H, K, V))
    causal = jnp.tril(jnp.ones((T, T)))
    expected = jnp.einsum("ts,bthk,bshk,bshv->bthv", causal, q, k, v)
    for gates in (jnp.zeros((B, T, H)), jnp.zeros((B, T, H, K))):
        out, _ = chunked(q, k, v, gates, zero_state, 16)
        assert_rel(out, expected, 1e-5)

    mixer = LinearAttention(
        d_model=12,
        num_heads=3,
        seq_len=T,
        options=FrozenDict({**DEFAULTS, "feature_map": "identity", "normalize": False}),
    )
    x = jax.random.normal(jax.random.key(3), (B, T, 12))
    params = mixer.init(jax.random.key(0), x)
    y = mixer.apply(params, x)
    p = nn.unbox(params)["params"]
    q = jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"])
    k = jnp.einsum("btd,dhk->bthk", x, p["key"]["kernel"])
    v = jnp.einsum("btd,dhk->bthk", x, p["value"]["kernel"])
    o, _ = recurrent(q, k, v, jnp.zeros((B, T, 3)), jnp.zeros((B, 3, 4, 4)))
    assert_rel(y, jnp.einsum("bthv,hvd->btd", o, p["out"]["kernel"]), 1e-5)


def test_normalized_linear_attention_matches_the_quadratic_form():
    options = FrozenDict({**DEFAULTS, "feature_map": "elu", "normalize": True, "chunk_size": 8})
    mixer = LinearAttention(d_model=12, num_heads=3, seq_len=T, options=options)
    x = jax.random.normal(jax.random.key(3), (B, T, 12))
    params = mixer.init(jax.random.key(0), x)
    p = nn.unbox(params)["params"]
    q = jax.nn.elu(jnp.einsum("btd,dhk->bthk", x, p["query"]["kernel"])) + 1
    k = jax.nn.elu(jnp.einsum("btd,dhk->bthk", x, p["key"]["kernel"])) + 1
    v = jnp.einsum("btd,dhk->bthk", x, p["value"]["kernel"])
    scores = jnp.einsum("bthk,bshk->bhts", q, k) * jnp.tril(jnp.ones((T, T)))
    o = jnp.einsum("bhts,bshv->bthv", scores, v) / (
        scores.sum(-1).transpose(0, 2, 1)[..., None] + 1e-6
    )
    assert_rel(mixer.apply(params, x), jnp.einsum("bthv,hvd->btd", o, p["out"]["kernel"]))


def test_taylor_feature_map_is_the_second_order_expansion_of_exp():
    x, y = jax.random.normal(jax.random.key(0), (2, 7, 16))
    d = x.shape[-1]
    dot = jnp.sum(x * y, -1) / jnp.sqrt(d)
    phi = jnp.sum(taylor_feature_map(x) * taylor_feature_map(y), -1)
    np.testing.assert_allclose(phi, 1 + dot + dot**2 / 2, rtol=1e-5, atol=1e-5)
    assert taylor_feature_map(x).shape[-1] == 1 + d + d * d


def test_retnet_decays():
    gamma = np.exp(np.asarray(retnet_log_decay(4)))
    np.testing.assert_allclose(gamma, 1 - 2.0 ** (-5 - np.arange(4)), rtol=1e-6)


def delta_reference(q, k, v, beta, log_alpha, state):
    """A plain numpy loop in the papers' layout: S (V x K), S_t = a S (I - b k k^T) + b v k^T."""
    q, k, v, beta, alpha = (np.asarray(a, np.float64) for a in (q, k, v, beta, np.exp(log_alpha)))
    s = np.swapaxes(np.asarray(state, np.float64), -1, -2).copy()  # [B, H, V, K]
    out = np.zeros(v.shape)
    eye = np.eye(k.shape[-1])
    for b in range(q.shape[0]):
        for h in range(q.shape[2]):
            for t in range(q.shape[1]):
                kt, bt = k[b, t, h], beta[b, t, h]
                s[b, h] = alpha[b, t, h] * s[b, h] @ (eye - bt * np.outer(kt, kt)) + bt * np.outer(
                    v[b, t, h], kt
                )
                out[b, t, h] = s[b, h] @ q[b, t, h]
    return out, np.swapaxes(s, -1, -2)


@pytest.mark.parametrize("gated", [False, True], ids=["deltanet", "gated_deltanet"])
def test_delta_rule_scan_matches_a_numpy_loop(gated):
    keys = jax.random.split(jax.random.key(1), 6)
    q = l2_normalize(jax.random.normal(keys[0], (B, 17, H, K)))
    k = l2_normalize(jax.random.normal(keys[1], (B, 17, H, K)))
    v = jax.random.normal(keys[2], (B, 17, H, V))
    beta = jax.nn.sigmoid(jax.random.normal(keys[3], (B, 17, H)))
    log_alpha = -jax.random.uniform(keys[4], (B, 17, H)) if gated else jnp.zeros((B, 17, H))
    state = jax.random.normal(keys[5], (B, H, K, V))
    out, final = delta_rule(q, k, v, beta, log_alpha, state)
    out_ref, final_ref = delta_reference(q, k, v, beta, log_alpha, state)
    assert_rel(out, out_ref)
    assert_rel(final, final_ref)


def test_delta_rule_with_beta_one_stores_the_latest_value_for_a_repeated_key():
    k = l2_normalize(jax.random.normal(jax.random.key(0), (1, 1, 1, K)))
    k = jnp.repeat(k, 3, axis=1)
    v = jax.random.normal(jax.random.key(1), (1, 3, 1, V))
    out, _ = delta_rule(k, k, v, jnp.ones((1, 3, 1)), jnp.zeros((1, 3, 1)), jnp.zeros((1, 1, K, V)))
    np.testing.assert_allclose(out[0, :, 0], v[0, :, 0], rtol=1e-5, atol=1e-5)


def delta_inputs(length: int, log_alpha_range: tuple[float, float], seed: int = 1):
    """Unit q and k, beta in (0, 1), log_alpha uniform in the range per position and head, and a
    random nonzero initial state: (q, k, v, beta, log_alpha, state)."""
    keys = jax.random.split(jax.random.key(seed), 6)
    q = l2_normalize(jax.random.normal(keys[0], (B, length, H, K)))
    k = l2_normalize(jax.random.normal(keys[1], (B, length, H, K)))
    v = jax.random.normal(keys[2], (B, length, H, V))
    beta = jax.nn.sigmoid(jax.random.normal(keys[3], (B, length, H)))
    low, high = log_alpha_range
    log_alpha = jax.random.uniform(keys[4], (B, length, H), minval=low, maxval=high)
    state = jax.random.normal(keys[5], (B, H, K, V))
    return q, k, v, beta, log_alpha, state


DECAYS = {"deltanet": (0.0, 0.0), "gated-weak": (-0.015, -0.005), "gated-strong": (-20.0, -5.0)}


# Ragged last chunks at T 63 and 13; chunk 1 is the step itself, 64 one chunk longer than T.
@pytest.mark.parametrize(("length", "chunk_size"), [(63, 1), (63, 16), (63, 64), (13, 4)])
@pytest.mark.parametrize("decay", list(DECAYS))
def test_chunked_delta_rule_equals_the_scan_with_gradients(decay, length, chunk_size):
    args = delta_inputs(length, DECAYS[decay])
    chunked_form = lambda *a: chunked_delta_rule(*a, chunk_size)  # noqa: E731
    grads_c, (out_c, state_c) = grads_and_outputs(chunked_form, args)
    grads_s, (out_s, state_s) = grads_and_outputs(delta_rule, args)
    assert_rel(out_c, out_s, what="out")
    assert_rel(state_c, state_s, what="final state")
    names = ["q", "k", "v", "beta", "log_alpha", "state"]
    for name, gc, gs in zip(names, grads_c, grads_s, strict=True):
        assert_rel(gc, gs, what=f"d/d{name}")  # also finite


def test_chunked_delta_rule_under_strong_decay_keeps_only_the_latest_association():
    # with a_t ~ e^-20 the state entering each step is gone: S_t = b_t k_t v_t^T, so
    # o_t = b_t (q_t.k_t) v_t, within and across chunks
    q, k, v, beta, log_alpha, state = delta_inputs(63, (-20.0, -20.0))
    out, _ = chunked_delta_rule(q, k, v, beta, log_alpha, state, 16)
    expected = (beta * jnp.einsum("bthk,bthk->bth", q, k))[..., None] * v
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


MIXER_NAMES = ["linear", "retnet", "mamba2", "gla", "deltanet", "gated_deltanet"]


def build(name: str, **options):
    cls = models.MIXERS.get(name)
    opts = FrozenDict({**models.CONFIG_SECTIONS.get(name), **options})
    return cls(d_model=24, num_heads=3, options=opts, seq_len=T)


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("linear", {"feature_map": "taylor", "feature_dim": 4}),
        (
            "linear",
            {"feature_map": "relu", "normalize": False, "output_norm": True, "output_gate": True},
        ),
        ("gla", {"expand_k": 0.5, "expand_v": 2.0, "output_norm": True, "chunk_size": 7}),
        ("retnet", {"output_gate": False, "chunk_size": 64}),
        ("mamba2", {"output_norm": True}),
        (
            "mamba2",
            {"dt_scales_input": False, "qk_activation": "identity", "v_activation": "identity"},
        ),
        ("gla", {"qk_activation": "silu", "v_activation": "silu"}),
        ("retnet", {"qk_norm": "l2"}),
        ("gated_deltanet", {"expand_v": 2.0, "output_gate": False, "chunk_size": 8}),
        ("deltanet", {"qk_activation": "identity"}),
    ],
    ids=[
        "taylor",
        "relu-unnormalized-head",
        "gla-expand",
        "retnet-nogate",
        "mamba2-norm",
        "mamba2-gate-only",
        "gla-silu",
        "retnet-l2-qk",
        "gdn-expand",
        "deltanet-no-qk-activation",
    ],
)
def test_options_keep_forms_agreeing_and_counts_exact(name, options):
    mixer = build(name, **options)
    x = jax.random.normal(jax.random.key(2), (B, T, 24))
    params = mixer.init(jax.random.key(0), x)
    full = mixer.apply(params, x)
    prompt = 40
    empty = mixer.apply(params, B, T, method="init_state")
    start, lengths = jnp.zeros(B, jnp.int32), jnp.full(B, prompt)
    out, state = mixer.apply(params, x[:, :prompt], empty, start, lengths, method="prefill")
    assert_rel(out, full[:, :prompt])
    step = jax.jit(functools.partial(mixer.apply, method="step"))
    for t in range(prompt, T):
        y, state = step(params, x[:, t], state, jnp.full(B, t, jnp.int32))
        assert_rel(y, full[:, t])
    cls = type(mixer)
    for use_bias in (False, True):
        m = cls(d_model=24, num_heads=3, options=mixer.options, seq_len=T, use_bias=use_bias)
        count = models.count_params(jax.eval_shape(m.init, jax.random.key(0), x)["params"])
        assert count == cls.param_count(24, 3, mixer.options, T, use_bias)
    assert cls.state_size(24, 3, mixer.options, T) == np.prod(state.shape[1:])


@pytest.mark.parametrize("name", MIXER_NAMES)
def test_strong_decay_and_long_input_stay_finite_with_gradients(name):
    mixer = build(name)
    x = 30.0 * jax.random.normal(jax.random.key(4), (B, T, 24))
    params = mixer.init(jax.random.key(0), x)
    grads = jax.jit(jax.grad(lambda p: jnp.sum(mixer.apply(p, x) ** 2)))(params)
    assert all(np.all(np.isfinite(g)) for g in jax.tree.leaves(grads))


def test_unknown_feature_map_is_rejected():
    with pytest.raises(ValueError, match="feature_map"):
        LinearAttention.param_count(24, 3, {**DEFAULTS, "feature_map": "softmax"}, T, False)


def test_unknown_qk_activation_is_rejected_with_the_valid_ones():
    options = {**models.CONFIG_SECTIONS.get("deltanet"), "qk_activation": "gelu"}
    with pytest.raises(ValueError, match="qk_activation 'gelu'; valid: silu, identity"):
        models.MIXERS.get("deltanet").param_count(24, 3, options, T, False)


def test_qk_norm_l2_gives_unit_keys_and_queries_scaled_by_key_dim():
    x = jax.random.normal(jax.random.key(2), (B, T, 24))
    gla = build("gla", qk_norm="l2")
    params = nn.unbox(gla.init(jax.random.key(0), x))
    q, k, _, _ = gla.apply(params, x, method="_inputs")
    np.testing.assert_allclose(jnp.linalg.norm(k, axis=-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(jnp.linalg.norm(q, axis=-1), 8**-0.5, rtol=1e-5)
    with pytest.raises(ValueError, match="gla.qk_norm 'l1'; valid: none, l2"):
        models.MIXERS.get("gla").param_count(24, 3, {**gla.options, "qk_norm": "l1"}, T, False)


def test_mamba2_writes_dt_k_v_with_its_silus():
    """Mamba-2's discretization: the step dt that sets the decay also scales the write, and
    x, B, C (v, k, q) pass through a SiLU."""
    x = jax.random.normal(jax.random.key(2), (B, T, 24))
    mamba2 = build("mamba2")
    gate_only = build(
        "mamba2", dt_scales_input=False, qk_activation="identity", v_activation="identity"
    )
    params = nn.unbox(mamba2.init(jax.random.key(0), x))
    q, k, v, log_gate = mamba2.apply(params, x, method="_inputs")
    q0, k0, v0, log_gate0 = gate_only.apply(params, x, method="_inputs")
    dt, _ = mamba2.apply(params, x, method=lambda m, x: m.decay.step_and_log_gate(x))
    np.testing.assert_allclose(v, jax.nn.silu(v0) * dt[..., None], rtol=1e-6)
    np.testing.assert_allclose(q, jax.nn.silu(q0 * 8**0.5) * 8**-0.5, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(k, jax.nn.silu(k0), rtol=1e-6)
    np.testing.assert_allclose(log_gate, log_gate0)
    np.testing.assert_allclose(log_gate, -dt * jnp.exp(params["params"]["decay"]["A_log"]))


def test_unknown_v_activation_is_rejected_with_the_valid_ones():
    options = {**models.CONFIG_SECTIONS.get("mamba2"), "v_activation": "gelu"}
    with pytest.raises(ValueError, match="mamba2.v_activation 'gelu'; valid: silu, identity"):
        models.MIXERS.get("mamba2").param_count(24, 3, options, T, False)
