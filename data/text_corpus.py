"""The base of the text corpora (`text_files`, `python_stdlib`): documents -> tokens -> windows.

Preparation streams the documents and writes each split's tokens to a file on disk, so a corpus
larger than memory is prepared in bounded memory (the largest document, one batch of documents
being tokenised, 168 bytes per validation window for decontamination, and TFDS's writer buffer),
with a progress bar on a terminal:
1. When the parameters are read (`TextCorpusConfig.from_params`), the corpus's files are resolved
   and hashed: their digest (and a tokenizer.json's) is part of the variant's name, so changed
   files make a new variant instead of reusing data prepared from the old ones.
2. The tokenizer (data/tokenizer.py): bytes; a byte-level BPE trained on the train split's
   documents (one more streaming pass); or a given tokenizer.json. Except for bytes it is saved
   beside the data as tokenizer.json, and its sha256 goes into the fingerprint.
3. Each document, in corpus order, goes to the split its own hash picks (data/corpus.py), is
   tokenised and appended to that split's token stream, followed by the end-of-document token.
   Each document's token byte counts must add up to its UTF-8 length (bits per byte is exact).
4. Each stream is cut into windows of seq_len + 1 tokens at a stride of seq_len: consecutive
   windows share one token, so every token but the stream's first is a target exactly once (a
   tail shorter than a window is dropped). Windows cross document boundaries (the EOD token
   marks them). Validation windows that a training window copies or nearly copies are dropped
   (data/decontaminate.py). Examples: inputs = window[:-1], targets = window[1:], loss_mask all
   ones, target_bytes = the bytes each target token stands for.
5. TFDS writes the windows as array_record shards; a summary (documents, bytes, tokens, windows
   per split, windows dropped) is kept beside them as corpus.json and is the fingerprint's data
   sheet together with the files' and the tokenizer's hashes.
"""

from __future__ import annotations

import abc
import contextlib
import dataclasses
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from tqdm import tqdm

from data import corpus
from data.builder import ArchlabBuilder, text_features, text_window_example
from data.config import DataConfigError, ParamsConfig, param, text_param
from data.decontaminate import near_copies
from data.spec import DatasetSpec
from data.tokenizer import (
    BYTE_VOCAB,
    MIN_BPE_VOCAB,
    ByteLevelBPE,
    ByteTokenizer,
    TextTokenizer,
    load_file,
    train_bpe,
)

TOKENIZER_FILE = "tokenizer.json"
SUMMARY_FILE = "corpus.json"
SPLITS = ("train", "validation")
_ENCODE_BATCH_CHARS = 1 << 20  # characters tokenised per call: bounds memory, amortises calls


@dataclasses.dataclass(eq=False)
class TextCorpusConfig(ParamsConfig):
    seq_len: int = param(128, "t")
    val_fraction: float = param(0.1, "s")
    # byte | bpe | a path to a byte-level BPE tokenizer.json
    tokenizer: str = text_param("byte", "k")
    # The size of the BPE trained at preparation (tokenizer=bpe only).
    vocab_size: int = param(1024, "v")

    DATASET: ClassVar[str]
    # Set by `validate`: the corpus's files in corpus order with their hashes, and the loaded
    # tokenizer.json (None for byte and bpe) with its sha256.
    files: list[corpus.CorpusFile] = dataclasses.field(default_factory=list, repr=False)
    tokenizer_file: ByteLevelBPE | None = dataclasses.field(default=None, repr=False)
    tokenizer_sha256: str | None = dataclasses.field(default=None, repr=False)

    def corpus_paths(self) -> list[Path]:
        """The corpus's files (raises DataConfigError when there are none)."""
        raise NotImplementedError

    def record_field(self) -> str:
        """The field that holds a record's text in .jsonl and .parquet files."""
        return "text"

    def validate(self) -> None:
        where = self.DATASET
        if self.seq_len < 1:
            raise DataConfigError(f"{where}: seq_len must be >= 1; got {self.params()}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DataConfigError(f"{where}: need 0 < val_fraction < 1; got {self.params()}")
        default_vocab = type(self).defaults()["vocab_size"]
        if self.tokenizer == "bpe":
            if self.vocab_size < MIN_BPE_VOCAB:
                raise DataConfigError(
                    f"{where}: a BPE needs vocab_size >= {MIN_BPE_VOCAB} (256 bytes, the "
                    f"end-of-document token, one merge); got {self.vocab_size}"
                )
        elif self.vocab_size != default_vocab:
            raise DataConfigError(
                f"{where}: vocab_size sizes the BPE trained at preparation (tokenizer=bpe); the "
                f"byte tokenizer has {BYTE_VOCAB} tokens and a tokenizer.json its own; got "
                f"tokenizer={self.tokenizer!r}, vocab_size={self.vocab_size}"
            )
        if self.tokenizer not in ("byte", "bpe"):
            path = Path(self.tokenizer).expanduser()
            if not path.is_file():
                raise DataConfigError(
                    f"{where}: tokenizer must be byte, bpe or the path of a tokenizer.json; "
                    f"{self.tokenizer!r} is not a file"
                )
            self.tokenizer_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
            self.tokenizer_file = load_file(path)
        self.files = corpus.hash_files(self.corpus_paths())

    def content_digest(self) -> str:
        parts = [corpus.digest(self.files), self.tokenizer_sha256 or ""]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    def vocab(self) -> int:
        """The model's vocabulary: the tokenizer's, known before preparation."""
        if self.tokenizer == "byte":
            return BYTE_VOCAB
        if self.tokenizer == "bpe":
            return self.vocab_size
        return self.tokenizer_file.vocab_size


class TextCorpusBuilder(ArchlabBuilder, skip_registration=True):
    """A dataset of packed token windows from a corpus of documents (see the module docstring)."""

    @abc.abstractmethod
    def source(self) -> str:
        """The data sheet's `source`: what the corpus is, without machine-specific paths."""

    def _features(self) -> tfds.features.FeaturesDict:
        return text_features(self.config.seq_len)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download: the files are local
        config = self.config
        # During preparation data_path is TFDS's temporary folder, renamed into place on success.
        out = Path(self.data_path)
        tokenizer = self._tokenizer()
        saved = tokenizer.to_json()
        if saved is not None:
            (out / TOKENIZER_FILE).write_text(saved)
        counts = self._write_token_streams(tokenizer, out)
        window = config.seq_len + 1
        windows = {}
        for split in SPLITS:
            if counts[split]["tokens"] < window:
                raise DataConfigError(
                    f"{self.name}: the {split} split has {counts[split]['documents']} documents, "
                    f"{counts[split]['tokens']} tokens, fewer than one window of seq_len + 1 = "
                    f"{window}; give more text or change val_fraction ({config.params()})"
                )
            stream = np.memmap(_stream_path(out, split), dtype=np.int32, mode="r")
            windows[split] = strided_windows(stream, config.seq_len)
        keep = {
            "train": np.ones(len(windows["train"]), dtype=bool),
            "validation": ~near_copies(windows["validation"], windows["train"]),
        }
        summary = {
            "files": len(config.files),
            "files_sha256": corpus.digest(config.files),
            "tokenizer": {
                "kind": _tokenizer_kind(config.tokenizer),
                "vocab_size": tokenizer.vocab_size,
            },
            "splits": {
                split: {**counts[split], "windows": int(keep[split].sum())} for split in SPLITS
            },
            "validation_windows_dropped": int((~keep["validation"]).sum()),
        }
        (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
        token_bytes = tokenizer.token_bytes()
        return {
            split: self._generate_examples(
                _stream_path(out, split), windows[split], keep[split], token_bytes
            )
            for split in SPLITS
        }

    def _tokenizer(self) -> TextTokenizer:
        """The tokenizer to prepare the data with: a BPE is trained here."""
        config = self.config
        if config.tokenizer != "bpe":
            return self.text_tokenizer()
        train_texts = (
            text
            for text in self._documents("training the BPE on the train split")
            if not corpus.in_validation(text, config.val_fraction)
        )
        return train_bpe(train_texts, config.vocab_size)

    def text_tokenizer(self) -> TextTokenizer:
        """The tokenizer the data were made with: a BPE is read from the prepared data
        (DataConfigError when they are not prepared in this data dir)."""
        config = self.config
        if config.tokenizer == "byte":
            return ByteTokenizer()
        if config.tokenizer != "bpe":
            return config.tokenizer_file
        saved = Path(self.data_path) / TOKENIZER_FILE
        if not saved.is_file():
            raise DataConfigError(
                f"{self.name}: its BPE is trained when the data are prepared, and {saved} is not "
                f"there: prepare them first (`python -m launch.datacheck --data={self.name}` "
                "with the same parameters and data dir)"
            )
        return load_file(saved)

    def _documents(self, task: str) -> Iterator[str]:
        """Every document in corpus order, with a progress bar over the files' bytes."""
        files = self.config.files
        total = sum(f.size for f in files)
        with tqdm(
            total=total, unit="B", unit_scale=True, desc=f"{self.name}: {task}", disable=None
        ) as bar:
            current = None
            for file, text in corpus.documents(files, self.config.record_field()):
                if file is not current:
                    if current is not None:
                        bar.update(current.size)
                    current = file
                yield text
            bar.update(bar.total - bar.n)

    def _write_token_streams(self, tokenizer: TextTokenizer, out: Path) -> dict[str, dict]:
        """Tokenises every document into its split's stream file; the counts per split."""
        counts = {split: {"documents": 0, "bytes": 0, "tokens": 0} for split in SPLITS}
        token_bytes = tokenizer.token_bytes()
        eod = np.array([tokenizer.eod_id], dtype=np.int32)
        with contextlib.ExitStack() as stack:
            streams = {
                split: stack.enter_context(open(_stream_path(out, split), "wb")) for split in SPLITS
            }
            for batch in _batches(self._documents("tokenizing")):
                for text, tokens in zip(batch, tokenizer.encode(batch), strict=True):
                    size = len(text.encode("utf-8"))
                    if int(token_bytes[tokens].sum()) != size:
                        raise DataConfigError(
                            f"{self.name}: a document of {size} bytes came out as tokens standing "
                            f"for {int(token_bytes[tokens].sum())}: the tokenizer does not keep "
                            f"the text as it is ({self.config.tokenizer!r})"
                        )
                    split = SPLITS[corpus.in_validation(text, self.config.val_fraction)]
                    streams[split].write(tokens.tobytes() + eod.tobytes())
                    entry = counts[split]
                    entry["documents"] += 1
                    entry["bytes"] += size
                    entry["tokens"] += len(tokens) + 1
        return counts

    def _generate_examples(
        self, stream: Path, windows: np.ndarray, keep: np.ndarray, token_bytes: np.ndarray
    ) -> Iterator[tuple[int, dict]]:
        try:
            for i, index in enumerate(np.flatnonzero(keep)):
                yield i, text_window_example(windows[index], token_bytes)
        finally:
            stream.unlink(missing_ok=True)  # scratch: not part of the prepared dataset

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="validation",
            vocab_size=self.config.vocab(),
            seq_len=self.config.seq_len,
        )

    def data_sheet(self) -> dict[str, Any]:
        summary = json.loads((Path(self.data_path) / SUMMARY_FILE).read_text())
        splits = summary["splits"].values()
        total = {key: sum(s[key] for s in splits) for key in ("documents", "bytes")}
        sheet = {
            "source": self.source(),
            "size": f"{total['bytes']} bytes of UTF-8 text in {total['documents']} documents "
            f"from {summary['files']} files",
            **summary,
        }
        tokenizer_path = Path(self.data_path) / TOKENIZER_FILE
        if tokenizer_path.exists():
            sheet["tokenizer"]["sha256"] = hashlib.sha256(tokenizer_path.read_bytes()).hexdigest()
        return sheet


def strided_windows(stream: np.ndarray, seq_len: int) -> np.ndarray:
    """[N, seq_len + 1] read-only view of a token stream: window i starts at i * seq_len, so
    consecutive windows share one token; a tail shorter than a window is dropped."""
    count = max(0, (len(stream) - 1) // seq_len)
    step = stream.strides[0]
    return np.lib.stride_tricks.as_strided(
        stream, shape=(count, seq_len + 1), strides=(seq_len * step, step), writeable=False
    )


def _batches(texts: Iterator[str]) -> Iterator[list[str]]:
    """The texts in lists of about _ENCODE_BATCH_CHARS characters, in order."""
    batch, chars = [], 0
    for text in texts:
        batch.append(text)
        chars += len(text)
        if chars >= _ENCODE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def _tokenizer_kind(tokenizer: str) -> str:
    return tokenizer if tokenizer in ("byte", "bpe") else "tokenizer.json"


def _stream_path(out: Path, split: str) -> Path:
    return out / f"tokens-{split}.int32"
