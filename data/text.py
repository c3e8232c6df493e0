"""pydoc_text: byte-level English text from CPython's own documentation (`pydoc_data.topics`).

Data sheet
- Source: the `topics` dict of the `pydoc_data.topics` module that ships with every CPython (the
  text `help('assert')` shows: reference-manual chapters on statements, expressions and types).
  Topics are joined in sorted-name order with a blank line between them. Nothing is downloaded.
- Size: about 466 KB (466,273 bytes of UTF-8 on Python 3.11.7): 3,253 training and 334
  validation windows at seq_len=128 (361 before decontamination). The exact text depends on the
  Python version: the fingerprint's `source` names the version and its content hash changes
  with the text.
- Generation: UTF-8 bytes (vocab_size 256). The first (1 - val_fraction) of the bytes is the
  train split, the rest the validation split: a contiguous cut, so no text is in both. Each split
  is cut into non-overlapping windows of seq_len + 1 bytes (a leftover tail shorter than that is
  dropped); inputs = window[:-1], targets = window[1:], loss_mask all ones, target_bytes all
  ones (each token is one byte: bits per byte is bits per token).
- Decontamination (version 1.1.0): pydoc repeats some passages under several topics, so a
  contiguous cut still left 27 of the 361 validation windows at seq_len=128 as near-copies of
  training windows (found by data/overlap.py). Every validation window with a training window at
  byte-3-gram Jaccard >= 0.8 (data/overlap.py's near-duplicate test: MinHash LSH candidates, then
  the exact Jaccard; data/decontaminate.py) is dropped, so the validation split measures text the
  model has not seen.
- Intended use: a small, always-available character-level language-modelling task for smoke
  tests and architecture comparisons; too small to measure large-scale language modelling.
- License: the Python documentation, under the Python Software Foundation License
  (PSF-2.0) / Zero-Clause BSD for the docs as distributed with CPython.
"""

from __future__ import annotations

import dataclasses
import platform
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.builder import ArchlabBuilder, text_features, text_window_example
from data.config import DataConfigError, ParamsConfig, param
from data.decontaminate import near_copies
from data.registry import DATASETS
from data.spec import DatasetSpec
from data.tokenizer import ByteTokenizer, TextTokenizer


def corpus_bytes() -> bytes:
    """The whole corpus, deterministic for a given Python version."""
    from pydoc_data.topics import topics  # stdlib; imported here as it is ~0.5 MB of strings

    return "\n\n".join(topics[name] for name in sorted(topics)).encode("utf-8")


@dataclasses.dataclass(eq=False)
class PydocTextConfig(ParamsConfig):
    seq_len: int = param(128, "t")
    val_fraction: float = param(0.1, "f")

    def validate(self) -> None:
        if self.seq_len < 1:
            raise DataConfigError(f"pydoc_text: seq_len must be >= 1; got {self.params()}")
        if not 0.0 < self.val_fraction < 1.0:
            raise DataConfigError(f"pydoc_text: need 0 < val_fraction < 1; got {self.params()}")


def split_bytes(text: bytes, val_fraction: float) -> dict[str, bytes]:
    cut = round(len(text) * (1.0 - val_fraction))
    return {"train": text[:cut], "validation": text[cut:]}


def windows(part: bytes, window: int) -> np.ndarray:
    """[N, window] int32: the non-overlapping windows of `part` (a shorter tail is dropped)."""
    count = len(part) // window
    return np.frombuffer(part[: count * window], dtype=np.uint8).astype(np.int32).reshape(count, -1)


@DATASETS.register("pydoc_text")
class PydocText(ArchlabBuilder):
    CONFIG_CLASS = PydocTextConfig
    # 1.1.0 drops the validation windows that are near-copies of training windows; 1.2.0 adds
    # `target_bytes` (bits per byte).
    VERSION = tfds.core.Version("1.2.0")
    LICENSE = "Python Software Foundation License (Python documentation text)."

    def _features(self) -> tfds.features.FeaturesDict:
        return text_features(self.config.seq_len)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # the text ships with Python
        parts = split_bytes(corpus_bytes(), self.config.val_fraction)
        window = self.config.seq_len + 1
        for split, part in parts.items():
            if len(part) < window:
                raise DataConfigError(
                    f"pydoc_text: the {split} split has {len(part)} bytes, fewer than one window "
                    f"of seq_len + 1 = {window}; got {self.config.params()}"
                )
        rows = {split: windows(part, window) for split, part in parts.items()}
        rows["validation"] = rows["validation"][~near_copies(rows["validation"], rows["train"])]
        return {split: self._generate_examples(part) for split, part in rows.items()}

    def _generate_examples(self, rows: np.ndarray) -> Iterator[tuple[int, dict]]:
        one_byte_each = np.ones(256, dtype=np.int32)
        for i, row in enumerate(rows):
            yield i, text_window_example(row, one_byte_each)

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="validation",
            vocab_size=256,
            seq_len=self.config.seq_len,
        )

    def text_tokenizer(self) -> TextTokenizer:
        return ByteTokenizer()  # the bytes without its EOD, which this corpus never writes

    def data_sheet(self) -> dict[str, Any]:
        return {
            "source": f"CPython {platform.python_version()} pydoc_data.topics (UTF-8 bytes)",
            "size": f"{len(corpus_bytes())} bytes",
        }
