"""Bad input ends with one clear line on stderr and exit status 2, before any compute."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import run_train


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
    ],
)
def test_bad_config_values_are_one_line_errors(data_dir, tmp_path, override, fragments):
    workdir = tmp_path / "run"
    assert_usage_error(run_train(data_dir, workdir, override), *fragments)
    assert not workdir.exists(), "nothing is created before the config is known to be good"


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
