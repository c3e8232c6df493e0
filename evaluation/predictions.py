"""A trained model's predictions on every scored item of an evaluation split, as numpy arrays.

An item is one scored prediction: a classified image, or one scored position of a sequence
(where its loss_mask is 1). The evaluation suites work on items, so they read the same for images
and for every sequence task. A `Predictor` compiles the model's forward pass once per model
(a model rebuilt for a longer length is another one) and can corrupt each batch's input on the
host first.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import data
from runtime import mesh as mesh_lib
from runtime.assembly import Experiment
from runtime.loop import with_example_mask
from runtime.step import MODEL_INPUT

# Host-side change of one batch's model input: (input array, batch index) -> new input array.
InputTransform = Callable[[np.ndarray, int], np.ndarray]


@dataclasses.dataclass(frozen=True)
class Items:
    """Every scored item of a split, in split order."""

    logits: np.ndarray  # [N, C] float32
    labels: np.ndarray  # [N] int
    example: np.ndarray  # [N] index of the item's example in the split
    position: np.ndarray  # [N] scored sequence position (0 for images)
    attributes: dict[str, np.ndarray]  # name -> [N] str: what the slices suite groups by

    def __len__(self) -> int:
        return len(self.labels)

    @functools.cached_property
    def correct(self) -> np.ndarray:
        # Read by every suite; computed once (cached_property writes past the frozen fields).
        return np.argmax(self.logits, axis=1) == self.labels

    def subset(self, chosen: np.ndarray) -> Items:
        return Items(
            logits=self.logits[chosen],
            labels=self.labels[chosen],
            example=self.example[chosen],
            position=self.position[chosen],
            attributes={k: v[chosen] for k, v in self.attributes.items()},
        )


def _concatenate(parts: list[Items]) -> Items:
    names = parts[0].attributes.keys()
    return Items(
        logits=np.concatenate([p.logits for p in parts]),
        labels=np.concatenate([p.labels for p in parts]),
        example=np.concatenate([p.example for p in parts]),
        position=np.concatenate([p.position for p in parts]),
        attributes={k: np.concatenate([p.attributes[k] for p in parts]) for k in names},
    )


class Predictor:
    """The forward pass of `model` (default: the experiment's) with the trained parameters'
    shardings, returning logits replicated on every device."""

    def __init__(self, exp: Experiment, model: nn.Module | None = None):
        self.exp = exp
        self.model = model or exp.model
        self.input_key = MODEL_INPUT[exp.dataset.spec.kind]

        def logits(params: Any, batch: dict[str, jax.Array]) -> jax.Array:
            # Sowed auxiliary losses are dropped: the collection is not mutable here.
            at = {"positions": batch["score_positions"]} if "score_positions" in batch else {}
            return self.model.apply({"params": params}, batch[self.input_key], train=False, **at)

        # The decoded evaluation batches of each dataset read so far: robustness passes over
        # the same split once per corruption, and decoding costs more than the forward pass.
        self._batches: dict[str, list[dict[str, np.ndarray]]] = {}
        with exp.context():
            self._logits = jax.jit(
                logits,
                in_shardings=(exp.model_shardings, exp.batch_sharding),
                out_shardings=NamedSharding(exp.mesh, P()),
            )

    def run(
        self, params: Any, dataset: data.Dataset, transform: InputTransform | None = None
    ) -> Items:
        """Items of `dataset`'s evaluation split (the first eval.num_batches batches if set)."""
        size = self.exp.config.eval.batch_size
        parts, offset = [], 0
        with self.exp.context():
            for index, batch in enumerate(self._read(dataset)):
                if transform is not None:
                    batch = {**batch, self.input_key: transform(batch[self.input_key], index)}
                real = len(batch[self.input_key])
                padded = mesh_lib.put_batch(with_example_mask(batch, size), self.exp.batch_sharding)
                logits = np.asarray(jax.device_get(self._logits(params, padded)))[:real]
                parts.append(_items(dataset, batch, logits, offset))
                offset += real
        if not parts:
            raise RuntimeError(f"evaluation split {dataset.spec.eval_split!r} is empty")
        return _concatenate(parts)

    def _read(self, dataset: data.Dataset) -> list[dict[str, np.ndarray]]:
        key = dataset.fingerprint["content_hash"]
        if key not in self._batches:
            limit = self.exp.config.eval.num_batches or None
            loader = dataset.eval_loader(self.exp.config.eval.batch_size)
            self._batches[key] = list(itertools.islice(loader, limit))
        return self._batches[key]


class Predictors:
    """One experiment's `Predictor`s, by sequence length (None: the model's own), each made on
    first use: the runs of a group (`runtime.group`, an arm's seeds in one process) share one
    model, so their evaluation suites share its compiled forward passes and decoded batches
    instead of compiling and decoding them again per run."""

    def __init__(self, exp: Experiment):
        self.exp = exp
        self._by_length: dict[int | None, Predictor] = {}

    def at_length(self, seq_len: int | None = None) -> Predictor:
        if seq_len not in self._by_length:
            model = None if seq_len is None else self.exp.model.clone(seq_len=seq_len)
            self._by_length[seq_len] = Predictor(self.exp, model)
        return self._by_length[seq_len]


def _items(
    dataset: data.Dataset, batch: dict[str, np.ndarray], logits: np.ndarray, offset: int
) -> Items:
    """One batch's items: logits [B, C] (images), [B, S, V] at `score_positions`, or [B, T, V]
    (sequences scoring a varying number of positions: the items are where loss_mask is 1)."""
    if dataset.spec.kind == "image":
        rows = np.arange(len(logits))
        positions = np.zeros_like(rows)
        labels, flat = batch["label"], logits
    elif "score_positions" in batch:
        scored = batch["score_positions"]
        rows = np.repeat(np.arange(len(scored)), scored.shape[1])
        positions = scored.reshape(-1)
        labels = batch["targets"][rows, positions]
        flat = logits.reshape(-1, logits.shape[-1])
    else:
        rows, positions = np.nonzero(batch["loss_mask"] > 0)
        labels = batch["targets"][rows, positions]
        flat = logits[rows, positions]
    attributes = dataset.builder.slice_attributes(batch, rows, positions)
    # Classes and groups slice every task that has them (unless the task names them itself).
    for feature, name in (("label", "class"), ("group", "group")):
        if feature in batch and batch[feature].ndim == 1 and name not in attributes:
            attributes[name] = batch[feature][rows].astype(str)
    return Items(
        logits=flat.astype(np.float32),
        labels=np.asarray(labels).astype(np.int64),
        example=offset + rows,
        position=positions.astype(np.int64),
        attributes={k: np.asarray(v).astype(str) for k, v in attributes.items()},
    )
