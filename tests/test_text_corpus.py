"""Specification of the text corpora (`text_files`, `python_stdlib`): documents, splits, packing,
tokenizers, fingerprints and bits per byte."""

from __future__ import annotations

import json
import math
import platform
import re
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P
from tokenizers import Tokenizer, decoders, models, pre_tokenizers

import data
import objectives
from data import corpus
from data.python_stdlib import stdlib_files
from data.text_corpus import SUMMARY_FILE, TOKENIZER_FILE
from runtime.loop import evaluate

EOD = 256  # the byte tokenizer's end-of-document token


def prose(seed: int, words: int = 60) -> str:
    """A document of random letter-words: no window of one shares enough 3-grams with a window
    of another to count as a near-copy, so decontamination drops nothing."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return " ".join("".join(rng.choice(letters, size=rng.integers(2, 9))) for _ in range(words))


def documents_in(split: str, text: list[str], val_fraction: float, count: int) -> list[str]:
    """The first `count` of `text` that the document hash puts in `split`."""
    chosen = [t for t in text if corpus.in_validation(t, val_fraction) == (split == "validation")]
    assert len(chosen) >= count, "not enough candidates: add more"
    return chosen[:count]


def load(folder: Path, data_dir: Path, **params: Any) -> data.Dataset:
    return data.load("text_files", {"paths": str(folder / "*"), **params}, str(data_dir))


def stream(ds: data.Dataset, split: str) -> list[int]:
    """The split's token stream back from its windows (consecutive windows share a token)."""
    source = ds.source(split)
    rows = [np.asarray(source[i]["inputs"]) for i in range(len(source))]
    last = np.asarray(source[len(source) - 1]["targets"])[-1:]
    return np.concatenate([*rows, last]).tolist()


def byte_documents(tokens: list[int]) -> list[str]:
    """A byte-tokenised stream cut at its EOD tokens (the last piece may be a cut document)."""
    pieces, current = [], []
    for token in tokens:
        if token == EOD:
            pieces.append(bytes(current).decode("utf-8", errors="replace"))
            current = []
        else:
            current.append(token)
    return pieces + [bytes(current).decode("utf-8", errors="replace")]


def test_documents_keep_their_split_when_files_are_added(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(8):
        (folder / f"doc{i}.txt").write_text(prose(i))

    def splits(ds: data.Dataset) -> dict[str, str]:
        """Each document's split, read back from the prepared data by its first 40 bytes."""
        found = {}
        for split in ("train", "validation"):
            text = "\x00".join(byte_documents(stream(ds, split)))
            for i in range(12):
                if prose(i)[:40] in text:
                    assert i not in found, f"document {i} is in both splits"
                    found[i] = split
        return found

    before = splits(load(folder, tmp_path / "a", seq_len=8, val_fraction=0.5))
    assert sorted(before) == list(range(8))
    assert set(before.values()) == {"train", "validation"}
    for i in range(8, 12):
        (folder / f"doc{i}.txt").write_text(prose(i))
    after = splits(load(folder, tmp_path / "a", seq_len=8, val_fraction=0.5))
    assert sorted(after) == list(range(12))
    assert {i: after[i] for i in before} == before
    # The split is the document's own hash's doing, not its place in the corpus.
    assert after == {
        i: "validation" if corpus.in_validation(prose(i), 0.5) else "train" for i in range(12)
    }


def test_jsonl_documents_are_packed_with_an_end_of_document_token(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    candidates = [prose(i, words=4) for i in range(40)]
    train = documents_in("train", candidates, 0.5, 2)
    validation = documents_in("validation", candidates, 0.5, 1)
    with open(folder / "records.jsonl", "w") as f:  # one file: its records keep their order
        for text in [train[0], validation[0], train[1]]:
            f.write(json.dumps({"id": 7, "body": text}) + "\n")
        f.write("\n")  # blank lines are not documents

    ds = load(folder, tmp_path / "d", seq_len=4, val_fraction=0.5, text_field="body")
    expected = list(train[0].encode()) + [EOD] + list(train[1].encode()) + [EOD]
    source = ds.source("train")
    assert len(source) == (len(expected) - 1) // 4  # windows at a stride of 4, tail dropped
    for i in range(len(source)):
        window = expected[4 * i : 4 * i + 5]
        np.testing.assert_array_equal(source[i]["inputs"], window[:-1])
        np.testing.assert_array_equal(source[i]["targets"], window[1:])
        np.testing.assert_array_equal(source[i]["loss_mask"], np.ones(4))
        np.testing.assert_array_equal(source[i]["target_bytes"], np.ones(4))
    assert byte_documents(stream(ds, "validation"))[0] == validation[0]
    summary = json.loads((Path(ds.builder.data_path) / SUMMARY_FILE).read_text())
    assert summary["splits"]["train"]["documents"] == 2
    assert summary["splits"]["train"]["tokens"] == len(expected)

    with open(folder / "records.jsonl", "a") as f:
        f.write(json.dumps({"id": 8, "text": "no body here"}) + "\n")
    with pytest.raises(data.DataConfigError, match=r"records.jsonl:5: no string field 'body'"):
        load(folder, tmp_path / "d", seq_len=4, val_fraction=0.5, text_field="body")


def test_fingerprint_is_the_files_content(tmp_path: Path) -> None:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(6):
        (folder / f"doc{i}.md").write_text(prose(i))
    first = load(folder, tmp_path / "a", seq_len=16, val_fraction=0.5).fingerprint
    again = load(folder, tmp_path / "b", seq_len=16, val_fraction=0.5).fingerprint
    assert first == again
    # The same files elsewhere, under other names, are the same corpus.
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    for i in range(6):
        (moved / f"renamed{5 - i}.md").write_text(prose(i))
    elsewhere = load(moved, tmp_path / "c", seq_len=16, val_fraction=0.5).fingerprint
    assert elsewhere["content_hash"] == first["content_hash"]
    assert elsewhere["data_sheet"] == first["data_sheet"]

    (folder / "doc3.md").write_text(prose(3) + " and one more line\n")
    changed = load(folder, tmp_path / "a", seq_len=16, val_fraction=0.5).fingerprint
    assert changed["content_hash"] != first["content_hash"]
    assert changed["data_sheet"]["files_sha256"] != first["data_sheet"]["files_sha256"]
    assert changed["config_name"] != first["config_name"]  # a new variant, the old one kept


def test_bpe_vocabulary_follows_the_config_and_is_trained_deterministically(
    tmp_path: Path,
) -> None:
    params = {"paths": str(Path(__file__).parent / "corpus" / "*"), "seq_len": 16}
    params.update(tokenizer="bpe", vocab_size=300)
    # Known before any data is prepared: the model is built from it.
    assert data.shape_spec("text_files", params, str(tmp_path / "a")).vocab_size == 300
    assert not (tmp_path / "a").exists()

    first = data.load("text_files", params, str(tmp_path / "a"))
    second = data.load("text_files", params, str(tmp_path / "b"))
    assert first.spec.vocab_size == 300
    saved = (Path(first.builder.data_path) / TOKENIZER_FILE).read_bytes()
    assert saved == (Path(second.builder.data_path) / TOKENIZER_FILE).read_bytes()
    assert Tokenizer.from_str(saved.decode()).get_vocab_size() == 300
    assert first.fingerprint == second.fingerprint
    assert first.fingerprint["data_sheet"]["tokenizer"]["vocab_size"] == 300
    assert len(first.fingerprint["data_sheet"]["tokenizer"]["sha256"]) == 64
    for split in ("train", "validation"):
        source = first.source(split)
        tokens = np.stack([source[i]["targets"] for i in range(len(source))])
        assert tokens.max() < 300
        assert tokens.max() >= 257  # merged tokens are used, not only EOD (0) and the bytes
    # More tokens per window than bytes: a BPE token stands for more than one byte on average.
    summary = first.fingerprint["data_sheet"]["splits"]["train"]
    assert summary["bytes"] > 1.5 * summary["tokens"]


def hand_made_bpe(path: Path) -> None:
    """A byte-level BPE of 258 tokens: EOD, the 256 bytes, and one merge, 'a' + 'b' -> 'ab'."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|endoftext|>": 0, **{c: i + 1 for i, c in enumerate(alphabet)}, "ab": 257}
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[("a", "b")]))
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.add_special_tokens(["<|endoftext|>"])
    hf.save(str(path))


def test_bits_per_byte_divides_by_the_bytes_the_scored_tokens_stand_for(tmp_path: Path) -> None:
    hand_made_bpe(tmp_path / "tokenizer.json")
    folder = tmp_path / "corpus"
    folder.mkdir()
    # Validation: "abab X" -> ab ab Ġ X EOD, 5 tokens: one window of seq_len 4 whose targets are
    # ab, Ġ, X, EOD: 2 + 1 + 1 + 1 = 5 bytes (EOD counts one). Train: a longer document.
    validation = documents_in("validation", [f"abab {c}" for c in "cdefghijklm"], 0.5, 1)[0]
    train = documents_in("train", [prose(i) for i in range(10)], 0.5, 1)[0]
    (folder / "validation.txt").write_text(validation)
    (folder / "train.txt").write_text(train)
    ds = load(
        folder,
        tmp_path / "d",
        seq_len=4,
        val_fraction=0.5,
        tokenizer=str(tmp_path / "tokenizer.json"),
    )
    assert ds.spec.vocab_size == 258
    [example] = [ds.source("validation")[i] for i in range(len(ds.source("validation")))]
    ab = 257
    assert example["inputs"].tolist()[:2] == [ab, ab]
    assert example["target_bytes"].tolist() == [2, 1, 1, 1]

    # A model that knows nothing: uniform over the 258 tokens, ln 258 nats for every token.
    objective = objectives.get_objective(ml_collections.ConfigDict({"name": "next_token_xent"}))

    def eval_step(params: Any, batch: dict) -> dict:
        del params
        return objective(jnp.zeros((*batch["targets"].shape, 258)), batch, {})[1]

    config = ml_collections.ConfigDict({"eval": {"batch_size": 2, "num_batches": 0}})
    mesh = Mesh(np.array(jax.devices()[:1]), ("data",))
    metrics = evaluate(eval_step, None, ds, config, NamedSharding(mesh, P("data")))
    assert metrics["eval/bits_per_token"] == pytest.approx(math.log2(258), rel=1e-6)
    assert metrics["eval/bytes_per_token"] == pytest.approx(5 / 4, rel=1e-6)
    assert metrics["eval/bits_per_byte"] == pytest.approx(4 * math.log2(258) / 5, rel=1e-6)


def test_a_tokenizer_that_does_not_keep_the_bytes_is_refused(tmp_path: Path) -> None:
    hf = Tokenizer(models.WordLevel(vocab={"[UNK]": 0, "hello": 1}, unk_token="[UNK]"))
    hf.save(str(tmp_path / "words.json"))
    with pytest.raises(data.DataConfigError, match="not a byte-level BPE"):
        data.shape_spec(
            "text_files",
            {
                "paths": str(Path(__file__).parent / "corpus" / "*"),
                "tokenizer": str(tmp_path / "words.json"),
            },
        )


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"paths": ""}, "data.text_files.paths is empty"),
        ({"paths": "/nonexistent/*.txt"}, "'/nonexistent/*.txt' matches no file"),
        ({"paths": str(Path(__file__).parents[1] / "pyproject.toml")}, "valid kinds"),
        ({"tokenizer": "wordpiece"}, "tokenizer must be byte, bpe or the path"),
        ({"vocab_size": 512}, "vocab_size sizes the BPE"),
        ({"tokenizer": "bpe", "vocab_size": 100}, "a BPE needs vocab_size >= 258"),
    ],
)
def test_bad_corpus_parameters_say_what_is_wrong(params: dict, message: str, tmp_path) -> None:
    defaults = {"paths": str(Path(__file__).parent / "corpus" / "*")}
    with pytest.raises(data.DataConfigError, match=re.escape(message)):
        data.shape_spec("text_files", {**defaults, **params}, str(tmp_path))


def test_python_stdlib_names_its_modules_and_python(tmp_path: Path) -> None:
    with pytest.raises(data.DataConfigError, match=r"'jsn' in modules \(did you mean 'json'\?\)"):
        data.shape_spec("python_stdlib", {"modules": "jsn"})
    params = {"modules": "json,email", "seq_len": 32, "val_fraction": 0.5}
    ds = data.load("python_stdlib", params, str(tmp_path))
    sheet = ds.fingerprint["data_sheet"]
    version = f"{platform.python_implementation()} {platform.python_version()} standard library"
    assert sheet["source"].startswith(version)
    assert sheet["files"] == len(stdlib_files()["json"]) + len(stdlib_files()["email"])
    assert len(sheet["files_sha256"]) == 64
    assert "PSF-2.0" in ds.builder.info.description  # the data sheet, with the license


def test_parquet_rows_are_documents_and_text_must_be_utf8(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = tmp_path / "corpus"
    folder.mkdir()
    texts = [prose(i, words=30) for i in range(8)]
    table = pa.table({"id": list(range(8)), "body": texts})
    pq.write_table(table, folder / "rows.parquet", row_group_size=3)
    ds = load(folder, tmp_path / "d", seq_len=8, val_fraction=0.5, text_field="body")
    found = {
        split: "\x00".join(byte_documents(stream(ds, split))) for split in ("train", "validation")
    }
    for text in texts:
        split = "validation" if corpus.in_validation(text, 0.5) else "train"
        assert text[:40] in found[split]

    with pytest.raises(data.DataConfigError, match="no column 'text'.*columns: id, body"):
        load(folder, tmp_path / "d", seq_len=8, val_fraction=0.5)
    (folder / "latin1.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(data.DataConfigError, match=r"latin1.txt: not UTF-8 text"):
        load(folder, tmp_path / "d", seq_len=8, val_fraction=0.5, text_field="body")
