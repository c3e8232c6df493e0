"""Runs `launch.train` as a Slurm job: renders an sbatch script and, with --submit, submits it.

    python -m launch.slurm --config=experiments/mqar_mixers.py[:arg] --workdir=runs/x \
        --nodes=N --tasks-per-node=M [--partition=P] [--time=HH:MM:SS] [--cpus-per-task=C] \
        [--devices-per-task=D] [--env KEY=VALUE ...] [--submit] [--config.<key>=<value> ...]

The script is `<workdir>/slurm/train.sbatch`: N x M tasks, one `srun` task per JAX process, each
running `python -m launch.train --config=... --workdir=... <overrides>` with this checkout as its
working directory and this Python interpreter (so the job sees the same code and environment;
the workdir and config file are made absolute or repository-relative accordingly). There are no
coordinator flags: inside an `srun` step with several tasks `launch.train` joins JAX's runtime
by itself. The job's output goes to `<workdir>/slurm/<jobid>.out`.

- `--devices-per-task=D` exports `XLA_FLAGS=--xla_force_host_platform_device_count=D` (D CPU
  devices per process, for CPU clusters); `--env KEY=VALUE` exports anything else
  (`JAX_PLATFORMS`, `ARCHLAB_DATA_DIR`, ...). sbatch also passes on the submitting shell's
  environment, as it always does.
- Rerunning the same command reuses the same script. A script with other content is never
  overwritten silently: it is kept as `train.<n>.sbatch` (the lowest unused n counting up) so
  the logs of earlier jobs still have the script that made them.
- `--submit` runs `sbatch` on the script and prints the job id. `scancel` sends SIGTERM, on which
  `launch.train` checkpoints and exits; submit again to resume.
- Bad input (a missing flag, counts below 1, a config file that does not load, an unknown or
  mistyped override): one `error: ...` line and exit status 2, before anything is written.
  A failing `sbatch` is exit status 1.

For studies, `render_array_sbatch` renders one job array whose task i runs `commands[i]` and
writes its exit status to `<log_dir>/<array job id>_<i>.exit`, and `submit`, `wait_for_job` and
`array_exit_codes` submit it, wait for it and read the outcome without Slurm accounting: the CI
cluster (`.ci/slurm_cluster.sh`), like many small ones, has no slurmdbd and so no `sacct`, and
`scontrol` forgets a job minutes after it ends.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import sys

from cluster.slurm import (
    SCRIPT_DIR,
    SlurmError,
    TrainJob,
    check,
    render_sbatch,
    resolve_config,
    submit,
    write_script,
)
from runtime.config import check_config_command, parse_env_pairs
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error


def parse_args(argv: list[str]) -> tuple[TrainJob, bool]:
    """The job and whether to submit it; the --config.* overrides are kept in order, unparsed."""
    parser = ArgumentParser(prog="python -m launch.slurm", description=__doc__, allow_abbrev=False)
    parser.add_argument("--config", required=True, help="experiments/file.py[:arg]")
    parser.add_argument("--workdir", required=True, help="the run directory")
    parser.add_argument("--nodes", type=int, default=1)
    parser.add_argument("--tasks-per-node", type=int, default=1, help="JAX processes per node")
    parser.add_argument("--partition")
    parser.add_argument("--time", help="time limit, e.g. 2:00:00 or 1-00:00:00")
    parser.add_argument("--cpus-per-task", type=int)
    parser.add_argument("--devices-per-task", type=int, help="forced CPU devices per process")
    parser.add_argument("--env", nargs="+", action="extend", default=[], metavar="KEY=VALUE")
    parser.add_argument("--submit", action="store_true", help="run sbatch on the script")
    args, rest = parser.parse_known_args(argv)
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        raise UsageError(
            f"unknown argument {unknown[0]!r} (config overrides are --config.<key>=<value>)"
        )
    if not args.config.strip():
        raise UsageError("--config=<experiments/file.py[:arg]> is required")
    if not args.workdir.strip():
        raise UsageError("--workdir=<run directory> is required")
    job = TrainJob(
        config=args.config,  # as given (relative to the current directory) until checked
        workdir=os.path.abspath(args.workdir),
        nodes=args.nodes,
        tasks_per_node=args.tasks_per_node,
        partition=args.partition,
        time=args.time,
        cpus_per_task=args.cpus_per_task,
        devices_per_task=args.devices_per_task,
        env=parse_env_pairs(args.env),
        overrides=tuple(rest),
    )
    return job, args.submit


@exit_on_usage_error
def main(argv: list[str]) -> int:
    job, submit_it = parse_args(argv[1:])
    check(job)
    check_config_command(job.config, job.overrides)
    job = dataclasses.replace(job, config=resolve_config(job.config))
    if submit_it and shutil.which("sbatch") is None:
        raise UsageError("--submit: sbatch not found on PATH (is this a Slurm login node?)")
    text = render_sbatch(job)
    path, backup = write_script(os.path.join(job.workdir, SCRIPT_DIR), text)
    print(text, end="")
    if backup:
        print(f"kept the previous, different script as {backup}")
    print(f"wrote {path}", flush=True)
    if submit_it:
        try:
            job_id = submit(path)
        except SlurmError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        log = os.path.join(job.workdir, SCRIPT_DIR, f"{job_id}.out")
        print(f"submitted job {job_id}; its output: {log}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
