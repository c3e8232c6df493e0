"""The optax optimizer a config names: update rule, schedule, clipping and weight-decay mask."""

from __future__ import annotations

from typing import Any

import flax
import jax
import ml_collections
import optax

from registry import Registry
from runtime import pruning as pruning_lib
from runtime import quantization

OPTIMIZERS: Registry = Registry("optimizer")
SCHEDULES: Registry = Registry("schedule")

# Parameters that are never decayed: every vector (norm scales, biases, SSM skips D, filter
# biases) and, by name, SSM decay rates A_log, which decay would push towards instability.
_NEVER_DECAYED = ("A_log",)
_EMBEDDING_NAMES = ("embedding", "pos_embedding")


@SCHEDULES.register("cosine")
def _cosine(c: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    return optax.warmup_cosine_decay_schedule(
        0.0,
        c.learning_rate,
        c.warmup_steps,
        max(steps, c.warmup_steps + 1),
        c.learning_rate * c.end_lr_fraction,
    )


@SCHEDULES.register("linear")
def _linear(c: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps),
            optax.linear_schedule(
                c.learning_rate,
                c.learning_rate * c.end_lr_fraction,
                max(steps - c.warmup_steps, 1),
            ),
        ],
        [c.warmup_steps],
    )


@SCHEDULES.register("constant")
def _constant(c: ml_collections.ConfigDict, steps: int) -> optax.Schedule:
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, c.learning_rate, c.warmup_steps),
            optax.constant_schedule(c.learning_rate),
        ],
        [c.warmup_steps],
    )


def decay_mask(params: Any, decay_embeddings: bool) -> Any:
    """True where weight decay applies: weight matrices, and embeddings only when asked."""

    def decayed(path: tuple[str, ...], value: Any) -> bool:
        if getattr(value, "ndim", 2) < 2 or path[-1] in _NEVER_DECAYED:
            return False
        return decay_embeddings or not any(p in _EMBEDDING_NAMES for p in path)

    return flax.traverse_util.path_aware_map(decayed, params)


@OPTIMIZERS.register("adamw")
def _adamw(
    c: ml_collections.ConfigDict, lr: optax.Schedule, mask: Any
) -> optax.GradientTransformation:
    return optax.adamw(lr, b1=c.b1, b2=c.b2, eps=c.eps, weight_decay=c.weight_decay, mask=mask)


@OPTIMIZERS.register("lion")
def _lion(
    c: ml_collections.ConfigDict, lr: optax.Schedule, mask: Any
) -> optax.GradientTransformation:
    return optax.lion(lr, b1=c.b1, b2=c.b2, weight_decay=c.weight_decay, mask=mask)


@OPTIMIZERS.register("sgd")
def _sgd(
    c: ml_collections.ConfigDict, lr: optax.Schedule, mask: Any
) -> optax.GradientTransformation:
    return optax.chain(
        optax.add_decayed_weights(c.weight_decay, mask=mask),
        optax.sgd(lr, momentum=c.momentum or None, nesterov=c.nesterov),
    )


@OPTIMIZERS.register("adafactor")
def _adafactor(
    c: ml_collections.ConfigDict, lr: optax.Schedule, mask: Any
) -> optax.GradientTransformation:
    return optax.adafactor(
        lr, weight_decay_rate=c.weight_decay or None, weight_decay_mask=mask, eps=c.eps
    )


def make_optimizer(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """The full update: optional global-norm clipping, then the named rule under its schedule,
    then (with prune.sparsity > 0) magnitude pruning, which holds pruned weights at exactly 0.

    With privacy.dp_sgd the update takes per-example gradients (a leading batch axis): the DP
    aggregate turns them into a clipped, noised mean first, and the rule sees an ordinary
    gradient (runtime.privacy refuses global-norm clipping beside it). A post-training quantized
    run has none."""
    if config.quant.mode in quantization.POST_TRAINING:
        # int8 weights do not train (launch.train refuses them): no moments to checkpoint.
        return optax.set_to_zero()
    c = config.optimizer
    mask = lambda params: decay_mask(params, c.decay_embeddings)  # noqa: E731
    chain = [OPTIMIZERS.get(c.name)(c, learning_rate_schedule(config), mask)]
    if config.privacy.dp_sgd:
        chain.insert(0, dp_aggregate(config))
    elif c.grad_clip_norm > 0:
        chain.insert(0, optax.clip_by_global_norm(c.grad_clip_norm))
    if (pruning := pruning_lib.from_config(config)) is not None:
        chain.append(pruning.transformation())
    return chain[0] if len(chain) == 1 else optax.chain(*chain)


# Folded into the run's seed for the DP noise. Without it the noise key would be the root key
# that init_state also splits for initialisation and dropout, and under JAX's partitionable
# threefry split(k, 2)[0] and split(k, n)[0] coincide: the first noise draw would reuse the
# initialisation key.
_DP_NOISE_STREAM = 0x44505347  # "DPSG"


def dp_aggregate(config: ml_collections.ConfigDict) -> optax.GradientTransformation:
    """optax's DP-SGD aggregate: clips each example's gradient to privacy.l2_clip_norm, sums,
    adds N(0, (noise_multiplier * l2_clip_norm)^2) per coordinate and divides by the batch size.
    Its noise key is part of the optimizer state, so it is checkpointed and a resumed run draws
    the same noise as one that never stopped."""
    p = config.privacy
    key = jax.random.fold_in(jax.random.key(config.seed), _DP_NOISE_STREAM)
    return optax.contrib.differentially_private_aggregate(p.l2_clip_norm, p.noise_multiplier, key)


def learning_rate_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
    """The schedule alone, so the loop can log the learning rate it used."""
    return SCHEDULES.get(config.optimizer.schedule)(config.optimizer, config.train.steps)
