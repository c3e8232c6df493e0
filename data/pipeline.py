"""Grain input pipelines over a prepared split: order, shard, batch, then read each batch at once.

A pipeline is a Grain `MapDataset` over record *indices*: a fresh random order each epoch
(seeded by the run's seed and the epoch), this process's shard of it, batches of indices; only
then is each batch read from the ArrayRecord source in one call and decoded. Reading a batch in
one call is what makes it cheap: on these machines one ArrayRecord read call for one random
record costs ~100 us, a call for 64 records ~5 us per record, and
Grain's own per-record shuffle (`MapDataset.shuffle`, a Feistel network per index) another
~170 us per record. With Grain's record-at-a-time DataLoader (and its 16 prefetch threads, which
take cores from the step on a 2-core machine) the MQAR mamba2 arm's training loop ran at 71% of
its bare step rate; reading whole batches, at 92% (`launch.benchmark`, loop overhead).

Sharding: every process orders the same global sequence (the seed is shared) and takes every
`shard_count`-th element starting at `shard_index`, so shards are disjoint and all the same
length; every process must run the same number of steps, since each step is one collective
computation. Training drops the up to `shard_count - 1` records of an epoch that would make the
shards unequal. Evaluation (`drop_remainder=False`) scores every record exactly once: the shorter
shards are padded with a stand-in row, and every batch carries `example_mask` (0 for those rows).

Everything runs in the calling thread (no prefetch threads: on a 2-core machine they only take
cores from the step), so the order is deterministic and the iterator's state is a small JSON blob
that grain's Orbax checkpoint handler saves.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import grain
import numpy as np

from data.builder import cast_example

PADDING = -1  # an index past the end of the split that evaluation pads with: read as record 0


class _Padded(grain.MapDataset):
    """`order`'s indices, then PADDING up to `length`."""

    def __init__(self, order: grain.MapDataset, length: int):
        super().__init__()
        self._order, self._length = order, length

    def __len__(self) -> int:
        return self._length

    def __str__(self) -> str:
        return f"Padded(length={self._length})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        return self._order[index] if index < len(self._order) else PADDING


class _EpochOrder(grain.MapDataset):
    """Record indices epoch after epoch: each epoch a permutation drawn from (seed, epoch), or
    0..n-1 when not shuffling. Infinite when `num_epochs` is None."""

    def __init__(self, num_records: int, *, seed: int, shuffle: bool, num_epochs: int | None):
        super().__init__()
        if num_records < 1:
            raise ValueError(f"a split needs at least one record, got {num_records}")
        self._num_records = num_records
        self._seed = seed
        self._shuffle = shuffle
        self._num_epochs = num_epochs
        self._epoch, self._order = -1, np.arange(0)

    def __len__(self) -> int:
        return sys.maxsize if self._num_epochs is None else self._num_records * self._num_epochs

    def __str__(self) -> str:
        return (
            f"EpochOrder(num_records={self._num_records}, seed={self._seed}, "
            f"shuffle={self._shuffle})"
        )

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} records")
        epoch, position = divmod(index, self._num_records)
        # Iteration moves forward, so one cached epoch suffices; a miss recomputes it. Not
        # thread-safe, which is fine: make_loader runs everything in the calling thread.
        if epoch != self._epoch:
            self._epoch, self._order = epoch, self._epoch_order(epoch)
        return int(self._order[position])

    def _epoch_order(self, epoch: int) -> np.ndarray:
        if not self._shuffle:
            return np.arange(self._num_records)
        return np.random.default_rng([self._seed, epoch]).permutation(self._num_records)


class _ReadBatch(grain.transforms.Map):
    """A batch of record indices -> the batch of examples: one read of the source, each feature
    stacked and given its declared dtype; plus `score_positions` when the dataset declares them."""

    def __init__(
        self,
        source: Any,
        dtypes: dict[str, np.dtype],
        scored_positions: int | None,
        dataset_name: str,
        mark_padding: bool,
    ):
        # TFDS sources read many records in one call; a plain sequence is read one by one.
        self._read = getattr(source, "__getitems__", None) or (
            lambda keys: [source[k] for k in keys]
        )
        self._dtypes = dtypes
        self._scored_positions = scored_positions
        self._dataset_name = dataset_name
        self._mark_padding = mark_padding

    def map(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        real = np.asarray(indices) != PADDING
        examples = self._read(np.where(real, indices, 0).tolist())
        batch = cast_example(
            {key: np.stack([example[key] for example in examples]) for key in self._dtypes},
            self._dtypes,
        )
        if self._scored_positions is not None:
            batch["score_positions"] = self._positions(batch["loss_mask"])
        if self._mark_padding:
            batch["example_mask"] = real.astype(np.float32)
        return batch

    def _positions(self, loss_mask: np.ndarray) -> np.ndarray:
        """int32 [batch, count]: where each example's loss_mask is nonzero."""
        scored = loss_mask != 0
        counts = scored.sum(axis=1)
        if np.any(counts != self._scored_positions):
            raise ValueError(
                f"dataset {self._dataset_name!r} declares {self._scored_positions} scored "
                f"positions per example (DatasetSpec.scored_positions), but an example's "
                f"loss_mask scores {int(counts[counts != self._scored_positions][0])}"
            )
        return np.nonzero(scored)[1].reshape(len(loss_mask), -1).astype(np.int32)


def make_loader(
    source: Sequence[dict[str, Any]],
    *,
    dtypes: dict[str, np.dtype],
    batch_size: int,
    seed: int,
    shuffle: bool,
    num_epochs: int | None,
    shard_index: int = 0,
    shard_count: int = 1,
    drop_remainder: bool = True,
    scored_positions: int | None = None,
    dataset_name: str = "",
) -> grain.IterDataset:
    """An iterable of dicts of numpy arrays with a leading per-process batch axis.

    `dtypes` are the features' declared dtypes, which every batch is given. With
    `scored_positions` (the dataset's `DatasetSpec.scored_positions`), batches also hold
    `score_positions` int32 [batch, scored_positions]: where each example's loss_mask is nonzero.
    Without `drop_remainder` (evaluation: every record once), the last batch is short and batches
    also hold `example_mask` float32 [batch], 0 for the rows that pad a shorter shard.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    if num_epochs is not None and num_epochs < 1:
        raise ValueError(f"num_epochs must be >= 1 or None, got {num_epochs}")
    order = _EpochOrder(len(source), seed=seed, shuffle=shuffle, num_epochs=num_epochs)
    # Every shard the same length: training drops the remainder, evaluation pads to a multiple.
    n = len(order)
    if drop_remainder:
        order = order[: n - n % shard_count]
    else:
        order = _Padded(order, -(-n // shard_count) * shard_count)
    batches = order[shard_index::shard_count].batch(batch_size, drop_remainder=drop_remainder)
    read = _ReadBatch(source, dtypes, scored_positions, dataset_name, not drop_remainder)
    examples = batches.map(read)
    return examples.to_iter_dataset(grain.ReadOptions(num_threads=0, prefetch_buffer_size=0))


def iterator_checkpoint_args(iterator: Any, *, restore: bool) -> Any:
    """The Orbax args that save/restore a loader iterator with grain's checkpoint handler.

    Use as one item of an `ocp.args.Composite`, e.g. `data_iter=iterator_checkpoint_args(it,
    restore=False)`; it writes one `process_<i>-of-<n>.json` per process.
    """
    import grain.checkpoint as grain_checkpoint  # needs orbax; only imported when checkpointing

    cls = grain_checkpoint.CheckpointRestore if restore else grain_checkpoint.CheckpointSave
    return cls(item=iterator)
