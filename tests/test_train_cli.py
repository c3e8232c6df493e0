"""Bad input ends with one clear line on stderr and exit status 2, before any compute."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, run_command, run_train


def assert_usage_error(result, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("--config.model.d_modle=8", ["unknown config key 'model.d_modle'", "'model.d_model'"]),
        ("--config.model.name=lmm", ["unknown model 'lmm'", "'lm'", "mlp"]),
        ("--config.data.name=mqr", ["unknown dataset 'mqr'", "mqar", "digits"]),
        ("--config.objective.name=xent", ["unknown objective 'xent'", "next_token_xent"]),
        ("--config.optimizer.name=adam", ["unknown optimizer 'adam'", "adamw", "lion"]),
        ("--config.model.d_model=wide", ["d_model"]),
        (
            "--config.tracking.backends=jsonl,wandb",
            ["unknown tracking backend 'wandb'", "valid: jsonl, mlflow, tensorboard"],
        ),
        ("--config.tracking.backends=tensorboard", ["must include jsonl"]),
        (
            "--config.quant.mode=int4",
            ["unknown quant.mode 'int4'", "valid: none, ptq_int8, ptq_int8_weights, qat_int8"],
        ),
        ("--config.quant.mode=ptq_int8", ["post-training quantization", "launch.quantize"]),
        (
            "--config.tracking.mlflow_uri=http://localhost:5000",
            ["tracking.mlflow_uri is set", "does not include mlflow"],
        ),
    ],
)
def test_bad_config_values_are_one_line_errors(data_dir, tmp_path, override, fragments):
    workdir = tmp_path / "run"
    assert_usage_error(run_train(data_dir, workdir, override), *fragments)
    assert not workdir.exists(), "nothing is created before the config is known to be good"


def test_an_mlflow_store_must_be_one_mlflow_opens_from_any_directory(data_dir, tmp_path):
    """A study's runs start in the repository: a relative SQLite path would put them in
    another store than the study's; MLflow no longer opens file stores."""
    mlflow = "--config.tracking.backends=jsonl,mlflow"
    relative = run_train(
        data_dir, tmp_path / "run", mlflow, "--config.tracking.mlflow_uri=sqlite:///m.db"
    )
    assert_usage_error(relative, "tracking.mlflow_uri='sqlite:///m.db' is a relative path")
    files = run_train(
        data_dir, tmp_path / "run", mlflow, f"--config.tracking.mlflow_uri={tmp_path}"
    )
    assert_usage_error(files, "is a file store")
    assert not (tmp_path / "run").exists()


def test_config_file_that_does_not_load(data_dir, tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    result = run_train(data_dir, tmp_path / "run", base=[f"--config={broken}"])
    assert_usage_error(result, "does not load", "SyntaxError")
    missing = run_train(data_dir, tmp_path / "run", base=[f"--config={tmp_path}/nope.py"])
    assert_usage_error(missing, "does not exist")


def test_batch_size_must_divide_over_data_parallel_devices(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run", "--config.train.batch_size=12", devices=8)
    assert_usage_error(result, "train.batch_size=12", "data-parallel size 8")


def test_mesh_must_match_device_count(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run", "--config.mesh.data=3", devices=8)
    assert_usage_error(result, "mesh data=3,fsdp=1,tensor=1", "8 are available")
    result = run_train(
        data_dir, tmp_path / "run", "--config.mesh.data=2", "--config.mesh.tensor=2", devices=8
    )
    assert_usage_error(result, "needs 4 devices but 8 are available")


def test_workdir_of_another_config_is_refused_and_left_untouched(data_dir, tmp_path):
    workdir = tmp_path / "run"
    first = run_train(data_dir, workdir, "--config.train.steps=5")
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.read_bytes() for p in Path(workdir).rglob("*") if p.is_file()}
    result = run_train(data_dir, workdir, "--config.train.steps=5", "--config.seed=1")
    assert_usage_error(result, "different config", "seed")
    after = {p: p.read_bytes() for p in Path(workdir).rglob("*") if p.is_file()}
    assert after == before


def test_model_config_that_does_not_fit_is_a_one_line_error(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run", "--config.model.num_heads=3")
    assert_usage_error(result, "'lm'", "not divisible by num_heads=3")
    assert not (tmp_path / "run").exists()
    result = run_train(data_dir, tmp_path / "run", "--config.objective.z_loss=-1")
    assert_usage_error(result, "'next_token_xent'", "z_loss")


@pytest.mark.parametrize(
    ("override", "fragments"),
    [
        ("--config.model.mixer=atention", ["unknown", "'atention'", "attention"]),
        ("--config.model.num_heads=3", ["not divisible by num_heads=3"]),
        ("--config.train.batch_size=0", ["train.batch_size must be >= 1"]),
        ("--config.data.mqar.num_kv_pairs=0", ["mqar"]),
    ],
)
def test_checks_that_need_no_data_fail_before_any_data_is_prepared(tmp_path, override, fragments):
    fresh = tmp_path / "datasets"
    fresh.mkdir()
    result = run_train(str(fresh), tmp_path / "run", override)
    assert_usage_error(result, *fragments)
    assert list(fresh.iterdir()) == [], "the dataset was prepared before the check"
    assert not (tmp_path / "run").exists()


def test_a_workdir_of_another_config_is_refused_before_any_data_is_prepared(data_dir, tmp_path):
    workdir = tmp_path / "run"
    assert run_train(data_dir, workdir, "--config.train.steps=5").returncode == 0
    fresh = tmp_path / "datasets"
    fresh.mkdir()
    result = run_train(str(fresh), workdir, "--config.train.steps=5", "--config.seed=1")
    assert_usage_error(result, "different config", "seed")
    assert list(fresh.iterdir()) == []


@pytest.mark.parametrize("module", ["launch.train", "launch.study"])
def test_a_workdir_that_is_a_file_or_under_one_is_a_one_line_error(tmp_path, module):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine\n")
    fresh = tmp_path / "datasets"
    fresh.mkdir()
    target = {"launch.train": [*TINY], "launch.study": ["tests/tiny_study.py"]}[module]
    for workdir, fragment in ((a_file, "is a file, not a directory"), (a_file / "run", "a file")):
        result = run_command(
            [sys.executable, "-m", module, *target, f"--workdir={workdir}"], str(fresh)
        )
        assert_usage_error(result, f"--workdir='{workdir}'", fragment)
    assert a_file.read_text() == "mine\n"
    assert list(fresh.iterdir()) == []


def test_a_workdir_that_cannot_be_written_is_a_one_line_error(data_dir):
    # A process's /proc directory takes no new entries, not even from root (who may write into
    # any ordinary directory, so a chmod would not do).
    result = run_train(data_dir, "/proc/1/run")
    assert_usage_error(result, "cannot be written")


def test_parameter_the_mesh_cannot_split_is_a_one_line_error_before_the_data(tmp_path):
    # One head cannot be split over tensor=2. The data dir is fresh: the check needs only shapes,
    # so it fails before the dataset is prepared (and before the workdir is claimed).
    fresh_data = tmp_path / "datasets"
    result = run_train(
        str(fresh_data),
        tmp_path / "run",
        "--config.model.num_heads=1",
        "--config.mesh.tensor=2",
        devices=2,
    )
    assert_usage_error(
        result,
        "params/",
        "of shape (1, 32, 32)",
        "logical axis 'heads', size 1",
        "mesh axis 'tensor' of size 2",
        "model.num_heads",
        "mesh.tensor",
        "sharding.rules",
    )
    assert not (tmp_path / "run").exists()
    assert not fresh_data.exists()


def test_a_fine_tuning_source_that_is_not_a_run_is_a_one_line_error(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run", f"--config.finetune.from_run={tmp_path}")
    assert_usage_error(result, "finetune.from_run", "is not a run directory")
    assert not (tmp_path / "run").exists()


def test_lora_targets_that_match_nothing_are_a_one_line_error(data_dir, tiny_run, tmp_path):
    result = run_train(
        data_dir,
        tmp_path / "run",
        f"--config.finetune.from_run={tiny_run}",
        "--config.lora.rank=4",
        "--config.lora.targets=.*/nothing",
    )
    assert_usage_error(result, "lora.targets", "matches no module")
    assert not (tmp_path / "run").exists()
