"""The base of the generated sequence tasks (mqar, induction_head, the MAD tasks, ...).

Such a task is a function from a numpy generator to one example; the builder fixes the rest: the
stored features (`inputs`, `targets`, `loss_mask` of length `seq_len`), a `train` and a `test`
split of `train_examples` and `eval_examples` examples, each split drawn in order from its own
PCG64 stream seeded with (generation_seed, split id), and the spec and data sheet.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds

from data.builder import ArchlabBuilder, sequence_features
from data.config import DataConfigError
from data.spec import DatasetSpec

# Split ids mix into the generator seed so train and test are different streams.
SPLIT_IDS = {"train": 0, "test": 1}


def split_rng(generation_seed: int, split: str) -> np.random.Generator:
    """The generator a split's examples are drawn from, in order."""
    return np.random.default_rng([generation_seed, SPLIT_IDS[split]])


def lm_example(tokens: np.ndarray, scored: np.ndarray) -> dict[str, np.ndarray]:
    """Next-token features from seq_len + 1 tokens; `scored[t]` marks the tokens to predict.

    Position t reads tokens[t] and is trained to give tokens[t + 1], so loss_mask[t] is
    scored[t + 1] (tokens[0] is never a target).
    """
    tokens = np.asarray(tokens, dtype=np.int32)
    scored = np.asarray(scored, dtype=bool)
    assert tokens.shape == scored.shape and tokens.ndim == 1, (tokens.shape, scored.shape)
    return {
        "inputs": tokens[:-1],
        "targets": tokens[1:],
        "loss_mask": scored[1:].astype(np.float32),
    }


class SyntheticSequenceBuilder(ArchlabBuilder, skip_registration=True):
    """A generated next-token task; its config has vocab_size, seq_len, train_examples,
    eval_examples and generation_seed."""

    LICENSE = "Generated data; same license as archlab."
    # What the data sheet's `source` names, e.g. "data/mqar.py".
    SOURCE: ClassVar[str]

    @abc.abstractmethod
    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        """One example of `split`, drawing only from `rng`."""

    def scored_positions(self) -> int | None:
        """How many positions every example scores; None when it varies (see DatasetSpec)."""
        return None

    def _features(self) -> tfds.features.FeaturesDict:
        return sequence_features(self.config.seq_len)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        sizes = {"train": self.config.train_examples, "test": self.config.eval_examples}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        rng = split_rng(self.config.generation_seed, split)
        for i in range(num_examples):
            yield i, self.make_example(rng, split)

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="test",
            vocab_size=self.config.vocab_size,
            seq_len=self.config.seq_len,
            scored_positions=self.scored_positions(),
        )

    def data_sheet(self) -> dict[str, Any]:
        n = self.config.train_examples + self.config.eval_examples
        return {
            "source": f"synthetic (archlab {self.SOURCE}, numpy PCG64 from generation_seed)",
            "size": f"{n} sequences of {self.config.seq_len} tokens",
        }


def check(task: str, params: dict[str, Any], checks: list[tuple[bool, str]]) -> None:
    """Raises DataConfigError naming the first failed check and the parameters asked for."""
    for ok, message in checks:
        if not ok:
            raise DataConfigError(f"{task}: {message}; got {params}")


def common_checks(config: Any) -> list[tuple[bool, str]]:
    """The checks every SyntheticSequenceBuilder config shares."""
    return [
        (config.train_examples >= 1 and config.eval_examples >= 1, "example counts must be >= 1"),
        (config.generation_seed >= 0, "generation_seed must be >= 0"),
    ]
