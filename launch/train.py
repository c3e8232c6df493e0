"""Trains one model on one dataset from one config.

    python -m launch.train --config=experiments/mqar_mixers.py[:arm] --workdir=runs/x \
        [--config.train.steps=200 ...]

Rerunning the same command on the same workdir resumes from the newest checkpoint. `main` reads
as its sections: checks -> the experiment's pieces (`runtime.assembly.build`) and the run
directory -> state and the attempt's record (`runtime.manifest`) -> training (`runtime.loop`) ->
evaluation suites.

One of N processes: under `srun` with several tasks the run joins JAX's runtime by itself;
elsewhere (Kubernetes, by hand) give --coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import os
import signal
import sys

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

import models
from cluster import distributed
from evaluation.run import evaluate_checkpoint, suite_names
from runtime import (
    assembly,
    checkpoint,
    host_memory,
    loop,
    manifest,
    peak_flops,
    profiling,
    quantization,
)
from runtime.config import parse_flags, to_json
from runtime.errors import UsageError, exit_on_usage_error
from runtime.metric_writers import MetricWriter, backend_names
from runtime.progress import Progress
from runtime.workdir import check_workdir, claim_workdir

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:arg].", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Run directory (created; resumed if it exists).")
# One of N processes (Kubernetes, or by hand); under `srun` the Slurm step says all this itself.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")


# ----------------------------------------------------------------------------- config and checks
def parse_command_line(
    argv: list[str],
) -> tuple[ml_collections.ConfigDict, str, distributed.Coordinator | None]:
    """absl parses; everything a user can get wrong becomes a one-line UsageError."""
    parse_flags(argv)
    if not _WORKDIR.value:
        raise UsageError("--workdir=<run directory> is required")
    coordinator = distributed.resolve(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, os.environ
    )
    return _CONFIG.value, _WORKDIR.value, coordinator


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    keeps_freed_memory = host_memory.keep_freed_memory()  # before JAX starts its threads

    # Checks: everything that needs neither devices nor data.
    config, workdir, coordinator = parse_command_line(argv)
    assembly.check(config, workdir)
    quantization.check_trainable(config.quant)
    suite_names(config.eval.suites)  # an unknown suite fails now, not after training
    check_workdir(workdir, to_json(config))

    # The experiment's pieces, then the run directory: a config that does not fit the devices or
    # the data fails before anything is written.
    distributed.initialize(coordinator)  # before any device is touched
    exp = assembly.build(config, workdir=workdir)
    claim_workdir(workdir, to_json(config))
    peak = peak_flops.device_peak()  # MFU's denominator; on CPU a matmul timed now, once

    # State: the newest checkpoint that verifies, or a fresh init; then this attempt's record.
    checkpoints = checkpoint.Checkpoints(
        workdir, config.checkpoint.max_to_keep, config.checkpoint.async_save
    )
    start_step, state, restored = assembly.initial_state(exp, checkpoints)
    num_params = models.count_params(exp.abstract_params)
    record = manifest.begin_attempt(
        workdir,
        exp,
        num_params,
        argv,
        resumed_from_step=start_step if restored else None,
        extra_environment={"malloc_keeps_freed_memory": keeps_freed_memory, **peak.record()},
    )

    # Training: SIGTERM asks the loop to checkpoint and leave after the current step.
    preempted: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
    progress = Progress(start_step, config.train.steps)
    announce(progress, exp, workdir, num_params, start_step if restored else None)
    status = "failed"  # until the loop says otherwise
    writer = None
    try:
        writer = MetricWriter(
            workdir, start_step, backend_names(config.tracking.backends), experiment_name()
        )
        profiler = profiling.StepProfiler(config.profile, workdir, start_step + 1, progress.message)
        status, state = loop.train_loop(
            exp, state, start_step, checkpoints, writer, progress, preempted, peak, profiler
        )
        if status == "completed" and exp.pruning is not None:
            # The sparsity each pruned array reached, in the manifest (and so the model card).
            record["pruning"] = exp.pruning.report(state.params, config.train.steps)
    finally:
        checkpoints.close()
        if writer is not None:
            writer.close(status)
        progress.close()
        manifest.end_attempt(workdir, record, status)
    if status != "completed":
        return 1 if status == "diverged" else 0

    # Evaluation suites and the model card, in this process.
    suites = suite_names(config.eval.suites)
    if suites and jax.process_count() > 1:
        progress.message("evaluation suites skipped (several processes): run launch.evaluate")
    elif suites:
        summary = evaluate_checkpoint(exp, workdir, suites)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in summary["headline"].items() if v is not None)
        progress.message(f"evaluation suites ({', '.join(suites)}): {shown}")
    progress.message(f"done: {os.path.abspath(workdir)}")
    return 0


def experiment_name() -> str:
    """What a tracker groups this run under: its config file's name (`mqar_mixers`)."""
    path = config_flags.get_config_filename(flags.FLAGS[_CONFIG.name]).partition(":")[0]
    return os.path.splitext(os.path.basename(path))[0]


def announce(
    progress: Progress,
    exp: assembly.Experiment,
    workdir: str,
    num_params: int,
    resumed_at: int | None,
) -> None:
    """What a person starting the run should see first, and a leaking dataset's warning."""
    resumed = f", resumed at step {resumed_at}" if resumed_at is not None else ""
    trainable = exp.trainable_params
    trains = f", {trainable:,} trainable" if trainable != num_params else ""
    source = exp.finetune_source
    tuned = f", fine-tuned from step {source.step} of {source.run}" if source else ""
    progress.message(
        f"run directory: {os.path.abspath(workdir)}  ({num_params:,} parameters{trains}, "
        f"mesh {dict(exp.mesh.shape)}{tuned}{resumed})"
    )
    if (exp.dataset.fingerprint.get("overlap") or {}).get("leak"):
        name = exp.dataset.spec.name
        progress.message(
            f"WARNING: dataset {name!r} leaks: evaluation examples also occur in its train split, "
            f"so eval metrics partly measure memorisation (python -m launch.datacheck "
            f"--data={name} with this run's data.{name} parameters lists them)"
        )


if __name__ == "__main__":
    sys.exit(main(sys.argv))
