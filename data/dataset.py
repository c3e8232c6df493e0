"""The public entry points: `load` a dataset by name and parameters, get loaders from it."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

import grain

from data import pipeline
from data.builder import ArchlabBuilder, declared_dtypes
from data.config import DataConfigError
from data.prepare import prepare, resolve_data_dir, unprepared_builder
from data.registry import DATASETS
from data.spec import DatasetSpec
from data.tokenizer import TextTokenizer


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """A prepared dataset: its spec, its fingerprint, and loaders over its splits."""

    spec: DatasetSpec
    fingerprint: dict[str, Any]
    builder: ArchlabBuilder

    _sources: dict[str, Any] = dataclasses.field(default_factory=dict, init=False, repr=False)

    def source(self, split: str) -> Any:
        """Random-access view of a split (TFDS ArrayRecord data source), opened once."""
        if split not in self.spec.splits:
            raise DataConfigError(
                f"dataset {self.spec.name!r} has no split {split!r}; "
                f"valid: {', '.join(sorted(self.spec.splits))}"
            )
        if split not in self._sources:
            self._sources[split] = self.builder.as_data_source(split)
        return self._sources[split]

    def loader(
        self,
        split: str,
        *,
        batch_size: int,
        seed: int,
        shuffle: bool,
        num_epochs: int | None,
        shard_index: int = 0,
        shard_count: int = 1,
        drop_remainder: bool = True,
    ) -> grain.IterDataset:
        """A Grain pipeline of batches; `iter()` gives a checkpointable iterator. `batch_size` is
        per process (this shard's share of the batch).

        Batches hold the stored features, plus `score_positions` when the spec declares
        `scored_positions` (see `pipeline.make_loader`).
        """
        return pipeline.make_loader(
            self.source(split),
            dtypes=declared_dtypes(self.builder),
            batch_size=batch_size,
            seed=seed,
            shuffle=shuffle,
            num_epochs=num_epochs,
            shard_index=shard_index,
            shard_count=shard_count,
            drop_remainder=drop_remainder,
            scored_positions=self.spec.scored_positions,
            dataset_name=self.spec.name,
        )

    def eval_loader(
        self, batch_size: int, shard_index: int = 0, shard_count: int = 1
    ) -> grain.IterDataset:
        """The evaluation split once, in order, the last batch short (not dropped)."""
        return self.loader(
            self.spec.eval_split,
            batch_size=batch_size,
            seed=0,
            shuffle=False,
            num_epochs=1,
            shard_index=shard_index,
            shard_count=shard_count,
            drop_remainder=False,
        )


def default_params(name: str) -> dict[str, Any]:
    """The parameters dataset `name` accepts, with their defaults."""
    return DATASETS.get(name).CONFIG_CLASS.defaults()


def shape_spec(
    name: str,
    params: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> DatasetSpec:
    """What dataset `name` with `params` will be, known before any data is generated: its shapes
    (vocabulary, length, classes, scored positions), which models are built from; its split
    sizes are empty until it is prepared. Raises as `load` does."""
    return _unprepared(name, params, data_dir).spec()


def text_tokenizer(
    name: str,
    params: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> TextTokenizer | None:
    """How dataset `name`'s tokens read as text (`ArchlabBuilder.text_tokenizer`), or None when
    they are ids. Nothing is prepared: a tokenizer made at preparation (a BPE) is read from the
    prepared data, and raises DataConfigError when they are not there. Raises as `load` does."""
    return _unprepared(name, params, data_dir).text_tokenizer()


def _unprepared(
    name: str, params: Mapping[str, Any] | None, data_dir: str | os.PathLike | None
) -> ArchlabBuilder:
    builder_cls = DATASETS.get(name)
    config = builder_cls.CONFIG_CLASS.from_params(dict(params) if params else {})
    return unprepared_builder(builder_cls, config, resolve_data_dir(data_dir))


def load(
    name: str,
    params: Mapping[str, Any] | None = None,
    data_dir: str | os.PathLike | None = None,
) -> Dataset:
    """Prepares dataset `name` with `params` on first use (once, under a lock) and opens it.

    Raises registry.UnknownNameError for an unknown name and DataConfigError for a parameter the
    dataset does not have or an invalid value.
    """
    builder_cls = DATASETS.get(name)
    config = builder_cls.CONFIG_CLASS.from_params(dict(params) if params else {})
    builder, fp = prepare(builder_cls, config, resolve_data_dir(data_dir))
    return Dataset(spec=builder.spec(), fingerprint=fp, builder=builder)
