"""The train state and the pure functions the loop jits: one update step and one eval step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from runtime.mesh import unbox

Batch = dict[str, jax.Array]
Objective = Callable[[jax.Array, Batch, dict[str, jax.Array]], tuple[jax.Array, dict]]
# LoRA: (adapters, frozen base parameters) -> the parameters the model computes with.
Merge = Callable[[Any, Any], Any]


class ReadOnly(NamedTuple):
    """Parameters a train step reads and never trains, passed to it every call (arguments of the
    program, not constants compiled into it, and not in the state, so never checkpointed with
    it): LoRA's frozen base, a distillation teacher's. None where the run has no such thing."""

    base: Any = None
    teacher: Any = None


NOTHING_READ_ONLY = ReadOnly()

# Which batch entry the model reads, per dataset kind.
MODEL_INPUT = {"sequence": "inputs", "image": "image"}


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32 scalar: optimizer updates done
    params: Any
    opt_state: Any
    rng: jax.Array  # raw uint32 key; step t uses fold_in(rng, t), so resuming needs no RNG replay


def init_state(
    model: nn.Module, tx: optax.GradientTransformation, seed: int, example_inputs: jax.Array
) -> TrainState:
    """Boxed (logically partitioned) parameters; the caller reads specs, then unboxes."""
    return train_state(lambda rng: model.init(rng, example_inputs, train=False)["params"], tx, seed)


def train_state(
    init_params: Callable[[jax.Array], Any], tx: optax.GradientTransformation, seed: int
) -> TrainState:
    """A state at step 0 around `init_params(key)` (boxed): the seed's first key initialises
    the parameters, its second is the run's RNG (dropout)."""
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))
    params = init_params(init_rng)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(unbox(params)),
        rng=train_rng,
    )


def _apply(
    model: nn.Module,
    params: Any,
    inputs: jax.Array,
    train: bool,
    rng: jax.Array | None,
    positions: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Logits plus the auxiliary losses the model sowed, summed per name. With `positions`
    [B, S] (a batch's `score_positions`), the logits are those positions' only: [B, S, V]."""
    rngs = {"dropout": rng} if rng is not None else {}
    at = {} if positions is None else {"positions": positions}
    logits, collections = model.apply(
        {"params": params}, inputs, train=train, rngs=rngs, mutable=["aux_loss"], **at
    )
    flat = flax.traverse_util.flatten_dict(collections.get("aux_loss", {}), sep="/")
    aux = {
        name: jnp.sum(jnp.asarray(jax.tree.leaves(v)).astype(jnp.float32))
        for name, v in flat.items()
    }
    return logits, aux


def make_train_step(
    model: nn.Module,
    tx: optax.GradientTransformation,
    objective: Objective,
    input_key: str,
    microbatches: int,
    microbatch_sharding: Any,
    per_example_grads: bool = False,
    merge: Merge | None = None,
    teacher: nn.Module | None = None,
) -> Callable[..., tuple]:
    """One optimizer update; with `microbatches` > 1 the gradient is averaged over a lax.scan.

    With `per_example_grads` (DP-SGD) `tx` receives every example's own gradient on a leading
    batch axis, and its first transform clips, noises and averages them; `microbatches` is
    then 1 (runtime.privacy checks).

    The step is (state, batch, read_only: ReadOnly). With `merge` (LoRA) the state's parameters
    are adapters: the model computes with merge(adapters, read_only.base), and only the adapters
    have gradients and updates. With a `teacher` (distillation) the teacher's logits on each
    (micro)batch, where the student's are computed, reach the objective as
    batch['teacher_logits'], through stop_gradient, from read_only.teacher."""
    model_params = merge or (lambda params, _: params)

    def taught(batch: Batch, teacher_params: Any) -> Batch:
        if teacher is None:
            return batch
        logits, _ = _apply(
            teacher, teacher_params, batch[input_key], False, None, batch.get("score_positions")
        )
        return {**batch, "teacher_logits": jax.lax.stop_gradient(logits)}

    def loss_and_grad(params: Any, batch: Batch, rng: jax.Array, read_only: ReadOnly) -> tuple:
        batch = taught(batch, read_only.teacher)

        def loss_fn(p: Any) -> tuple:
            logits, aux = _apply(
                model,
                model_params(p, read_only.base),
                batch[input_key],
                True,
                rng,
                batch.get("score_positions"),
            )
            loss, metrics = objective(logits, batch, aux)
            # Each auxiliary loss (MoE load balance, router z-loss, per layer) is in the total;
            # logging it shows how much.
            return loss, {**metrics, **{f"aux/{name}": value for name, value in aux.items()}}

        return jax.value_and_grad(loss_fn, has_aux=True)(params)

    def per_example_loss_and_grad(
        params: Any, batch: Batch, rng: jax.Array, read_only: ReadOnly
    ) -> tuple:
        """The batch's loss and metrics, and each example's gradient taken alone (a batch of
        one with its own dropout key), stacked on a leading batch axis."""
        batch_size = batch[input_key].shape[0]

        def one_example(example: Batch, example_rng: jax.Array) -> tuple:
            one = jax.tree.map(lambda x: x[None], example)
            return loss_and_grad(params, one, example_rng, read_only)

        (losses, metrics), grads = jax.vmap(one_example)(batch, jax.random.split(rng, batch_size))
        return batch_means(losses, metrics), grads

    def step(
        state: TrainState, batch: Batch, read_only: ReadOnly = NOTHING_READ_ONLY
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        rng = jax.random.fold_in(state.rng, state.step)
        if per_example_grads:
            (loss, metrics), grads = per_example_loss_and_grad(state.params, batch, rng, read_only)
        elif microbatches == 1:
            (loss, metrics), grads = loss_and_grad(state.params, batch, rng, read_only)
        else:
            # Microbatch i takes every `microbatches`-th example, so each one stays spread over
            # all data-parallel devices instead of living on a few of them.
            def split(x: jax.Array) -> jax.Array:
                x = x.reshape(x.shape[0] // microbatches, microbatches, *x.shape[1:])
                return jax.lax.with_sharding_constraint(jnp.swapaxes(x, 0, 1), microbatch_sharding)

            def accumulate(carry: tuple, micro: tuple) -> tuple:
                index, micro_batch = micro
                out, grads = loss_and_grad(
                    state.params, micro_batch, jax.random.fold_in(rng, index), read_only
                )
                return jax.tree.map(jnp.add, carry, (out, grads)), None

            micro_batches = jax.tree.map(split, batch)
            first = jax.tree.map(lambda x: x[0], micro_batches)
            zeros = jax.tree.map(
                lambda s: jnp.zeros(s.shape, s.dtype),
                jax.eval_shape(loss_and_grad, state.params, first, rng, read_only),
            )
            summed, _ = jax.lax.scan(accumulate, zeros, (jnp.arange(microbatches), micro_batches))
            (loss, metrics), grads = jax.tree.map(lambda x: x / microbatches, summed)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        new_state = state.replace(
            step=state.step + 1,
            params=optax.apply_updates(state.params, updates),
            opt_state=opt_state,
        )
        # With per-example gradients the norm logged is still the batch gradient's (their mean,
        # before clipping and noise), so the metric means the same in DP and non-DP runs.
        batch_grads = jax.tree.map(lambda g: jnp.mean(g, 0), grads) if per_example_grads else grads
        metrics = {
            **metrics,
            "total_loss": loss,
            "grad_norm": optax.tree.norm(batch_grads),
            # The loss is computed before the update, so it cannot tell whether the state about to
            # be checkpointed is finite; this can. The optimizer state is not checked: a
            # non-finite moment makes the parameters non-finite at the same update.
            "params_finite": all_finite(new_state.params),
        }
        return new_state, metrics

    return step


def all_finite(tree: Any) -> jax.Array:
    """One boolean: is every element of every array in `tree` finite?"""
    return jax.tree.reduce(
        jnp.logical_and, jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), tree), jnp.bool_(True)
    )


def batch_means(losses: jax.Array, metrics: dict[str, jax.Array]) -> tuple:
    """Per-example losses [B] and metrics -> what the batched step reports for the batch.

    Objectives report means over scored items plus `weight` (how many); weighting each
    example's values by its `weight` gives back the batch's means (a sequence batch's token
    mean, with padding rows at weight 0), and `weight` itself adds up. Plain means otherwise.
    """
    weights = metrics.get("weight")
    if weights is None:
        return jnp.mean(losses), {k: jnp.mean(v, 0) for k, v in metrics.items()}
    total = jnp.sum(weights)
    denom = jnp.where(total > 0, total, 1.0)

    def mean(x: jax.Array) -> jax.Array:
        return jnp.sum(x * weights) / denom

    return mean(losses), {k: total if k == "weight" else mean(v) for k, v in metrics.items()}


def make_eval_step(
    model: nn.Module, objective: Objective, input_key: str, merge: Merge | None = None
) -> Callable[..., dict[str, jax.Array]]:
    """The metrics of a batch; with `merge` (LoRA), as in `make_train_step`, the parameters are
    adapters and a third argument is the frozen base."""
    model_params = merge or (lambda params, _: params)

    def eval_step(params: Any, batch: Batch, frozen: Any = None) -> dict[str, jax.Array]:
        logits, aux = _apply(
            model,
            model_params(params, frozen),
            batch[input_key],
            False,
            None,
            batch.get("score_positions"),
        )
        _, metrics = objective(logits, batch, aux)
        return metrics

    return eval_step
