"""Specification of data/: registry-wide preparation, MQAR semantics, fingerprints, loaders."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import data
from data import prepare
from registry import UnknownNameError

# Small parameters keep the file fast; a dataset missing here is tested with its defaults.
_FEW = {"train_examples": 64, "eval_examples": 16}
# A dozen short documents written for the tests: .txt, .md and .jsonl.
TEST_CORPUS = str(Path(__file__).parent / "corpus" / "*")
SMALL = {
    "mqar": {"vocab_size": 32, "seq_len": 24, **_FEW},
    "pydoc_text": {"seq_len": 64},
    "induction_head": {"vocab_size": 16, "seq_len": 24, **_FEW},
    "in_context_recall": {"seq_len": 32, **_FEW},
    "noisy_recall": {"seq_len": 32, "frac_noise": 0.4, **_FEW},
    "fuzzy_recall": {"seq_len": 40, **_FEW},
    "selective_copying": {"seq_len": 24, "num_tokens_to_copy": 5, **_FEW},
    "compression": {"seq_len": 16, **_FEW},
    "memorization": {"vocab_size": 32, "seq_len": 16, **_FEW},
    "modular_arithmetic": {"prime": 11},
    "text_files": {"paths": TEST_CORPUS, "seq_len": 16},
    "python_stdlib": {"modules": "json,email", "seq_len": 32, "val_fraction": 0.3},
}


def small(name: str, **overrides: Any) -> dict[str, Any]:
    return {**SMALL.get(name, {}), **overrides}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("datasets")


def take(loader: Any, n: int | None = None) -> list[dict[str, np.ndarray]]:
    it = iter(loader)
    return list(it) if n is None else [next(it) for _ in range(n)]


def rows(batches: list[dict[str, np.ndarray]], key: str = "inputs") -> list[bytes]:
    return [row.tobytes() for batch in batches for row in batch[key]]


@pytest.mark.parametrize("name", data.DATASETS.names())
def test_every_dataset_prepares_and_yields_documented_batches(name: str, data_dir: Path) -> None:
    ds = data.load(name, small(name), str(data_dir))
    spec = ds.spec
    assert spec.name == name
    assert spec.train_split == "train" and spec.eval_split in spec.splits
    assert set(spec.splits) >= {"train", spec.eval_split}
    assert all(n > 0 for n in spec.splits.values())
    assert ds.fingerprint["splits"] == spec.splits
    assert ds.fingerprint["params"] == {**data.default_params(name), **small(name)}
    json.dumps(ds.fingerprint)  # must be JSON-serializable as is

    for split in (spec.train_split, spec.eval_split):
        batch = next(iter(ds.loader(split, batch_size=4, seed=0, shuffle=True, num_epochs=1)))
        if spec.kind == "sequence":
            if spec.scored_positions is not None:
                # A fixed count: the loader says where each example's loss_mask is 1.
                positions = batch.pop("score_positions")
                assert positions.dtype == np.int32
                assert positions.shape == (4, spec.scored_positions)
                assert (batch["loss_mask"].sum(axis=1) == spec.scored_positions).all()
                scored = np.take_along_axis(batch["loss_mask"], positions, axis=1)
                assert (scored == 1.0).all()
            # `target_bytes` is optional: the bytes each target stands for, in text datasets.
            assert {"inputs", "targets", "loss_mask"} <= set(batch)
            assert set(batch) <= {"inputs", "targets", "loss_mask", "target_bytes"}
            if "target_bytes" in batch:
                assert batch["target_bytes"].dtype == np.int32
                assert batch["target_bytes"].shape == (4, spec.seq_len)
                assert batch["target_bytes"].min() >= 0
            for key, dtype in [("inputs", np.int32), ("targets", np.int32)]:
                assert batch[key].dtype == dtype and batch[key].shape == (4, spec.seq_len)
                assert batch[key].min() >= 0 and batch[key].max() < spec.vocab_size
            assert batch["loss_mask"].dtype == np.float32
            assert batch["loss_mask"].shape == (4, spec.seq_len)
            assert set(np.unique(batch["loss_mask"])) <= {0.0, 1.0}
            # Targets are the next token: the stream shifted by one, except that a task may hide
            # an answer (the input after a scored position is then not its target).
            shown = batch["loss_mask"][:, :-1] == 0
            np.testing.assert_array_equal(
                batch["inputs"][:, 1:][shown], batch["targets"][:, :-1][shown]
            )
        else:
            assert spec.kind == "image"
            # `group` is optional: the attribute the evaluation's group-gap suite reads.
            assert {"image", "label"} <= set(batch) <= {"image", "label", "group"}
            assert batch["image"].dtype == np.float32
            assert batch["image"].shape == (4, *spec.image_shape)
            assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
            assert batch["label"].dtype == np.int32 and batch["label"].shape == (4,)
            assert batch["label"].min() >= 0 and batch["label"].max() < spec.num_classes


def test_mqar_masks_exactly_the_answers_to_queries(data_dir: Path) -> None:
    params = small("mqar", num_kv_pairs=5, num_queries=3)
    ds = data.load("mqar", params, str(data_dir))
    half = params["vocab_size"] // 2
    for split in ds.spec.splits:
        for batch in take(ds.loader(split, batch_size=8, seed=0, shuffle=False, num_epochs=1)):
            for inputs, targets, mask in zip(
                batch["inputs"], batch["targets"], batch["loss_mask"], strict=True
            ):
                keys, values = inputs[0:10:2], inputs[1:10:2]
                assert ((keys >= 1) & (keys < half)).all() and len(set(keys)) == 5
                assert ((half <= values) & (values < 2 * half)).all()
                positions = np.flatnonzero(mask)
                assert len(positions) == 3
                assert (positions >= 10).all()
                queried = inputs[positions]
                assert len(set(queried)) == 3  # each queried key distinct
                pairs = dict(zip(keys, values, strict=True))
                assert [pairs[k] for k in queried] == list(targets[positions])


def test_mqar_is_generated_from_its_own_seed_in_order(data_dir: Path) -> None:
    from data.mqar import MqarConfig, make_example

    config = MqarConfig.from_params(small("mqar"))
    rng = np.random.default_rng([config.generation_seed, 0])  # 0: the train split's stream
    source = data.load("mqar", small("mqar"), str(data_dir)).source("train")
    for i in range(3):
        expected = make_example(rng, config)
        for key in ("inputs", "targets", "loss_mask"):
            np.testing.assert_array_equal(source[i][key], expected[key])


def test_mqar_rejects_impossible_layouts(data_dir: Path) -> None:
    with pytest.raises(data.DataConfigError, match="num_queries"):
        data.load("mqar", small("mqar", num_kv_pairs=2, num_queries=3), str(data_dir))
    with pytest.raises(data.DataConfigError, match="seq_len"):
        data.load("mqar", small("mqar", seq_len=8, num_kv_pairs=4), str(data_dir))
    with pytest.raises(data.DataConfigError, match="integer"):
        data.load("mqar", small("mqar", seq_len=24.5), str(data_dir))


def test_fingerprint_depends_on_params_not_on_the_directory(tmp_path: Path) -> None:
    a = data.load("mqar", small("mqar"), str(tmp_path / "a")).fingerprint
    b = data.load("mqar", small("mqar"), str(tmp_path / "b")).fingerprint
    assert a == b
    assert a["content_hash"].startswith("sha256:")
    assert {"builder", "version", "params", "splits", "content_hash", "data_sheet"} <= set(a)
    assert {"source", "size"} <= set(a["data_sheet"])
    other = data.load("mqar", small("mqar", generation_seed=1), str(tmp_path / "a")).fingerprint
    assert other["content_hash"] != a["content_hash"]


def test_loading_a_prepared_dataset_reads_the_cached_fingerprint(tmp_path: Path) -> None:
    first = data.load("mqar", small("mqar"), str(tmp_path))
    path = Path(first.builder.data_path) / "archlab_fingerprint.json"
    assert json.loads(path.read_text()) == first.fingerprint
    # A marked fingerprint comes back as is: it was read, not recomputed.
    path.write_text(json.dumps({**first.fingerprint, "content_hash": "sha256:marker"}))
    assert data.load("mqar", small("mqar"), str(tmp_path)).fingerprint["content_hash"] == (
        "sha256:marker"
    )


def test_interrupted_preparation_is_redone(tmp_path: Path) -> None:
    # A killed preparer leaves TFDS's temporary folder (and no fingerprint) behind.
    ds = data.load("mqar", small("mqar"), str(tmp_path / "ref"))
    config_dir = tmp_path / "dd" / "mqar" / ds.builder.builder_config.name
    leftover = config_dir / "incomplete.ABC123_1.0.0"
    leftover.mkdir(parents=True)
    (leftover / "mqar-train.array_record-00000-of-00001").write_bytes(b"half written")
    again = data.load("mqar", small("mqar"), str(tmp_path / "dd"))
    assert again.fingerprint == ds.fingerprint
    assert not leftover.exists()
    # Killed after TFDS's rename but before the fingerprint: the fingerprint is recomputed.
    (Path(again.builder.data_path) / "archlab_fingerprint.json").unlink()
    assert data.load("mqar", small("mqar"), str(tmp_path / "dd")).fingerprint == ds.fingerprint


def test_loader_order_is_a_function_of_the_seed(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))

    def batches(seed: int) -> list[bytes]:
        loader = ds.loader("train", batch_size=8, seed=seed, shuffle=True, num_epochs=2)
        return rows(take(loader))

    assert batches(1) == batches(1)
    assert batches(1) != batches(2)
    # Unshuffled, one epoch is the split in stored order.
    plain = take(ds.loader("train", batch_size=8, seed=0, shuffle=False, num_epochs=1))
    assert rows(plain) == [ds.source("train")[i]["inputs"].tobytes() for i in range(64)]


def test_every_epoch_is_a_fresh_permutation_of_the_split(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))
    split = sorted(
        rows(take(ds.loader("train", batch_size=8, seed=0, shuffle=False, num_epochs=1)))
    )
    two_epochs = rows(take(ds.loader("train", batch_size=8, seed=5, shuffle=True, num_epochs=2)))
    first, second = two_epochs[:64], two_epochs[64:]
    assert sorted(first) == sorted(second) == split
    assert first != second


def shard_rows(ds: Any, count: int, batch_size: int) -> list[list[bytes]]:
    """One epoch of the shuffled train split as `count` processes would each read it."""
    return [
        rows(
            take(
                ds.loader(
                    "train",
                    batch_size=batch_size,
                    seed=3,
                    shuffle=True,
                    num_epochs=1,
                    shard_index=i,
                    shard_count=count,
                )
            )
        )
        for i in range(count)
    ]


def test_shards_are_disjoint_and_cover_the_split(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))
    shards = shard_rows(ds, count=2, batch_size=4)
    everything = rows(take(ds.loader("train", batch_size=8, seed=3, shuffle=True, num_epochs=1)))
    assert len(shards[0]) == len(shards[1]) == 32
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == sorted(everything)
    assert len(set(everything)) == 64


def test_shards_of_a_split_they_do_not_divide_are_equal_and_disjoint(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))  # 64 examples, 3 shards: 21 each
    shards = shard_rows(ds, count=3, batch_size=1)
    assert [len(shard) for shard in shards] == [21, 21, 21]
    assert len(set(shards[0] + shards[1] + shards[2])) == 63


def test_eval_loader_keeps_the_remainder(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))
    loader = ds.loader(
        "test", batch_size=5, seed=0, shuffle=False, num_epochs=1, drop_remainder=False
    )
    assert [len(b["inputs"]) for b in take(loader)] == [5, 5, 5, 1]


def test_evaluation_shards_score_every_record_exactly_once(data_dir: Path) -> None:
    # 16 test records over 3 processes: every process reads 6 rows in the same batches (a step is
    # one collective computation), and the rows example_mask keeps are the split, each once.
    ds = data.load("mqar", small("mqar"), str(data_dir))
    shards = [take(ds.eval_loader(4, i, 3)) for i in range(3)]
    assert [[len(b["inputs"]) for b in shard] for shard in shards] == [[4, 2]] * 3
    assert [sum(b["example_mask"].sum() for b in shard) for shard in shards] == [6, 5, 5]
    kept = [
        row.tobytes()
        for shard in shards
        for b in shard
        for row, real in zip(b["inputs"], b["example_mask"], strict=True)
        if real
    ]
    whole = take(ds.eval_loader(16))
    assert whole[0]["example_mask"].tolist() == [1.0] * 16
    assert sorted(kept) == sorted(rows(whole))
    assert len(set(kept)) == 16


def test_iterator_state_resumes_the_same_batches(data_dir: Path) -> None:
    ds = data.load("mqar", small("mqar"), str(data_dir))

    def loader() -> Any:
        return ds.loader("train", batch_size=8, seed=7, shuffle=True, num_epochs=None)

    it = iter(loader())
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = rows([next(it), next(it)])
    resumed = iter(loader())
    resumed.set_state(state)
    assert rows([next(resumed), next(resumed)]) == expected


def test_iterator_checkpoints_through_orbax(data_dir: Path, tmp_path: Path) -> None:
    ocp = pytest.importorskip("orbax.checkpoint")
    ds = data.load("mqar", small("mqar"), str(data_dir))

    def loader() -> Any:
        return ds.loader("train", batch_size=8, seed=7, shuffle=True, num_epochs=None)

    it = iter(loader())
    for _ in range(3):
        next(it)
    with ocp.CheckpointManager(tmp_path / "ckpt") as manager:
        manager.save(
            0, args=ocp.args.Composite(data=data.iterator_checkpoint_args(it, restore=False))
        )
        manager.wait_until_finished()
        expected = rows([next(it), next(it)])
        resumed = iter(loader())
        manager.restore(
            0, args=ocp.args.Composite(data=data.iterator_checkpoint_args(resumed, restore=True))
        )
    assert rows([next(resumed), next(resumed)]) == expected


def test_a_checkpoint_from_the_old_input_pipeline_is_a_clear_error(data_dir: Path, tmp_path: Path):
    """Runs checkpointed before commit 4010e17 saved a Grain DataLoader's iterator state; resuming
    one with this pipeline names the problem instead of failing inside Grain."""
    import jax.numpy as jnp

    from runtime import checkpoint
    from runtime.errors import UsageError

    ds = data.load("mqar", small("mqar"), str(data_dir))

    def loader() -> Any:
        return ds.loader("train", batch_size=8, seed=7, shuffle=True, num_epochs=None)

    state = {"w": jnp.zeros(3)}
    checkpoints = checkpoint.Checkpoints(str(tmp_path), max_to_keep=1, async_save=False)
    checkpoints.save(1, state, iter(loader()))
    checkpoints.close()
    # Such a run's checkpoints predate seals too: the old state, written by the old code.
    (tmp_path / "checkpoints" / "1" / checkpoint.seal.SEAL_FILE).unlink()
    saved = tmp_path / "checkpoints" / "1" / checkpoint.DATA / "process_0-of-1.json"
    old_state = {"version": 2, "last_seen_indices": {"0": 7}, "last_worker_index": -1}
    saved.write_text(json.dumps({**old_state, "worker_count": 0}))
    checkpoints = checkpoint.Checkpoints(str(tmp_path), max_to_keep=1, async_save=False)
    with pytest.raises(UsageError, match="step 1 .* another input pipeline .* new --workdir"):
        checkpoints.restore_latest(state, iter(loader()))
    assert json.loads(saved.read_text())["last_seen_indices"] == {"0": 7}  # left as it was


def test_unknown_names_keys_and_splits_list_the_valid_ones(data_dir: Path) -> None:
    with pytest.raises(UnknownNameError, match="mqar") as err:
        data.load("mqaar", {}, str(data_dir))
    assert all(name in str(err.value) for name in data.DATASETS.names())
    with pytest.raises(data.DataConfigError, match="seq_length") as err:
        data.load("mqar", {"seq_length": 32}, str(data_dir))
    assert all(key in str(err.value) for key in data.default_params("mqar"))
    with pytest.raises(ValueError):  # DataConfigError is a ValueError
        data.default_params("nope")
    ds = data.load("mqar", small("mqar"), str(data_dir))
    with pytest.raises(data.DataConfigError, match="test"):
        ds.loader("validation", batch_size=1, seed=0, shuffle=False, num_epochs=1)


def test_data_dir_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARCHLAB_DATA_DIR", str(tmp_path))
    assert prepare.resolve_data_dir(None) == tmp_path.resolve()
    assert prepare.resolve_data_dir("") == tmp_path.resolve()
    assert prepare.resolve_data_dir(str(tmp_path / "x")) == (tmp_path / "x").resolve()
    monkeypatch.delenv("ARCHLAB_DATA_DIR")
    expected = Path("~/.cache/archlab/datasets").expanduser().resolve()
    assert prepare.resolve_data_dir(None) == expected


def test_text_splits_are_contiguous_and_disjoint(data_dir: Path) -> None:
    from data.text import corpus_bytes

    ds = data.load("pydoc_text", small("pydoc_text"), str(data_dir))
    text, window = corpus_bytes(), 65
    train, validation = ds.source("train"), ds.source("validation")
    first = bytes(train[0]["inputs"].astype(np.uint8)) + bytes([train[0]["targets"][-1]])
    assert first == text[:window]
    cut = round(len(text) * 0.9)
    first_val = bytes(validation[0]["inputs"].astype(np.uint8))
    assert first_val == text[cut : cut + window - 1]
    assert len(train) == cut // window
    assert "Python" in ds.fingerprint["data_sheet"]["source"]
    # Decontaminated: pydoc repeats passages under several topics, and the validation windows
    # that near-copy a training window are dropped.
    assert not ds.fingerprint["overlap"]["leak"]


def test_text_decontamination_drops_near_copies_only() -> None:
    from data.decontaminate import near_copies

    rng = np.random.default_rng(0)
    reference = rng.integers(0, 256, size=(50, 129)).astype(np.int32)
    copy = reference[7].copy()
    copy[60] = (copy[60] + 1) % 256  # one byte changed: Jaccard of the 3-grams ~ 0.95
    rows = np.stack([copy, rng.integers(0, 256, size=129).astype(np.int32), reference[3]])
    assert near_copies(rows, reference).tolist() == [True, False, True]


def _load_fingerprint(data_dir: str) -> dict[str, Any]:
    return data.load("mqar", small("mqar"), data_dir).fingerprint


def test_concurrent_first_loads_prepare_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        a, b = pool.map(_load_fingerprint, [str(tmp_path)] * 2)
    assert a == b == _load_fingerprint(str(tmp_path))
    config_dir = tmp_path / "mqar" / data.mqar.MqarConfig.from_params(small("mqar")).name
    assert [p.name for p in config_dir.iterdir()] == ["1.0.0"]  # no leftover temporary folders


def test_tensorflow_is_never_imported(data_dir: Path) -> None:
    import sys

    data.load("digits", small("digits"), str(data_dir))
    assert "tensorflow" not in sys.modules
