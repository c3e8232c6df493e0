"""The one training loop: step, log, evaluate, checkpoint, for a group of runs (`runtime.group`;
a lone run is a group of one) built from an `Experiment` (`runtime.assembly`), from its initial
state. `launch.train` runs it; `launch.benchmark` times it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import NamedSharding

import objectives
from runtime import checkpoint
from runtime import mesh as mesh_lib
from runtime.assembly import Experiment
from runtime.group import Group
from runtime.metric_writers import MetricWriter
from runtime.peak_flops import Peak
from runtime.phases import PhaseClock
from runtime.profiling import StepProfiler
from runtime.progress import Progress
from runtime.step import TrainState


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
    group: Group,
    state: list[TrainState],
    start_step: int,
    checkpoints: Sequence[checkpoint.Checkpoints],
    writers: Sequence[MetricWriter],
    progress: Progress,
    preempted: list[bool],
    peak: Peak,
    profiler: StepProfiler | None = None,
    clock: PhaseClock | None = None,
) -> tuple[list[str], TrainState]:
    """Steps the group's runs (`runtime.group`; a lone run is a group of one) from `start_step`
    to `train.steps`: logs every `train.log_every` steps, evaluates every `eval.every`,
    checkpoints every `checkpoint.every` and when `preempted` becomes non-empty; run i's go to
    `writers[i]` and `checkpoints[i]`. MFU is logged against `peak` where the model states its
    FLOPs; `profiler` traces the steps its config names (`runtime.profiling`; a lone run's);
    `clock` times the first step (which compiles), the others, evaluation and checkpoints.
    `state` holds each run's. Returns each run's status ('completed', 'preempted' or
    'diverged') and each run's last state.

    A run that diverges is no longer logged or checkpointed; the others go on (its state is
    still stepped: the program's shapes are fixed, and the runs do not touch each other's)."""
    exp = group.exp
    config = exp.config

    def timed(phase: str) -> contextlib.AbstractContextManager:
        return clock.phase(phase) if clock is not None else contextlib.nullcontext()

    def finish_steps() -> None:
        # Steps are dispatched asynchronously: wait for them, so that their time is not counted
        # against whatever waits next (an evaluation, a checkpoint, which wait anyway).
        with timed("steps"):
            jax.block_until_ready(state)

    stopped: dict[int, str] = {}  # run -> status, for runs that stopped before the end
    # (step, each run's loss, were its updated parameters finite?), checked lazily: no host
    # sync per step.
    pending: list[tuple[int, list[jax.Array], list[jax.Array]]] = []

    def training() -> list[int]:
        return [i for i in range(len(group.runs)) if i not in stopped]

    def check_finite() -> None:
        with timed("steps"):  # waits for the steps dispatched since the last check
            values = jax.device_get([(loss, finite) for _, loss, finite in pending])
        for (step, _, _), (losses, finites) in zip(pending, values, strict=True):
            for i, loss, finite in zip(range(len(group.runs)), losses, finites, strict=True):
                if i in stopped:
                    continue
                if not np.isfinite(loss):
                    diverged(i, step, f"loss is {float(loss)}")
                elif not finite:
                    diverged(i, step, "the update made the parameters non-finite")
        pending.clear()

    def diverged(i: int, step: int, what: str) -> None:
        stopped[i] = "diverged"
        progress.message(
            f"error: {group.label(i)}{what} at step {step}; stopped. Last good checkpoint: "
            f"step {checkpoints[i].latest_step()} in {checkpoints[i].directory}"
        )

    timer, timer_step = time.monotonic(), start_step
    step = start_step
    try:
        with exp.context():
            for step in range(start_step + 1, config.train.steps + 1):
                if profiler is not None:
                    profiler.before_step(step, state)
                first = step == start_step + 1
                with timed("first step" if first else "steps"):
                    # Marks the step in a trace (the profiler's step view); costs nothing else.
                    with jax.profiler.StepTraceAnnotation("train", step_num=step):
                        state, metrics = group.train_step(state, group.next_batch())
                    if first:
                        jax.block_until_ready(state)  # its compilation and its run, together
                losses = [run_metrics["total_loss"] for run_metrics in metrics]
                pending.append((step, losses, [m.pop("params_finite") for m in metrics]))
                progress.advance(step)
                last = step == config.train.steps
                scalars: list[dict[str, float]] = [{} for _ in group.runs]
                if step % config.train.log_every == 0 or last:
                    check_finite()
                    rate = (step - timer_step) / max(time.monotonic() - timer, 1e-9)
                    params = [run_state.params for run_state in state]
                    for i, values in enumerate(jax.device_get(metrics)):
                        run = group.runs[i]
                        scalars[i].update(train_scalars(run, values, params[i], step, rate, peak))
                if step % config.eval.every == 0 or last:
                    finish_steps()
                    for i in training():
                        params = state[i].params
                        with timed("evaluation"):
                            scalars[i].update(
                                evaluate(
                                    exp.eval_step, params, exp.dataset, config, exp.batch_sharding
                                )
                            )
                for i in training():
                    if scalars[i]:
                        writers[i].write(step, scalars[i])
                        progress.report(step, scalars[i], group.label(i))
                if any(scalars):
                    timer, timer_step = time.monotonic(), step
                if step % config.checkpoint.every == 0 or last or preempted:
                    check_finite()  # never checkpoint a state that is not finite
                    finish_steps()
                    runs = training()
                    with timed("checkpoints"):
                        checkpoint.save_together(
                            [checkpoints[i] for i in runs],
                            step,
                            [state[i] for i in runs],
                            [group.runs[i].train_iter for i in runs],
                        )
                with timed("checkpoints"):
                    for run_checkpoints in checkpoints:
                        run_checkpoints.seal_finished()
                if profiler is not None:
                    profiler.after_step(step, (state, metrics))
                if not training():
                    break
                if preempted and not last:
                    progress.message(f"SIGTERM: checkpointed step {step}; rerun to resume")
                    stopped.update(dict.fromkeys(training(), "preempted"))
                    break
    finally:
        if profiler is not None:  # a trace the loop left early still holds its steps
            profiler.close(step)
    return [stopped.get(i, "completed") for i in range(len(group.runs))], state


def train_scalars(
    exp: Experiment, values: dict[str, Any], params: Any, step: int, rate: float, peak: Peak
) -> dict[str, float]:
    """What a logging step records of a run's train metrics: the step's metrics, the learning
    rate it used, its speed (a group's runs each advance at the group's rate) and, with DP-SGD,
    the privacy spent, with pruning the sparsity of the run's `params`."""
    scalars = {f"train/{k}": float(v) for k, v in values.items() if k != "weight"}
    scalars["train/learning_rate"] = float(exp.schedule(step - 1))
    scalars["perf/steps_per_sec"] = rate
    scalars["perf/tokens_per_sec"] = rate * exp.tokens_per_step
    if exp.model_flops_per_step is not None:
        scalars["perf/mfu"] = rate * exp.model_flops_per_step / peak.flops_per_second
    if exp.privacy is not None:
        scalars.update(exp.privacy.metrics(step))
    if exp.pruning is not None:
        scalars.update(exp.pruning.metrics(params))
    return scalars
