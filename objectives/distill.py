"""Knowledge distillation: match a teacher's softened next-token distribution (Hinton et al.).

    loss = (1 - alpha) * T^2 * KL(softmax(teacher / T) || softmax(student / T))
           + alpha * CE(student, targets)  (+ z_loss * z, + auxiliary losses)

The KL is averaged over the scored positions (loss_mask, with padding rows zeroed by
example_mask); T^2 keeps its gradient on the scale of the hard-label term whatever T is. The
teacher's logits arrive in batch['teacher_logits'], lined up with the student's: [B, T, V], or
[B, S, V] at batch['score_positions'] (the train step computes both models' logits there only).
They are never differentiated.

Metrics keep the cross-entropy family's meaning, so runs stay comparable: `loss` (and `nll`,
`accuracy`, `z_loss`, and for text `bytes_per_token`) score the student against the hard targets;
`kl` is the unscaled KL at temperature T; `weight` is the number of scored positions.

The train step supplies the teacher's logits: `objective.distillation.teacher` names the teacher's
run directory, whose parameters `runtime.teacher` restores (objectives.build.TEACHER_OBJECTIVES).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from objectives.registry import OBJECTIVES, Metrics
from objectives.xent import (
    at_scored_positions,
    example_weights,
    scored_target_bytes,
    total_aux_loss,
    weighted_xent,
)


def softened_kl(teacher_logits: jax.Array, student_logits: jax.Array, temperature: float):
    """KL(teacher || student) per position over the last axis, both softened by `temperature`."""
    log_p = jax.nn.log_softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)
    log_q = jax.nn.log_softmax(student_logits.astype(jnp.float32) / temperature, axis=-1)
    p = jnp.exp(log_p)
    # p == 0 (a -inf teacher logit) contributes 0, not 0 * (-inf - log_q) = NaN.
    return jnp.sum(p * (jnp.where(p > 0, log_p, 0.0) - log_q), axis=-1)


@OBJECTIVES.register("distillation")
def distillation(
    logits: jax.Array,
    batch: dict[str, jax.Array],
    aux: Any,
    *,
    z_loss: float = 0.0,
    label_smoothing: float = 0.0,
    temperature: float = 2.0,
    alpha: float = 0.5,
) -> tuple[jax.Array, Metrics]:
    """logits and batch['teacher_logits'] [B, T, V] (or both [B, S, V] at
    batch['score_positions']); batch['targets'] [B, T], batch['loss_mask'] [B, T]."""
    targets, mask = (at_scored_positions(batch, batch[k]) for k in ("targets", "loss_mask"))
    teacher = batch["teacher_logits"]
    if teacher.shape != logits.shape:
        raise ValueError(
            f"teacher logits {teacher.shape} do not line up with logits {logits.shape}"
        )
    weights = example_weights(batch, mask).astype(jnp.float32)
    _, metrics = weighted_xent(
        logits,
        targets,
        weights,
        {},
        z_loss=z_loss,
        label_smoothing=label_smoothing,
        target_bytes=scored_target_bytes(batch),
    )
    # Unscored positions may hold anything, even non-finite teacher logits: zero them first, so
    # that neither the loss nor its gradient sees a NaN.
    scored = (weights > 0)[..., None]
    teacher = jnp.where(scored, jax.lax.stop_gradient(teacher), 0.0)
    kl = softened_kl(teacher, logits, temperature)
    denom = jnp.where(metrics["weight"] > 0, metrics["weight"], 1.0)
    kl = jnp.sum(kl * weights) / denom
    # With label smoothing, metrics['loss'] is the smoothed cross-entropy the hard term trains on.
    loss = (1.0 - alpha) * temperature**2 * kl + alpha * metrics["loss"]
    if z_loss > 0:
        loss = loss + z_loss * metrics["z_loss"]
    return loss + total_aux_loss(aux), {**metrics, "kl": kl}
