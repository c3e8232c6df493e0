"""Trains one model on one dataset from one config.

    python -m launch.train --config=experiments/mqar_mixers.py[:arm] --workdir=runs/x \
        [--config.train.steps=200 ...]

Rerunning the same command on the same workdir resumes from the newest checkpoint. The story, in
order: config -> checks -> data -> mesh -> model and optimizer -> sharded init -> restore ->
jitted steps -> loop (log, eval, checkpoint) -> manifest.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import flags
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from ml_collections import config_flags

import data
import models
import objectives
from launch import checkpoint, distributed, manifest
from launch import mesh as mesh_lib
from launch import optimizer as optimizer_lib
from launch.config import check_override_keys, differing_keys, load_config_file, to_json
from launch.errors import UsageError, exit_on_usage_error
from launch.metric_writers import MetricWriter
from launch.progress import Progress
from launch.step import (
    MODEL_INPUT,
    TrainState,
    init_state,
    make_eval_step,
    make_train_step,
)

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
# One of N processes (Kubernetes, or by hand); under `srun` the Slurm step says all this itself.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}


class NonFiniteLoss(Exception):
    def __init__(self, step: int, value: float):
        super().__init__(f"loss is {value} at step {step}")
        self.step = step


# ----------------------------------------------------------------------------- config and checks
def parse_command_line(
    argv: list[str],
) -> tuple[ml_collections.ConfigDict, str, distributed.Coordinator | None]:
    """absl parses; everything a user can get wrong becomes a one-line UsageError."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None:
        raise UsageError("--config=<experiments/file.py[:arg]> is required")
    check_override_keys(load_config_file(config_arg), argv)
    try:
        flags.FLAGS(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from e
    if not _WORKDIR.value:
        raise UsageError("--workdir=<run directory> is required")
    coordinator = distributed.resolve(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, os.environ
    )
    return _CONFIG.value, _WORKDIR.value, coordinator


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


def claim_workdir(workdir: str, config_json: str) -> None:
    """A workdir belongs to one config: resuming is fine, overwriting another run never is."""
    path = os.path.join(workdir, "config.json")
    if os.path.exists(path):
        with open(path) as f:
            keys = differing_keys(json.load(f), json.loads(config_json))
        if keys:
            shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
            raise UsageError(
                f"workdir {workdir!r} holds a run with a different config "
                f"(differs in {shown}); use a new --workdir"
            )
        return
    if jax.process_index() == 0:
        os.makedirs(workdir, exist_ok=True)
        with open(path + ".tmp", "w") as f:
            f.write(config_json)
        os.replace(path + ".tmp", path)


# ------------------------------------------------------------------------------------ evaluation
def with_example_mask(batch: dict[str, np.ndarray], size: int) -> dict[str, np.ndarray]:
    """Pads a short final batch to `size` rows; `example_mask` tells objectives which are real."""
    real = len(next(iter(batch.values())))
    padded = {
        k: np.concatenate([v, np.zeros((size - real, *v.shape[1:]), v.dtype)])
        for k, v in batch.items()
    }
    padded["example_mask"] = (np.arange(size) < real).astype(np.float32)
    return padded


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
    loader = dataset.loader(
        dataset.spec.eval_split,
        batch_size=per_process,
        seed=0,
        shuffle=False,
        num_epochs=1,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        drop_remainder=False,
    )
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


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    config, workdir, coordinator = parse_command_line(argv)
    check_names(config)
    distributed.initialize(coordinator)  # before any device is touched
    mesh = mesh_lib.make_mesh(config)
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
    input_key = MODEL_INPUT[spec.kind]
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

    # Model, objective, optimizer.
    try:
        model = models.build_model(config.model, spec, COMPUTE_DTYPES[config.train.compute_dtype])
        objective = objectives.get_objective(config.objective)
    except ValueError as e:  # a model or objective config that does not fit itself or the data
        raise UsageError(f"{config.model.name!r} with {config.objective.name!r}: {e}") from e
    tx = optimizer_lib.make_optimizer(config)
    schedule = optimizer_lib.learning_rate_schedule(config)
    rules = mesh_lib.logical_rules(config)
    claim_workdir(workdir, to_json(config))  # the config is good: from here on the run is real

    # Sharded state: shapes and logical specs from eval_shape; then either the newest complete
    # checkpoint (with the data iterator where it was) or a fresh init, born sharded either way.
    make_state = lambda: init_state(model, tx, config.seed, model.example_inputs(1))  # noqa: E731
    manager = checkpoint.make_manager(
        workdir, config.checkpoint.max_to_keep, config.checkpoint.async_save
    )
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
        restored = checkpoint.restore_latest(
            manager, checkpoint.abstract_like(abstract, state_shardings), train_iter
        )
        if restored is None:
            start_step = 0
            state = jax.jit(lambda: mesh_lib.unbox(make_state()), out_shardings=state_shardings)()
        else:
            start_step, state = restored
    num_params = models.count_params(state.params)
    tokens_per_step = config.train.batch_size * (spec.seq_len or 1)
    record = manifest.read(workdir) or {
        "config": json.loads(to_json(config)),
        "seed": config.seed,
        "attempts": [],
        "start_time": manifest.now(),
        "num_params": num_params,
        "tokens_per_step": tokens_per_step,  # examples per step for non-sequence data
        # Analytic costs where the family states them: FLOPs per token, decoding state size.
        "model": model.describe() if hasattr(model, "describe") else {},
    }
    git = manifest.git_state()
    previous = record["attempts"][-1]["git"] if record["attempts"] else None
    if previous and (previous["commit"], previous["diff_sha256"]) != (
        git["commit"],
        git["diff_sha256"],
    ):
        print(
            f"warning: resuming a run started at commit {previous['commit']} "
            f"(diff {previous['diff_sha256']}) with code at {git['commit']} "
            f"(diff {git['diff_sha256']})",
            file=sys.stderr,
        )
    record.update(
        git=git,
        versions=manifest.versions(),
        environment=manifest.environment(mesh),
        datasets={spec.name: dataset.fingerprint},
        status="running",
    )
    resumed_from = start_step if restored else None
    record["attempts"].append(manifest.new_attempt("launch.train", argv, resumed_from, git))
    manifest.write(workdir, record)

    # Jitted steps: explicit shardings in and out; the train step donates the old state.
    batch_sharding = mesh_lib.batch_sharding(mesh)
    micro = config.train.grad_accum_steps
    replicated = NamedSharding(mesh, P())
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        train_step = jax.jit(
            make_train_step(
                model,
                tx,
                objective,
                input_key,
                micro,
                NamedSharding(mesh, P(None, mesh_lib.BATCH_AXES)),
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

    # Preemption: SIGTERM asks the loop to checkpoint and leave after the current step.
    preempted = []
    signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))

    writer = MetricWriter(workdir, start_step)
    progress = Progress(start_step, config.train.steps)
    resumed = f", resumed at step {start_step}" if restored else ""
    progress.message(
        f"run directory: {os.path.abspath(workdir)}  ({num_params:,} parameters, "
        f"mesh {dict(mesh.shape)}{resumed})"
    )
    pending_losses: list[tuple[int, jax.Array]] = []  # checked lazily: no host sync per step

    def check_finite() -> None:
        values = jax.device_get([loss for _, loss in pending_losses])
        for (step, _), value in zip(pending_losses, values, strict=True):
            if not np.isfinite(value):
                raise NonFiniteLoss(step, float(value))
        pending_losses.clear()

    status = "failed"  # until the loop says otherwise
    timer, timer_step = time.monotonic(), start_step
    try:
        with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
            for step in range(start_step + 1, config.train.steps + 1):
                batch = mesh_lib.put_batch(next(train_iter), batch_sharding)
                state, metrics = train_step(state, batch)
                pending_losses.append((step, metrics["total_loss"]))
                progress.advance(step)
                last = step == config.train.steps
                scalars: dict[str, float] = {}
                if step % config.train.log_every == 0 or last:
                    check_finite()
                    values = jax.device_get(metrics)
                    elapsed = time.monotonic() - timer
                    rate = (step - timer_step) / max(elapsed, 1e-9)
                    scalars.update(
                        {f"train/{k}": float(v) for k, v in values.items() if k != "weight"}
                    )
                    scalars["train/learning_rate"] = float(schedule(step - 1))
                    scalars.update(
                        {"perf/steps_per_sec": rate, "perf/tokens_per_sec": rate * tokens_per_step}
                    )
                if step % config.eval.every == 0 or last:
                    scalars.update(
                        evaluate(eval_step, state.params, dataset, config, batch_sharding)
                    )
                if scalars:
                    writer.write(step, scalars)
                    progress.report(step, scalars)
                    timer, timer_step = time.monotonic(), step
                if step % config.checkpoint.every == 0 or last or preempted:
                    check_finite()  # never checkpoint a state that went non-finite
                    checkpoint.save(manager, step, state, train_iter)
                if preempted and not last:
                    status = "preempted"
                    progress.message(f"SIGTERM: checkpointed step {step}; rerun to resume")
                    break
            else:
                status = "completed"
    except NonFiniteLoss as e:
        status = "diverged"
        progress.message(
            f"error: {e}; stopped. Last good checkpoint: step "
            f"{manager.latest_step()} in {os.path.join(workdir, 'checkpoints')}"
        )
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        progress.close()
        record.update(status=status, end_time=manifest.now())
        record["attempts"][-1].update(end_time=manifest.now(), status=status)
        manifest.write(workdir, record)
    if status == "completed":
        progress.message(f"done: {os.path.abspath(workdir)}")
    return 1 if status == "diverged" else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
