"""Objective tests against hand-computed numpy references."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import objectives
from objectives import distill
from registry import UnknownNameError


def objective(name: str, z_loss: float = 0.0, label_smoothing: float = 0.0, **options):
    config = ml_collections.ConfigDict(
        dict(name=name, z_loss=z_loss, label_smoothing=label_smoothing, **options)
    )
    return objectives.get_objective(config)


def batch_for(name: str, logits, targets, mask, seed: int = 5):
    """(logits, batch) of the shape objective `name` reads."""
    if name == "classification_xent":
        return logits[:, 0], {"label": targets[:, 0]}
    batch = {"targets": targets, "loss_mask": mask}
    if name == "distillation":
        teacher = np.random.default_rng(seed).normal(size=logits.shape).astype(np.float32) * 2
        batch["teacher_logits"] = teacher
    return logits, batch


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
    logits, batch = batch_for(name, *lm_batch)
    fn = objective(name)
    base, _ = fn(jnp.asarray(logits), batch, {})
    # A sown aux loss arrives as a tuple; plain scalars work too.
    aux = {"moe": (jnp.float32(0.25),), "other": jnp.float32(0.5)}
    with_aux, metrics = fn(jnp.asarray(logits), batch, aux)
    np.testing.assert_allclose(with_aux, base + 0.75, rtol=1e-6)
    _, no_aux = fn(jnp.asarray(logits), batch, {})
    jax.tree.map(np.testing.assert_array_equal, metrics, no_aux)  # aux never leaks into metrics


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


@pytest.mark.parametrize("name", objectives.OBJECTIVES.names())
def test_padding_rows_marked_by_example_mask_score_nothing(name, lm_batch):
    logits, batch = batch_for(name, *lm_batch)
    fn = objective(name)
    _, real = fn(jnp.asarray(logits[:2]), jax.tree.map(lambda x: x[:2], batch), {})
    garbage = jax.tree.map(lambda x: np.concatenate([x[:2], x[:1] * 0 + 1]), batch)
    padded_logits = np.concatenate([logits[:2], logits[:1] * 100])
    _, padded = fn(jnp.asarray(padded_logits), {**garbage, "example_mask": np.array([1, 1, 0])}, {})
    for key in real:
        np.testing.assert_allclose(padded[key], real[key], rtol=1e-6)


# ---------------------------------------------------------------- distillation


def distill_reference(logits, teacher, targets, mask, temperature, alpha, z_loss=0.0):
    """(total loss, kl) by hand, as float64."""
    log_p = np_log_softmax(teacher.astype(np.float64) / temperature)
    log_q = np_log_softmax(logits.astype(np.float64) / temperature)
    kl_per = (np.exp(log_p) * (log_p - log_q)).sum(-1)
    kl = (kl_per * mask).sum() / mask.sum()
    ce, z, _, _ = reference(logits, targets, mask, z_loss)
    return (1 - alpha) * temperature**2 * kl + alpha * ce + z, kl


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_distillation_matches_reference(lm_batch, temperature, alpha):
    logits, batch = batch_for("distillation", *lm_batch)
    fn = objective("distillation", z_loss=1e-3, temperature=temperature, alpha=alpha)
    loss, metrics = fn(jnp.asarray(logits), batch, {})
    total, kl = distill_reference(
        logits,
        batch["teacher_logits"],
        batch["targets"],
        batch["loss_mask"],
        temperature,
        alpha,
        1e-3,
    )
    np.testing.assert_allclose(loss, total, rtol=1e-5)
    np.testing.assert_allclose(metrics["kl"], kl, rtol=1e-5)
    ce, _, acc, weight = reference(logits, batch["targets"], batch["loss_mask"])
    np.testing.assert_allclose(metrics["loss"], ce, rtol=1e-5)  # hard-label CE, comparable
    np.testing.assert_allclose(metrics["accuracy"], acc, rtol=1e-6)
    assert float(metrics["weight"]) == weight
    for value in jax.tree.leaves(metrics):
        assert value.shape == () and value.dtype == jnp.float32


def test_distillation_gradient_is_temperature_times_prob_difference(lm_batch):
    """d/d student of T^2 KL(p_T || q_T) is T (q_T - p_T) per scored position (Hinton et al.)."""
    logits, batch = batch_for("distillation", *lm_batch)
    temperature, mask = 3.0, batch["loss_mask"]
    fn = objective("distillation", temperature=temperature, alpha=0.0)

    def loss_fn(student, teacher):
        return fn(student, {**batch, "teacher_logits": teacher}, {})[0]

    grad_student, grad_teacher = jax.grad(loss_fn, argnums=(0, 1))(
        jnp.asarray(logits), jnp.asarray(batch["teacher_logits"])
    )
    p = np.exp(np_log_softmax(batch["teacher_logits"].astype(np.float64) / temperature))
    q = np.exp(np_log_softmax(logits.astype(np.float64) / temperature))
    expected = temperature * (q - p) * mask[..., None] / mask.sum()
    np.testing.assert_allclose(grad_student, expected, rtol=1e-4, atol=1e-7)
    np.testing.assert_array_equal(grad_teacher, 0.0)  # the teacher is never trained


def test_distilling_from_itself_costs_nothing(lm_batch):
    logits, batch = batch_for("distillation", *lm_batch)
    batch["teacher_logits"] = logits
    loss, metrics = objective("distillation", alpha=0.0)(jnp.asarray(logits), batch, {})
    assert abs(float(loss)) < 1e-6 and abs(float(metrics["kl"])) < 1e-6


def test_distillation_with_alpha_one_is_cross_entropy(lm_batch):
    logits, batch = batch_for("distillation", *lm_batch)
    xent_loss, xent_metrics = objective("next_token_xent", label_smoothing=0.1)(
        jnp.asarray(logits), batch, {}
    )
    loss, metrics = objective("distillation", label_smoothing=0.1, alpha=1.0)(
        jnp.asarray(logits), batch, {}
    )
    np.testing.assert_allclose(loss, xent_loss, rtol=1e-6)
    for key in xent_metrics:
        np.testing.assert_allclose(metrics[key], xent_metrics[key], rtol=1e-6)


def test_distillation_is_evaluated_on_the_hard_labels_alone(lm_batch):
    """Evaluation needs no teacher: it scores a distilled student as cross-entropy scores any
    run, with the same options, and the metrics distillation trains with but its `kl`."""
    logits, batch = batch_for("distillation", *lm_batch)
    options = dict(z_loss=1e-3, label_smoothing=0.1, temperature=2.0, alpha=0.3)
    config = ml_collections.ConfigDict(dict(name="distillation", **options))
    _, evaluated = objectives.get_eval_objective(config)(jnp.asarray(logits), {**batch}, {})
    del batch["teacher_logits"]  # what evaluation batches have
    _, evaluated_bare = objectives.get_eval_objective(config)(jnp.asarray(logits), batch, {})
    _, xent = objective("next_token_xent", z_loss=1e-3, label_smoothing=0.1)(
        jnp.asarray(logits), batch, {}
    )
    _, trained = objective("distillation", **options)(
        jnp.asarray(logits), batch_for("distillation", *lm_batch)[1], {}
    )
    assert set(evaluated) == set(evaluated_bare) == set(xent) == set(trained) - {"kl"}
    for key in xent:
        assert float(evaluated[key]) == float(evaluated_bare[key]) == float(xent[key])
        np.testing.assert_allclose(trained[key], xent[key], rtol=1e-6)


def test_teacher_logits_must_line_up_with_the_students(lm_batch):
    logits, batch = batch_for("distillation", *lm_batch)
    with pytest.raises(ValueError, match=r"teacher logits \(3, 5, 7\) do not line up"):
        objective("distillation")(jnp.asarray(logits[:, :2]), batch, {})


def test_unscored_teacher_logits_do_not_matter(lm_batch):
    logits, batch = batch_for("distillation", *lm_batch)
    fn = objective("distillation")
    garbage = np.where(batch["loss_mask"][..., None] > 0, batch["teacher_logits"], np.nan)
    garbage[..., 0] = np.where(batch["loss_mask"] > 0, garbage[..., 0], -np.inf)

    def loss_fn(student, teacher):
        return fn(student, {**batch, "teacher_logits": teacher}, {})

    a = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logits), batch["teacher_logits"])
    b = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logits), garbage)
    jax.tree.map(np.testing.assert_array_equal, a, b)


def test_impossible_teacher_tokens_are_finite(lm_batch):
    """A teacher logit of -inf (a token it rules out) is probability 0: no NaN in loss or grad."""
    logits, batch = batch_for("distillation", *lm_batch)
    batch["teacher_logits"][..., 3] = -np.inf
    fn = objective("distillation", alpha=0.0)

    def loss_fn(student):
        return fn(student, batch, {})

    (loss, metrics), grad = jax.value_and_grad(loss_fn, has_aux=True)(jnp.asarray(logits))
    for value in [loss, grad, *jax.tree.leaves(metrics)]:
        assert np.all(np.isfinite(value))
    others = np.arange(logits.shape[-1]) != 3
    log_p = np_log_softmax(batch["teacher_logits"][..., others].astype(np.float64) / 2.0)
    log_q = np_log_softmax(logits.astype(np.float64) / 2.0)[..., others]
    kl = ((np.exp(log_p) * (log_p - log_q)).sum(-1) * batch["loss_mask"]).sum()
    np.testing.assert_allclose(metrics["kl"], kl / batch["loss_mask"].sum(), rtol=1e-5)


def test_distillation_options_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        objective("distillation", temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        objective("distillation", alpha=1.5)


def test_options_bind_only_where_declared(lm_batch):
    """Distillation keys in the config leave cross-entropy objectives alone, and sections
    without them (configs older than the keys) still load with the defaults."""
    logits, targets, mask = lm_batch
    batch = {"targets": targets, "loss_mask": mask}
    plain = objective("next_token_xent")(jnp.asarray(logits), batch, {})
    with_keys = objective("next_token_xent", temperature=5.0, alpha=0.1)(
        jnp.asarray(logits), batch, {}
    )
    jax.tree.map(np.testing.assert_array_equal, plain, with_keys)
    assert set(objectives.OPTION_DEFAULTS) == {"z_loss", "label_smoothing", "temperature", "alpha"}
    bare = ml_collections.ConfigDict(dict(name="distillation"))
    bare.lock()
    fn = objectives.bind_options(distill.distillation, bare)
    assert fn.keywords == objectives.OPTION_DEFAULTS


# ---------------------------------------------------------------- derived metrics


def test_derived_metrics_from_aggregated_means():
    derived = objectives.derived_metrics({"loss": 2.0, "accuracy": 0.5, "weight": 10.0})
    assert derived == pytest.approx(
        {"perplexity": 7.38905609893065, "bits_per_token": 2.8853900817779268}
    )
    # Label smoothing: the unsmoothed nll is the log-likelihood.
    smoothed = objectives.derived_metrics({"loss": 2.5, "nll": np.log(4.0)})
    assert smoothed == pytest.approx({"perplexity": 4.0, "bits_per_token": 2.0})
    assert objectives.derived_metrics({"accuracy": 1.0}) == {}
    assert objectives.derived_metrics({"loss": 1e4})["perplexity"] == float("inf")


def test_perplexity_comes_from_the_aggregate_not_per_batch(lm_batch):
    """exp(weighted mean loss) over two halves is the whole batch's perplexity; the weighted mean
    of per-half perplexities is not."""
    logits, targets, mask = lm_batch
    fn = objective("next_token_xent")
    _, whole = fn(jnp.asarray(logits), {"targets": targets, "loss_mask": mask}, {})
    parts = [
        fn(jnp.asarray(logits[s]), {"targets": targets[s], "loss_mask": mask[s]}, {})[1]
        for s in (slice(0, 1), slice(1, 3))
    ]
    weights = np.array([float(p["weight"]) for p in parts])
    losses = np.array([float(p["loss"]) for p in parts])
    aggregated = {"loss": float((losses * weights).sum() / weights.sum())}
    derived = objectives.derived_metrics(aggregated)
    assert derived["perplexity"] == pytest.approx(np.exp(float(whole["loss"])), rel=1e-5)
    assert derived["bits_per_token"] == pytest.approx(float(whole["loss"]) / np.log(2), rel=1e-5)
    naive = float((np.exp(losses) * weights).sum() / weights.sum())
    assert abs(naive - derived["perplexity"]) > 1e-3


def test_bits_per_byte_is_total_nats_over_total_bytes(lm_batch):
    """Aggregated over batches as the loop does (weighted by scored tokens), nll /
    bytes_per_token is the nats of every scored token over the bytes they stand for; padding
    rows and unscored positions count in neither."""
    logits, targets, mask = lm_batch
    target_bytes = np.random.default_rng(3).integers(1, 5, size=targets.shape).astype(np.int32)
    example_mask = np.array([1.0, 1.0, 0.0], np.float32)  # the last row pads the batch
    for name in ("next_token_xent", "distillation"):
        fn = objective(name)
        parts = []
        for rows in (slice(0, 1), slice(1, 3)):
            part_logits, batch = batch_for(name, logits[rows], targets[rows], mask[rows])
            batch.update(target_bytes=target_bytes[rows], example_mask=example_mask[rows])
            parts.append(fn(jnp.asarray(part_logits), batch, {})[1])
        weights = np.array([float(p["weight"]) for p in parts])

        def mean(key: str, parts: list = parts, weights: np.ndarray = weights) -> float:
            return float(sum(float(p[key]) * w for p, w in zip(parts, weights, strict=True)))

        aggregated = {k: mean(k) / weights.sum() for k in ("loss", "bytes_per_token")}
        derived = objectives.derived_metrics(aggregated)

        scored = mask * example_mask[:, None]
        nll = -np.take_along_axis(np_log_softmax(logits), targets[..., None], axis=-1)[..., 0]
        expected = (nll * scored).sum() / np.log(2) / (target_bytes * scored).sum()
        assert derived["bits_per_byte"] == pytest.approx(expected, rel=1e-5)
    # One byte per token (a byte-level tokenizer): bits per byte is bits per token, exactly.
    derived = objectives.derived_metrics({"loss": 1.2345, "bytes_per_token": 1.0})
    assert derived["bits_per_byte"] == derived["bits_per_token"]
    assert "bits_per_byte" not in objectives.derived_metrics({"loss": 1.2345})
