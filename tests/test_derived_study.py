"""launch.study with derived arms (runtime/study_spec.py, `run_of`): a run that needs another arm's
run of its seed starts after it, a quantized arm's run is launch.quantize of its source's run and
reads as a finished run, and a failed run's dependents are reported failed without running.

Uses tests/tiny_derived_study.py (TINY MQAR, 20 steps, no evaluation suites), one seed.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
from pathlib import Path

import pytest

from analysis.runs import QUANTIZATION_FILE, load_run
from analysis.study import run_dir
from tests.test_study import run_study

pytestmark = pytest.mark.long(seconds=400)  # 408 s on 2 cores at load average 12

STUDY = "tests/tiny_derived_study.py"
ARGS = ("--seeds=1", "--workers=2")


@pytest.fixture(scope="module")
def derived_study(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("study") / "derived"
    return workdir, run_study(data_dir, workdir, *ARGS, study=STUDY)


def run(workdir: Path, arm: str) -> str:
    return os.path.abspath(run_dir(str(workdir), arm, 0))


def attempt_times(workdir: Path, arm: str) -> tuple[datetime.datetime, datetime.datetime]:
    (attempt,) = load_run(run(workdir, arm)).manifest["attempts"]
    start, end = attempt["start_time"], attempt["end_time"]
    return datetime.datetime.fromisoformat(start), datetime.datetime.fromisoformat(end)


def test_a_derived_run_starts_after_the_run_it_needs_and_names_it(derived_study):
    workdir, result = derived_study
    float_end = attempt_times(workdir, "float")[1]
    for arm in ("int8", "student"):
        assert attempt_times(workdir, arm)[0] >= float_end, result.stdout
    student = load_run(run(workdir, "student")).config
    assert student["objective"]["distillation"]["teacher"] == run(workdir, "float")
    quantized = load_run(run(workdir, "int8"))
    assert quantized.status == "quantized"
    assert quantized.manifest["quantized_from"]["workdir"] == run(workdir, "float")
    assert quantized.config["quant"] == {**quantized.config["quant"], "mode": "ptq_int8"}


def test_a_quantized_run_is_summarized_like_a_trained_one(derived_study):
    workdir, _ = derived_study
    summary = json.loads((workdir / "summary.json").read_text())
    int8 = summary["arms"]["int8"]
    assert int8["seeds_completed"] == 1
    (value,) = int8["metrics"]["eval/accuracy"]["final_values"]
    assert value == load_run(run(workdir, "int8")).final("eval/accuracy")
    assert int8["checkpoint_bytes"] > 0


def test_the_dependents_of_a_failed_run_fail_without_running(derived_study):
    workdir, result = derived_study
    assert result.returncode == 1
    assert "broken-int8 seed 0: not run" in result.stdout
    assert f"it needs the run {run(workdir, 'broken')}, which failed" in result.stdout
    assert not os.path.exists(run(workdir, "broken-int8"))
    summary = json.loads((workdir / "summary.json").read_text())
    assert [f["arm"] for f in summary["failed_runs"]] == ["broken", "broken-int8"]


def test_a_rerun_skips_finished_quantized_runs_and_redoes_a_partial_one(data_dir, derived_study):
    workdir, _ = derived_study
    args = ("--seeds=1", "--arms=int8,student")
    result = run_study(data_dir, workdir, *args, study=STUDY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 runs done, 0 to run" in result.stdout

    partial = Path(run(workdir, "int8"))
    (partial / QUANTIZATION_FILE).unlink()  # as if the study stopped while writing it
    copy = workdir.parent / "partial"
    shutil.copytree(workdir, copy)
    result = run_study(data_dir, copy, *args, study=STUDY)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 runs done, 1 to run" in result.stdout
    assert "int8 seed 0: moved its unfinished quantized run aside" in result.stdout
    assert (Path(run(copy, "int8")) / QUANTIZATION_FILE).is_file()
    assert Path(f"{run(copy, 'int8')}.partial-1").is_dir()
