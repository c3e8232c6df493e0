"""Trains one model on one dataset from one config.

    python -m launch.train --config=experiments/mqar_mixers.py[:arm] --workdir=runs/x \
        [--config.train.steps=200 ...]

Rerunning the same command on the same workdir resumes from the newest checkpoint. `main` reads
as its sections: checks -> the experiment's pieces (`runtime.assembly.build`) and the run
directory -> state and the attempt's record (`runtime.manifest`) -> training (`runtime.loop`) ->
evaluation suites.

With `--seeds=0,1,2` and a --workdir holding `{seed}` (`--workdir=runs/x/seed_{seed}`) the
config's runs at those seeds train together, in this one process and one program
(`runtime.group`): each in its own run directory, as complete as a lone run's and bitwise equal
to it; each run's manifest records the command that trains it alone.

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
from evaluation.predictions import Predictors
from evaluation.run import evaluate_checkpoint, suite_names
from runtime import (
    assembly,
    checkpoint,
    group,
    host_memory,
    loop,
    manifest,
    peak_flops,
    phases,
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
_SEEDS = flags.DEFINE_list(
    "seeds",
    None,
    "Train the config at these seeds together, in one process (runtime/group.py); --workdir "
    "then holds {seed}, which each run's seed replaces.",
)
# One of N processes (Kubernetes, or by hand); under `srun` the Slurm step says all this itself.
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index, from 0.")


# ----------------------------------------------------------------------------- config and checks
def parse_command_line(
    argv: list[str],
) -> tuple[ml_collections.ConfigDict, list[int] | None, str, distributed.Coordinator | None]:
    """(config, --seeds or None, --workdir, coordinator): absl parses; everything a user can get
    wrong becomes a one-line UsageError."""
    parse_flags(argv)
    if not _WORKDIR.value:
        raise UsageError("--workdir=<run directory> is required")
    coordinator = distributed.resolve(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, os.environ
    )
    seeds = None
    if _SEEDS.value is not None:
        seeds = parse_seeds(_SEEDS.value, _WORKDIR.value, argv, coordinator)
    return _CONFIG.value, seeds, _WORKDIR.value, coordinator


def parse_seeds(
    values: list[str], workdir: str, argv: list[str], coordinator: distributed.Coordinator | None
) -> list[int]:
    """--seeds, checked against the rest of the command line."""
    if not all(v.strip().isdigit() for v in values) or not values:
        raise UsageError(f"--seeds={','.join(values)}: expected seeds like 0,1,2")
    seeds = [int(v) for v in values]
    if len(set(seeds)) != len(seeds):
        raise UsageError(f"--seeds={','.join(values)} names a seed twice")
    if "{seed}" not in workdir:
        raise UsageError(
            f"--seeds needs a --workdir holding {{seed}} (one run directory per seed), "
            f"not {workdir!r}"
        )
    if any(flag_name(arg) == "config.seed" for arg in argv):
        raise UsageError("--seeds sets each run's seed: drop --config.seed")
    if coordinator is not None:
        raise UsageError("--seeds trains in one process: launch each seed of a multi-process run")
    return seeds


def lone_command(argv: list[str], workdir: str, seed: int) -> list[str]:
    """The command that trains run `seed` of a group alone (into `workdir`): what its manifest
    records, so that `launch.reproduce` reruns that run alone."""
    kept, args = [], iter(argv[1:])
    for arg in args:
        if flag_name(arg) in ("seeds", "workdir"):
            if "=" not in arg:
                next(args, None)  # `--workdir x`: x goes too
            continue
        kept.append(arg)
    return [argv[0], *kept, f"--workdir={workdir}", f"--config.seed={seed}"]


def flag_name(arg: str) -> str:
    """'--workdir=x' -> 'workdir'."""
    return arg.lstrip("-").split("=", 1)[0]


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    keeps_freed_memory = host_memory.keep_freed_memory()  # before JAX starts its threads
    # Where the time goes, printed at the end and kept in each run's manifest.
    with phases.PhaseClock() as clock:
        return train_and_evaluate(argv, clock, keeps_freed_memory)


def train_and_evaluate(argv: list[str], clock: phases.PhaseClock, keeps_freed_memory: bool) -> int:
    """`main`'s work, timed by `clock`."""
    clock.record_since_start("imports")

    # Checks: everything that needs neither devices nor data. With --seeds, every run's.
    with clock.phase("checks"):
        config, seeds, workdir, coordinator = parse_command_line(argv)
        if seeds is None:
            workdirs, configs = [workdir], [config]
        else:
            group.check_config(config)
            workdirs = [workdir.replace("{seed}", str(seed)) for seed in seeds]
            configs = [assembly.with_seed(config, seed) for seed in seeds]
        # The teacher and fine-tuning source a run started with (a lone run's own).
        pinned = group.pinning_workdir(workdirs)
        assembly.check(config, pinned)
        quantization.check_trainable(config.quant)
        suite_names(config.eval.suites)  # an unknown suite fails now, not after training
        for run_dir, run_config in zip(workdirs, configs, strict=True):
            check_workdir(run_dir, to_json(run_config))

    # The experiment's pieces, then the run directories: a config that does not fit the devices
    # or the data fails before anything is written.
    with clock.phase("build (devices, data, model)"):
        distributed.initialize(coordinator)  # before any device is touched
        exp = assembly.build(config, workdir=pinned)
        runs = group.alone(exp) if seeds is None else group.of_seeds(exp, seeds)
        for run_dir, run in zip(workdirs, runs.runs, strict=True):
            claim_workdir(run_dir, to_json(run.config))
    with clock.phase("peak FLOP/s"):
        peak = peak_flops.device_peak()  # MFU's denominator; on CPU a matmul timed now, once

    # State: the newest checkpoint that verifies (of every run), or the starting state; then
    # this attempt's record in each run's manifest.
    with clock.phase("initial state, manifest"):
        checkpoints = [
            checkpoint.Checkpoints(
                run_dir, config.checkpoint.max_to_keep, config.checkpoint.async_save
            )
            for run_dir in workdirs
        ]
        start_step, state, restored = group.initial_state(runs, checkpoints)
        num_params = models.count_params(exp.abstract_params)
        resumed_at = start_step if restored else None
        environment = {"malloc_keeps_freed_memory": keeps_freed_memory, **peak.record()}
        together = None
        if seeds is not None:
            command = manifest.command_line("launch.train", argv)
            together = {"seeds": seeds, "workdirs": workdirs, "command": command}
        records = [
            manifest.begin_attempt(
                run_dir,
                run,
                num_params,
                argv if seeds is None else lone_command(argv, run_dir, run.config.seed),
                resumed_from_step=resumed_at,
                extra_environment=environment,
                group=together,
            )
            for run_dir, run in zip(workdirs, runs.runs, strict=True)
        ]

    # Training: SIGTERM asks the loop to checkpoint and leave after the current step.
    preempted: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))
    progress = Progress(start_step, config.train.steps)
    announce(progress, exp, workdirs, num_params, resumed_at)
    statuses = ["failed"] * len(workdirs)  # until the loop says otherwise
    writers: list[MetricWriter] = []
    try:
        with clock.phase("training loop (logging, metrics)"):
            for run_dir in workdirs:
                writers.append(
                    MetricWriter(
                        run_dir,
                        start_step,
                        backend_names(config.tracking.backends),
                        experiment_name(),
                    )
                )
            # A group refuses a profile (group.why_alone): a lone run's trace.
            profiler = profiling.StepProfiler(
                config.profile, workdir, start_step + 1, progress.message
            )
            statuses, state = loop.train_loop(
                runs,
                state,
                start_step,
                checkpoints,
                writers,
                progress,
                preempted,
                peak,
                profiler,
                clock,
            )
        if exp.pruning is not None:
            # The sparsity each pruned array reached, in the manifest (and so the model card).
            for record, params, status in zip(
                records, [run_state.params for run_state in state], statuses, strict=True
            ):
                if status == "completed":
                    record["pruning"] = exp.pruning.report(params, config.train.steps)
    finally:
        with clock.phase("closing"):
            checkpoint.close_together(checkpoints)
            # Fewer writers than runs when opening one failed.
            for writer, status in zip(writers, statuses, strict=False):
                writer.close(status)
            progress.close()
            for run_dir, record, status in zip(workdirs, records, statuses, strict=True):
                manifest.end_attempt(run_dir, record, status)

    # Evaluation suites and the model card of each run that completed, in this process; a
    # group's runs share one model, so its compiled forward passes.
    suites = suite_names(config.eval.suites)
    predictors = Predictors(exp)
    for run_dir, run, status in zip(workdirs, runs.runs, statuses, strict=True):
        if status != "completed":
            continue
        if suites and jax.process_count() > 1:
            progress.message("evaluation suites skipped (several processes): run launch.evaluate")
        elif suites:
            with clock.phase("evaluation suites"):
                summary = evaluate_checkpoint(run, run_dir, suites, predictors)
            shown = ", ".join(
                f"{k} {v:.4g}" for k, v in summary["headline"].items() if v is not None
            )
            progress.message(f"evaluation suites ({', '.join(suites)}): {shown}")
        progress.message(f"done: {os.path.abspath(run_dir)}")
    # Where this process's time went; a group's runs share it (benchmarks/startup.md).
    progress.message(clock.line())
    for run_dir, record in zip(workdirs, records, strict=True):
        manifest.record_phases(run_dir, record, clock.record())
    return 1 if "diverged" in statuses else 0


def experiment_name() -> str:
    """What a tracker groups this run under: its config file's name (`mqar_mixers`)."""
    path = config_flags.get_config_filename(flags.FLAGS[_CONFIG.name]).partition(":")[0]
    return os.path.splitext(os.path.basename(path))[0]


def announce(
    progress: Progress,
    exp: assembly.Experiment,
    workdirs: list[str],
    num_params: int,
    resumed_at: int | None,
) -> None:
    """What a person starting the run(s) should see first, and a leaking dataset's warning."""
    resumed = f", resumed at step {resumed_at}" if resumed_at is not None else ""
    trainable = exp.trainable_params
    trains = f", {trainable:,} trainable" if trainable != num_params else ""
    source = exp.finetune_source
    tuned = f", fine-tuned from step {source.step} of {source.run}" if source else ""
    progress.message(
        f"run director{'y' if len(workdirs) == 1 else 'ies'}: "
        f"{', '.join(os.path.abspath(w) for w in workdirs)}  ({num_params:,} parameters{trains}, "
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
