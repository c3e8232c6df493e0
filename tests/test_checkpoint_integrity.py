"""A checkpoint whose bytes changed after it was written is never trained from.

Each checkpoint is sealed with the sha256 of its files (runtime/checkpoint_seal.py). A rerun falls
back to the newest checkpoint that verifies, says which one was wrong and why, and keeps the bad
one aside; with none that verifies it stops with one line and changes nothing.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import jax.numpy as jnp
import pytest

import data
from runtime import checkpoint
from runtime.checkpoint_seal import SEAL_FILE
from tests.conftest import metrics, run_train, tiny_overrides

pytestmark = pytest.mark.long(seconds=60)

# Checkpoints at 15 and 20 (max_to_keep 2): the newest is the one spoilt, the older one intact.
RUN = ["--config.checkpoint.every=5", "--config.checkpoint.max_to_keep=2"]


@pytest.fixture(scope="module")
def finished(data_dir, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished") / "run"
    result = run_train(data_dir, workdir, *RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["15", "20"]
    return workdir


def overwrite_middle_of_largest_state_file(step_dir: Path) -> None:
    largest = max((p for p in (step_dir / "state").rglob("*") if p.is_file()), key=_size)
    with open(largest, "r+b") as f:
        f.seek(_size(largest) // 2)
        f.write(b"\xff" * 16)


def empty_state_metadata(step_dir: Path) -> None:
    (step_dir / "state" / "_METADATA").write_bytes(b"")


def truncate_iterator_state(step_dir: Path) -> None:
    path = step_dir / checkpoint.DATA / "process_0-of-1.json"
    path.write_bytes(path.read_bytes()[:10])


def truncate_a_data_file(step_dir: Path) -> None:
    data_file = next(p for p in (step_dir / "state").rglob("d/*") if p.is_file())
    data_file.write_bytes(data_file.read_bytes()[:3])


def _size(path: Path) -> int:
    return path.stat().st_size


SPOILERS = [
    overwrite_middle_of_largest_state_file,
    empty_state_metadata,
    truncate_iterator_state,
    truncate_a_data_file,
]


@pytest.mark.parametrize("spoil", SPOILERS, ids=lambda f: f.__name__)
def test_a_spoilt_newest_checkpoint_is_set_aside_and_the_run_resumes_from_the_intact_one(
    data_dir, tmp_path, finished, spoil
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    spoil(run / "checkpoints" / "20")

    result = run_train(data_dir, run, *RUN)

    assert result.returncode == 0, result.stderr[-3000:]
    assert "warning: checkpoint step 20 " in result.stderr
    assert "resumed at step 15" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    # Steps 16-20 were trained again from the intact checkpoint: the same bits as the first run.
    assert metrics(run) == metrics(finished)
    # The spoilt checkpoint is kept for inspection, not deleted; the new step 20 is sealed.
    assert (run / checkpoint.REJECTED_DIR / "20" / "state").is_dir()
    assert (run / "checkpoints" / "20" / SEAL_FILE).is_file()


def test_when_no_checkpoint_verifies_the_run_stops_with_one_line_and_changes_nothing(
    data_dir, tmp_path, finished
):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for step in ("15", "20"):
        overwrite_middle_of_largest_state_file(run / "checkpoints" / step)
    before = sorted(str(p.relative_to(run)) for p in run.rglob("*"))

    result = run_train(data_dir, run, *RUN)

    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: no checkpoint in ") and "step 20 has 1 file" in lines[-1]
    assert "Traceback" not in result.stderr
    assert sorted(str(p.relative_to(run)) for p in run.rglob("*")) == before


def tiny_iterator(data_dir: str):
    prefix = "data.mqar."
    params = {k[len(prefix) :]: v for k, v in tiny_overrides().items() if k.startswith(prefix)}
    dataset = data.load("mqar", params, data_dir)
    return iter(dataset.loader("train", batch_size=8, seed=0, shuffle=True, num_epochs=None))


def save_steps(workdir: Path, data_dir: str, steps: list[int], max_to_keep: int) -> None:
    checkpoints = checkpoint.Checkpoints(str(workdir), max_to_keep, async_save=True)
    for step in steps:
        checkpoints.save(step, {"w": jnp.full(3, float(step))}, tiny_iterator(data_dir))
    checkpoints.close()


def test_rotation_keeps_the_newest_sealed_and_an_unsealed_one_is_set_aside(data_dir, tmp_path):
    save_steps(tmp_path, data_dir, [1, 2, 3], max_to_keep=2)
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["2", "3"]
    assert all((ckpts / s / SEAL_FILE).is_file() for s in ("2", "3"))

    # Step 4 written but its seal lost (as if the process died before sealing it): a restore sets
    # it aside and takes step 3, the newest that verifies.
    save_steps(tmp_path, data_dir, [4], max_to_keep=2)
    (ckpts / "4" / SEAL_FILE).unlink()
    checkpoints = checkpoint.Checkpoints(str(tmp_path), 2, async_save=False)
    step, state = checkpoints.restore_latest({"w": jnp.zeros(3)}, tiny_iterator(data_dir))
    checkpoints.close()
    assert step == 3 and float(state["w"][0]) == 3.0
    assert sorted(p.name for p in ckpts.iterdir()) == ["3"]
    assert json.loads((ckpts / "3" / SEAL_FILE).read_text())["sha256"]
    assert (tmp_path / checkpoint.REJECTED_DIR / "4").is_dir()


def test_a_torn_last_line_of_metrics_is_dropped_when_the_run_resumes(data_dir, tmp_path, finished):
    """A kill (or a full disk) in the middle of appending a metrics row leaves a torn last line;
    readers skip it, and the rerun rewrites the file without it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    shutil.rmtree(run / "checkpoints" / "20")  # so the rerun trains steps 16-20 again
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 25, "train/lo')
    assert metrics(run) == metrics(finished)

    result = run_train(data_dir, run, *RUN)

    assert result.returncode == 0, result.stderr[-3000:]
    assert metrics(run) == metrics(finished)
    assert (run / "metrics.jsonl").read_text().endswith("}\n")
