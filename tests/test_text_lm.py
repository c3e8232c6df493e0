"""The text study (`experiments/text_lm.py`) and training on text corpora from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp

import data
import models
from experiments import text_lm
from tests.conftest import REPO, metrics, run_train
from tests.test_train_cli import assert_usage_error

# The study's model, shrunk to seconds.
TINY_TEXT = [
    "--config=experiments/text_lm.py",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.num_heads=2",
    "--config.model.d_ff=64",
    "--config.train.steps=6",
    "--config.train.batch_size=8",
    "--config.train.log_every=3",
    "--config.optimizer.warmup_steps=2",
    "--config.eval.every=3",
    "--config.eval.batch_size=8",
    "--config.eval.num_batches=2",
    "--config.checkpoint.every=6",
    "--config.eval.suites=",
]


def test_the_arms_have_matched_parameter_counts() -> None:
    counts = {}
    for arm in text_lm.ARMS:
        config = text_lm.get_config(arm)
        params = config.data.python_stdlib
        spec = data.DatasetSpec(
            name="python_stdlib",
            kind="sequence",
            splits={},
            eval_split="validation",
            vocab_size=params.vocab_size,
            seq_len=params.seq_len,
        )
        counts[arm] = models.build_model(config.model, spec, jnp.float32).describe()["params"]
    baseline = counts[text_lm.BASELINE]
    assert all(abs(n / baseline - 1) < 0.02 for n in counts.values()), counts


def test_the_study_trains_on_the_stdlib_with_a_bpe_tokenizer(data_dir, tmp_path) -> None:
    workdir = tmp_path / "run"
    result = run_train(
        data_dir,
        workdir,
        # Two packages (33 files on CPython 3.11): enough documents that both splits get some.
        "--config.data.python_stdlib.modules=json,email",
        "--config.data.python_stdlib.vocab_size=300",
        "--config.data.python_stdlib.seq_len=32",
        "--config.data.python_stdlib.val_fraction=0.5",
        base=TINY_TEXT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = [row for row in metrics(workdir) if "eval/bits_per_byte" in row]
    assert [row["step"] for row in evaluated] == [3, 6]
    for row in evaluated:
        # A BPE token stands for more than a byte: fewer bits per byte than per token.
        assert row["eval/bytes_per_token"] > 1.1
        expected = row["eval/bits_per_token"] / row["eval/bytes_per_token"]
        assert abs(row["eval/bits_per_byte"] - expected) < 1e-9
    manifest = json.loads((workdir / "manifest.json").read_text())
    sheet = manifest["datasets"]["python_stdlib"]["data_sheet"]
    assert sheet["tokenizer"]["kind"] == "bpe" and sheet["tokenizer"]["vocab_size"] == 300
    assert "standard library" in sheet["source"]


def test_a_folder_of_text_trains_by_setting_its_paths(data_dir, tmp_path) -> None:
    workdir = tmp_path / "run"
    result = run_train(
        data_dir,
        workdir,
        "--config.data.name=text_files",
        f"--config.data.text_files.paths={REPO / 'tests' / 'corpus' / '*'}",
        "--config.data.text_files.seq_len=16",
        base=TINY_TEXT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    evaluated = [row for row in metrics(workdir) if "eval/bits_per_byte" in row]
    assert len(evaluated) == 2
    for row in evaluated:
        # Bytes as tokens: one byte per token, so bits per byte is bits per token, exactly.
        assert row["eval/bytes_per_token"] == 1.0
        assert row["eval/bits_per_byte"] == row["eval/bits_per_token"]


def test_a_corpus_glob_that_matches_nothing_is_a_one_line_error(data_dir, tmp_path) -> None:
    workdir = tmp_path / "run"
    result = run_train(
        data_dir,
        workdir,
        "--config.data.name=text_files",
        f"--config.data.text_files.paths={tmp_path / 'nothing' / '*.txt'}",
        base=TINY_TEXT,
    )
    assert_usage_error(result, "data.text_files.paths", "matches no file")
    assert not Path(workdir).exists()
