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
  dropped); inputs = window[:-1], targets = window[1:], loss_mask all ones.
- Decontamination (version 1.1.0): pydoc repeats some passages under several topics, so a
  contiguous cut still left 27 of the 361 validation windows at seq_len=128 as near-copies of
  training windows (found by data/overlap.py). Every validation window with a training window at
  byte-3-gram Jaccard >= 0.8 (data/overlap.py's near-duplicate test: MinHash LSH candidates, then
  the exact Jaccard) is dropped, so the validation split measures text the model has not seen.
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

from data import overlap
from data.builder import ArchlabBuilder, sequence_features
from data.config import DataConfigError, ParamsConfig, param
from data.registry import DATASETS
from data.spec import DatasetSpec


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


def near_copies(rows: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """[len(rows)] bool: the rows with a reference row at shingle Jaccard >= the threshold of
    data/overlap.py (candidates from its MinHash bands, then the exact Jaccard)."""

    def shingles(x: np.ndarray) -> np.ndarray:
        return overlap.sequence_shingles({"inputs": x[:, :-1], "targets": x[:, 1:]})

    row_shingles, reference_shingles = shingles(rows), shingles(reference)
    row_keys = overlap.band_keys(overlap.minhash(row_shingles))
    reference_keys = overlap.band_keys(overlap.minhash(reference_shingles))
    by_key: dict[tuple[int, int], list[int]] = {}
    for j, keys in enumerate(reference_keys.tolist()):
        for band, key in enumerate(keys):
            by_key.setdefault((band, key), []).append(j)
    copies = np.zeros(len(rows), dtype=bool)
    for i, keys in enumerate(row_keys.tolist()):
        candidates = {j for band, key in enumerate(keys) for j in by_key.get((band, key), [])}
        mine = np.unique(row_shingles[i])
        for j in candidates:
            theirs = np.unique(reference_shingles[j])
            shared = len(np.intersect1d(mine, theirs, assume_unique=True))
            if shared / (len(mine) + len(theirs) - shared) >= overlap.NEAR_DUPLICATE_JACCARD:
                copies[i] = True
                break
    return copies


@DATASETS.register("pydoc_text")
class PydocText(ArchlabBuilder):
    CONFIG_CLASS = PydocTextConfig
    # 1.1.0 drops the validation windows that are near-copies of training windows.
    VERSION = tfds.core.Version("1.1.0")
    LICENSE = "Python Software Foundation License (Python documentation text)."

    def _features(self) -> tfds.features.FeaturesDict:
        return sequence_features(self.config.seq_len)

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
        for i, row in enumerate(rows):
            yield (
                i,
                {
                    "inputs": row[:-1],
                    "targets": row[1:],
                    "loss_mask": np.ones(self.config.seq_len, dtype=np.float32),
                },
            )

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="validation",
            vocab_size=256,
            seq_len=self.config.seq_len,
        )

    def data_sheet(self) -> dict[str, Any]:
        return {
            "source": f"CPython {platform.python_version()} pydoc_data.topics (UTF-8 bytes)",
            "size": f"{len(corpus_bytes())} bytes",
        }
