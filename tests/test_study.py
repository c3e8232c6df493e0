"""launch.study: a study file in, every arm x seed trained as its own process, a report out.

Uses tests/tiny_study.py (arms `attention`, `deltanet` and `broken`, 20 steps at TINY size).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from analysis.runs import load_run
from analysis.study import run_dir
from tests.conftest import REPO, train_env

pytestmark = pytest.mark.long(seconds=220)

STUDY = "tests/tiny_study.py"
# The finished study logs to MLflow too, as a command-line override the study hands its runs.
FINISHED = ("--arms=deltanet", "--workers=2", "--config.tracking.backends=jsonl,mlflow")


def study_command(workdir: Path, *args: str, study: str = STUDY) -> list[str]:
    return [sys.executable, "-m", "launch.study", study, f"--workdir={workdir}", *args]


def run_study(
    data_dir: str, workdir: Path, *args: str, study: str = STUDY
) -> subprocess.CompletedProcess:
    return subprocess.run(
        study_command(workdir, *args, study=study),
        cwd=REPO,
        env=train_env(data_dir),
        capture_output=True,
        text=True,
        timeout=900,
    )


def attempts(workdir: str) -> list[dict]:
    return load_run(workdir).manifest["attempts"]


@pytest.fixture(scope="module")
def finished_study(data_dir, tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """attention and deltanet, 2 seeds each, all completed."""
    workdir = tmp_path_factory.mktemp("study") / "tiny"
    return workdir, run_study(data_dir, workdir, *FINISHED)


def test_a_study_trains_every_arm_and_seed_and_reports_a_verdict(finished_study):
    workdir, result = finished_study
    assert result.returncode == 0, result.stdout + result.stderr
    for arm in ("attention", "deltanet"):  # the baseline runs even when --arms leaves it out
        for seed in (0, 1):
            run = load_run(run_dir(str(workdir), arm, seed))
            assert run.status == "completed"
            assert run.config["seed"] == seed
            assert run.last_step == 20
    summary = json.loads((workdir / "summary.json").read_text())
    assert set(summary["arms"]) == {"attention", "deltanet"}
    assert summary["arms"]["deltanet"]["seeds_completed"] == 2
    claim = summary["claims"][0]
    assert claim["verdict"]["outcome"] in ("supported", "refuted", "inconclusive")
    assert claim["comparison"]["n_candidate"] == 2
    assert summary["compute"]["steps"] == 80
    assert (workdir / "report.md").exists() and (workdir / "report.html").exists()
    assert f"verdict: {summary['verdict']}" in result.stdout
    assert str((workdir / "report.html").resolve()) in result.stdout


def test_the_report_compares_the_arms_on_the_evaluation_suites(finished_study):
    """Every run ends with its suites (tiny_study: calibration); the report tabulates their
    headline numbers over seeds and each run's model card gets its arm's intervals."""
    workdir, _ = finished_study
    summary = json.loads((workdir / "summary.json").read_text())
    ece = summary["arms"]["deltanet"]["evaluation"]["headline"]["calibration/ece"]
    assert len(ece["final_values"]) == 2 and ece["final"]["n"] == 2
    report = (workdir / "report.md").read_text()
    assert "## Evaluation suites" in report and "| calibration/ece |" in report
    card = (Path(run_dir(str(workdir), "deltanet", 1)) / "model_card.md").read_text()
    assert "(arm `deltanet`)" in card and "| calibration/ece |" in card


def mlflow_runs(workdir: Path) -> tuple[MlflowClient, Any, dict[str, Any]]:
    """The study's MLflow runs, in the store in its directory: (client, parent, children by
    name). Every run of the store is one of them."""
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    (experiment,) = [e for e in client.search_experiments() if e.name == "tiny_study"]
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert parent.info.experiment_id == experiment.experiment_id
    children = {
        r.info.run_name: r
        for r in runs
        if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
    }
    assert len(children) == len(runs) - 1
    return client, parent, children


def test_a_study_logged_to_mlflow_is_a_parent_run_with_a_child_per_arm_and_seed(
    finished_study, tmp_path
):
    workdir, _ = finished_study
    client, parent, children = mlflow_runs(workdir)
    summary = json.loads((workdir / "summary.json").read_text())
    assert parent.info.run_name == "tiny" and parent.info.status == "FINISHED"
    assert parent.data.tags["archlab.verdict"] == summary["verdict"]
    assert parent.data.params["study_file"] == STUDY
    listed = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "report.html", "summary.json", "plots"} <= listed
    report = client.download_artifacts(parent.info.run_id, "report.md", str(tmp_path))
    assert Path(report).read_text() == (workdir / "report.md").read_text()

    assert set(children) == {f"{arm}/seed_{s}" for arm in ("attention", "deltanet") for s in (0, 1)}
    for name, child in children.items():
        arm, seed = name.split("/seed_")
        run = Path(run_dir(str(workdir), arm, int(seed)))
        assert child.info.status == "FINISHED"
        assert child.data.params["model.mixer"] == arm
        history = client.get_metric_history(child.info.run_id, "eval/accuracy")
        logged = sorted((m.step, m.value) for m in history)
        assert logged == list(zip(*load_run(str(run)).curve("eval/accuracy"), strict=True))
        # The card the study rewrote with the arm's intervals, not the run's own first card.
        card = client.download_artifacts(child.info.run_id, "model_card.md", str(tmp_path / name))
        assert Path(card).read_text() == (run / "model_card.md").read_text()
        assert f"(arm `{arm}`)" in Path(card).read_text()


def test_the_experiment_log_gets_one_line_per_study(finished_study):
    workdir, _ = finished_study
    lines = (workdir.parent / "experiments.jsonl").read_text().splitlines()
    entry = json.loads(lines[-1])
    assert entry["study"] == "tiny_study"
    assert entry["hypothesis"].startswith("At 20 steps")
    assert entry["verdict"] in ("supported", "refuted", "inconclusive")
    assert set(entry) >= {"config_hash", "datasets", "commit", "dirty", "claims"}


def test_rerunning_a_finished_study_trains_nothing(data_dir, finished_study):
    workdir, _ = finished_study
    result = run_study(data_dir, workdir, *FINISHED)
    assert result.returncode == 0, result.stderr
    assert "4 runs done, 0 to run" in result.stdout
    assert len(attempts(run_dir(str(workdir), "deltanet", 1))) == 1
    _, parent, children = mlflow_runs(workdir)  # the same parent run, continued: no second one
    assert len(children) == 4 and parent.info.status == "FINISHED"


def test_a_failed_run_is_reported_with_its_log_and_the_others_finish(data_dir, finished_study):
    """Adding an arm to a finished study runs only the new arm; its failure is reported."""
    workdir, _ = finished_study
    result = run_study(data_dir, workdir, *FINISHED, "--arms=deltanet,broken", "--seeds=1")
    assert result.returncode == 1
    assert "FAILED broken seed 0" in result.stdout
    assert "no_such_mixer" in result.stdout  # the tail of the run's own log
    summary = json.loads((workdir / "summary.json").read_text())
    assert [r["arm"] for r in summary["failed_runs"]] == ["broken"]
    assert summary["arms"]["deltanet"]["seeds_completed"] == 1  # --seeds=1 this time


def test_a_study_killed_midway_resumes_without_redoing_finished_runs(data_dir, tmp_path):
    """SIGKILL the study while its second run is in flight: that run gets SIGTERM (it
    checkpoints), and the rerun resumes it, redoing nothing that had finished. (A rerun starting
    runs that never began: test_a_failed_run_is_reported_with_its_log_and_the_others_finish; a
    group of seeds killed: tests/test_seed_groups.py.)"""
    workdir = tmp_path / "killed"
    args = ("--arms=attention", "--seeds=2", "--workers=1", "--setting=longer", "--no-group-seeds")
    proc = subprocess.Popen(
        study_command(workdir, *args),
        cwd=REPO,
        env=train_env(data_dir),
        stdout=subprocess.PIPE,
        text=True,
    )
    first = run_dir(str(workdir), "attention", 0)
    second = run_dir(str(workdir), "attention", 1)
    deadline = time.monotonic() + 600
    while not os.path.exists(os.path.join(second, "metrics.jsonl")):  # 2nd run is training
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 120  # the orphaned run checkpoints and stops on SIGTERM
    while load_run(second).status == "running":
        assert time.monotonic() < deadline
        time.sleep(0.5)

    result = run_study(data_dir, workdir, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 runs done, 1 to run" in result.stdout
    assert len(attempts(first)) == 1
    assert [a["status"] for a in attempts(second)] == ["preempted", "completed"]
    for seed in range(2):
        assert load_run(run_dir(str(workdir), "attention", seed)).last_step == 30


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--arms=attention,lstm"], "unknown arm 'lstm'; valid: attention, deltanet, broken"),
        (["--config.model.d_modle=8"], "unknown config key 'model.d_modle'"),
        (["--setting=huge"], "unknown setting 'huge'; valid: default, longer"),
        (["--seeds=0"], "--seeds must be >= 1"),
        (["--workers=0"], "--workers must be >= 1"),
        (["--verbose"], "unknown argument '--verbose'"),
        (["--config.tracking.backends=mlflow"], "tracking.backends 'mlflow' must include jsonl"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_anything_runs(data_dir, tmp_path, args, message):
    result = run_study(data_dir, tmp_path / "s", *args)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "s").exists()


def test_a_study_directory_keeps_its_overrides(data_dir, finished_study):
    workdir, _ = finished_study
    result = run_study(data_dir, workdir, "--config.train.steps=5")
    assert result.returncode == 2
    assert "holds a study launched with overrides" in result.stderr


def test_a_study_file_must_declare_what_a_study_is(data_dir, tmp_path):
    path = tmp_path / "half.py"
    path.write_text("ARMS = {'a': {}}\nBASELINE = 'a'\n")
    result = subprocess.run(
        [sys.executable, "-m", "launch.study", str(path), f"--workdir={tmp_path / 's'}"],
        cwd=REPO,
        env=train_env(data_dir),
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "does not declare SEEDS, METRIC, HIGHER_IS_BETTER, HYPOTHESIS, CLAIMS" in result.stderr


def test_a_study_runs_as_a_slurm_job_array(slurm_cluster, data_dir, tmp_path):
    # One array task per run on the real local cluster; failures come back through the exit
    # files the array leaves, with the run's own train.log, as on the local backend.
    workdir = tmp_path / "on slurm"
    env = {**train_env(data_dir), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run(
        study_command(workdir, "--backend=slurm", "--arms=broken", "--seeds=1"),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "submitted job array" in result.stdout
    assert load_run(run_dir(str(workdir), "attention", 0)).status == "completed"
    assert "FAILED broken seed 0" in result.stdout and "no_such_mixer" in result.stdout
    assert (Path(run_dir(str(workdir), "broken", 0)) / "train.log").exists()
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["arms"]["attention"]["seeds_completed"] == 1
    assert [f["arm"] for f in summary["failed_runs"]] == ["broken"]


def test_the_main_jobs_arms_are_sequence_mixer_arms_of_the_mqar_study():
    """`make run` reads MAIN_ARMS from the study file: each must be a sequence-mixer arm there
    (only the arms that change the block rather than the mixer are not)."""
    from experiments import mqar_mixers

    assert set(mqar_mixers.MAIN_ARMS) <= set(mqar_mixers.MIXER_ARMS) <= set(mqar_mixers.ARMS)
    assert set(mqar_mixers.ARMS) - set(mqar_mixers.MIXER_ARMS) == {"hybrid", "moe"}


def test_a_run_whose_evaluation_was_lost_is_finished_by_the_rerun(
    data_dir, tmp_path, finished_study
):
    """A study killed while a run's suites ran finds that run 'completed' in its manifest but
    without eval/: complete means everything the config asks for, so the rerun finishes it."""
    workdir = tmp_path / "tiny"
    shutil.copytree(finished_study[0], workdir)
    run = Path(run_dir(str(workdir), "deltanet", 1))
    shutil.rmtree(run / "eval")
    (run / "model_card.md").unlink()
    assert load_run(str(run)).status == "completed"

    result = run_study(data_dir, workdir, *FINISHED)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 runs done, 1 to run" in result.stdout
    assert (run / "eval" / "summary.json").is_file() and (run / "model_card.md").is_file()
    assert len(attempts(str(run))) == 2  # resumed at its last step: no step trained again
    assert attempts(str(run))[-1]["resumed_from_step"] == 20
