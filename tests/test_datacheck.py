"""Specification of the train/eval overlap check: data/overlap.py, its place in the fingerprint,
`python -m launch.datacheck`, and the alert a study report raises for a leaking dataset."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import data
from analysis.report.markdown import render_markdown
from analysis.report.sections import report_blocks
from analysis.study import dataset_leaks
from data import overlap
from data.config import ParamsConfig, param
from data.prepare import prepare
from data.synthetic import SPLIT_IDS, SyntheticSequenceBuilder, lm_example
from launch import datacheck

REPO = Path(__file__).resolve().parents[1]
CLEAN_MQAR = {"vocab_size": 32, "seq_len": 16, "num_kv_pairs": 2, "num_queries": 2,
              "train_examples": 256, "eval_examples": 64}  # fmt: skip
# Three keys, four values and one free token: 72 possible sequences, so the splits share most
# (with the answer shown: hiding it puts a random filler token there instead).
LEAKING_MQAR = {"vocab_size": 8, "seq_len": 4, "num_kv_pairs": 1, "num_queries": 1,
                "answers": "shown", "train_examples": 200, "eval_examples": 50}  # fmt: skip


# --- a dataset with planted overlap (a test-only builder, not in the DATASETS registry) -------
@dataclasses.dataclass(eq=False)
class PlantedConfig(ParamsConfig):
    vocab_size: int = param(1000, "v")
    seq_len: int = param(64, "t")
    train_examples: int = param(300, "n")
    eval_examples: int = param(40, "e")
    generation_seed: int = param(0, "s")


# Test split: 0-4 exact copies of train 10j + 5; 5-9 the same with one token changed (Jaccard of
# 3-gram sets 60/66 = 0.91); 10-14 with two tokens changed (57/69 = 0.83); 15-19 with eight
# changed (39/87 = 0.45, related but not near); 20-39 unrelated. Train 290-292 repeat train 0-2.
CHANGED_TOKENS = {range(0, 5): (), range(5, 10): (30,), range(10, 15): (20, 45),
                  range(15, 20): (5, 12, 19, 26, 33, 40, 47, 54)}  # fmt: skip
EXACT, NEAR, RELATED = range(0, 5), range(5, 15), range(15, 20)
TRAIN_REPEATS = {290: 0, 291: 1, 292: 2}


class PlantedLeak(SyntheticSequenceBuilder, skip_registration=True):
    CONFIG_CLASS = PlantedConfig
    SOURCE = "tests/test_datacheck.py"

    def random_tokens(self, split: str, i: int) -> np.ndarray:
        rng = np.random.default_rng([self.config.generation_seed, SPLIT_IDS[split], i])
        return rng.integers(1, self.config.vocab_size, self.config.seq_len + 1, dtype=np.int32)

    def test_tokens(self, i: int) -> np.ndarray:
        for indices, changed in CHANGED_TOKENS.items():
            if i in indices:
                tokens = self.random_tokens("train", 10 * i + 5)
                tokens[list(changed)] = 0  # token 0 is never drawn: a real change
                return tokens
        return self.random_tokens("test", i)

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        raise NotImplementedError  # examples are made by index, below

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        for i in range(num_examples):
            if split == "train":
                tokens = self.random_tokens(split, TRAIN_REPEATS.get(i, i))
            else:
                tokens = self.test_tokens(i)
            yield i, lm_example(tokens, np.ones(len(tokens), dtype=bool))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("datasets"))


@pytest.fixture(scope="module")
def planted(data_dir: str) -> dict[str, Any]:
    _, fingerprint = prepare(PlantedLeak, PlantedConfig.from_params({}), Path(data_dir))
    return fingerprint["overlap"]


def pairs(summary: dict[str, Any]) -> list[tuple[int, int]]:
    return [(e["eval"], e["train"]) for e in summary["examples"]]


# --- the method --------------------------------------------------------------------------------
def test_planted_exact_copies_are_found_with_their_train_indices(planted):
    exact = planted["eval"]["test"]["exact"]
    assert exact["count"] == len(EXACT)
    assert exact["fraction"] == pytest.approx(len(EXACT) / 40)
    assert pairs(exact) == [(j, 10 * j + 5) for j in EXACT]
    assert planted["leak"] is True


def test_near_duplicates_are_found_and_unrelated_sequences_are_not(planted):
    near = planted["eval"]["test"]["near"]
    # Exactly the one- and two-token edits: not the exact copies (counted above), not the
    # eight-token edits nor the 20 unrelated sequences.
    assert near["count"] == len(NEAR)
    assert pairs(near) == [(j, 10 * j + 5) for j in NEAR][: overlap.MAX_SHOWN]
    assert all(e["jaccard"] >= overlap.NEAR_DUPLICATE_JACCARD for e in near["examples"])
    assert near["examples"][0]["jaccard"] == pytest.approx(60 / 66, abs=0.01)


def test_duplicates_within_train_are_counted(planted):
    dups = planted["train_duplicates"]
    assert dups["count"] == len(TRAIN_REPEATS)
    assert [(d["train"], d["repeats"]) for d in dups["examples"]] == sorted(TRAIN_REPEATS.items())


def test_minhash_estimates_jaccard_and_is_the_same_everywhere():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**31, 200, dtype=np.uint64)
    for shared in (200, 160, 100, 20):
        other = np.concatenate([base[:shared], rng.integers(0, 2**31, 200 - shared)])
        truth = shared / (400 - shared)
        signatures = overlap.minhash(np.stack([base, other.astype(np.uint64)]))
        assert (signatures[0] == signatures[1]).mean() == pytest.approx(truth, abs=0.15)
    # Hashing constants come from fixed strings, not a seeded generator: recorded fingerprints
    # stay comparable across machines and numpy versions only while these values hold.
    signature = overlap.minhash(np.arange(3, dtype=np.uint64)[None])
    assert signature[0, :4].tolist() == [963652563, 248005066, 106713196, 1408292060]


def test_image_near_duplicates_survive_noise_but_other_digits_do_not():
    from sklearn.datasets import load_digits

    images = (load_digits().images[:2] / 16.0).astype(np.float32)[..., None]
    noisy = images[0].copy()
    noisy[3, 4, 0] = min(1.0, noisy[3, 4, 0] + 0.2)  # one pixel brighter
    shingles = overlap.image_shingles({"image": np.stack([images[0], noisy, images[1]])})

    def jaccard(a: np.ndarray, b: np.ndarray) -> float:
        return len(np.intersect1d(a, b)) / len(np.union1d(a, b))

    assert jaccard(shingles[0], shingles[1]) >= overlap.NEAR_DUPLICATE_JACCARD
    assert jaccard(shingles[0], shingles[2]) < 0.5


def test_a_real_dataset_that_leaks_and_one_that_does_not(data_dir):
    leaking = data.load("mqar", LEAKING_MQAR, data_dir).fingerprint["overlap"]
    assert leaking["leak"] is True
    assert leaking["eval"]["test"]["exact"]["count"] > 25  # of 50
    assert leaking["train_duplicates"]["count"] > 100  # of 200
    clean = data.load("mqar", CLEAN_MQAR, data_dir).fingerprint["overlap"]
    assert clean["leak"] is False
    assert clean["eval"]["test"]["exact"]["count"] == clean["eval"]["test"]["near"]["count"] == 0


# --- the fingerprint ---------------------------------------------------------------------------
def test_overlap_is_recorded_in_the_fingerprint_that_runs_write_to_their_manifest(data_dir):
    dataset = data.load("mqar", CLEAN_MQAR, data_dir)
    # launch.train records `datasets={name: dataset.fingerprint}`: this dict, as stored on disk.
    stored = json.loads(Path(dataset.builder.data_path, "archlab_fingerprint.json").read_text())
    assert stored == dataset.fingerprint
    assert stored["overlap"]["method"]["version"] == overlap.VERSION
    assert stored["overlap"]["eval"]["test"]["examples"] == CLEAN_MQAR["eval_examples"]


def test_a_fingerprint_from_before_the_check_is_upgraded_once(data_dir):
    dataset = data.load("mqar", CLEAN_MQAR, data_dir)
    path = Path(dataset.builder.data_path, "archlab_fingerprint.json")
    old = {k: v for k, v in dataset.fingerprint.items() if k != "overlap"}
    path.write_text(json.dumps({**old, "content_hash": "sha256:marker"}))
    upgraded = data.load("mqar", CLEAN_MQAR, data_dir).fingerprint
    assert upgraded["overlap"] == dataset.fingerprint["overlap"]
    assert upgraded["content_hash"] == "sha256:marker"  # the rest is kept, not recomputed
    assert json.loads(path.read_text()) == upgraded
    path.write_text(json.dumps(dataset.fingerprint))  # as it was, for the other tests


# --- the command line --------------------------------------------------------------------------
def argv(name: str, params: dict[str, Any], data_dir: str) -> list[str]:
    flags = [f"--data.{name}.{k}={v}" for k, v in params.items()]
    return ["launch.datacheck", f"--data={name}", *flags, f"--data_dir={data_dir}"]


def test_datacheck_prints_the_overlap_and_exits_1_on_a_leak(data_dir, capsys):
    assert datacheck.main(argv("mqar", LEAKING_MQAR, data_dir)) == datacheck.LEAK_EXIT_CODE
    out = capsys.readouterr().out
    assert "LEAK:" in out and "exact copies of train examples" in out
    assert "e.g. test 0 = train" in out


def test_datacheck_exits_0_when_clean(data_dir, capsys):
    assert datacheck.main(argv("mqar", CLEAN_MQAR, data_dir)) == 0
    out = capsys.readouterr().out
    assert "clean:" in out and "LEAK" not in out
    assert "test: 64 examples" in out


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data=nosuchdata"], "nosuchdata"),
        (["--data=mqar", "--data.mqar.vocab_sise=8"], "vocab_sise"),
        (["--data=mqar", "--data.digits.test_examples=8"], "digits"),
        (["--data=mqar", "--verbose"], "--verbose"),
    ],
)
def test_datacheck_bad_input_is_one_line_and_exit_2(args, message, data_dir, capsys):
    with pytest.raises(SystemExit) as exit_info:
        datacheck.main(["launch.datacheck", *args, f"--data_dir={data_dir}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error:") and message in err


def test_datacheck_runs_as_a_module(data_dir):
    env = {**os.environ, "PYTHONPATH": str(REPO), "ARCHLAB_DATA_DIR": data_dir}
    flags = [f"--data.mqar.{k}={v}" for k, v in LEAKING_MQAR.items()]
    done = subprocess.run(
        [sys.executable, "-m", "launch.datacheck", "--data=mqar", *flags],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "LEAK:" in done.stdout


# --- the report --------------------------------------------------------------------------------
def test_a_report_over_a_leaking_dataset_says_so_loudly(data_dir):
    leaking = data.load("mqar", LEAKING_MQAR, data_dir).fingerprint
    clean = data.load("mqar", CLEAN_MQAR, data_dir).fingerprint
    # Two arms on two variants of one dataset: `datasets` keeps the first (clean) one, the leak
    # of the second must still be reported.
    manifests = [{"datasets": {"mqar": clean}}, {"datasets": {"mqar": leaking}}]
    leaks = dataset_leaks(manifests)
    assert [leak["variant"] for leak in leaks] == [leaking["config_name"]]
    exact = leaking["overlap"]["eval"]["test"]["exact"]["count"]

    summary = {"study": "s", "provenance": {"datasets": {"mqar": clean}, "dataset_leaks": leaks}}
    markdown = render_markdown(report_blocks(summary))
    alert = f"Dataset `mqar` (variant `{leaking['config_name']}`) leaks: {exact} of 50 `test`"
    # Under the verdicts, and again in Provenance.
    assert markdown.count(alert) == 2
    assert alert not in render_markdown(
        report_blocks({"study": "s", "provenance": {"datasets": {"mqar": clean}}})
    )
