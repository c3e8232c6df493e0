"""Trains one model on one dataset from one config.

    python -m launch.train --config=experiments/mqar_mixers.py[:arm] --workdir=runs/x \
        [--config.train.steps=200 ...]

Rerunning the same command on the same workdir resumes from the newest checkpoint. The story, in
order: command line -> checks -> (multi-process runtime) -> the experiment's pieces
(`runtime.assembly.build`) -> claim the workdir -> restore or init -> manifest -> the loop
(`launch.loop.train_loop`) -> manifest.

One of N processes: under `srun` with several tasks the run joins JAX's runtime by itself;
elsewhere (Kubernetes, by hand) give --coordinator_address, --num_processes and --process_id.
"""

from __future__ import annotations

import json
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
from runtime import assembly, checkpoint, host_memory, loop, manifest, peak_flops
from runtime.config import differing_keys, parse_flags, to_json
from runtime.errors import UsageError, exit_on_usage_error
from runtime.metric_writers import MetricWriter
from runtime.progress import Progress

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


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    keeps_freed_memory = host_memory.keep_freed_memory()  # before JAX starts its threads
    config, workdir, coordinator = parse_command_line(argv)
    assembly.check_names(config)
    suite_names(config.eval.suites)  # an unknown suite fails now, not after training
    distributed.initialize(coordinator)  # before any device is touched
    exp = assembly.build(config)
    claim_workdir(workdir, to_json(config))  # the config is good: from here on the run is real
    peak = peak_flops.device_peak()  # MFU's denominator; on CPU a matmul timed now, once

    manager = checkpoint.make_manager(
        workdir, config.checkpoint.max_to_keep, config.checkpoint.async_save
    )
    start_step, state, restored = assembly.initial_state(exp, manager)
    num_params = models.count_params(state.params)
    record = manifest.read(workdir) or {
        "config": json.loads(to_json(config)),
        "seed": config.seed,
        "attempts": [],
        "start_time": manifest.now(),
        "num_params": num_params,
        "tokens_per_step": exp.tokens_per_step,  # examples per step for non-sequence data
        # Analytic costs where the family states them: FLOPs per token, decoding state size.
        "model": exp.model.describe() if hasattr(exp.model, "describe") else {},
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
        environment={
            **manifest.environment(exp.mesh),
            "malloc_keeps_freed_memory": keeps_freed_memory,
            **peak.record(),
        },
        datasets={exp.dataset.spec.name: exp.dataset.fingerprint},
        status="running",
    )
    if exp.privacy is not None:
        # The (epsilon, delta) of the whole run: it also bounds every checkpoint before the end.
        record["privacy"] = exp.privacy.guarantee(config.train.steps)
    resumed_from = start_step if restored else None
    record["attempts"].append(manifest.new_attempt("launch.train", argv, resumed_from, git))
    manifest.write(workdir, record)

    # Preemption: SIGTERM asks the loop to checkpoint and leave after the current step.
    preempted: list[bool] = []
    signal.signal(signal.SIGTERM, lambda *_: preempted.append(True))

    writer = MetricWriter(workdir, start_step)
    progress = Progress(start_step, config.train.steps)
    resumed = f", resumed at step {start_step}" if restored else ""
    progress.message(
        f"run directory: {os.path.abspath(workdir)}  ({num_params:,} parameters, "
        f"mesh {dict(exp.mesh.shape)}{resumed})"
    )
    if (exp.dataset.fingerprint.get("overlap") or {}).get("leak"):
        name = exp.dataset.spec.name
        progress.message(
            f"WARNING: dataset {name!r} leaks: evaluation examples also occur in its train split, "
            f"so eval metrics partly measure memorisation (python -m launch.datacheck "
            f"--data={name} with this run's data.{name} parameters lists them)"
        )
    status = "failed"  # until the loop says otherwise
    try:
        status = loop.train_loop(exp, state, start_step, manager, writer, progress, preempted, peak)
    finally:
        manager.wait_until_finished()
        manager.close()
        writer.close()
        progress.close()
        record.update(status=status, end_time=manifest.now())
        record["attempts"][-1].update(end_time=manifest.now(), status=status)
        manifest.write(workdir, record)
    if status != "completed":
        return 1 if status == "diverged" else 0
    suites = suite_names(config.eval.suites)
    if suites and jax.process_count() > 1:
        progress.message("evaluation suites skipped (several processes): run launch.evaluate")
    elif suites:
        summary = evaluate_checkpoint(exp, workdir, suites)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in summary["headline"].items() if v is not None)
        progress.message(f"evaluation suites ({', '.join(suites)}): {shown}")
    progress.message(f"done: {os.path.abspath(workdir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
