"""Every config override is checked, wherever it comes from: a key that names nothing is a
one-line error (exit 2) naming the file, the ARMS / SETTINGS / LEARNING entry or get_config, and
the nearest key, before any run starts. ml_collections would add the key instead, and the run
would train at the default while the study reported it as an ablation."""

from __future__ import annotations

import glob
import subprocess
import sys
from pathlib import Path

import pytest

from launch.study import build_every_config
from runtime.study_spec import load_study
from tests.conftest import REPO, run_train, train_env
from tests.test_train_cli import assert_usage_error

# A tiny study in the form of experiments/mqar_mixers.py: arms, settings, and LEARNING entries
# that the `learn` setting adds. Its arms are tiny_study's, so a run it started would be short.
STUDY = """
from runtime.config import apply_overrides
from tests import tiny_study

ARMS = {arms!r}
SETTINGS = {settings!r}
LEARNING = {learning!r}
BASELINE = "attention"
SEEDS = 1
METRIC = "eval/accuracy"
HIGHER_IS_BETTER = True
HYPOTHESIS = "None: nothing here should run."
CLAIMS = []


def get_config(arg=None):
    arm, _, setting = (arg or BASELINE).partition(",")
    setting = setting or "small"
    config = tiny_study.get_config("attention")
    apply_overrides(config, ARMS[arm], f"ARMS[{{arm!r}}]")
    apply_overrides(config, SETTINGS[setting], f"SETTINGS[{{setting!r}}]")
    if setting == "learn":
        apply_overrides(config, LEARNING.get(arm, {{}}), f"LEARNING[{{arm!r}}]")
    return config
"""
ARMS = {"attention": {}, "deltanet": {"model.mixer": "deltanet"}}
SETTINGS = {"small": {}, "learn": {}, "longer": {"train.steps": 30}}
TYPO = {"optimizer.learnig_rate": 0.5}


def write_study(tmp_path: Path, arms=ARMS, settings=SETTINGS, learning=None) -> Path:
    path = tmp_path / "typo_study.py"
    path.write_text(STUDY.format(arms=arms, settings=settings, learning=learning or {}))
    return path


def run_study(data_dir: str, study: Path, workdir: Path, *args: str):
    command = [sys.executable, "-m", "launch.study", str(study), f"--workdir={workdir}", *args]
    return subprocess.run(
        command, cwd=REPO, env=train_env(data_dir), capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("entries", "where"),
    [
        ({"arms": {**ARMS, "typo": TYPO}}, "ARMS['typo']"),
        # A setting or LEARNING entry this launch would not use still stops it: the file is wrong.
        ({"settings": {**SETTINGS, "longer": TYPO}}, "SETTINGS['longer']"),
        ({"learning": {"deltanet": TYPO}}, "LEARNING['deltanet']"),
    ],
)
def test_a_misspelled_key_in_a_study_file_stops_the_study_before_its_workdir_exists(
    data_dir, tmp_path, entries, where
):
    study = write_study(tmp_path, **entries)
    result = run_study(data_dir, study, tmp_path / "s", "--arms=attention")
    assert_usage_error(
        result, str(study), where, "'optimizer.learnig_rate'", "'optimizer.learning_rate'"
    )
    assert not (tmp_path / "s").exists()


def test_launch_train_on_an_arm_with_a_misspelled_key_is_a_one_line_error(data_dir, tmp_path):
    study = write_study(tmp_path, arms={**ARMS, "typo": TYPO})
    result = run_train(data_dir, tmp_path / "run", base=[f"--config={study}:typo"])
    assert_usage_error(result, f"{study}:typo", "ARMS['typo']", "'optimizer.learning_rate'")
    assert not (tmp_path / "run").exists()


def test_a_misspelled_attribute_in_get_config_is_a_one_line_error(data_dir, tmp_path):
    config = tmp_path / "typo_config.py"
    config.write_text(
        "from tests import tiny_study\n\n\n"
        "def get_config():\n"
        "    c = tiny_study.get_config()\n"
        "    c.model.d_modle = 48\n"
        "    return c\n"
    )
    result = run_train(data_dir, tmp_path / "run", base=[f"--config={config}"])
    assert_usage_error(result, str(config), "'model.d_modle'", "'model.d_model'")
    assert not (tmp_path / "run").exists()


STUDY_FILES = sorted(
    path
    for path in glob.glob(str(REPO / "experiments" / "*.py")) + [str(REPO / "tests/tiny_study.py")]
    if "\nARMS" in Path(path).read_text()
)


@pytest.mark.parametrize("path", STUDY_FILES, ids=lambda p: Path(p).name)
def test_every_arm_of_every_study_builds_in_every_setting(path):
    spec = load_study(path)
    configs = build_every_config(spec)
    assert {arm for arm, _ in configs} == set(spec.arms)
