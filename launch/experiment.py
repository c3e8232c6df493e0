"""What a config becomes before and during training: the pieces `launch.train` assembles and the
one training loop. `launch.benchmark` builds the same pieces and times the same loop.

The story, in order: checks -> mesh -> data -> model, objective and optimizer -> sharded state
specs -> jitted steps (`build`); then a fresh or restored state (`initial_state`); then the loop
(`train_loop`: step, log, eval, checkpoint).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import orbax.checkpoint as ocp
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

import data
import models
import objectives
from launch import checkpoint
from launch import mesh as mesh_lib
from launch import optimizer as optimizer_lib
from launch import privacy as privacy_lib
from launch.errors import UsageError
from launch.metric_writers import MetricWriter
from launch.progress import Progress
from launch.step import (
    MODEL_INPUT,
    TrainState,
    init_state,
    make_eval_step,
    make_train_step,
)

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss is {value} at step {step}")
        self.step = step


def check_names(config: ml_collections.ConfigDict) -> None:
    """Every component the config names exists (raises UnknownNameError listing the valid ones)."""
    models.MODELS.get(config.model.name)
    data.DATASETS.get(config.data.name)
    objectives.OBJECTIVES.get(config.objective.name)
    optimizer_lib.OPTIMIZERS.get(config.optimizer.name)
    optimizer_lib.SCHEDULES.get(config.optimizer.schedule)
    if config.train.compute_dtype not in COMPUTE_DTYPES:
        raise UsageError(
            f"unknown train.compute_dtype {config.train.compute_dtype!r}; "
            f"valid: {', '.join(COMPUTE_DTYPES)}"
        )
    for key in (
        "train.steps",
        "train.log_every",
        "eval.every",
        "checkpoint.every",
        "train.grad_accum_steps",
    ):
        section, name = key.split(".")
        if config[section][name] < 1:
            raise UsageError(f"{key} must be >= 1, got {config[section][name]}")
    privacy_lib.check_config(config)


@dataclass
class Experiment:
    """Everything the loop needs, built from a config; nothing written to disk yet."""

    config: ml_collections.ConfigDict
    mesh: Mesh
    rules: tuple
    dataset: data.Dataset
    train_iter: Any  # Grain iterator over this process's shard of each global batch
    model: nn.Module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    abstract_state: TrainState  # shapes, carrying the target shardings
    state_shardings: TrainState
    batch_sharding: NamedSharding
    train_step: Callable  # jitted: (state, batch) -> (state, metrics); donates the state
    eval_step: Callable  # jitted: (params, batch) -> metrics
    make_state: Callable[[], TrainState]  # a fresh, boxed state
    privacy: privacy_lib.DpSgdAccounting | None  # with privacy.dp_sgd: the epsilon spent by a step

    @property
    def tokens_per_step(self) -> int:
        """Tokens per optimizer step (examples for non-sequence data)."""
        return self.config.train.batch_size * (self.dataset.spec.seq_len or 1)

    @contextlib.contextmanager
    def context(self) -> Iterator[None]:
        """Mesh and logical-axis rules: what tracing, init and restore run under."""
        with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
            yield


def build(config: ml_collections.ConfigDict, devices: list | None = None) -> Experiment:
    """Checks the config against the devices (default: all) and data, then builds every piece.
    Raises UsageError for a config that does not fit (batch vs mesh, model vs data)."""
    check_names(config)
    mesh = mesh_lib.make_mesh(config, devices)
    mesh_lib.check_batch_size(
        "train.batch_size", config.train.batch_size, mesh, config.train.grad_accum_steps
    )
    mesh_lib.check_batch_size("eval.batch_size", config.eval.batch_size, mesh)

    # Data: prepared on first use; every process reads its own shard of each global batch.
    try:
        dataset = data.load(
            config.data.name, config.data[config.data.name].to_dict(), config.data.dir or None
        )
    except data.DataConfigError as e:
        raise UsageError(str(e)) from e
    spec = dataset.spec
    accounting = privacy_lib.accounting(config, spec.splits[spec.train_split])
    train_iter = iter(
        dataset.loader(
            spec.train_split,
            batch_size=config.train.batch_size // jax.process_count(),
            seed=config.seed,
            shuffle=True,
            num_epochs=None,
            shard_index=jax.process_index(),
            shard_count=jax.process_count(),
        )
    )

    try:
        model = models.build_model(config.model, spec, COMPUTE_DTYPES[config.train.compute_dtype])
        objective = objectives.get_objective(config.objective)
    except ValueError as e:  # a model or objective config that does not fit itself or the data
        raise UsageError(f"{config.model.name!r} with {config.objective.name!r}: {e}") from e
    tx = optimizer_lib.make_optimizer(config)
    rules = mesh_lib.logical_rules(config)

    # Shapes and logical specs from eval_shape: no parameter is materialised here.
    make_state = lambda: init_state(model, tx, config.seed, model.example_inputs(1))  # noqa: E731
    input_key = MODEL_INPUT[spec.kind]
    batch_sharding = mesh_lib.batch_sharding(mesh)
    replicated = NamedSharding(mesh, P())
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        boxed = jax.eval_shape(make_state)
        specs = mesh_lib.param_specs(boxed.params)
        abstract = mesh_lib.unbox(boxed)
        state_specs = TrainState(
            step=P(),
            params=specs,
            rng=P(),
            opt_state=mesh_lib.optimizer_state_specs(tx, abstract.opt_state, specs),
        )
        state_shardings = mesh_lib.to_shardings(state_specs, mesh, rules)
        # Jitted steps: explicit shardings in and out; the train step donates the old state.
        train_step = jax.jit(
            make_train_step(
                model,
                tx,
                objective,
                input_key,
                config.train.grad_accum_steps,
                NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES)),
                per_example_grads=config.privacy.dp_sgd,
            ),
            in_shardings=(state_shardings, batch_sharding),
            out_shardings=(state_shardings, replicated),
            donate_argnums=0,
        )
        eval_step = jax.jit(
            make_eval_step(model, objective, input_key),
            in_shardings=(state_shardings.params, batch_sharding),
            out_shardings=replicated,
        )
    return Experiment(
        config=config,
        mesh=mesh,
        rules=rules,
        dataset=dataset,
        train_iter=train_iter,
        model=model,
        tx=tx,
        schedule=optimizer_lib.learning_rate_schedule(config),
        abstract_state=checkpoint.abstract_like(abstract, state_shardings),
        state_shardings=state_shardings,
        batch_sharding=batch_sharding,
        train_step=train_step,
        eval_step=eval_step,
        make_state=make_state,
        privacy=accounting,
    )


def fresh_state(exp: Experiment) -> TrainState:
    """A new state, born sharded (each device initialises only its own shards)."""
    with exp.context():
        return jax.jit(
            lambda: mesh_lib.unbox(exp.make_state()), out_shardings=exp.state_shardings
        )()


def initial_state(exp: Experiment, manager: ocp.CheckpointManager) -> tuple[int, TrainState, bool]:
    """(start step, state, restored?): the newest complete checkpoint, with the data iterator
    where it was, or a fresh init."""
    with exp.context():
        restored = checkpoint.restore_latest(manager, exp.abstract_state, exp.train_iter)
    if restored is None:
        return 0, fresh_state(exp), False
    step, state = restored
    return step, state, True


def with_example_mask(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short final batch to `size` rows; `example_mask` tells objectives which are real
    (the loader's own mask, when it padded a shard, is kept)."""
    real = len(next(iter(batch.values())))
    batch = {"example_mask": np.ones(real, np.float32), **batch}
    return {
        k: np.concatenate([v, np.zeros((size - real, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }


def evaluate(
    eval_step: Any,
    params: Any,
    dataset: Any,
    config: ml_collections.ConfigDict,
    sharding: NamedSharding,
) -> dict[str, float]:
    """Mean of each metric over the whole evaluation split (or its first eval.num_batches
    batches), weighted by the scored items per batch."""
    per_process = config.eval.batch_size // jax.process_count()
    loader = dataset.eval_loader(per_process, jax.process_index(), jax.process_count())
    totals: dict[str, float] = {}
    weight = 0.0
    for i, batch in enumerate(loader):
        if config.eval.num_batches and i >= config.eval.num_batches:
            break
        batch = mesh_lib.put_batch(with_example_mask(batch, per_process), sharding)
        metrics = jax.device_get(eval_step(params, batch))
        w = float(metrics.pop("weight"))
        weight += w
        for k, v in metrics.items():
            totals[k] = totals.get(k, 0.0) + float(v) * w
    if weight == 0:
        raise RuntimeError(f"evaluation split {dataset.spec.eval_split!r} has no scored items")
    means = {k: v / weight for k, v in totals.items()}
    means.update(objectives.derived_metrics(means))  # perplexity: exp of the mean, not a mean
    return {f"eval/{k}": v for k, v in means.items()}


def train_loop(
    exp: Experiment,
    state: TrainState,
    start_step: int,
    manager: ocp.CheckpointManager,
    writer: MetricWriter,
    progress: Progress,
    preempted: list[bool],
) -> str:
    """Steps from `start_step` to `train.steps`: logs every `train.log_every` steps, evaluates every
    `eval.every`, checkpoints every `checkpoint.every` and when `preempted` becomes non-empty.
    Returns the run's status: 'completed', 'preempted' or 'diverged'."""
    config = exp.config
    pending_losses: list[tuple[int, jax.Array]] = []  # checked lazily: no host sync per step

    def check_finite() -> None:
        values = jax.device_get([loss for _, loss in pending_losses])
        for (step, _), value in zip(pending_losses, values, strict=True):
            if not np.isfinite(value):
                raise NonFiniteLoss(step, float(value))
        pending_losses.clear()

    timer, timer_step = time.monotonic(), start_step
    try:
        with exp.context():
            for step in range(start_step + 1, config.train.steps + 1):
                batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
                state, metrics = exp.train_step(state, batch)
                pending_losses.append((step, metrics["total_loss"]))
                progress.advance(step)
                last = step == config.train.steps
                scalars: dict[str, float] = {}
                if step % config.train.log_every == 0 or last:
                    check_finite()
                    values = jax.device_get(metrics)
                    rate = (step - timer_step) / max(time.monotonic() - timer, 1e-9)
                    scalars.update(
                        {f"train/{k}": float(v) for k, v in values.items() if k != "weight"}
                    )
                    scalars["train/learning_rate"] = float(exp.schedule(step - 1))
                    scalars["perf/steps_per_sec"] = rate
                    scalars["perf/tokens_per_sec"] = rate * exp.tokens_per_step
                    if exp.privacy is not None:
                        scalars.update(exp.privacy.metrics(step))
                if step % config.eval.every == 0 or last:
                    scalars.update(
                        evaluate(
                            exp.eval_step, state.params, exp.dataset, config, exp.batch_sharding
                        )
                    )
                if scalars:
                    writer.write(step, scalars)
                    progress.report(step, scalars)
                    timer, timer_step = time.monotonic(), step
                if step % config.checkpoint.every == 0 or last or preempted:
                    check_finite()  # never checkpoint a state that went non-finite
                    checkpoint.save(manager, step, state, exp.train_iter)
                if preempted and not last:
                    progress.message(f"SIGTERM: checkpointed step {step}; rerun to resume")
                    return "preempted"
    except NonFiniteLoss as e:
        progress.message(
            f"error: {e}; stopped. Last good checkpoint: step "
            f"{manager.latest_step()} in {manager.directory}"
        )
        return "diverged"
    return "completed"
