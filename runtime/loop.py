"""The one training loop: step, log, evaluate, checkpoint, from a built `Experiment`
(`runtime.assembly`) and its initial state. `launch.train` runs it; `launch.benchmark` times it."""

from __future__ import annotations

import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

import objectives
from runtime import checkpoint
from runtime import mesh as mesh_lib
from runtime.assembly import Experiment
from runtime.metric_writers import MetricWriter
from runtime.peak_flops import Peak
from runtime.profiling import StepProfiler
from runtime.progress import Progress
from runtime.step import TrainState


class Diverged(Exception):
    """A step whose loss, or whose update of the parameters, was not finite."""

    def __init__(self, step: int, what: str):
        super().__init__(f"{what} at step {step}")
        self.step = step


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
    checkpoints: checkpoint.Checkpoints,
    writer: MetricWriter,
    progress: Progress,
    preempted: list[bool],
    peak: Peak,
    profiler: StepProfiler | None = None,
) -> tuple[str, TrainState]:
    """Steps from `start_step` to `train.steps`: logs every `train.log_every` steps, evaluates every
    `eval.every`, checkpoints every `checkpoint.every` and when `preempted` becomes non-empty.
    MFU is logged against `peak` where the model states its FLOPs; `profiler` traces the steps
    its config names (`runtime.profiling`).
    Returns the run's status ('completed', 'preempted' or 'diverged') and its last state."""
    config = exp.config
    flops_per_step = exp.model_flops_per_step
    # (step, loss, were the updated parameters finite?), checked lazily: no host sync per step.
    pending: list[tuple[int, jax.Array, jax.Array]] = []

    def check_finite() -> None:
        values = jax.device_get([(loss, finite) for _, loss, finite in pending])
        for (step, _, _), (loss, finite) in zip(pending, values, strict=True):
            if not np.isfinite(loss):
                raise Diverged(step, f"loss is {float(loss)}")
            if not finite:
                raise Diverged(step, "the update made the parameters non-finite")
        pending.clear()

    timer, timer_step = time.monotonic(), start_step
    step = start_step
    try:
        with exp.context():
            for step in range(start_step + 1, config.train.steps + 1):
                if profiler is not None:
                    profiler.before_step(step, state)
                # Marks the step in a trace (the profiler's step view); costs nothing otherwise.
                with jax.profiler.StepTraceAnnotation("train", step_num=step):
                    batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
                    state, metrics = exp.train_step(state, batch, *exp.step_extras)
                pending.append((step, metrics["total_loss"], metrics.pop("params_finite")))
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
                    if flops_per_step is not None:
                        scalars["perf/mfu"] = rate * flops_per_step / peak.flops_per_second
                    if exp.privacy is not None:
                        scalars.update(exp.privacy.metrics(step))
                    if exp.pruning is not None:
                        scalars.update(exp.pruning.metrics(state.params))
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
                    check_finite()  # never checkpoint a state that is not finite
                    checkpoints.save(step, state, exp.train_iter)
                checkpoints.seal_finished()
                if profiler is not None:
                    profiler.after_step(step, (state, metrics))
                if preempted and not last:
                    progress.message(f"SIGTERM: checkpointed step {step}; rerun to resume")
                    return "preempted", state
    except Diverged as e:
        progress.message(
            f"error: {e}; stopped. Last good checkpoint: step "
            f"{checkpoints.latest_step()} in {checkpoints.directory}"
        )
        return "diverged", state
    finally:
        if profiler is not None:  # a trace the loop left early still holds its steps
            profiler.close(step)
    return "completed", state
