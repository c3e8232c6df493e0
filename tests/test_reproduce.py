"""Specifications for `python -m launch.reproduce`: rerun a run from its manifest, bit for bit.

Three TINY trainings in all: the original run, a faithful rerun, and a rerun of a copy whose
metrics were tampered with. The error cases use hand-written run directories and train nothing.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch.reproduce import provenance_warnings
from tests.conftest import REPO, run_train, train_env


def reproduce(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "launch.reproduce", *args],
        cwd=REPO,
        env=train_env(data_dir),
        capture_output=True,
        text=True,
        timeout=600,
    )


def file_hashes(directory: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*") if p.is_file()
    }


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(data_dir: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("original") / "run"
    result = run_train(data_dir, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_a_rerun_reproduces_bit_for_bit(data_dir, trained_run, tmp_path):
    before = file_hashes(trained_run)
    into = tmp_path / "repro"
    result = reproduce(data_dir, f"--workdir={trained_run}", f"--into={into}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # TINY logs at steps 5, 10, 15 and 20.
    assert "reproduced: 4 rows identical" in result.stdout
    assert json.loads((into / "manifest.json").read_text())["status"] == "completed"
    assert file_hashes(trained_run) == before, "the original run is only read"


def test_a_planted_change_is_found(data_dir, trained_run, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_run, tampered)
    rows = [json.loads(line) for line in (tampered / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["step"] == 10)
    # The smallest change a float can take: a bitwise comparison must still see it.
    row["eval/loss"] = float(np.nextafter(row["eval/loss"], np.inf))
    (tampered / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    result = reproduce(data_dir, f"--workdir={tampered}")  # into the default <run>.repro-<time>
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "not reproduced" in result.stdout
    assert "step 10, key 'eval/loss'" in result.stdout
    assert f"old {row['eval/loss']!r}" in result.stdout
    assert "1 of 4 rows differ, 1 value(s) in all" in result.stdout
    reruns = list(tmp_path.glob("tampered.repro-*"))
    assert len(reruns) == 1 and (reruns[0] / "metrics.jsonl").exists()


def write_fake_run(workdir: Path, manifest: dict | str | None) -> Path:
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text("{}")
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (workdir / "manifest.json").write_text(text)
    return workdir


COMMAND = [sys.executable, "-m", "launch.train", "--config=experiments/x.py", "--workdir=w"]


@pytest.mark.parametrize(
    ("manifest", "fragments"),
    [
        (None, ["no manifest.json"]),
        ({"status": "running", "attempts": [{"command": COMMAND}]}, ["'running'", "not completed"]),
        ({"status": "diverged", "attempts": [{"command": COMMAND}]}, ["'diverged'"]),
        ("{not json", ["malformed", "manifest.json"]),
        ({"attempts": [{"command": COMMAND}]}, ["malformed", "no status"]),
        ({"status": "completed", "attempts": []}, ["malformed", "attempts[0].command"]),
        ({"status": "completed", "attempts": [{"command": COMMAND[:4]}]}, ["no --workdir"]),
    ],
)
def test_runs_that_cannot_be_reproduced_are_one_line_errors(
    data_dir, tmp_path, manifest, fragments
):
    run = write_fake_run(tmp_path / "run", manifest)
    assert_usage_error(reproduce(data_dir, f"--workdir={run}"), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing is created"


def test_bad_workdir_and_occupied_into_are_one_line_errors(data_dir, tmp_path):
    assert_usage_error(reproduce(data_dir, f"--workdir={tmp_path / 'nope'}"), "does not exist")
    assert_usage_error(reproduce(data_dir, f"--workdir={tmp_path}"), "not a run directory")
    run = write_fake_run(
        tmp_path / "run", {"status": "completed", "attempts": [{"command": COMMAND}]}
    )
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    result = reproduce(data_dir, f"--workdir={run}", f"--into={occupied}")
    assert_usage_error(result, "--into", "not an empty directory")
    assert (occupied / "keep.txt").read_text() == "mine"
    assert_usage_error(reproduce(data_dir), "--workdir")


AVX512 = {"model": "AMD EPYC", "simd": ["avx", "avx2", "fma", "avx512f"], "threads": 2}
AVX2 = {"model": "AMD EPYC", "simd": ["avx", "avx2", "fma"], "threads": 2}


@pytest.mark.parametrize(
    "backend, cpu_then, cpu_now, warned",
    [
        ("cpu", AVX512, AVX512, False),
        ("cpu", AVX512, {**AVX512, "checked": True}, False),  # a field recorded later
        ("cpu", AVX512, {**AVX512, "threads": 8}, True),  # work split another way
        ("cpu", AVX512, AVX2, True),  # same model name, other instruction set: XLA's code differs
        ("cpu", None, AVX2, False),  # a manifest from before the CPU was recorded
        ("gpu", AVX512, AVX2, False),  # the host CPU does not compute a GPU run's numbers
    ],
)
def test_a_cpu_run_rerun_on_another_instruction_set_is_warned_about(
    backend, cpu_then, cpu_now, warned
):
    git = {"commit": "abc", "dirty": False, "diff_sha256": None}
    manifest = {"git": git, "versions": {}, "environment": {"backend": backend, "cpu": cpu_then}}
    warnings = provenance_warnings(manifest, git, {}, cpu_now)
    assert any("another CPU" in w for w in warnings) == warned, warnings
