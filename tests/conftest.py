"""Shared fixtures: running `launch.train` as a user would, in its own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from analysis.runs import deterministic_rows, read_metrics

REPO = Path(__file__).resolve().parents[1]

# The suite compiles hundreds of small programs and runs each for a few steps, so compilation is
# most of its time. LLVM at -O0 runs the tests a quarter to a third faster (tests/timings.md).
# What the tests check (equivalences, determinism, learning) does not depend on how well the
# machine code is optimised. The tests' own processes only: runs, studies and benchmarks keep
# XLA's default.
TEST_XLA_FLAGS = "--xla_backend_optimization_level=0"
os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {TEST_XLA_FLAGS}".strip()

# A small MQAR run that still exercises every part of the loop: logging, eval, checkpoints.
TINY = [
    "--config=experiments/mqar_mixers.py",
    "--config.data.mqar.vocab_size=32",
    "--config.data.mqar.seq_len=16",
    "--config.data.mqar.num_kv_pairs=2",
    "--config.data.mqar.num_queries=2",
    "--config.data.mqar.train_examples=512",
    "--config.data.mqar.eval_examples=64",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.d_ff=64",
    "--config.train.steps=20",
    "--config.train.batch_size=16",
    "--config.train.log_every=5",
    "--config.eval.every=10",
    "--config.eval.batch_size=32",
    "--config.checkpoint.every=5",
    "--config.optimizer.warmup_steps=5",
    # The evaluation suites have their own tests (test_evaluate.py); runs that test the loop,
    # checkpoints or launchers skip them.
    "--config.eval.suites=",
]


def tiny_overrides() -> dict[str, int | str]:
    """TINY's --config.<key>=<value> flags as {key: value}, numbers as ints."""
    pairs = (a[len("--config.") :].split("=", 1) for a in TINY if a.startswith("--config."))
    return {key: int(value) if value.isdigit() else value for key, value in pairs}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first. `make test` hands whole files to its 2 workers in collection order
    (--dist loadfile --no-loadscope-reorder); a file of several minutes collected last (the zoo's
    sharded cases, one 4-minute process) ran alone at the end while the other worker sat idle.
    A file says it is long with `pytestmark = pytest.mark.long(seconds=...)`, its measured time."""

    def seconds(item: pytest.Item) -> float:
        marker = item.get_closest_marker("long")
        return marker.kwargs["seconds"] if marker else 0.0

    items.sort(key=seconds, reverse=True)  # stable: each file keeps its own order


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One dataset cache for the whole session, with TINY's MQAR already prepared, so each
    dataset is prepared once and error tests see only what the run itself prints."""
    import data

    path = str(tmp_path_factory.mktemp("datasets"))
    prefix = "data.mqar."
    params = {k[len(prefix) :]: v for k, v in tiny_overrides().items() if k.startswith(prefix)}
    data.load("mqar", params, path)
    return path


@pytest.fixture(scope="session")
def tiny_run(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A TINY run trained to its end (checkpoints kept: steps 15 and 20), to fine-tune from.
    Tests copy it before changing anything in it."""
    workdir = tmp_path_factory.mktemp("tiny_run") / "run"
    result = run_train(data_dir, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def checkpoint_params(workdir: Path | str, step: int) -> dict[str, np.ndarray]:
    """{'block_0/.../kernel': array} of the parameters in a run's checkpoint `step`, read with
    Orbax alone (not the code under test)."""
    import orbax.checkpoint as ocp

    path = Path(workdir, "checkpoints", str(step), "state").resolve()
    with ocp.PyTreeCheckpointer() as checkpointer:
        state = checkpointer.restore(path)
    flat = ocp.tree.to_flat_dict(state["params"], sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def train_env(data_dir: str, devices: int = 1) -> dict[str, str]:
    env = dict(os.environ)
    env["ARCHLAB_DATA_DIR"] = data_dir
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices} {TEST_XLA_FLAGS}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(REPO)
    # A run logs to MLflow where the test says, never to a store the user's shell points at.
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("ARCHLAB_MLFLOW_PARENT_RUN_ID", None)
    # Many tests train the same tiny programs: a persistent compilation cache per test worker
    # (beside the datasets) compiles each once. The executable is the same either way.
    env["JAX_COMPILATION_CACHE_DIR"] = os.path.join(os.path.dirname(data_dir), "jax_cache")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def train_command(workdir: Path | str, *overrides: str, base: list[str] = TINY) -> list[str]:
    return [sys.executable, "-m", "launch.train", *base, f"--workdir={workdir}", *overrides]


def run_train(
    data_dir: str,
    workdir: Path | str,
    *overrides: str,
    devices: int = 1,
    base: list[str] = TINY,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    return run_command(
        train_command(workdir, *overrides, base=base), data_dir, devices=devices, timeout=timeout
    )


def run_module(
    data_dir: str, module: str, *args: str, timeout: float = 300
) -> subprocess.CompletedProcess:
    """`python -m <module> <args>` as a user runs it, over the session's datasets."""
    return run_command([sys.executable, "-m", module, *args], data_dir, timeout=timeout)


def run_command(
    command: list[str], data_dir: str, *, devices: int = 1, timeout: float = 300
) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPO,
        env=train_env(data_dir, devices),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Whoever runs the tests: commits need a name, and must not ask for a signature.
IDENTITY = ("-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false")


def git(repo: Path, *args: str) -> str:
    """Real git in `repo`, as a user runs it; its output."""
    return subprocess.run(
        ["git", "-C", str(repo), *IDENTITY, *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout


def worktrees(repo: Path) -> list[str]:
    """`git worktree list`, one entry each: the repository's own and any added."""
    return git(repo, "worktree", "list", "--porcelain").split("\n\n")


def final_params(workdir: Path | str, steps: int) -> dict[str, np.ndarray]:
    """The parameters of a run's newest checkpoint, which must be of step `steps`, by name."""
    import orbax.checkpoint as ocp  # here: collecting the tests needs no Orbax

    manager = ocp.CheckpointManager(
        Path(workdir, "checkpoints").resolve(), item_names=("state", "data_iterator")
    )
    assert manager.latest_step() == steps
    restored = manager.restore(steps, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    flat = ocp.tree.to_flat_dict(restored["state"]["params"], sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def metrics(workdir: Path | str, *, drop_perf: bool = True) -> list[dict]:
    rows = read_metrics(str(workdir))
    return deterministic_rows(rows) if drop_perf else rows


def slurm_cluster_problem() -> str | None:
    """Why no Slurm cluster can run jobs here, or None when one can."""
    if shutil.which("sinfo") is None:
        return "sinfo not found (no Slurm here; .ci/slurm_cluster.sh starts one)"
    try:
        result = subprocess.run(
            ["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=20
        )
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 20 s"
    if result.returncode != 0:
        return f"the Slurm cluster does not answer: {' '.join(result.stderr.split())}"
    states = result.stdout.split()
    if not any(state in ("idle", "mix", "alloc", "comp") for state in states):
        return f"no Slurm node is up (node states: {states})"
    return None


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """A local Slurm cluster to submit to (.ci/slurm_cluster.sh starts one). Tests that need it
    skip without one, and fail instead under ARCHLAB_REQUIRE_SLURM=1 (CI sets it)."""
    problem = slurm_cluster_problem()
    if problem is None:
        return
    if os.environ.get("ARCHLAB_REQUIRE_SLURM") == "1":
        pytest.fail(f"ARCHLAB_REQUIRE_SLURM=1 but {problem}")
    pytest.skip(problem)
