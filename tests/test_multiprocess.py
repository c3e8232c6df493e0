"""Several processes are one run: 2 processes x 2 devices train exactly as 1 process x 4 devices.

The processes join JAX's runtime from coordinator flags (what Kubernetes passes) or, as tasks of
an `srun` step, from the Slurm environment, and exchange collectives through gloo; each reads its
own shard of every batch, Orbax writes one checkpoint together, and only process 0 writes
metrics and the manifest.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from cluster import slurm
from cluster.distributed import resolve
from runtime.errors import UsageError
from tests.conftest import REPO, TINY, metrics, run_train, train_command, train_env

pytestmark = pytest.mark.long(seconds=155)

SHARDED = [
    "--config.mesh.data=2",
    "--config.mesh.fsdp=2",
    # An evaluation split two processes do not divide: each must still score every example once.
    "--config.data.mqar.eval_examples=63",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def run_processes(data_dir: str, workdir, num_processes: int, devices_each: int) -> list[str]:
    """Starts every process of one run, waits for all, returns their stderr."""
    address = f"localhost:{free_port()}"
    procs = [
        subprocess.Popen(
            train_command(
                workdir,
                *SHARDED,
                f"--coordinator_address={address}",
                f"--num_processes={num_processes}",
                f"--process_id={i}",
            ),
            cwd=REPO,
            env=train_env(data_dir, devices_each),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(num_processes)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for p, (_, err) in zip(procs, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    return [err for _, err in outputs]


@pytest.fixture(scope="module")
def one_process(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("one_process") / "run"
    result = run_train(data_dir, workdir, *SHARDED, devices=4)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def assert_same_metrics(workdir, one_process) -> list[dict]:
    expected, got = metrics(one_process), metrics(workdir)
    assert [r["step"] for r in got] == [r["step"] for r in expected]
    assert [sorted(r) for r in got] == [sorted(r) for r in expected]
    for want, have in zip(expected, got, strict=True):
        for key, value in want.items():
            # Same examples in every global batch; only the order of floating-point sums moves.
            np.testing.assert_allclose(have[key], value, rtol=1e-5, err_msg=key)
    return got


def test_two_processes_give_the_metrics_of_one(data_dir, tmp_path, one_process):
    workdir = tmp_path / "run"
    run_processes(data_dir, workdir, num_processes=2, devices_each=2)
    got = assert_same_metrics(workdir, one_process)

    manifest = json.loads((workdir / "manifest.json").read_text())
    assert manifest["environment"]["process_count"] == 2
    assert manifest["environment"]["device_count"] == 4
    assert manifest["environment"]["mesh"] == {"data": 2, "fsdp": 2, "tensor": 1, "expert": 1}
    assert manifest["status"] == "completed"
    # One checkpoint written together: each process saved its own data-iterator position.
    iterators = sorted(p.name for p in (workdir / "checkpoints" / "20" / "data_iterator").iterdir())
    assert "process_0-of-2.json" in iterators and "process_1-of-2.json" in iterators

    # Rerunning restores the collective checkpoint in both processes and has nothing left to do.
    run_processes(data_dir, workdir, num_processes=2, devices_each=2)
    assert metrics(workdir) == got


def test_two_slurm_tasks_give_the_metrics_of_one_process(
    slurm_cluster, data_dir, tmp_path, one_process
):
    # launch.slurm renders the job; inside `srun` each task joins the runtime from SLURM_* alone.
    workdir = tmp_path / "slurm run"
    submit = subprocess.run(
        [
            sys.executable,
            "-m",
            "launch.slurm",
            *TINY,
            *SHARDED,
            f"--workdir={workdir}",
            "--nodes=1",
            "--tasks-per-node=2",
            "--devices-per-task=2",
            f"--env=ARCHLAB_DATA_DIR={data_dir}",
            "--env=JAX_PLATFORMS=cpu",
            "--submit",
        ],
        cwd=REPO,
        env=train_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert submit.returncode == 0, submit.stderr[-3000:]
    job_id = re.search(r"submitted job (\d+)", submit.stdout).group(1)
    slurm.wait_for_job(job_id, poll_seconds=1, timeout=300)
    log = (workdir / "slurm" / f"{job_id}.out").read_text()
    assert (workdir / "metrics.jsonl").exists(), log[-3000:]
    assert_same_metrics(workdir, one_process)
    environment = json.loads((workdir / "manifest.json").read_text())["environment"]
    assert (environment["process_count"], environment["device_count"]) == (2, 4)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--coordinator_address=localhost:1234"], "go together"),
        (
            ["--coordinator_address=localhost", "--num_processes=2", "--process_id=0"],
            "host:port",
        ),
        (
            ["--coordinator_address=localhost:1234", "--num_processes=2", "--process_id=2"],
            r"\[0, 2\)",
        ),
    ],
)
def test_bad_coordinator_flags_are_one_line_errors(data_dir, tmp_path, flags, message):
    result = subprocess.run(
        train_command(tmp_path / "run", *flags),
        cwd=REPO,
        env=train_env(data_dir),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert re.search(message, result.stderr)
    assert not (tmp_path / "run").exists()


def test_a_slurm_step_with_several_tasks_joins_from_its_environment():
    step = {"SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "2", "SLURM_PROCID": "1"}
    coordinator = resolve(None, None, None, step)
    assert (coordinator.num_processes, coordinator.process_id) == (2, 1)
    assert coordinator.source == "slurm"


def test_a_single_task_or_no_slurm_is_one_process():
    assert resolve(None, None, None, {}) is None
    assert resolve(None, None, None, {"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "1"}) is None


def test_a_step_smaller_than_its_job_is_refused():
    with pytest.raises(UsageError, match="srun"):
        resolve(None, None, None, {"SLURM_STEP_NUM_TASKS": "2", "SLURM_NTASKS": "4"})
