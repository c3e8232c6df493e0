"""The base every archlab dataset builder derives from.

It fixes what all our datasets share: examples written in generation order (so example i of a
split is the same on every machine), the module docstring as the data sheet (TFDS's
description), and the hooks the rest of archlab reads: `spec()` and `data_sheet()`, the slices
the evaluation suites group by, and `text_tokenizer()`, how the tokens read as text.
"""

from __future__ import annotations

import abc
import inspect
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from data.config import ParamsConfig
from data.spec import DatasetSpec
from data.tokenizer import TextTokenizer


class ArchlabBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A locally generated TFDS dataset whose builder config is built from parameters."""

    VERSION = tfds.core.Version("1.0.0")
    CONFIG_CLASS: ClassVar[type[ParamsConfig]]
    LICENSE: ClassVar[str]

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        # TFDS's lookup of the builder's file needs the optional `importlib_resources` package
        # for builders inside a regular package like data/; the file is known, so say it.
        return epath.Path(inspect.getfile(cls))

    @property
    def config(self) -> Any:
        # Typed shortcut; TFDS stores the ParamsConfig instance passed as `config=`.
        return self.builder_config

    @abc.abstractmethod
    def _features(self) -> tfds.features.FeaturesDict:
        """The stored features of one example."""

    @abc.abstractmethod
    def spec(self) -> DatasetSpec:
        """The dataset's shapes (from its parameters) and split sizes (once prepared)."""

    @abc.abstractmethod
    def data_sheet(self) -> dict[str, Any]:
        """A short summary for the fingerprint: at least `source` and `size`."""

    def slice_attributes(
        self, batch: dict[str, np.ndarray], rows: np.ndarray, positions: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Per scored item (example `rows[i]` of `batch`, sequence position `positions[i]`): the
        attributes the slices suite groups by, as strings, {} when the task defines none.
        Evaluation slices by class and by `group` wherever the batch holds them."""
        del batch, rows, positions
        return {}

    def slice_variants(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Slices that need other data: attribute -> {slice label: parameter overrides of an
        evaluation variant of this dataset}. {} when the task defines none."""
        return {}

    def text_tokenizer(self) -> TextTokenizer | None:
        """How the tokens read as text (prompts are encoded, continuations printed with it), or
        None when they are ids: synthetic tasks and images. A text dataset overrides it; the
        builder need not be prepared unless its tokenizer is made at preparation."""
        return None

    def split_sizes(self) -> dict[str, int]:
        return {name: split.num_examples for name, split in sorted(self.info.splits.items())}

    def _info(self) -> tfds.core.DatasetInfo:
        # Builders outside TFDS's package must build DatasetInfo directly (there is no metadata
        # folder for dataset_info_from_configs to read).
        return tfds.core.DatasetInfo(
            builder=self,
            description=inspect.getdoc(inspect.getmodule(type(self))),
            features=self._features(),
            disable_shuffling=True,
            license=self.LICENSE,
        )


def sequence_features(seq_len: int) -> tfds.features.FeaturesDict:
    """Next-token examples: targets[t] is what to predict after reading inputs[: t + 1]."""
    return tfds.features.FeaturesDict(
        {
            "inputs": tfds.features.Tensor(shape=(seq_len,), dtype=np.int32),
            "targets": tfds.features.Tensor(shape=(seq_len,), dtype=np.int32),
            "loss_mask": tfds.features.Tensor(shape=(seq_len,), dtype=np.float32),
        }
    )


def text_features(seq_len: int) -> tfds.features.FeaturesDict:
    """Next-token text: the sequence features plus `target_bytes`, the bytes of text each target
    token stands for (what bits per byte divides by)."""
    return tfds.features.FeaturesDict(
        {
            **sequence_features(seq_len),
            "target_bytes": tfds.features.Tensor(shape=(seq_len,), dtype=np.int32),
        }
    )


def text_window_example(window: np.ndarray, token_bytes: np.ndarray) -> dict[str, np.ndarray]:
    """The example of one window of seq_len + 1 tokens: every position scored."""
    window = np.asarray(window, dtype=np.int32)
    return {
        "inputs": window[:-1],
        "targets": window[1:],
        "loss_mask": np.ones(len(window) - 1, dtype=np.float32),
        "target_bytes": token_bytes[window[1:]],
    }


def declared_dtypes(builder: ArchlabBuilder) -> dict[str, np.dtype]:
    """Each stored feature's declared numpy dtype."""
    return {key: np.dtype(feature.np_dtype) for key, feature in builder.info.features.items()}


def cast_example(example: dict[str, Any], dtypes: dict[str, np.dtype]) -> dict[str, np.ndarray]:
    """Gives every feature its declared dtype as a numpy array.

    TFDS's TensorFlow-free decoder returns scalar features as Python ints (int64 once batched), so
    the declared dtype is restored here, for both the loaders and the content hash.
    """
    return {key: np.asarray(value, dtype=dtypes[key]) for key, value in example.items()}
