"""Joining JAX's multi-process runtime: under Slurm by itself, elsewhere from coordinator flags.

A run of N processes is N copies of the same `launch.train` command. Each must call
`jax.distributed.initialize` before touching a device; after that `jax.devices()` is the global
device list, the mesh spans every process, and each process feeds its own shard of every batch.
We never start processes ourselves: Slurm (`srun`) or Kubernetes (an Indexed Job) does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import jax

from runtime.errors import UsageError


@dataclass(frozen=True)
class Coordinator:
    """Where process 0 listens, how many processes join, and which one this is."""

    address: str | None  # host:port; None lets JAX read it from the cluster (Slurm)
    num_processes: int
    process_id: int
    source: str  # 'flags' | 'slurm': how the run learned it is one of many


def slurm_step_tasks(environ: Mapping[str, str]) -> int:
    """Tasks in the current `srun` step; 1 outside Slurm or in a batch script's own step."""
    return int(environ.get("SLURM_STEP_NUM_TASKS", "1"))


def resolve(
    address: str | None,
    num_processes: int | None,
    process_id: int | None,
    environ: Mapping[str, str],
) -> Coordinator | None:
    """The coordinator from flags or the Slurm step, or None for a single-process run.

    Raises UsageError for incomplete or contradictory flags and for a Slurm step whose task count
    is not the job's (JAX would wait forever for processes that never come).
    """
    given = [v is not None for v in (address, num_processes, process_id)]
    if any(given):
        if not all(given):
            raise UsageError(
                "--coordinator_address, --num_processes and --process_id go together; "
                "give all three or none"
            )
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"--coordinator_address={address!r} must be host:port")
        if num_processes < 1:
            raise UsageError(f"--num_processes must be >= 1, got {num_processes}")
        if not 0 <= process_id < num_processes:
            raise UsageError(f"--process_id must be in [0, {num_processes}), got {process_id}")
        return Coordinator(address, num_processes, process_id, "flags")
    step_tasks = slurm_step_tasks(environ)
    if step_tasks <= 1:
        return None
    job_tasks = int(environ.get("SLURM_NTASKS", step_tasks))
    if job_tasks != step_tasks:
        raise UsageError(
            f"this srun step has {step_tasks} tasks but the job has {job_tasks}; run every task "
            "of the job (srun without -n) or pass --coordinator_address/--num_processes/"
            "--process_id"
        )
    return Coordinator(None, step_tasks, int(environ["SLURM_PROCID"]), "slurm")


def initialize(coordinator: Coordinator | None) -> None:
    """Joins the runtime (a no-op for one process). Must run before any device is touched."""
    if coordinator is None:
        return
    # CPU processes exchange collectives through gloo; accelerators ignore this setting.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if coordinator.source == "slurm":
        jax.distributed.initialize()  # JAX reads the coordinator and ranks from the step
    else:
        jax.distributed.initialize(
            coordinator.address, coordinator.num_processes, coordinator.process_id
        )
    if jax.process_count() != coordinator.num_processes:
        raise RuntimeError(
            f"joined a runtime of {jax.process_count()} processes, expected "
            f"{coordinator.num_processes}"
        )
