"""Runs a whole study: every arm x seed through `launch.train`, then the report.

    python -m launch.study experiments/mqar_mixers.py --workdir=studies/mqar \
        [--seeds=N] [--arms=a,b] [--workers=K] [--setting=hard] [--config.<key>=<value> ...] \
        [--no-group-seeds] [--backend=local|slurm [--partition=P] [--time=HH:MM:SS]]

Each run lives in `<workdir>/runs/<arm>/seed_<s>/` with its log in `train.log`. An arm's seeds
train together, as one `launch.train --seeds` process (runtime/group.py: one start-up and one
compilation, each run bitwise what it is alone), whose log is its first seed's `train.log`;
`--no-group-seeds` gives every run its own process, as has every seed of an arm that a group
refuses (a profile: `runtime.group.why_alone`) or whose runs need another arm's. Rerunning the
same command skips completed runs and resumes the others from their checkpoints (launch.train
does the resuming); adding arms or seeds to a finished study runs only what is new. A failed
run is reported with the tail of its log and does not stop the others.

Derived arms (runtime/study_spec.py, `run_of`): a run that needs another arm's run of its seed
starts once that run is complete, and is reported failed, never started, when it failed. A
post-training quantized arm's run is `launch.quantize` of its source arm's run, logged to
`runs/<arm>/seed_<s>.quantize.log` (launch.quantize writes a new directory and refuses an existing
one); a rerun skips it when complete, and moves a partial one (the study stopped while it was
written) aside to `seed_<s>.partial-<n>` before quantizing again. `--arms` brings the arms the
chosen ones need. Derived arms run on the local backend only: --backend=slurm refuses them.

At the end the study writes `summary.json`, `report.md` and `report.html`, appends one line to
`experiments.jsonl` beside the study directory, and prints the verdict.

Where the runs' metrics go is their `tracking.*` config, the same for every arm: with `mlflow`
among `tracking.backends` the study is an MLflow parent run, opened (or, on a rerun, continued)
before any run starts, which every run joins as a child; at the end it gets the reports and the
verdict (runtime/mlflow_tracking.py).

With --backend=slurm the runs still to do go to Slurm as one job array (`launch.slurm`), at most
--workers at a time if given; the study waits for the array, reads each run's exit status from
the files the array leaves (no Slurm accounting needed), and aggregates as above. The array's id
is kept in `<workdir>/slurm/active_job.json`: a study stopped while its array runs waits for
that array when rerun. Ctrl-C cancels the array (the runs checkpoint on SIGTERM).

Exit status: 0 when every run completed, 1 when some failed or the study was interrupted
(the reports then cover what finished), 2 for bad input (before anything runs).
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import fcntl
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from typing import Any

import ml_collections

from analysis import study as study_lib
from analysis.runs import FINISHED, is_complete, is_run, load_run, read_json
from atomic_write import write_atomically, write_json_atomically
from runtime import group, manifest, metric_writers
from runtime.checkpoint import checkpoint_steps
from runtime.config import config_with_overrides, load_config_file
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error
from runtime.study_spec import QUANT_SOURCE, load_study
from runtime.workdir import check_writable_directory

BACKENDS = ("local", "slurm")
STUDY_FILE = "study.json"  # what the workdir's study was launched with
COMPILATION_CACHE = "jax_cache"
LOG_FILE = "train.log"
EXPERIMENT_LOG = "experiments.jsonl"
LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclasses.dataclass(frozen=True)
class Task:
    """One process: one run, an arm's seeds trained together, or a derived arm's quantization."""

    arm: str
    seeds: list[int]
    workdirs: list[str]  # each seed's run directory, absolute
    command: list[str]
    log_path: str = ""  # where its output goes; "" -> its first run's train.log
    needs: tuple[str, ...] = ()  # run directories that must be complete before it starts

    @property
    def log(self) -> str:
        return self.log_path or os.path.join(self.workdirs[0], LOG_FILE)

    def open_log(self) -> Any:
        """The log, opened for appending; a group's other runs' own logs say where it is."""
        os.makedirs(os.path.dirname(self.log), exist_ok=True)
        for workdir in self.workdirs[1:]:
            os.makedirs(workdir, exist_ok=True)
            with open(os.path.join(workdir, LOG_FILE), "a") as f:
                f.write(f"trained with seeds {self.seeds} in one process: its log is {self.log}\n")
        return open(self.log, "a")  # noqa: SIM115 (the caller closes it)


# ------------------------------------------------------------------------------ command line
def parse_args(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    parser = ArgumentParser(prog="python -m launch.study", description=__doc__)
    parser.add_argument("study_file")
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--seeds", type=int, help="seeds per arm (default: the study's SEEDS)")
    parser.add_argument("--arms", help="comma-separated arms to run (default: all)")
    parser.add_argument(
        "--workers",
        type=int,
        help="runs at a time (default: one per core locally, no limit on Slurm)",
    )
    parser.add_argument("--setting", help="a named setting of the study (its SETTINGS)")
    parser.add_argument(
        "--no-group-seeds",
        dest="group_seeds",
        action="store_false",
        help="train every run in its own process (default: an arm's seeds in one)",
    )
    parser.add_argument("--backend", choices=BACKENDS, default="local")
    parser.add_argument("--partition", help="Slurm partition (--backend=slurm)")
    parser.add_argument("--time", help="Slurm time limit per run, e.g. 02:00:00")
    args, rest = parser.parse_known_args(argv[1:])
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        raise UsageError(
            f"unknown argument {unknown[0]!r} (config overrides are --config.<key>=...)"
        )
    return args, rest


def default_workers() -> int:
    """One training process per core: each uses several threads, but much of a short run is
    single-threaded (start-up, compilation, evaluation)."""
    return max(1, len(os.sched_getaffinity(0)))


def plan(
    args: argparse.Namespace, overrides: list[str]
) -> tuple[Any, list[str], list[int], dict[str, ml_collections.ConfigDict]]:
    """The study, its arms and seeds and the config of each arm's runs, with every argument
    checked before anything runs."""
    spec = load_study(args.study_file)
    arms = list(spec.arms)
    if args.arms:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        unknown = [a for a in arms if a not in spec.arms]
        if unknown:
            raise UsageError(f"unknown arm {unknown[0]!r}; valid: {', '.join(spec.arms)}")
        # Every comparison is against an arm's baseline (its block's, with blocks).
        baselines = dict.fromkeys(spec.baseline_of(arm) for arm in arms)
        arms = [b for b in baselines if b not in arms] + arms
    # A derived arm runs after the arms whose runs it needs, which come along when not chosen.
    arms = with_needed(spec, arms)
    seeds = args.seeds if args.seeds is not None else spec.seeds
    if seeds < 1:
        raise UsageError(f"--seeds must be >= 1, got {seeds}")
    if args.workers is not None and args.workers < 1:
        raise UsageError(f"--workers must be >= 1, got {args.workers}")
    if args.backend == "local" and (args.partition or args.time):
        raise UsageError("--partition and --time are for --backend=slurm")
    derived = [a for a in arms if spec.needs(a)]
    if args.backend == "slurm" and derived:
        raise UsageError(
            f"arm {derived[0]!r} needs another arm's runs (run_of), which one Slurm job array "
            "cannot order: run this study with --backend=local, or leave its derived arms out "
            "(--arms)"
        )
    if args.backend == "slurm" and not (shutil.which("sbatch") and shutil.which("squeue")):
        raise UsageError("--backend=slurm needs sbatch and squeue on PATH (a Slurm login node)")
    if args.setting is not None and args.setting not in spec.settings:
        valid = ", ".join(spec.settings) or "none (the study declares no SETTINGS)"
        raise UsageError(f"unknown setting {args.setting!r}; valid: {valid}")
    build_every_config(spec)
    # Every command-line override names a real key and parses; the configs the runs will have.
    configs = {
        arm: config_with_overrides(spec.config_arg(arm, args.setting), overrides) for arm in arms
    }
    return spec, arms, list(range(seeds)), configs


def with_needed(spec: study_lib.StudySpec, arms: list[str]) -> list[str]:
    """`arms` and every arm their runs need, each after what it needs (the order to run them)."""
    ordered: list[str] = []

    def visit(arm: str) -> None:
        if arm in ordered:
            return
        for needed in spec.needs(arm):
            visit(needed)
        ordered.append(arm)

    for arm in arms:
        visit(arm)
    return ordered


def study_tracking(configs: dict[str, ml_collections.ConfigDict]) -> ml_collections.ConfigDict:
    """The tracking section all the study's runs share (checked): a study's metrics go to one
    place, where the study keeps its own record too."""
    (first, tracking), *others = ((arm, config.tracking) for arm, config in configs.items())
    for arm, other in others:
        if other.to_dict() != tracking.to_dict():
            raise UsageError(
                f"arms {first!r} and {arm!r} differ in tracking ({tracking.to_dict()} vs "
                f"{other.to_dict()}): a study's runs log to one place"
            )
    metric_writers.check(tracking)
    return tracking


def build_every_config(
    spec: study_lib.StudySpec,
) -> dict[tuple[str, str | None], ml_collections.ConfigDict]:
    """Every arm's config in every setting (and in none: the file's default), by (arm, setting).

    All of them, not only those this launch runs, and before anything runs: a misspelled key in
    any ARMS, SETTINGS or LEARNING entry of the file is an error now rather than a run that
    trains at the default. Cheap: get_config only."""
    return {
        (arm, setting): load_config_file(spec.config_arg(arm, setting))
        for arm in spec.arms
        for setting in (None, *spec.settings)
    }


def claim_study_dir(workdir: str, launch: dict[str, Any]) -> None:
    """A study directory belongs to one study file, setting and set of overrides; arms and
    seeds may grow between launches."""
    check_writable_directory(workdir)
    path = os.path.join(workdir, STUDY_FILE)
    if os.path.exists(path):
        with open(path) as f:
            previous = json.load(f)
        for key in ("study_file", "setting", "overrides"):
            if previous.get(key) != launch[key]:
                raise UsageError(
                    f"workdir {workdir!r} holds a study launched with {key} "
                    f"{previous.get(key)!r}, not {launch[key]!r}; use a new --workdir"
                )
        return
    os.makedirs(workdir, exist_ok=True)
    write_json_atomically(path, launch, indent=2)


def lock_study_dir(workdir: str) -> Any:
    """Held for the whole study: two launches on one directory would train the same runs."""
    handle = open(os.path.join(workdir, ".lock"), "w")  # noqa: SIM115 (held until exit)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise UsageError(f"another launch.study is running on {workdir!r}") from None
    return handle


# ------------------------------------------------------------------------------------ runner
def _die_with_parent() -> None:
    """In the child: SIGTERM it (launch.train then checkpoints and exits) if the study dies,
    even by SIGKILL, so no orphan keeps training into a directory a rerun will use."""
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Runner:
    """Runs tasks K at a time from one thread (child processes, polled), so a signal handler
    can stop new starts and pass SIGTERM on: running runs checkpoint and exit."""

    POLL_SECONDS = 0.2

    def __init__(self, workers: int, env: dict[str, str]):
        self.workers = workers
        self.env = env
        self.stopping = False
        self._running: dict[subprocess.Popen, tuple[Task, float, Any]] = {}

    def stop(self, *_: Any) -> None:
        if not self.stopping:
            print("stopping: running runs checkpoint and exit; rerun to resume", flush=True)
        self.stopping = True
        for proc in self._running:
            proc.send_signal(signal.SIGTERM)

    def run_all(self, tasks: list[Task]) -> list[dict[str, Any]]:
        """Runs every task, each once the runs it needs are complete; returns the failed runs
        (arm, seed, workdir, status, log tail). A task whose needed run failed fails unstarted."""
        pending, failed, report = list(tasks), [], Reporter(tasks)
        failed_dirs: set[str] = set()
        while (pending and not self.stopping) or self._running:
            for task in [t for t in pending if failed_dirs.intersection(t.needs)]:
                pending.remove(task)
                failures = report.not_run(task, sorted(failed_dirs.intersection(task.needs)))
                failed += failures
                failed_dirs.update(task.workdirs)
            unfinished = {w for t in pending for w in t.workdirs}
            unfinished |= {w for task, _, _ in self._running.values() for w in task.workdirs}
            ready = [t for t in pending if not unfinished.intersection(t.needs)]
            # Runs that others wait for first: they are the study's critical path.
            awaited = {need for t in pending for need in t.needs}
            ready.sort(key=lambda t: not awaited.intersection(t.workdirs))
            while ready and not self.stopping and len(self._running) < self.workers:
                task = ready.pop(0)
                pending.remove(task)
                self._start(task)
            time.sleep(self.POLL_SECONDS)
            for proc in [p for p in self._running if p.poll() is not None]:
                task, start, log = self._running.pop(proc)
                log.close()
                failures = report(task, proc.returncode, f" ({time.monotonic() - start:.0f} s)")
                failed += failures
                failed_dirs.update(failure["workdir"] for failure in failures)
        return failed

    def _start(self, task: Task) -> None:
        log = task.open_log()
        proc = subprocess.Popen(
            task.command,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=manifest.REPO_ROOT,
            env=self.env,
            preexec_fn=_die_with_parent,
        )
        self._running[proc] = (task, time.monotonic(), log)


class Reporter:
    """Prints each run's outcome as its process ends (or is skipped), numbered over all runs."""

    def __init__(self, tasks: list[Task]):
        self.total = sum(len(task.seeds) for task in tasks)
        self.done = 0

    def __call__(self, task: Task, code: int | None, took: str = "") -> list[dict[str, Any]]:
        """The task's failed runs, each printed with the others."""
        failed = []
        for seed, workdir in zip(task.seeds, task.workdirs, strict=True):
            failure = outcome(task, seed, workdir, code)
            self.print(
                task.arm, seed, (failure["status"] if failure else load_run(workdir).status) + took
            )
            if failure:
                failed.append(failure)
        return failed

    def not_run(self, task: Task, failed_needs: list[str]) -> list[dict[str, Any]]:
        """The task's runs, not started because a run they need failed, as failures naming it."""
        tail = f"not run: it needs the run {', '.join(failed_needs)}, which failed\n"
        failed = []
        for seed, workdir in zip(task.seeds, task.workdirs, strict=True):
            self.print(task.arm, seed, "not run")
            failed.append(
                {
                    "arm": task.arm,
                    "seed": seed,
                    "workdir": workdir,
                    "status": "not run",
                    "exit_code": None,
                    "log_tail": tail,
                }
            )
        return failed

    def print(self, arm: str, seed: int, status: str) -> None:
        self.done += 1
        print(f"[{self.done}/{self.total}] {arm} seed {seed}: {status}", flush=True)


def outcome(task: Task, seed: int, workdir: str, code: int | None) -> dict[str, Any] | None:
    """None when the task's run of `seed` (in `workdir`) finished (or checkpointed on request);
    else what failed, with the tail of the task's log. `code` None: the process never reported
    an exit (cancelled, timed out). A run that is complete is so whatever the exit status (that
    of a group whose other run diverged)."""
    status = load_run(workdir).status if is_run(workdir) else "failed"
    if (code == 0 and status in (*FINISHED, "preempted")) or is_complete(workdir):
        return None
    ended = "no exit status (cancelled or out of time)" if code is None else f"exit {code}"
    return {
        "arm": task.arm,
        "seed": seed,
        "workdir": workdir,
        "status": status if status not in ("running", *FINISHED) else ended,
        "exit_code": code,
        "log_tail": log_tail(task.log) if os.path.exists(task.log) else "(no log)",
    }


class SlurmRunner:
    """Runs the tasks as one Slurm job array (launch.slurm), waits for it, and reads each task's
    exit status from the files the array leaves. The job id is kept in the study directory, so
    a study that was stopped while its array still runs waits for that array when rerun instead
    of training the same runs twice."""

    POLL_SECONDS = 2.0

    def __init__(self, workdir: str, env: dict[str, str], workers: int | None, options: dict):
        self.workdir = os.path.abspath(workdir)
        self.slurm_dir = os.path.join(self.workdir, "slurm")
        self.env = env
        self.workers = workers
        self.options = options  # partition, time
        self.stopping = False
        self.job_id: str | None = None

    def stop(self, *_: Any) -> None:
        if not self.stopping and self.job_id:
            print(f"stopping: scancel {self.job_id}; runs checkpoint; rerun to resume", flush=True)
            subprocess.run(["scancel", self.job_id], check=False)
        self.stopping = True

    def run_all(self, tasks: list[Task]) -> list[dict[str, Any]]:
        from cluster import slurm

        os.makedirs(self.slurm_dir, exist_ok=True)
        active = os.path.join(self.slurm_dir, "active_job.json")
        previous = read_json(active)
        if previous and slurm.in_queue(previous["job_id"]):
            print(f"waiting for the array started earlier: job {previous['job_id']}", flush=True)
            self.job_id = previous["job_id"]
            slurm.wait_for_job(self.job_id, self.POLL_SECONDS)
            tasks = [t for t in tasks if not all(map(is_complete, t.workdirs))]
        if not tasks:
            return []
        for task in tasks:
            task.open_log().close()
        # Each process's output goes to its train.log, as with the local backend.
        commands = [["sh", "-c", 'exec "$@" >> "$0" 2>&1', t.log, *t.command] for t in tasks]
        script = slurm.render_array_sbatch(
            commands,
            job_name=f"archlab-study-{os.path.basename(self.workdir)}",
            log_dir=self.slurm_dir,
            max_concurrent=self.workers,
            env=self.env,
            **self.options,
        )
        path = os.path.join(self.slurm_dir, f"array-{time.strftime('%Y%m%d-%H%M%S')}.sbatch")
        write_atomically(path, script)
        self.job_id = slurm.submit(path)
        write_json_atomically(active, {"job_id": self.job_id, "script": path})
        print(f"submitted job array {self.job_id}: {len(tasks)} runs ({path})", flush=True)
        slurm.wait_for_job(self.job_id, self.POLL_SECONDS)
        codes = slurm.array_exit_codes(self.slurm_dir, self.job_id, len(tasks))
        failed, report = [], Reporter(tasks)
        for task, code in zip(tasks, codes, strict=True):
            failed += report(task, code)
        return failed


def compilation_cache_env(workdir: str) -> dict[str, str]:
    """The runs share a persistent compilation cache in the study directory: every seed of an
    arm compiles the same programs, and on CPU compilation is most of a short run (a TINY run:
    28 s cold, 8 s with the cache). A cache the user configured is left alone."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ:
        return {}
    return {
        "JAX_COMPILATION_CACHE_DIR": os.path.abspath(os.path.join(workdir, COMPILATION_CACHE)),
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }


def log_tail(path: str, lines: int = LOG_TAIL_LINES) -> str:
    with open(path, errors="replace") as f:
        return "".join(f.readlines()[-lines:])


def make_tasks(
    spec: Any,
    workdir: str,
    arms: list[str],
    seeds: list[int],
    setting: str | None,
    overrides: list[str],
    apart: dict[str, str] | None = None,
) -> tuple[list[Task], int]:
    """The processes to run for the runs still to do (unfinished or never started), and how
    many runs are already done.

    One process per arm trains its seeds together: those at the same point (the same newest
    checkpoint, or none), so that none waits for another to catch up. The arms in `apart` (arm
    -> why) get one process per run, as do seeds that pinned different teacher or fine-tuning
    checkpoints (`runtime.group.pinning_workdir`) and the runs of derived arms (each needs its
    own seed's run of another arm); separate runs go in seed-major order: the first runs in
    flight are different arms, so each arm compiles once and its later seeds find its programs
    in the compilation cache. Within a seed an arm comes after the arms it needs (`arms` is in
    that order: plan)."""
    apart = dict(apart or {})
    for arm in arms:
        if spec.needs(arm) and arm not in apart:
            apart[arm] = "each run needs another arm's run of its seed"
    todo = {
        arm: [seed for seed in seeds if not is_complete(study_lib.run_dir(workdir, arm, seed))]
        for arm in arms
    }
    done = len(arms) * len(seeds) - sum(map(len, todo.values()))
    groups = []
    for arm in arms:
        if arm in apart or len(todo[arm]) < 2:
            continue
        for together in same_progress(workdir, arm, todo[arm]):
            try:
                group.pinning_workdir([study_lib.run_dir(workdir, arm, s) for s in together])
            except UsageError as e:
                apart[arm] = str(e)
                break
            groups.append((arm, together))
    groups = [(arm, together) for arm, together in groups if arm not in apart]
    for arm, why in apart.items():
        if todo.get(arm) and why != "--no-group-seeds" and arm not in spec.quantized:
            print(f"{arm}: its seeds train in separate processes ({why})", flush=True)
    grouped = {arm for arm, _ in groups}
    groups += [
        (arm, [seed]) for seed in seeds for arm in arms if seed in todo[arm] and arm not in grouped
    ]
    return [task(spec, workdir, arm, runs, setting, overrides) for arm, runs in groups], done


def same_progress(workdir: str, arm: str, seeds: list[int]) -> list[list[int]]:
    """`seeds` of `arm` in groups whose runs have the same newest checkpoint (or none)."""
    groups: dict[int, list[int]] = {}
    for seed in seeds:
        steps = checkpoint_steps(study_lib.run_dir(workdir, arm, seed))
        groups.setdefault(steps[0] if steps else 0, []).append(seed)
    return list(groups.values())


def task(
    spec: Any, workdir: str, arm: str, seeds: list[int], setting: str | None, overrides: list[str]
) -> Task:
    """The process for `seeds` of `arm`: a lone run or a group (launch.train --seeds), or a
    derived arm's run, whose config names the runs of its seed it needs (or launch.quantize)."""
    workdirs = [os.path.abspath(study_lib.run_dir(workdir, arm, seed)) for seed in seeds]
    needs = {
        key: os.path.abspath(study_lib.run_dir(workdir, needed, seeds[0]))
        for key, needed in spec.run_refs.get(arm, {}).items()
    }  # a derived arm's runs are never grouped (make_tasks): one seed
    if arm in spec.quantized:
        return quantize_task(spec, arm, seeds[0], workdirs[0], needs[QUANT_SOURCE])
    if len(seeds) == 1:
        runs = [f"--workdir={workdirs[0]}", f"--config.seed={seeds[0]}"]
    else:
        # The run directories' pattern, which launch.train fills in with each seed.
        pattern = os.path.abspath(study_lib.run_dir(workdir, arm, "{seed}"))
        runs = [f"--workdir={pattern}", f"--seeds={','.join(map(str, seeds))}"]
    command = [
        sys.executable,
        "-m",
        "launch.train",
        f"--config={spec.config_arg(arm, setting)}",
        *runs,
        *(f"--config.{key}={path}" for key, path in needs.items()),
        *overrides,
    ]
    return Task(arm, seeds, workdirs, command, needs=tuple(needs.values()))


def quantize_task(spec: Any, arm: str, seed: int, run: str, source: str) -> Task:
    """launch.quantize of `source` into `run`, with the arm's mode (and targets, if it sets
    them). A partial `run`, left by a study stopped while writing it, is moved aside first:
    launch.quantize never writes into an existing directory."""
    if os.path.exists(run):
        taken = (f"{run}.partial-{n}" for n in range(1, 10_000))
        moved = next(path for path in taken if not os.path.exists(path))
        os.rename(run, moved)
        print(f"{arm} seed {seed}: moved its unfinished quantized run aside to {moved}", flush=True)
    overrides = spec.arms[arm]
    command = [
        sys.executable,
        "-m",
        "launch.quantize",
        f"--workdir={source}",
        f"--into={run}",
        f"--mode={overrides['quant.mode']}",
        *([f"--targets={overrides['quant.targets']}"] if "quant.targets" in overrides else []),
    ]
    log = os.path.join(os.path.dirname(run), f"{os.path.basename(run)}.quantize.log")
    return Task(arm, [seed], [run], command, log_path=log, needs=(source,))


# ---------------------------------------------------------------------------------- results
def append_experiment_log(workdir: str, summary: dict[str, Any]) -> str:
    """One line per study run, beside the study directories: what was asked, on what, and the
    answer."""
    path = os.path.join(os.path.dirname(os.path.abspath(workdir)), EXPERIMENT_LOG)
    hashes = summary["provenance"]["config_hashes"]
    line = {
        "time": summary["created"],
        "study": summary["study"],
        "study_dir": os.path.abspath(workdir),
        "hypothesis": summary["hypothesis"],
        "config_hash": study_lib.config_hash(hashes),
        "datasets": {
            name: {"version": d.get("version"), "content_hash": d.get("content_hash")}
            for name, d in summary["provenance"]["datasets"].items()
        },
        "commit": summary["provenance"]["commits"],
        "dirty": summary["provenance"]["dirty"],
        "verdict": summary["verdict"],
        "claims": [
            {"claim": c["text"], "verdict": c["verdict"]["outcome"]} for c in summary["claims"]
        ],
    }
    with open(path, "a") as f:
        f.write(json.dumps(line) + "\n")
    return path


def write_summary(workdir: str, summary: dict[str, Any]) -> str:
    path = os.path.join(workdir, "summary.json")
    write_json_atomically(path, summary, indent=2, allow_nan=False)
    return path


@exit_on_usage_error
def main(argv: list[str]) -> int:
    args, overrides = parse_args(argv)
    spec, arms, seeds, configs = plan(args, overrides)
    tracking = study_tracking(configs)
    workdir = args.workdir
    launch = {"study_file": spec.path, "setting": args.setting, "overrides": overrides}
    claim_study_dir(workdir, launch)
    lock = lock_study_dir(workdir)  # noqa: F841 (released at exit)

    # Arms whose runs cannot train as a group (a profiled run) train their seeds apart.
    apart = {arm: why for arm, config in configs.items() if (why := group.why_alone(config))}
    if not args.group_seeds:
        apart = dict.fromkeys(arms, "--no-group-seeds")
    tasks, done = make_tasks(spec, workdir, arms, seeds, args.setting, overrides, apart)
    to_run = sum(len(task.seeds) for task in tasks)
    print(
        f"study {spec.name}: {len(arms)} arms x {len(seeds)} seeds; {done} runs done, "
        f"{to_run} to run in {len(tasks)} processes on {args.backend}"
        + (f", {args.workers} at a time" if args.workers else "")
        + f" -> {os.path.abspath(workdir)}",
        flush=True,
    )
    # The study's own record where its runs' metrics go (an MLflow parent run), before any run
    # starts: the runs join it, told where through the environment.
    records = metric_writers.open_study(workdir, tracking, spec.name, launch)
    child_env = compilation_cache_env(workdir)
    for record in records:
        child_env.update(record.child_env())
    if args.backend == "slurm":
        options = {"partition": args.partition, "time": args.time}
        runner = SlurmRunner(workdir, child_env, args.workers, options)
    else:
        runner = Runner(args.workers or default_workers(), {**os.environ, **child_env})
    signal.signal(signal.SIGINT, runner.stop)
    signal.signal(signal.SIGTERM, runner.stop)
    failed = runner.run_all(tasks)
    if runner.stopping:
        for record in records:
            record.finish(workdir, None, "preempted")
        print(f"interrupted: rerun the same command to resume {workdir}", file=sys.stderr)
        return 1

    from analysis import model_card, report  # matplotlib: only once there is something to plot

    summary = study_lib.summarize_study(spec, workdir, arms, seeds, args.setting, overrides, failed)
    write_summary(workdir, summary)
    paths = report.write_reports(workdir, summary)
    for card in model_card.write_study_cards(summary):  # now with the arm's intervals
        metric_writers.publish_outputs(os.path.dirname(card))
    append_experiment_log(workdir, summary)
    for record in records:
        record.finish(workdir, summary, "failed" if failed else "completed")
    for run in failed:
        print(f"FAILED {run['arm']} seed {run['seed']} ({run['status']}): {run['workdir']}")
        print("  " + run["log_tail"].rstrip().replace("\n", "\n  "))
    print(f"\nhypothesis: {summary['hypothesis']}")
    for claim in summary["claims"]:
        print(
            f"{claim['verdict']['outcome'].upper()}: {claim['text']}: {claim['verdict']['reason']}"
        )
    print(f"verdict: {summary['verdict']}\nreport: {os.path.abspath(paths['html'])}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
