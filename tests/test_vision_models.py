"""Vision families (vit, mlp_mixer) on 8x8 digits: shapes, naming, parameter counts, the
inductive biases each family claims, remat, bf16, and a short training run that must learn."""

from __future__ import annotations

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import models
from models import mlp_mixer, vision, vit
from models.channel import GeluMLP

SPEC = types.SimpleNamespace(vocab_size=None, seq_len=None, num_classes=10, image_shape=(8, 8, 1))
BATCH = 3
FAMILIES = ("vit", "mlp_mixer")
PARAM_COUNT = {"vit": vit.param_count, "mlp_mixer": mlp_mixer.param_count}
LOGICAL_NAMES = {"embed", "mlp", "heads", "kv", "vocab", "length"}


def make_config(name: str, *, vit_overrides=None, mixer_overrides=None, **overrides):
    config = ml_collections.ConfigDict(
        dict(
            name=name,
            num_layers=2,
            d_model=32,
            num_heads=4,
            d_ff=64,
            dropout_rate=0.0,
            remat="none",
            vit=dict(patch_size=2, pool="cls"),
            mlp_mixer=dict(patch_size=2, tokens_mlp_dim=32),
        )
    )
    config.update(overrides)
    config.vit.update(vit_overrides or {})
    config.mlp_mixer.update(mixer_overrides or {})
    config.lock()
    return config


def build(config, dtype=jnp.float32):
    return models.build_model(config, SPEC, dtype)


def images(seed: int = 0, batch: int = BATCH) -> jax.Array:
    return jax.random.uniform(jax.random.key(seed), (batch, *SPEC.image_shape), jnp.float32)


def init(model, x):
    return model.init(jax.random.key(0), x, train=False)


def unpatchify(patches: jax.Array, patch_size: int, image_shape) -> jax.Array:
    """Inverse of vision.patchify: [B, N, p*p*C] -> [B, H, W, C]."""
    h, w, c = image_shape
    p = patch_size
    x = patches.reshape(patches.shape[0], h // p, w // p, p, p, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(patches.shape[0], h, w, c)


# All configs whose analytic parameter count and naming are checked.
VARIANTS = [
    ("vit", {}, {}),
    ("vit", {"pool": "mean"}, {}),
    ("vit", {"patch_size": 4}, {}),
    ("mlp_mixer", {}, {}),
    ("mlp_mixer", {}, {"patch_size": 4, "tokens_mlp_dim": 8}),
]
VARIANT_IDS = [f"{n}-{v}-{m}" for n, v, m in VARIANTS]


# ---------------------------------------------------------------- shapes, naming, counts


@pytest.mark.parametrize(("name", "vit_o", "mix_o"), VARIANTS, ids=VARIANT_IDS)
def test_logits_shape_and_dtype(name, vit_o, mix_o):
    config = make_config(name, vit_overrides=vit_o, mixer_overrides=mix_o, dropout_rate=0.1)
    model = build(config)
    assert model.example_inputs(BATCH).shape == (BATCH, 8, 8, 1)
    assert model.example_inputs(BATCH).dtype == jnp.float32
    x = images()
    variables = init(model, x)
    rngs = {"dropout": jax.random.key(1)}
    forward = jax.jit(model.apply, static_argnames="train")
    eval_logits = forward(variables, x, train=False)
    for train in (False, True):
        logits = forward(variables, x, train=train, rngs=rngs)
        assert logits.shape == (BATCH, SPEC.num_classes)
        assert logits.dtype == jnp.float32
        assert np.all(np.isfinite(logits))
    # Dropout only when training: eval is deterministic, training with dropout is not eval.
    np.testing.assert_array_equal(eval_logits, forward(variables, x, train=False))
    assert not np.allclose(eval_logits, forward(variables, x, train=True, rngs=rngs))


@pytest.mark.parametrize(("name", "vit_o", "mix_o"), VARIANTS, ids=VARIANT_IDS)
def test_params_float32_boxed_with_distinct_logical_names(name, vit_o, mix_o):
    model = build(make_config(name, vit_overrides=vit_o, mixer_overrides=mix_o), jnp.bfloat16)
    # Shapes, dtypes and names only: no need to compute the values.
    variables = jax.eval_shape(functools.partial(init, model), model.example_inputs(BATCH))
    leaves = jax.tree_util.tree_leaves_with_path(
        variables["params"], is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata)
    )
    assert leaves
    for path, leaf in leaves:
        where = jax.tree_util.keystr(path)
        assert isinstance(leaf, nn.LogicallyPartitioned), where
        names, value = leaf.names, leaf.value
        assert value.dtype == jnp.float32, where
        assert len(names) == value.ndim, where
        assert all(isinstance(n, str) for n in names), where
        assert set(names) <= LOGICAL_NAMES, (where, names)
        assert len(set(names)) == len(names), (where, names)
    # The class head's output axis is 'vocab'; the position table is ('length', 'embed').
    params = variables["params"]
    assert params["head"]["kernel"].names == ("embed", "vocab")
    if name == "vit":
        assert params["pos_embedding"].names == ("length", "embed")


@pytest.mark.parametrize(("name", "vit_o", "mix_o"), VARIANTS, ids=VARIANT_IDS)
@pytest.mark.parametrize("num_layers", [1, 3])
def test_analytic_param_count_equals_real_count(name, vit_o, mix_o, num_layers):
    config = make_config(name, vit_overrides=vit_o, mixer_overrides=mix_o, num_layers=num_layers)
    model = build(config)
    shapes = jax.eval_shape(lambda: init(model, model.example_inputs(1)))
    assert PARAM_COUNT[name](config, SPEC) == models.count_params(shapes["params"])


def test_factories_read_their_config_sections():
    model = build(make_config("vit", vit_overrides={"patch_size": 4, "pool": "cls"}))
    params = init(model, model.example_inputs(1))["params"]
    assert nn.unbox(params)["pos_embedding"].shape == (4 + 1, 32)  # 4 patches + class token
    model = build(make_config("vit", vit_overrides={"pool": "mean"}))
    params = nn.unbox(init(model, model.example_inputs(1))["params"])
    assert params["pos_embedding"].shape == (16, 32) and "cls_token" not in params
    model = build(make_config("mlp_mixer", mixer_overrides={"tokens_mlp_dim": 5}))
    params = nn.unbox(init(model, model.example_inputs(1))["params"])
    assert params["block_0"]["token_mixing"]["fc1"]["kernel"].shape == (16, 5)


def test_bad_vision_configs_are_errors():
    with pytest.raises(ValueError, match="cls, mean"):
        build(make_config("vit", vit_overrides={"pool": "max"}))
    for name, key in (("vit", "vit_overrides"), ("mlp_mixer", "mixer_overrides")):
        with pytest.raises(ValueError, match="divide"):
            build(make_config(name, **{key: {"patch_size": 3}}))
    with pytest.raises(ValueError, match="divisible"):
        build(make_config("vit", num_heads=5))
    bad = make_config("vit")
    bad.unlock()
    bad.vit.patch_sise = 2
    with pytest.raises(ValueError, match="patch_sise"):
        build(bad)


# ---------------------------------------------------------------- inductive biases


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_vit_sees_patch_order_only_through_position_embeddings(pool):
    model = build(make_config("vit", vit_overrides={"pool": pool}))
    x = images()
    params = nn.unbox(init(model, x))["params"]
    perm = np.random.default_rng(0).permutation(16)
    assert not np.array_equal(perm, np.arange(16))
    shuffled = unpatchify(vision.patchify(x, 2)[:, perm], 2, SPEC.image_shape)
    assert not np.allclose(shuffled, x)

    def logits(p, inputs):
        return model.apply({"params": p}, inputs, train=False)

    # With learned positions, patch order matters...
    assert not np.allclose(logits(params, x), logits(params, shuffled), atol=1e-4)
    # ...and without them (the class token, if any, keeps its own slot), it does not.
    no_pos = dict(params, pos_embedding=jnp.zeros_like(params["pos_embedding"]))
    np.testing.assert_allclose(logits(no_pos, x), logits(no_pos, shuffled), rtol=1e-5, atol=1e-5)


def test_mixer_token_mixing_reaches_every_patch():
    block = mlp_mixer.MixerBlock(tokens_mlp_dim=8, d_ff=16, dropout_rate=0.0, dtype=jnp.float32)
    x = jax.random.normal(jax.random.key(0), (2, 16, 12))
    variables = block.init(jax.random.key(1), x, False)
    # A non-constant change (LayerNorm would erase a constant shift of one patch's channels).
    changed = x.at[:, 5].add(jax.random.normal(jax.random.key(2), (2, 12)))
    before = block.apply(variables, x, False)
    after = block.apply(variables, changed, False)
    # Every patch's output moves when one input patch changes: tokens are mixed.
    moved = np.abs(np.asarray(after - before)).max(axis=-1)  # [B, N]
    assert np.all(moved > 1e-4), moved
    # Without token mixing (channel mixing only) a change would stay in its own patch.
    channel = GeluMLP(d_model=12, d_ff=16, use_bias=True)
    cv = channel.init(jax.random.key(2), x)
    delta = np.abs(np.asarray(channel.apply(cv, changed) - channel.apply(cv, x))).max(axis=-1)
    assert np.all(np.delete(delta, 5, axis=1) == 0) and np.all(delta[:, 5] > 0)

    # And end to end: changing one patch of the image changes the logits.
    model = build(make_config("mlp_mixer"))
    img = images()
    variables = init(model, img)
    patches = vision.patchify(img, 2)
    img2 = unpatchify(patches.at[:, 7].set(1.0 - patches[:, 7]), 2, SPEC.image_shape)
    assert not np.allclose(
        model.apply(variables, img, train=False), model.apply(variables, img2, train=False)
    )


# ---------------------------------------------------------------- remat and bf16


@pytest.mark.parametrize("name", FAMILIES)
def test_remat_matches_plain(name):
    plain = build(make_config(name, dropout_rate=0.1))
    remat = build(make_config(name, dropout_rate=0.1, remat="full"))
    x = images()
    variables = init(plain, x)
    assert jax.tree.structure(variables) == jax.tree.structure(init(remat, x))
    rngs = {"dropout": jax.random.key(3)}

    def loss(model, v):
        return jnp.mean(model.apply(v, x, train=True, rngs=rngs) ** 2)

    def value_and_grad(model):
        return jax.jit(jax.value_and_grad(functools.partial(loss, model)))(variables)

    (loss_plain, grads_plain), (loss_remat, grads_remat) = map(value_and_grad, (plain, remat))
    np.testing.assert_allclose(loss_remat, loss_plain, rtol=1e-5)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6),
        nn.unbox(grads_plain),
        nn.unbox(grads_remat),
    )


@pytest.mark.parametrize(("name", "vit_o", "mix_o"), VARIANTS, ids=VARIANT_IDS)
def test_bfloat16_compute_runs_and_is_close(name, vit_o, mix_o):
    config = make_config(name, vit_overrides=vit_o, mixer_overrides=mix_o)
    f32, bf16 = build(config, jnp.float32), build(config, jnp.bfloat16)
    x = images()
    variables = init(f32, x)
    ref = f32.apply(variables, x, train=False)
    out = jax.jit(lambda v, x: bf16.apply(v, x, train=False))(variables, x)
    assert out.dtype == jnp.float32 and out.shape == ref.shape
    assert np.all(np.isfinite(out))
    scale = float(jnp.max(jnp.abs(ref)))
    np.testing.assert_allclose(out, ref, atol=0.05 * max(scale, 1.0))
    # A bf16 training step's gradients are float32 and finite.
    grads = jax.jit(jax.grad(lambda v: jnp.mean(bf16.apply(v, x, train=True) ** 2)))(variables)
    for g in jax.tree.leaves(nn.unbox(grads)):
        assert g.dtype == jnp.float32 and np.all(np.isfinite(g))


# ---------------------------------------------------------------- learning


@functools.cache
def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)[..., None]  # [1797, 8, 8, 1] in [0, 1]
    return x, d.target.astype(np.int32)


@pytest.mark.parametrize("name", FAMILIES)
def test_short_training_run_learns_digits(name):
    x, y = digits()
    model = build(make_config(name, d_model=32, d_ff=64, num_layers=2))
    params = init(model, jnp.asarray(x[:1]))["params"]
    tx = optax.adam(3e-3)
    opt_state = tx.init(params)

    def loss_fn(p, xb, yb):
        logits = model.apply({"params": p}, xb, train=True)
        return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

    @jax.jit
    def step(p, s, xb, yb):
        loss, grads = jax.value_and_grad(loss_fn)(p, xb, yb)
        updates, s = tx.update(grads, s, p)
        return optax.apply_updates(p, updates), s, loss

    rng = np.random.default_rng(0)
    losses = []
    for _ in range(100):
        idx = rng.choice(len(x), size=128, replace=False)
        params, opt_state, loss = step(params, opt_state, x[idx], y[idx])
        losses.append(float(loss))
    logits = jax.jit(lambda p, xb: model.apply({"params": p}, xb, train=False))(params, x)
    accuracy = float(np.mean(np.argmax(logits, -1) == y))
    assert losses[-1] < losses[0]
    print(f"{name}: training accuracy {accuracy:.3f}, loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    assert accuracy >= 0.8, (accuracy, losses[::10])
