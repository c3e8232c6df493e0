"""What a finished run leaves behind, and what every dataset/model pairing can do end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments import mqar_mixers
from runtime import assembly, host_memory, loop, manifest
from tests.conftest import REPO, TINY, metrics, run_train, tiny_overrides, train_env

pytestmark = pytest.mark.long(seconds=180)


@pytest.fixture(scope="module")
def finished_run(data_dir, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("finished") / "run"
    result = run_train(data_dir, workdir)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run directory: {workdir}" in result.stdout
    return workdir


def test_manifest_records_config_code_environment_and_data(finished_run):
    record = json.loads(Path(finished_run, "manifest.json").read_text())
    assert record["status"] == "completed"
    assert record["seed"] == 0
    assert record["config"] == json.loads(Path(finished_run, "config.json").read_text())
    assert len(record["git"]["commit"]) == 40 and isinstance(record["git"]["dirty"], bool)
    for package in (
        "python",
        "jax",
        "flax",
        "optax",
        "orbax-checkpoint",
        "grain",
        "tensorflow-datasets",
    ):
        assert record["versions"][package], package
    assert record["environment"]["backend"] == "cpu"
    assert record["environment"]["mesh"] == {"data": 1, "fsdp": 1, "tensor": 1, "expert": 1}
    # CPU float results depend on the host's instruction set and threads (the run was made here)
    assert record["environment"]["cpu"] == manifest.cpu()
    # runtime/host_memory.py: on glibc, unless the user set malloc up (or opted out) themselves
    assert record["environment"]["malloc_keeps_freed_memory"] is host_memory.applies()
    fingerprint = record["datasets"]["mqar"]
    assert fingerprint["content_hash"].startswith("sha256:")
    assert fingerprint["splits"]
    attempt = record["attempts"][0]
    assert attempt["command"][1:3] == ["-m", "launch.train"]
    assert attempt["start_time"] <= attempt["end_time"]


def test_metrics_jsonl_and_tensorboard_agree(finished_run):
    rows = metrics(finished_run, drop_perf=False)
    assert [r["step"] for r in rows] == [5, 10, 15, 20]
    assert {"train/loss", "perf/steps_per_sec", "perf/tokens_per_sec"} <= rows[0].keys()
    assert {"eval/loss", "eval/accuracy"} <= rows[1].keys()
    events = EventAccumulator(str(Path(finished_run, "tensorboard"))).Reload()
    scalars = events.Scalars("train/loss")
    assert [e.step for e in scalars] == [r["step"] for r in rows]
    assert [e.value for e in scalars] == pytest.approx([r["train/loss"] for r in rows], rel=1e-6)


def test_mfu_is_logged_against_the_peak_the_manifest_records(finished_run):
    record = json.loads(Path(finished_run, "manifest.json").read_text())
    peak = record["environment"]["peak_flops_per_second"]
    assert record["environment"]["peak_flops_source"].startswith("cpu matmul")
    assert peak > 0
    flops_per_step = 3 * record["model"]["flops_per_token"] * record["tokens_per_step"]
    rows = metrics(finished_run, drop_perf=False)
    for row in rows:
        # A ratio of two timings on a shared machine: only a loose bound on its value.
        assert 0 < row["perf/mfu"] < 1.5, row
        assert row["perf/mfu"] == pytest.approx(row["perf/steps_per_sec"] * flops_per_step / peak)


def test_a_non_finite_update_stops_the_run_before_it_is_checkpointed(data_dir, tmp_path):
    """The loss of step N is computed before step N's update, so a finite loss does not make the
    state after it finite: the run stops at the first update that is not, and every checkpoint
    it kept holds finite parameters (issue 25: it used to save step 2's inf as 'last good')."""
    workdir = tmp_path / "diverges"
    result = run_train(
        data_dir,
        workdir,
        "--config.optimizer.name=sgd",
        "--config.optimizer.learning_rate=1e38",
        "--config.optimizer.warmup_steps=1",
        "--config.optimizer.grad_clip_norm=0",
        "--config.checkpoint.every=1",
        "--config.train.log_every=1",
    )
    assert result.returncode == 1
    said = result.stdout.split("error: ")[1]
    assert said.startswith("the update made the parameters non-finite at step ")
    bad_step = int(said.split(" at step ")[1].split(";")[0])
    assert f"Last good checkpoint: step {bad_step - 1} " in said
    kept = sorted(int(p.name) for p in Path(workdir, "checkpoints").iterdir() if p.name.isdigit())
    assert kept and max(kept) == bad_step - 1
    for step in kept:
        manager = ocp.CheckpointManager(Path(workdir, "checkpoints"), item_names=("state",))
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
        for leaf in jax.tree.leaves(restored["state"]["params"]):
            assert np.isfinite(np.asarray(leaf)).all(), f"step {step} holds a non-finite parameter"
    assert json.loads(Path(workdir, "manifest.json").read_text())["status"] == "diverged"


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("experiments/digits_mlp.py", []),
        (
            "experiments/pydoc_lm.py",
            [
                "--config.model.num_layers=1",
                "--config.model.d_model=32",
                "--config.data.pydoc_text.seq_len=32",
            ],
        ),
        (
            "experiments/mqar_mixers.py",
            [
                # TINY's data and model: bfloat16 on CPU is emulated, and slow at full size.
                *(a for a in TINY if a.startswith(("--config.data.", "--config.model."))),
                "--config.train.compute_dtype=bfloat16",
                "--config.model.remat=full",
            ],
        ),
    ],
    ids=["digits-mlp", "pydoc-transformer", "mqar-bf16-remat"],
)
def test_each_dataset_trains_end_to_end(data_dir, tmp_path, config, overrides):
    short = [
        "--config.train.steps=30",
        "--config.train.log_every=10",
        "--config.eval.every=30",
        "--config.checkpoint.every=30",
        "--config.eval.num_batches=2",
        "--config.optimizer.warmup_steps=5",
        "--config.eval.suites=",  # tested per data kind in test_evaluate.py
    ]
    result = run_train(data_dir, tmp_path / "run", *short, *overrides, base=[f"--config={config}"])
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    assert np.isfinite(rows[-1]["eval/loss"])
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    # MFU needs the model's analytic FLOPs: sequence models state them, the image MLP does not.
    logged = metrics(tmp_path / "run", drop_perf=False)[-1]
    assert ("perf/mfu" in logged) == (config != "experiments/digits_mlp.py")


def test_tensorflow_is_neither_installed_nor_imported(data_dir, tmp_path):
    # A dataset of its own, so both preparing (TFDS's writer) and reading happen in the process;
    # small, since what is checked is the imports.
    code = (
        "import importlib.util, sys\n"
        "import data, launch.train  # noqa\n"
        "params = {'train_examples': 64, 'eval_examples': 16}\n"
        f"ds = data.load('mqar', params, {str(tmp_path)!r})\n"
        "next(iter(ds.loader('train', batch_size=8, seed=0, shuffle=True, num_epochs=1)))\n"
        "assert importlib.util.find_spec('tensorflow') is None, 'tensorflow is installed'\n"
        "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=train_env(data_dir),
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_evaluation_covers_the_whole_split_whatever_the_batch_size(data_dir):
    """TINY's evaluation split has 64 examples: batches of 48 leave a padded partial batch,
    batches of 32 do not. The loop's own `evaluate` gives the same means with either."""
    config = mqar_mixers.get_config()
    config.update_from_flattened_dict(tiny_overrides())
    config.data.dir = data_dir
    exp = assembly.build(config, jax.devices()[:1])
    params = assembly.fresh_state(exp).params
    evals = []
    for size in (32, 48):
        config.eval.batch_size = size
        with exp.context():
            evals.append(
                loop.evaluate(exp.eval_step, params, exp.dataset, config, exp.batch_sharding)
            )
    for key in ("eval/loss", "eval/accuracy"):
        assert evals[1][key] == pytest.approx(evals[0][key], rel=1e-6)
