"""Grain input pipelines over a prepared split: sample, shard, batch.

Sharding is the DataLoader's (Grain's ShardOptions): every process walks the same globally
shuffled index sequence (the seed is shared) and takes every `shard_count`-th element starting at
`shard_index`, so shards are disjoint, all the same length, and together form the global order.
worker_count=0 keeps everything in-process: deterministic, fast to start, and the iterator state
is a small JSON blob that grain's Orbax checkpoint handler saves.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grain.python as grain
import numpy as np

from data.builder import cast_example


class _CastToDeclared(grain.MapTransform):
    """Restores each feature's declared dtype (see `data.builder.cast_example`)."""

    def __init__(self, dtypes: dict[str, np.dtype]):
        self._dtypes = dtypes

    def map(self, element: dict[str, Any]) -> dict[str, np.ndarray]:
        return cast_example(element, self._dtypes)


class _ScorePositions(grain.MapTransform):
    """Adds `score_positions` int32 [S], the indices where `loss_mask` is nonzero, checking
    that every example scores the `count` positions its dataset declares."""

    def __init__(self, count: int, dataset_name: str):
        self._count = count
        self._dataset_name = dataset_name

    def map(self, element: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        positions = np.flatnonzero(element["loss_mask"]).astype(np.int32)
        if len(positions) != self._count:
            raise ValueError(
                f"dataset {self._dataset_name!r} declares {self._count} scored positions per "
                f"example (DatasetSpec.scored_positions), but an example's loss_mask scores "
                f"{len(positions)}"
            )
        return {**element, "score_positions": positions}


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
) -> grain.DataLoader:
    """A DataLoader yielding dicts of numpy arrays with a leading per-process batch axis.

    `dtypes` are the features' declared dtypes, which every batch is given. With
    `scored_positions` (the dataset's `DatasetSpec.scored_positions`), batches also hold
    `score_positions` int32 [batch, scored_positions]: where each example's loss_mask is nonzero.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= seed < 2**32:
        # Grain's sampler takes a non-negative 32-bit seed; fail here with the reason.
        raise ValueError(f"seed must be in [0, 2**32), got {seed}")
    sampler = grain.IndexSampler(
        num_records=len(source),
        shuffle=shuffle,
        num_epochs=num_epochs,
        seed=seed,
    )
    operations: list[Any] = [_CastToDeclared(dtypes)]
    if scored_positions is not None:
        operations.append(_ScorePositions(scored_positions, dataset_name))
    operations.append(grain.Batch(batch_size=batch_size, drop_remainder=drop_remainder))
    return grain.DataLoader(
        data_source=source,
        sampler=sampler,
        operations=operations,
        worker_count=0,
        shard_options=grain.ShardOptions(
            shard_index=shard_index, shard_count=shard_count, drop_remainder=True
        ),
    )


def iterator_checkpoint_args(iterator: Any, *, restore: bool) -> Any:
    """The Orbax args that save/restore a loader iterator with grain's checkpoint handler.

    Use as one item of an `ocp.args.Composite`, e.g. `data_iter=iterator_checkpoint_args(it,
    restore=False)`; it writes one `process_<i>-of-<n>.json` per process.
    """
    import grain.checkpoint as grain_checkpoint  # needs orbax; only imported when checkpointing

    cls = grain_checkpoint.CheckpointRestore if restore else grain_checkpoint.CheckpointSave
    return cls(item=iterator)
