"""Objective tests against hand-computed numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import objectives
from registry import UnknownNameError


def objective(name: str, z_loss: float = 0.0, label_smoothing: float = 0.0):
    config = ml_collections.ConfigDict(
        dict(name=name, z_loss=z_loss, label_smoothing=label_smoothing)
    )
    return objectives.get_objective(config)


def np_log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def np_logsumexp(logits: np.ndarray) -> np.ndarray:
    m = logits.max(-1)
    return m + np.log(np.exp(logits - m[..., None]).sum(-1))


def reference(logits, targets, mask, z_loss=0.0, label_smoothing=0.0):
    """(CE part, z term, accuracy, weight) by hand, as float64."""
    logits = logits.astype(np.float64)
    vocab = logits.shape[-1]
    logp = np_log_softmax(logits)
    onehot = np.eye(vocab)[targets]
    soft = onehot * (1 - label_smoothing) + label_smoothing / vocab
    xent = -(soft * logp).sum(-1)
    weight = mask.sum()
    ce = (xent * mask).sum() / weight
    z = (np_logsumexp(logits) ** 2 * mask).sum() / weight
    acc = ((logits.argmax(-1) == targets) * mask).sum() / weight
    return ce, z_loss * z, acc, weight


@pytest.fixture
def lm_batch():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(3, 5, 7)).astype(np.float32) * 3
    targets = rng.integers(0, 7, size=(3, 5)).astype(np.int32)
    mask = (rng.random((3, 5)) > 0.4).astype(np.float32)
    mask[0, 0] = 1.0
    return logits, targets, mask


@pytest.mark.parametrize("z_loss", [0.0, 1e-2])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
def test_next_token_xent_matches_reference(lm_batch, z_loss, label_smoothing):
    logits, targets, mask = lm_batch
    fn = objective("next_token_xent", z_loss, label_smoothing)
    loss, metrics = fn(jnp.asarray(logits), {"targets": targets, "loss_mask": mask}, {})
    ce, z, acc, weight = reference(logits, targets, mask, z_loss, label_smoothing)
    np.testing.assert_allclose(metrics["loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(loss, ce + z, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], acc, rtol=1e-6)
    assert float(metrics["weight"]) == weight
    for value in jax.tree.leaves(metrics):
        assert value.shape == () and value.dtype == jnp.float32


def test_masked_positions_do_not_matter(lm_batch):
    logits, targets, mask = lm_batch
    fn = objective("next_token_xent")
    scrambled = np.where(mask[..., None] > 0, logits, 1e4 * np.sign(logits))
    a = fn(jnp.asarray(logits), {"targets": targets, "loss_mask": mask}, {})
    b = fn(jnp.asarray(scrambled), {"targets": targets, "loss_mask": mask}, {})
    jax.tree.map(np.testing.assert_allclose, a, b)


def test_bfloat16_logits_are_scored_in_float32(lm_batch):
    logits, targets, mask = lm_batch
    loss, metrics = objective("next_token_xent")(
        jnp.asarray(logits, jnp.bfloat16), {"targets": targets, "loss_mask": mask}, {}
    )
    assert loss.dtype == jnp.float32 and metrics["loss"].dtype == jnp.float32


def test_classification_xent_matches_reference():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, size=(6,)).astype(np.int32)
    fn = objective("classification_xent", z_loss=1e-3, label_smoothing=0.2)
    loss, metrics = fn(jnp.asarray(logits), {"label": labels}, {})
    ce, z, acc, weight = reference(logits, labels, np.ones(6), 1e-3, 0.2)
    np.testing.assert_allclose(metrics["loss"], ce, rtol=1e-5)
    np.testing.assert_allclose(loss, ce + z, rtol=1e-5)
    np.testing.assert_allclose(metrics["accuracy"], acc)
    assert float(metrics["weight"]) == 6.0


def test_zero_scored_positions_are_finite(lm_batch):
    logits, targets, _ = lm_batch
    mask = np.zeros(targets.shape, np.float32)
    fn = objective("next_token_xent", z_loss=1e-2, label_smoothing=0.1)

    def loss_fn(x):
        return fn(x, {"targets": targets, "loss_mask": mask}, {})

    (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logits))
    assert float(loss) == 0.0 and float(metrics["weight"]) == 0.0
    for value in [*jax.tree.leaves(metrics), grads]:
        assert np.all(np.isfinite(value))


@pytest.mark.parametrize("name", objectives.OBJECTIVES.names())
def test_aux_losses_are_added(name, lm_batch):
    logits, targets, mask = lm_batch
    if name == "classification_xent":
        logits, batch = logits[:, 0], {"label": targets[:, 0]}
    else:
        batch = {"targets": targets, "loss_mask": mask}
    fn = objective(name)
    base, _ = fn(jnp.asarray(logits), batch, {})
    # A sown aux loss arrives as a tuple; plain scalars work too.
    aux = {"moe": (jnp.float32(0.25),), "other": jnp.float32(0.5)}
    with_aux, metrics = fn(jnp.asarray(logits), batch, aux)
    np.testing.assert_allclose(with_aux, base + 0.75, rtol=1e-6)
    assert float(metrics["loss"]) == pytest.approx(float(base))


def test_metrics_aggregate_by_weight(lm_batch):
    """Weighted means of two halves equal the metrics of the whole batch."""
    logits, targets, mask = lm_batch
    fn = objective("next_token_xent")
    _, whole = fn(jnp.asarray(logits), {"targets": targets, "loss_mask": mask}, {})
    parts = [
        fn(jnp.asarray(logits[s]), {"targets": targets[s], "loss_mask": mask[s]}, {})[1]
        for s in (slice(0, 1), slice(1, 3))
    ]
    total = sum(float(p["weight"]) for p in parts)
    for key in ("loss", "accuracy"):
        agg = sum(float(p[key]) * float(p["weight"]) for p in parts) / total
        assert agg == pytest.approx(float(whole[key]), rel=1e-5)


def test_unknown_objective_lists_valid_names():
    with pytest.raises(UnknownNameError) as info:
        objective("next_token_xnet")
    for name in objectives.OBJECTIVES.names():
        assert name in str(info.value)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="label_smoothing"):
        objective("next_token_xent", label_smoothing=1.0)
    with pytest.raises(ValueError, match="z_loss"):
        objective("next_token_xent", z_loss=-1.0)


@pytest.mark.parametrize("name", ["next_token_xent", "classification_xent"])
def test_padding_rows_marked_by_example_mask_score_nothing(name, lm_batch):
    logits, targets, mask = lm_batch
    if name == "classification_xent":
        logits, batch = logits[:, 0], {"label": targets[:, 0]}
    else:
        batch = {"targets": targets, "loss_mask": mask}
    fn = objective(name)
    _, real = fn(jnp.asarray(logits[:2]), jax.tree.map(lambda x: x[:2], batch), {})
    garbage = jax.tree.map(lambda x: np.concatenate([x[:2], x[:1] * 0 + 1]), batch)
    padded_logits = np.concatenate([logits[:2], logits[:1] * 100])
    _, padded = fn(jnp.asarray(padded_logits), {**garbage, "example_mask": np.array([1, 1, 0])}, {})
    for key in real:
        np.testing.assert_allclose(padded[key], real[key], rtol=1e-6)
