"""Slurm: the sbatch scripts that run `launch.train` as one job of N JAX processes, or a study's
runs as one job array, and submitting and waiting for them (see `launch.slurm` for the command)."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence

from atomic_write import write_atomically
from runtime.errors import UsageError

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT_DIR = "slurm"  # inside the workdir: the script and each job's output
SCRIPT_NAME = "train.sbatch"
ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what `export` accepts
# Slurm's time formats: minutes, min:sec, h:min:sec, days-h, days-h:min, days-h:min:sec.
TIME_LIMIT = re.compile(r"\d+(:\d+){0,2}|\d+-\d+(:\d+){0,2}|INFINITE|UNLIMITED")
SBATCH_SAFE = re.compile(r"[-\w@%+=:,./]+")  # needs no quotes in an #SBATCH line
SQUEUE_ATTEMPTS = 5  # consecutive squeue failures (controller restarting) before giving up


class SlurmError(RuntimeError):
    """sbatch or squeue is missing or failed: the cluster's answer, not bad input."""


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """One `launch.train` run as a Slurm job; `check` says whether it makes a valid script."""

    config: str  # experiments/file.py[:arg], absolute or relative to the repository root
    workdir: str  # absolute: the job runs in the repository root
    nodes: int = 1
    tasks_per_node: int = 1
    partition: str | None = None
    time: str | None = None
    cpus_per_task: int | None = None
    devices_per_task: int | None = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    overrides: tuple[str, ...] = ()  # --config.<key>=<value>, passed through unchanged


# ------------------------------------------------------------------------------------- checks
def check(job: TrainJob) -> None:
    """Raises UsageError for anything sbatch would refuse or misread."""
    for flag, value in (
        ("--nodes", job.nodes),
        ("--tasks-per-node", job.tasks_per_node),
        ("--cpus-per-task", job.cpus_per_task),
        ("--devices-per-task", job.devices_per_task),
    ):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be >= 1, got {value}")
    if job.time is not None and not TIME_LIMIT.fullmatch(job.time):
        raise UsageError(
            f"--time={job.time!r} is not a Slurm time limit (e.g. 90, 2:00:00, 1-12:00:00)"
        )
    if job.partition is not None and not re.fullmatch(r"[^\s,]+", job.partition):
        raise UsageError(f"--partition={job.partition!r} must be one partition name")
    check_sbatch_value("--workdir", job.workdir)
    check_env(job.env, reserved={"XLA_FLAGS"} if job.devices_per_task else set())


def check_sbatch_value(flag: str, value: str) -> None:
    """An #SBATCH line ends at a newline, and a backslash in --output turns off its %j."""
    if "\n" in value or "\\" in value:
        raise UsageError(f"{flag}={value!r} must not contain a newline or a backslash")


def check_env(env: Mapping[str, str], reserved: set[str]) -> None:
    for key, value in env.items():
        if not ENV_NAME.fullmatch(key):
            raise UsageError(f"--env {key!r}: not a valid environment variable name")
        if key in reserved:
            raise UsageError(f"--env {key}: set by --devices-per-task already")
        if "\n" in value:
            raise UsageError(f"--env {key}: the value must not contain a newline")


# ------------------------------------------------------------------------------------- render
def sbatch_quote(value: str) -> str:
    """Quotes a value for an #SBATCH line. sbatch reads those itself, not through a shell: it
    knows double quotes and backslash escapes, not single quotes (so not shlex.quote)."""
    if SBATCH_SAFE.fullmatch(value):
        return value
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def sbatch_lines(options: Sequence[tuple[str, object]]) -> list[str]:
    """`#SBATCH --name=value` for each option whose value is not None."""
    return [f"#SBATCH --{k}={sbatch_quote(str(v))}" for k, v in options if v is not None]


def output_pattern(directory: str, name: str) -> str:
    """An --output file name in `directory`: sbatch expands %j, %A, %a; a literal % is %%."""
    return os.path.join(directory.replace("%", "%%"), name)


def export_lines(env: Mapping[str, str]) -> list[str]:
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]


def job_env(job: TrainJob) -> dict[str, str]:
    env = {}
    if job.devices_per_task:
        env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={job.devices_per_task}"
    return {**env, **job.env}


def train_command(job: TrainJob, python: str) -> list[str]:
    return [
        python,
        "-m",
        "launch.train",
        f"--config={job.config}",
        f"--workdir={job.workdir}",
        *job.overrides,
    ]


def render_sbatch(
    job: TrainJob, *, repo_root: str = REPO_ROOT, python: str = sys.executable
) -> str:
    """The sbatch script for one run: N x M `srun` tasks, each one JAX process of the run.
    Assumes `check(job)` passed."""
    srun = ["srun", "--kill-on-bad-exit=1"]  # one lost process would stall the others forever
    if job.cpus_per_task:
        # From Slurm 22.05 srun no longer inherits sbatch's --cpus-per-task: state it again.
        srun.append(f"--cpus-per-task={job.cpus_per_task}")
    header = sbatch_lines(
        [
            ("job-name", f"archlab-{os.path.basename(os.path.normpath(job.workdir))}"),
            ("output", output_pattern(os.path.join(job.workdir, SCRIPT_DIR), "%j.out")),
            ("nodes", job.nodes),
            ("ntasks-per-node", job.tasks_per_node),
            ("partition", job.partition),
            ("time", job.time),
            ("cpus-per-task", job.cpus_per_task),
        ]
    )
    lines = [
        "#!/bin/bash",
        *header,
        "# Rendered by `python -m launch.slurm`. One srun task per JAX process: under srun with",
        "# several tasks launch.train joins JAX's runtime by itself (no coordinator flags).",
        "set -euo pipefail",
        f"cd {shlex.quote(repo_root)}",
        *export_lines(job_env(job)),
        "exec " + shlex.join([*srun, *train_command(job, python)]),
    ]
    return "\n".join(lines) + "\n"


def render_array_sbatch(
    commands: Sequence[Sequence[str]],
    job_name: str,
    log_dir: str,
    *,
    max_concurrent: int | None = None,
    partition: str | None = None,
    time: str | None = None,
    cpus_per_task: int | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str = REPO_ROOT,
) -> str:
    """A job array whose task i runs `commands[i]` (one process, in `cwd`), at most
    `max_concurrent` at a time. Task i's output goes to `<log_dir>/<array job id>_<i>.out` and
    its exit status, as one number, to `<log_dir>/<array job id>_<i>.exit` (written once the
    command has ended; no file means the task never ran to the end: cancelled, out of time).
    `log_dir` must exist when the job starts."""
    if not commands:
        raise ValueError("a job array needs at least one command")
    if max_concurrent is not None and max_concurrent < 1:
        raise ValueError(f"max_concurrent must be >= 1, got {max_concurrent}")
    for value in (job_name, log_dir):
        if "\n" in value or "\\" in value:
            raise ValueError(f"{value!r}: an #SBATCH line cannot hold a newline or a backslash")
    array = f"0-{len(commands) - 1}" + (f"%{max_concurrent}" if max_concurrent else "")
    header = sbatch_lines(
        [
            ("job-name", job_name),
            ("output", output_pattern(log_dir, "%A_%a.out")),
            ("array", array),
            ("ntasks", 1),
            ("partition", partition),
            ("time", time),
            ("cpus-per-task", cpus_per_task),
        ]
    )
    cases = [f"    {i}) {shlex.join(command)} ;;" for i, command in enumerate(commands)]
    exit_file = shlex.quote(os.path.join(log_dir, "")) + '"${SLURM_ARRAY_JOB_ID}_${task}"'
    lines = [
        "#!/bin/bash",
        *header,
        "# Rendered by launch.slurm.render_array_sbatch: task i runs command i and leaves its",
        "# exit status in <log_dir>/<array job id>_<i>.exit (no Slurm accounting needed).",
        "set -uo pipefail",
        f"cd {shlex.quote(cwd)}",
        *export_lines(env or {}),
        "task=$SLURM_ARRAY_TASK_ID",
        'case "$task" in',
        *cases,
        '    *) echo "no command for array task $task" >&2; false ;;',
        "esac",
        "status=$?",
        # Written under a temporary name and renamed: a reader never sees half a number.
        f'echo "$status" > {exit_file}.exit.tmp && mv {exit_file}.exit.tmp {exit_file}.exit',
        'exit "$status"',
    ]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------- the cluster
def submit(script_path: str) -> str:
    """Submits a script with sbatch and returns the job id; SlurmError if sbatch is missing or
    refuses the job (its message included)."""
    if shutil.which("sbatch") is None:
        raise SlurmError("sbatch not found on PATH: is this a Slurm login node?")
    result = subprocess.run(
        ["sbatch", "--parsable", script_path], capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        message = " ".join(result.stderr.split()) or f"exit status {result.returncode}"
        raise SlurmError(f"sbatch {script_path} failed: {message}")
    job_id = result.stdout.strip().split(";")[0]  # --parsable: <id> or <id>;<cluster>
    if not job_id.isdigit():
        raise SlurmError(f"sbatch printed {result.stdout.strip()!r}, not a job id")
    return job_id


def in_queue(job_id: str) -> bool:
    """Whether any part of the job (any array task) is still pending, running or completing."""
    result = subprocess.run(
        ["squeue", "-h", "-j", job_id, "-o", "%i"], capture_output=True, text=True, timeout=60
    )
    if result.returncode == 0:
        return bool(result.stdout.strip())
    if "Invalid job id" in result.stderr:  # ended so long ago that slurmctld forgot it
        return False
    raise SlurmError(f"squeue -j {job_id} failed: {' '.join(result.stderr.split())}")


def wait_for_job(job_id: str, poll_seconds: float = 5.0, timeout: float | None = None) -> None:
    """Returns once the job (every task of an array) has left the queue. Rides out a few
    failed polls (a controller restarting); TimeoutError after `timeout` seconds if given."""
    if shutil.which("squeue") is None:
        raise SlurmError("squeue not found on PATH: is this a Slurm login node?")
    deadline = None if timeout is None else time.monotonic() + timeout
    failures = 0
    while True:
        try:
            if not in_queue(job_id):
                return
            failures = 0
        except (SlurmError, subprocess.TimeoutExpired):
            failures += 1
            if failures >= SQUEUE_ATTEMPTS:
                raise
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"Slurm job {job_id} still queued after {timeout} s")
        time.sleep(poll_seconds)


def array_exit_codes(log_dir: str, job_id: str, num_tasks: int) -> list[int | None]:
    """Each array task's exit status from its .exit file; None where the task left none."""
    codes: list[int | None] = []
    for task in range(num_tasks):
        path = os.path.join(log_dir, f"{job_id}_{task}.exit")
        try:
            with open(path) as f:
                codes.append(int(f.read().strip()))
        except (FileNotFoundError, ValueError):
            codes.append(None)
    return codes


# ------------------------------------------------------------------------------ the script file
def write_script(directory: str, text: str) -> tuple[str, str | None]:
    """Writes `<directory>/train.sbatch`; a different existing script is first renamed to the
    next free `train.<n>.sbatch`. Returns the path and the backup's path (None if none)."""
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, SCRIPT_NAME)
    backup = None
    if os.path.exists(path):
        with open(path) as f:
            if f.read() == text:
                return path, None
        stem, ext = os.path.splitext(SCRIPT_NAME)
        n = 1
        while os.path.exists(os.path.join(directory, f"{stem}.{n}{ext}")):
            n += 1
        backup = os.path.join(directory, f"{stem}.{n}{ext}")
        os.replace(path, backup)
    write_atomically(path, text)
    return path, backup


def resolve_config(config: str, repo_root: str = REPO_ROOT) -> str:
    """The --config value as the job (running in the repository root) must see it: relative to
    the root when the file is inside it, else absolute. The `:arg` part is kept."""
    path, sep, arg = config.partition(":")
    absolute = os.path.abspath(path)
    if os.path.commonpath([absolute, repo_root]) == repo_root:
        absolute = os.path.relpath(absolute, repo_root)
    return absolute + sep + arg
