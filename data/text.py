"""pydoc_text: byte-level English text from CPython's own documentation (`pydoc_data.topics`).

Data sheet
- Source: the `topics` dict of the `pydoc_data.topics` module that ships with every CPython (the
  text `help('assert')` shows: reference-manual chapters on statements, expressions and types).
  Topics are joined in sorted-name order with a blank line between them. Nothing is downloaded.
- Size: about 466 KB (466,273 bytes of UTF-8 on Python 3.11.7): 3,253 training and 361
  validation windows at seq_len=128. The exact text depends on the Python version: the
  fingerprint's `source` names the version and its content hash changes with the text.
- Generation: UTF-8 bytes (vocab_size 256). The first (1 - val_fraction) of the bytes is the
  train split, the rest the validation split: a contiguous cut, so no text is in both. Each split
  is cut into non-overlapping windows of seq_len + 1 bytes (a leftover tail shorter than that is
  dropped); inputs = window[:-1], targets = window[1:], loss_mask all ones.
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


@DATASETS.register("pydoc_text")
class PydocText(ArchlabBuilder):
    CONFIG_CLASS = PydocTextConfig
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
        return {split: self._generate_examples(part) for split, part in parts.items()}

    def _generate_examples(self, part: bytes) -> Iterator[tuple[int, dict]]:
        window = self.config.seq_len + 1
        num_windows = len(part) // window
        tokens = np.frombuffer(part[: num_windows * window], dtype=np.uint8).astype(np.int32)
        for i, row in enumerate(tokens.reshape(num_windows, window)):
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
