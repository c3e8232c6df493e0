"""What the training loop needs to know about a dataset, before it reads any example."""

from __future__ import annotations

import dataclasses
from typing import Literal


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Shapes and sizes that models and objectives are built from.

    Sequence datasets set `vocab_size` and `seq_len`; image datasets set `num_classes` and
    `image_shape` (H, W, C); the fields that do not apply are None.

    `scored_positions`: every example scores exactly this many positions (its loss_mask sums to
    it); None when the count varies. When set, the loaders add `score_positions` [S], the
    indices where loss_mask is 1, and logits are computed only there.
    """

    name: str
    kind: Literal["sequence", "image"]
    splits: dict[str, int]
    eval_split: str
    train_split: str = "train"
    vocab_size: int | None = None
    seq_len: int | None = None
    num_classes: int | None = None
    image_shape: tuple[int, ...] | None = None
    scored_positions: int | None = None
