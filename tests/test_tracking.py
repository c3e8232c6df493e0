"""tracking.backends=...,mlflow: a run is one MLflow run, which MlflowClient reads back as the run
directory has it (config, metrics.jsonl, manifest, eval/ and model card), and which a resumed run
continues. A study's parent run: tests/test_study.py."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from runtime.config import flatten
from tests.conftest import REPO, run_train, train_command, train_env

pytestmark = pytest.mark.long(seconds=35)

TRACKED = [
    "--config.tracking.backends=jsonl,tensorboard,mlflow",
    "--config.eval.suites=calibration",  # the cheapest suite: eval/ files and a model card
]


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def metrics_rows(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def resumed(data_dir, tmp_path_factory) -> Path:
    """A run stopped by SIGTERM once it has logged a step, then rerun to the end."""
    workdir = tmp_path_factory.mktemp("tracked") / "run"
    metrics = workdir / "metrics.jsonl"
    proc = subprocess.Popen(
        train_command(workdir, *TRACKED),
        cwd=REPO,
        env=train_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    while proc.poll() is None and not (metrics.exists() and metrics.read_text()):
        time.sleep(0.005)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0, stderr[-3000:]
    assert read_json(workdir / "manifest.json")["status"] == "preempted"
    result = run_train(data_dir, workdir, *TRACKED)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def the_mlflow_run(workdir: Path):
    """The store is the run directory's own by default; it must hold exactly one run."""
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    experiments = [e.experiment_id for e in client.search_experiments()]
    (run,) = client.search_runs(experiments)
    return client, run


def test_a_resumed_run_is_one_mlflow_run_with_every_step_once(resumed):
    client, run = the_mlflow_run(resumed)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == "run"
    manifest = read_json(resumed / "manifest.json")
    resumed_at = manifest["attempts"][-1]["resumed_from_step"]
    assert run.data.tags["archlab.attempts"] == "2"
    assert run.data.tags["archlab.resumed_from_step"] == str(resumed_at)
    rows = metrics_rows(resumed)
    assert 0 < resumed_at < rows[-1]["step"] == 20  # both attempts logged steps
    for key in {k for row in rows for k in row} - {"step"}:
        history = client.get_metric_history(run.info.run_id, key)
        points = [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)]
        assert points == [(row["step"], row[key]) for row in rows if key in row], key
    assert run.data.metrics["eval/accuracy"] == rows[-1]["eval/accuracy"]


def test_params_are_the_flattened_config_and_tags_the_provenance(resumed):
    _, run = the_mlflow_run(resumed)
    config = read_json(resumed / "config.json")
    assert run.data.params == {key: str(value) for key, value in flatten(config).items()}
    assert run.data.params["tracking.backends"] == "jsonl,tensorboard,mlflow"
    manifest = read_json(resumed / "manifest.json")
    tags = run.data.tags
    assert tags["mlflow.source.git.commit"] == manifest["git"]["commit"]
    assert tags["archlab.dirty"] == str(manifest["git"]["dirty"])
    fingerprint = manifest["datasets"]["mqar"]
    assert tags["archlab.dataset.mqar.content_hash"] == fingerprint["content_hash"]
    assert tags["archlab.dataset.mqar.version"] == fingerprint["version"]


def test_the_model_card_and_eval_files_are_artifacts(resumed, tmp_path):
    client, run = the_mlflow_run(resumed)
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert listed == {"model_card.md", "eval"}
    evaluated = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert evaluated == {f"eval/{p.name}" for p in (resumed / "eval").iterdir()}
    assert "eval/reliability.png" in evaluated
    copy = client.download_artifacts(run.info.run_id, "model_card.md", str(tmp_path))
    assert Path(copy).read_text() == (resumed / "model_card.md").read_text()
