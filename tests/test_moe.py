"""The mixture-of-experts channel mixer: routing, capacity, aux losses, and the LM around it."""

from __future__ import annotations

import math
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import models
import objectives
from experiments.base import base_config
from models import moe
from models.channel import SwiGLU
from runtime import step as step_lib

D, F = 8, 16
T = 12
SPEC = types.SimpleNamespace(vocab_size=29, seq_len=T, num_classes=None, image_shape=None)


def moe_layer(use_bias: bool = False, dtype=jnp.float32, **options) -> moe.MoE:
    return moe.MoE(D, F, use_bias, {**moe.DEFAULTS, **options}, dtype)


def init(layer: nn.Module, x: jax.Array) -> dict:
    return nn.unbox(layer.init(jax.random.key(0), x))["params"]


def inputs(batch: int = 3, length: int = T, seed: int = 1) -> jax.Array:
    return jax.random.normal(jax.random.key(seed), (batch, length, D))


def apply(layer: moe.MoE, params: dict, x: jax.Array) -> tuple[jax.Array, dict]:
    y, state = layer.apply({"params": params}, x, mutable=["aux_loss"])
    return y, {k: float(sum(v)) for k, v in state["aux_loss"].items()}


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_swiglu(x, gate, up, down):
    g = x @ gate
    return (g / (1 + np.exp(-g)) * (x @ up)) @ down


# ---------------------------------------------------------------- the layer


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("capacity_factor", [0.0, 1.0])
def test_one_expert_top1_equals_dense_swiglu(use_bias, capacity_factor):
    layer = moe_layer(use_bias, num_experts=1, top_k=1, capacity_factor=capacity_factor)
    x = inputs()
    params = init(layer, x)
    experts = params["experts"]
    dense = SwiGLU(D, F, use_bias, None, jnp.float32)
    dense_params = {
        name: {"kernel": experts[name][0]}
        | ({"bias": experts[f"{name}_bias"][0] + 0.1} if use_bias else {})
        for name in ("gate", "up", "down")
    }
    if use_bias:  # non-zero biases, so that they are really checked
        for name in ("gate", "up", "down"):
            experts[f"{name}_bias"] = experts[f"{name}_bias"] + 0.1
    y, _ = apply(layer, params, x)
    expected = dense.apply({"params": dense_params}, x)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("use_bias", [False, True])
@pytest.mark.parametrize("num_experts,top_k", [(1, 1), (4, 2), (8, 1)])
def test_param_count_matches_the_formula(use_bias, num_experts, top_k):
    layer = moe_layer(use_bias, num_experts=num_experts, top_k=top_k)
    params = init(layer, inputs())
    expected = D * num_experts + num_experts * (3 * D * F + ((2 * F + D) if use_bias else 0))
    assert models.count_params(params) == expected
    options = {"num_experts": num_experts, "top_k": top_k}
    assert moe.MoE.param_count(D, F, use_bias, options) == expected
    assert moe.MoE.flops_per_token(D, F, options) == (2 * D * num_experts + top_k * 6 * D * F)


def test_expert_weights_carry_the_expert_axis_first():
    layer = moe_layer()
    boxed = layer.init(jax.random.key(0), inputs())["params"]
    for name in ("gate", "up", "down"):
        assert boxed["experts"][name].names[0] == "expert"
    assert boxed["router"]["kernel"].names == ("embed", "expert")


def test_aux_losses_match_numpy_on_a_fixed_routing():
    e, k = 4, 2
    layer = moe_layer(num_experts=e, top_k=k, load_balance_weight=0.5, router_z_weight=0.25)
    x = inputs(batch=2)
    params = init(layer, x)
    w = np.asarray(jax.random.normal(jax.random.key(7), (D, e)))
    params["router"]["kernel"] = jnp.asarray(w)
    _, aux = apply(layer, params, x)

    logits = np.asarray(x, np.float64) @ w  # [G, S, E]
    probs = np_softmax(logits)
    top = np.argsort(-probs, axis=-1)[..., :k]
    losses = []
    for g in range(x.shape[0]):
        chosen = np.zeros((T, e))
        for s in range(T):
            chosen[s, top[g, s]] = 1
        f, p = chosen.mean(0), probs[g].mean(0)
        losses.append(e * np.sum(f * p))
    lse = np.log(np.exp(logits).sum(-1))
    assert aux["load_balance"] == pytest.approx(0.5 * np.mean(losses), rel=1e-5)
    assert aux["router_z"] == pytest.approx(0.25 * np.mean(lse**2), rel=1e-5)


def test_load_balance_is_top_k_when_routing_is_uniform():
    # Each expert chosen by the same share of tokens, all probabilities equal: E * k * 1/E = k.
    logits = jnp.zeros((1, 4, 4))
    chosen = jnp.asarray([[[1, 1, 0, 0], [0, 0, 1, 1], [1, 1, 0, 0], [0, 0, 1, 1]]], jnp.float32)
    probs = jax.nn.softmax(logits)
    assert float(moe.load_balance_loss(probs, chosen)) == pytest.approx(2.0)


def reference_moe(x, params, top_k, capacity):
    """Loop-by-loop numpy reference: token-major buffer filling, dropped choices contribute 0."""
    x = np.asarray(x, np.float64)
    experts = {k: np.asarray(v, np.float64) for k, v in params["experts"].items()}
    probs = np_softmax(x @ np.asarray(params["router"]["kernel"], np.float64))
    out = np.zeros_like(x)
    kept = np.zeros(x.shape[:2] + (top_k,), bool)
    for g in range(x.shape[0]):
        fill = np.zeros(probs.shape[-1], int)
        for s in range(x.shape[1]):
            top = np.argsort(-probs[g, s])[:top_k]
            gates = probs[g, s, top] / probs[g, s, top].sum()
            for j, (expert, gate) in enumerate(zip(top, gates, strict=True)):
                if fill[expert] < capacity:
                    fill[expert] += 1
                    kept[g, s, j] = True
                    w = [experts[n][expert] for n in ("gate", "up", "down")]
                    out[g, s] += gate * np_swiglu(x[g, s], *w)
    return out, kept


@pytest.mark.parametrize("top_k", [1, 2])
def test_tokens_over_capacity_are_dropped(top_k):
    e = 4
    layer = moe_layer(num_experts=e, top_k=top_k, capacity_factor=0.5)
    capacity = moe.expert_capacity(T, e, top_k, 0.5)
    assert capacity == math.ceil(0.5 * T * top_k / e)
    x = inputs(batch=3) + 1.0
    params = init(layer, x)
    # A router that prefers expert 0 strongly, so that many tokens overflow it.
    params["router"]["kernel"] = params["router"]["kernel"].at[:, 0].add(1.0)
    y, _ = apply(layer, params, x)
    expected, kept = reference_moe(x, params, top_k, capacity)
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)
    dropped = ~kept.any(-1)
    assert dropped.any(), "the test should drop some tokens entirely"
    np.testing.assert_array_equal(np.asarray(y)[dropped], 0.0)
    assert (~kept).sum() > dropped.sum() or top_k == 1


def test_dropless_keeps_every_token():
    layer = moe_layer(num_experts=4, top_k=2, capacity_factor=0.0)
    x = inputs() + 1.0
    params = init(layer, x)
    params["router"]["kernel"] = params["router"]["kernel"].at[:, 0].add(1.0)
    y, _ = apply(layer, params, x)
    expected, kept = reference_moe(x, params, 2, T)
    assert kept.all()
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5)


def test_routing_is_causal_and_per_sequence():
    layer = moe_layer(num_experts=4, top_k=2, capacity_factor=0.5)
    x = inputs()
    params = init(layer, x)
    y, _ = apply(layer, params, x)
    # A later token never changes whether an earlier one is dropped.
    changed = x.at[:, 7].set(-x[:, 7] * 5)
    y_changed, _ = apply(layer, params, changed)
    np.testing.assert_array_equal(y[:, :7], y_changed[:, :7])
    # Other sequences in the batch never change a sequence's output.
    y_alone, _ = apply(layer, params, x[:1])
    np.testing.assert_allclose(y_alone, y[:1], rtol=1e-6, atol=1e-7)


def test_bad_options_are_rejected():
    for options, match in [
        ({"top_k": 5}, "top_k"),
        ({"num_experts": 0}, "num_experts"),
        ({"capacity_factor": -1.0}, "capacity_factor"),
        ({"load_balance_weigth": 0.1}, "unknown"),
    ]:
        with pytest.raises(ValueError, match=match):
            moe.MoE.param_count(D, F, False, options)


def test_bfloat16_compute_keeps_the_router_in_float32():
    layer = moe_layer(dtype=jnp.bfloat16)
    x = inputs().astype(jnp.bfloat16)
    params = init(layer, x)
    y, aux = apply(layer, params, x)
    assert y.dtype == jnp.bfloat16 and np.all(np.isfinite(np.asarray(y, np.float32)))
    _, state = layer.apply({"params": params}, x, mutable=["aux_loss"])
    for value in jax.tree.leaves(state):
        assert value.dtype == jnp.float32


# ---------------------------------------------------------------- in the language model


def lm(**overrides) -> tuple[nn.Module, dict, jax.Array]:
    config = base_config().model
    config.update(
        dict(name="lm", channel_mixer="moe", num_layers=2, d_model=32, num_heads=4, d_ff=48)
    )
    config.update_from_flattened_dict(overrides)
    model = models.build_model(config, SPEC, jnp.float32)
    tokens = jax.random.randint(jax.random.key(1), (4, T), 0, SPEC.vocab_size)
    params = nn.unbox(model.init(jax.random.key(0), tokens, train=False))["params"]
    return model, params, tokens


def test_lm_description_counts_moe_parameters():
    model, params, _ = lm(**{"moe.num_experts": 3, "moe.top_k": 1, "use_bias": True})
    assert model.describe()["params"] == models.count_params(params)


@pytest.mark.parametrize("remat", ["none", "full"])
def test_lm_sows_both_aux_losses_and_the_loop_adds_them(remat):
    model, params, tokens = lm(remat=remat)
    _, state = model.apply({"params": params}, tokens, train=True, mutable=["aux_loss"])
    for layer in ("block_0", "block_1"):
        sown = state["aux_loss"][layer]["channel"]
        assert set(sown) == {"load_balance", "router_z"}
        assert all(isinstance(v, tuple) and len(v) == 1 for v in sown.values())

    logits, aux = step_lib._apply(model, params, tokens, True, jax.random.key(2))
    assert set(aux) == {
        f"block_{i}/channel/{name}" for i in (0, 1) for name in ("load_balance", "router_z")
    }
    assert all(v.shape == () and float(v) > 0 for v in aux.values())
    objective = objectives.get_objective(
        ml_collections.ConfigDict(dict(name="next_token_xent", z_loss=0.0, label_smoothing=0.0))
    )
    batch = {"targets": tokens, "loss_mask": jnp.ones(tokens.shape, jnp.float32)}
    loss, scores = objective(logits, batch, aux)
    expected = float(scores["loss"]) + sum(float(v) for v in aux.values())
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_lm_with_moe_trains():
    model, params, tokens = lm()
    objective = objectives.get_objective(
        ml_collections.ConfigDict(dict(name="next_token_xent", z_loss=0.0, label_smoothing=0.0))
    )
    tx = optax.adam(3e-3)
    state = step_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(3)),
    )
    train_step = jax.jit(step_lib.make_train_step(model, tx, objective, "inputs", 1, None))
    batch = {
        "inputs": tokens,
        "targets": jnp.roll(tokens, -1, axis=1),
        "loss_mask": jnp.ones(tokens.shape, jnp.float32),
    }
    losses = []
    for _ in range(30):
        state, scores = train_step(state, batch)
        losses.append(float(scores["total_loss"]))
        assert float(scores["total_loss"]) > float(scores["loss"])  # the aux terms are in
    assert losses[-1] < 0.5 * losses[0]
    moved = (
        state.params["block_0"]["channel"]["router"]["kernel"]
        - params["block_0"]["channel"]["router"]["kernel"]
    )
    assert float(jnp.abs(moved).max()) > 0


def test_dropless_lm_decodes_like_its_forward_pass():
    model, params, tokens = lm(**{"moe.capacity_factor": 0.0})
    variables = {"params": params}
    full = model.apply(variables, tokens, train=False)
    cache = model.apply(variables, tokens.shape[0], T, method="init_cache")
    for t in range(T):
        logits, cache = model.apply(
            variables, tokens[:, t], cache, jnp.int32(t), method="decode_step"
        )
        np.testing.assert_allclose(logits, full[:, t], rtol=1e-4, atol=1e-4)
