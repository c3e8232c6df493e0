"""Softmax cross-entropy objectives: next-token prediction and classification.

Metrics are means over this batch's scored items plus `weight` (the number of scored items), so
the loop aggregates batches as sum(metric * weight) / sum(weight). A batch may carry
`example_mask` [B] (0 for padding rows, as in the last evaluation batch); those rows score nothing.
A sequence batch may carry `score_positions` [B, S]: the logits are then those positions' only
([B, S, V]), and the per-position features are read there too (`at_scored_positions`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax

from objectives.registry import OBJECTIVES, Metrics


def total_aux_loss(aux: Any) -> jax.Array:
    """Sum of every auxiliary loss; leaves must be scalars (sown tuples are fine)."""
    leaves = [jnp.asarray(leaf, jnp.float32).reshape(()) for leaf in jax.tree.leaves(aux)]
    return sum(leaves, jnp.float32(0.0))


def example_weights(batch: dict[str, jax.Array], item_weights: jax.Array) -> jax.Array:
    """Per-item weights [B, ...] with padding rows (example_mask == 0) zeroed."""
    if "example_mask" not in batch:
        return item_weights
    mask = batch["example_mask"].astype(jnp.float32)
    return item_weights * mask.reshape(mask.shape + (1,) * (item_weights.ndim - 1))


def at_scored_positions(batch: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """A per-position feature x [B, T, ...] at batch['score_positions'] [B, S] -> [B, S, ...],
    lined up with logits computed only there; x itself when the batch has no score_positions."""
    if "score_positions" not in batch:
        return x
    positions = batch["score_positions"]
    return jnp.take_along_axis(x, positions.reshape(positions.shape + (1,) * (x.ndim - 2)), axis=1)


def weighted_xent(
    logits: jax.Array,
    targets: jax.Array,
    weights: jax.Array,
    aux: Any,
    *,
    z_loss: float,
    label_smoothing: float,
    target_bytes: jax.Array | None = None,
) -> tuple[jax.Array, Metrics]:
    """Cross-entropy over items with weight > 0. logits [..., V], targets/weights [...].

    With `target_bytes` [...] (the bytes of text each target stands for: text datasets), the
    metrics hold `bytes_per_token`, their mean over the scored items: aggregated like the loss,
    it makes bits per byte (`objectives.metrics.derived_metrics`)."""
    if logits.shape[:-1] != targets.shape:
        raise ValueError(
            f"logits {logits.shape} do not line up with targets {targets.shape} (a batch with "
            "score_positions needs the logits at those positions only)"
        )
    logits = logits.astype(jnp.float32)
    weights = weights.astype(jnp.float32)
    weight = jnp.sum(weights)
    # Dividing by 1 when nothing is scored keeps the loss and its gradient at 0, not NaN.
    denom = jnp.where(weight > 0, weight, 1.0)

    def mean(x: jax.Array) -> jax.Array:
        return jnp.sum(x * weights) / denom

    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    if label_smoothing > 0:
        soft = optax.smooth_labels(jax.nn.one_hot(targets, logits.shape[-1]), label_smoothing)
        xent = optax.softmax_cross_entropy(logits, soft)
    else:
        xent = nll
    ce = mean(xent)
    loss = ce + total_aux_loss(aux)
    metrics = {
        "loss": ce,
        "accuracy": mean((jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)),
        "weight": weight,
    }
    if target_bytes is not None:
        metrics["bytes_per_token"] = mean(target_bytes.astype(jnp.float32))
    if label_smoothing > 0:
        # The unsmoothed NLL stays comparable across runs with different smoothing.
        metrics["nll"] = mean(nll)
    if z_loss > 0:
        z = mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))
        loss = loss + z_loss * z
        metrics["z_loss"] = z
    return loss, metrics


@OBJECTIVES.register("next_token_xent")
def next_token_xent(
    logits: jax.Array,
    batch: dict[str, jax.Array],
    aux: Any,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, Metrics]:
    """logits [B, T, V] (or [B, S, V] at batch['score_positions']); batch['targets'] int32
    [B, T], batch['loss_mask'] float32 [B, T], and for text batch['target_bytes'] [B, T]."""
    return weighted_xent(
        logits,
        at_scored_positions(batch, batch["targets"]),
        example_weights(batch, at_scored_positions(batch, batch["loss_mask"])),
        aux,
        z_loss=z_loss,
        label_smoothing=label_smoothing,
        target_bytes=scored_target_bytes(batch),
    )


def scored_target_bytes(batch: dict[str, jax.Array]) -> jax.Array | None:
    """batch['target_bytes'] at the scored positions, None for data that is not text."""
    if "target_bytes" not in batch:
        return None
    return at_scored_positions(batch, batch["target_bytes"])


@OBJECTIVES.register("classification_xent")
def classification_xent(
    logits: jax.Array,
    batch: dict[str, jax.Array],
    aux: Any,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, Metrics]:
    """logits [B, C]; batch['label'] int32 [B]. Every real example is scored."""
    labels = batch["label"]
    return weighted_xent(
        logits,
        labels,
        example_weights(batch, jnp.ones(labels.shape, jnp.float32)),
        aux,
        z_loss=z_loss,
        label_smoothing=label_smoothing,
    )
