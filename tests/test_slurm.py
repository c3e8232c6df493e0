"""`launch.slurm` renders sbatch scripts whose srun tasks are a run's JAX processes, and job arrays
whose tasks leave their exit status in files; the last tests submit to a real Slurm cluster
(`.ci/slurm_cluster.sh`). Those skip when there is none, and fail instead with
ARCHLAB_REQUIRE_SLURM=1 (CI sets it)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from cluster import slurm
from launch import slurm as slurm_cli
from tests.conftest import REPO
from tests.test_train_cli import assert_usage_error

CONFIG = "experiments/mqar_mixers.py"
JOB = slurm.TrainJob(config=CONFIG, workdir="/runs/x", nodes=2, tasks_per_node=4)
# Stands in for srun/sbatch/squeue where no cluster is needed: prints what it was given.
# The variables the script may set for the job; the tests start it without them.
JOB_VARIABLES = ("XLA_FLAGS", "JAX_PLATFORMS", "ARCHLAB_DATA_DIR")
FAKE_SRUN = """#!{python}
import json, os, sys
keys = {keys!r}
print(json.dumps({{"argv": sys.argv[1:], "cwd": os.getcwd(),
                  "env": {{k: os.environ[k] for k in keys if k in os.environ}}}}))
"""


def fake_tool(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    path = bin_dir / name
    path.write_text(body)
    path.chmod(0o755)


def run_script(script: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    """Runs a rendered script with bash, with a fake srun that prints its arguments."""
    fake_tool(tmp_path / "bin", "srun", FAKE_SRUN.format(python=sys.executable, keys=JOB_VARIABLES))
    path = tmp_path / "job.sbatch"
    path.write_text(script)
    base = {k: v for k, v in os.environ.items() if k not in JOB_VARIABLES}
    base["PATH"] = f"{tmp_path / 'bin'}:{base['PATH']}"
    return subprocess.run(
        ["bash", str(path)], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def sbatch_options(script: str) -> dict[str, str]:
    return dict(
        line[len("#SBATCH --") :].split("=", 1)
        for line in script.splitlines()
        if line.startswith("#SBATCH --")
    )


# ------------------------------------------------------------------------------- rendering
def test_sbatch_lines_size_and_name_the_job():
    script = slurm.render_sbatch(JOB)
    assert script.startswith("#!/bin/bash\n")
    assert sbatch_options(script) == {
        "job-name": "archlab-x",
        "output": "/runs/x/slurm/%j.out",
        "nodes": "2",
        "ntasks-per-node": "4",
    }
    full = dataclasses.replace(JOB, partition="gpu", time="1-02:00:00", cpus_per_task=8)
    options = sbatch_options(slurm.render_sbatch(full))
    assert (options["partition"], options["time"], options["cpus-per-task"]) == (
        "gpu",
        "1-02:00:00",
        "8",
    )


def test_one_srun_task_per_process_runs_launch_train_with_the_overrides_last():
    job = dataclasses.replace(JOB, overrides=("--config.train.steps=5", "--config.seed=2"))
    script = slurm.render_sbatch(job, repo_root="/repo", python="/venv/bin/python")
    (srun,) = [line for line in script.splitlines() if "srun" in line and "#" not in line]
    assert shlex.split(srun) == [
        "exec",
        "srun",
        "--kill-on-bad-exit=1",
        "/venv/bin/python",
        "-m",
        "launch.train",
        f"--config={CONFIG}",
        "--workdir=/runs/x",
        "--config.train.steps=5",
        "--config.seed=2",
    ]
    assert "coordinator" not in srun  # launch.train learns it from the srun step itself
    assert "cd /repo\n" in script


def test_srun_repeats_cpus_per_task():
    """From Slurm 22.05 srun does not inherit sbatch's --cpus-per-task."""
    script = slurm.render_sbatch(dataclasses.replace(JOB, cpus_per_task=3))
    assert "srun --kill-on-bad-exit=1 --cpus-per-task=3 " in script


def test_script_runs_srun_in_the_checkout_with_paths_quoted(tmp_path):
    workdir = str(tmp_path / "my run's dir" / "x")
    job = slurm.TrainJob(
        config=CONFIG,
        workdir=workdir,
        overrides=("--config.model.layer_pattern=A M $HOME",),
    )
    result = run_script(slurm.render_sbatch(job), tmp_path)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["cwd"] == slurm.REPO_ROOT
    assert seen["argv"][1:] == [
        sys.executable,
        "-m",
        "launch.train",
        f"--config={CONFIG}",
        f"--workdir={workdir}",
        "--config.model.layer_pattern=A M $HOME",
    ]
    assert seen["env"] == {}  # no XLA_FLAGS unless asked; JAX_PLATFORMS left alone
    # sbatch reads #SBATCH lines itself: double quotes, not a shell's single quotes.
    assert f'#SBATCH --output="{workdir}/slurm/%j.out"' in slurm.render_sbatch(job)


def test_devices_per_task_and_env_are_exported(tmp_path):
    job = dataclasses.replace(
        JOB, devices_per_task=4, env={"JAX_PLATFORMS": "cpu", "ARCHLAB_DATA_DIR": "/d d"}
    )
    result = run_script(slurm.render_sbatch(job), tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["env"] == {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
        "ARCHLAB_DATA_DIR": "/d d",
    }


def test_sbatch_values_are_quoted_the_way_sbatch_reads_them():
    assert slurm.sbatch_quote("/runs/x-1/%j.out") == "/runs/x-1/%j.out"
    assert slurm.sbatch_quote('a b"c') == '"a b\\"c"'
    assert slurm.output_pattern("/runs/100%/slurm", "%j.out") == "/runs/100%%/slurm/%j.out"


def test_array_tasks_run_their_command_and_leave_their_exit_status(tmp_path):
    log_dir = tmp_path / "logs dir"
    log_dir.mkdir()
    commands = [["true"], ["sh", "-c", "exit 3"], ["echo", "it's a b"]]
    script = slurm.render_array_sbatch(commands, "study x", str(log_dir), max_concurrent=2)
    options = sbatch_options(script)
    assert options["array"] == "0-2%2"
    assert options["job-name"] == '"study x"'
    assert options["output"] == f'"{log_dir}/%A_%a.out"'
    codes = []
    for task in range(4):  # task 3 has no command: it fails, and says so
        result = run_script(
            script, tmp_path, SLURM_ARRAY_TASK_ID=str(task), SLURM_ARRAY_JOB_ID="77"
        )
        codes.append(result.returncode)
        if task == 2:
            assert result.stdout == "it's a b\n"
    assert codes == [0, 3, 0, 1]
    assert slurm.array_exit_codes(str(log_dir), "77", 5) == [0, 3, 0, 1, None]
    assert sorted(p.name for p in log_dir.iterdir()) == [f"77_{i}.exit" for i in range(4)]


def test_array_refuses_what_sbatch_cannot_take():
    with pytest.raises(ValueError, match="at least one"):
        slurm.render_array_sbatch([], "x", "/logs")
    with pytest.raises(ValueError, match="newline or a backslash"):
        slurm.render_array_sbatch([["true"]], "x", "/logs\\a")


# ----------------------------------------------------------------- sbatch and squeue (faked)
def test_submit_returns_the_job_id_and_reports_sbatch_failures(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(slurm.SlurmError, match="sbatch not found"):
        slurm.submit("job.sbatch")
    fake_tool(bin_dir, "sbatch", '#!/bin/sh\necho "4242;archlab"\n')
    assert slurm.submit("job.sbatch") == "4242"
    fake_tool(bin_dir, "sbatch", "#!/bin/sh\necho 'sbatch: error: invalid partition' >&2\nexit 1\n")
    with pytest.raises(slurm.SlurmError, match="failed: sbatch: error: invalid partition"):
        slurm.submit("job.sbatch")


def test_wait_for_job_returns_once_the_job_left_the_queue(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    polls = tmp_path / "polls"
    # Queued for two polls, then gone; later still, forgotten by slurmctld altogether.
    fake_tool(
        bin_dir,
        "squeue",
        f"""#!/bin/sh
echo x >> {polls}
n=$(wc -l < {polls})
if [ "$n" -le 2 ]; then echo 7_1; exit 0; fi
if [ "$n" -le 3 ]; then exit 0; fi
echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1
""",
    )
    slurm.wait_for_job("7", poll_seconds=0.01)
    assert len(polls.read_text().splitlines()) == 3
    slurm.wait_for_job("7", poll_seconds=0.01)  # forgotten: gone too
    fake_tool(bin_dir, "squeue", "#!/bin/sh\necho 7\n")
    with pytest.raises(TimeoutError):
        slurm.wait_for_job("7", poll_seconds=0.01, timeout=0.05)


# ------------------------------------------------------------------------------ command line
def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.slurm", *args],
        cwd=REPO,
        env=env or {**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("args", "fragments"),
    [
        ([f"--config={CONFIG}"], ["--workdir"]),
        (["--workdir=W"], ["--config"]),
        ([f"--config={CONFIG}", "--workdir=W", "--nodes=0"], ["--nodes must be >= 1"]),
        ([f"--config={CONFIG}", "--workdir=W", "--time=2h"], ["--time='2h'"]),
        ([f"--config={CONFIG}", "--workdir=W", "--env", "FOO"], ["KEY=VALUE"]),
        ([f"--config={CONFIG}", "--workdir=W", "--bogus=1"], ["unknown argument '--bogus=1'"]),
        (["--config=experiments/nope.py", "--workdir=W"], ["does not exist"]),
        (
            [f"--config={CONFIG}", "--workdir=W", "--config.model.d_modle=8"],
            ["unknown config key 'model.d_modle'", "'model.d_model'"],
        ),
        ([f"--config={CONFIG}", "--workdir=W", "--config.model.d_model=wide"], ["d_model"]),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, fragments):
    workdir = tmp_path / "run"
    args = [a.replace("--workdir=W", f"--workdir={workdir}") for a in args]
    assert_usage_error(run_cli(*args), *fragments)
    assert not workdir.exists()


def test_submit_without_sbatch_is_refused_before_writing(tmp_path):
    workdir = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PATH": str(tmp_path / "empty")}
    result = run_cli(f"--config={CONFIG}", f"--workdir={workdir}", "--submit", env=env)
    assert_usage_error(result, "sbatch not found")
    assert not workdir.exists()


def test_cli_writes_the_script_and_keeps_a_different_earlier_one(tmp_path, capsys):
    workdir = tmp_path / "run"
    argv = ["launch.slurm", f"--config={CONFIG}", f"--workdir={workdir}", "--tasks-per-node=2"]
    assert slurm_cli.main([*argv, "--config.train.steps=5"]) == 0
    path = workdir / "slurm" / "train.sbatch"
    first = path.read_text()
    out = capsys.readouterr().out
    assert first in out and f"wrote {path}" in out
    assert "--ntasks-per-node=2" in first and "--config.train.steps=5" in first
    assert slurm_cli.main([*argv, "--config.train.steps=5"]) == 0  # the same: nothing moves
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.sbatch"]
    assert slurm_cli.main([*argv, "--config.train.steps=6"]) == 0
    assert "--config.train.steps=6" in path.read_text()
    assert (path.parent / "train.1.sbatch").read_text() == first
    assert "kept the previous, different script as" in capsys.readouterr().out


def test_config_path_is_made_relative_to_the_checkout():
    root = slurm.REPO_ROOT
    assert slurm.resolve_config(f"{root}/experiments/x.py:arm") == "experiments/x.py:arm"
    assert slurm.resolve_config("/elsewhere/x.py", repo_root=root) == "/elsewhere/x.py"


# --------------------------------------------------------------------------- a real cluster
def test_array_job_on_the_cluster_reports_each_tasks_exit_status(slurm_cluster, tmp_path):
    log_dir = tmp_path / "logs dir"
    log_dir.mkdir()
    commands = [
        ["true"],
        [sys.executable, "-c", "import sys; print(sys.argv[1])", "it's here"],
        ["sh", "-c", "exit 3"],
    ]
    script = tmp_path / "array.sbatch"
    script.write_text(slurm.render_array_sbatch(commands, "archlab-test-array", str(log_dir)))
    job_id = slurm.submit(str(script))
    slurm.wait_for_job(job_id, poll_seconds=0.5, timeout=60)
    assert slurm.array_exit_codes(str(log_dir), job_id, 3) == [0, 0, 3], os.listdir(log_dir)
    assert (log_dir / f"{job_id}_1.out").read_text() == "it's here\n"
