"""Modular arithmetic: complete "a op b = c (mod p)", trained on a fraction of all (a, b) pairs.

Data sheet
- Source: synthetic, generated on the machine by this module (no download): the full table of
  the operation modulo a prime, as in the grokking experiments (Power et al. 2022).
- Size: every pair (a, b) in [0, p)^2 (for `div`, b != 0), split at random into a `train`
  split of round(train_fraction * N) examples and a `test` split of the rest; with the defaults
  (p = 97, add, 0.5) 4704 + 4705 sequences of 4 int32 tokens.
- Generation: tokens 0..p-1 are the numbers, p is the operation's token and p + 1 is '='
  (vocab_size = p + 2). An example is the 5 tokens a op b = c, c = a + b, a - b, a * b or
  a * b^-1 (all mod p) for operation add, sub, mul, div; inputs are `a op b =`, targets
  `op b = c`, and `loss_mask` is 1 only at the last position, whose target is c. The pairs are
  put in an order drawn by a numpy PCG64 generator seeded with generation_seed; the train
  split is the first part of that order, the test split the rest, so no pair is in both.
- Intended use: generalization from a partial operation table (grokking); the test split
  holds only unseen pairs. Chance accuracy at the scored position is 1 / p (1/97 at the
  default).
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.builder import ArchlabBuilder, sequence_features
from data.config import ParamsConfig, param
from data.registry import DATASETS
from data.spec import DatasetSpec
from data.synthetic import check, lm_example

OPERATIONS = ("add", "sub", "mul", "div")
SEQ_LEN = 4  # a op b = -> op b = c


@dataclasses.dataclass(eq=False)
class ModularArithmeticConfig(ParamsConfig):
    prime: int = param(97, "p")
    operation: str = param("add", "o", choices=OPERATIONS)
    train_fraction: float = param(0.5, "f")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        n = num_pairs(self.prime, self.operation) if self.prime >= 2 else 0
        check("modular_arithmetic", self.params(), [
            (is_prime(self.prime), "prime must be a prime number"),
            (
                0.0 < self.train_fraction < 1.0 and 1 <= round(self.train_fraction * n) < n,
                "train_fraction must leave at least one pair in each split",
            ),
            (self.generation_seed >= 0, "generation_seed must be >= 0"),
        ])  # fmt: skip


def is_prime(n: int) -> bool:
    return n >= 2 and all(n % d for d in range(2, int(n**0.5) + 1))


def num_pairs(p: int, operation: str) -> int:
    return p * (p - 1) if operation == "div" else p * p


def all_pairs(p: int, operation: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a, b, c) over every pair the operation is defined on, in (a, b) order."""
    a, b = np.divmod(np.arange(p * p, dtype=np.int64), p)
    if operation == "div":
        a, b = a[b != 0], b[b != 0]
    if operation == "add":
        c = a + b
    elif operation == "sub":
        c = a - b
    elif operation == "mul":
        c = a * b
    else:  # div: b^-1 = b^(p-2) by Fermat
        c = a * np.array([pow(int(x), p - 2, p) for x in range(p)])[b]
    return a, b, c % p


def split_pairs(config: ModularArithmeticConfig) -> dict[str, np.ndarray]:
    """Each split's examples as rows (a, b, c), train first in the shuffled order."""
    rows = np.stack(all_pairs(config.prime, config.operation), axis=1)
    order = np.random.default_rng(config.generation_seed).permutation(len(rows))
    n_train = round(config.train_fraction * len(rows))
    return {"train": rows[order[:n_train]], "test": rows[order[n_train:]]}


def make_example(a: int, b: int, c: int, p: int) -> dict[str, np.ndarray]:
    tokens = np.array([a, p, b, p + 1, c])
    scored = np.array([False, False, False, False, True])
    return lm_example(tokens, scored)


@DATASETS.register("modular_arithmetic")
class ModularArithmetic(ArchlabBuilder):
    CONFIG_CLASS = ModularArithmeticConfig
    LICENSE = "Generated data; same license as archlab."

    def _features(self) -> tfds.features.FeaturesDict:
        return sequence_features(SEQ_LEN)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        return {
            split: self._generate_examples(rows) for split, rows in split_pairs(self.config).items()
        }

    def _generate_examples(self, rows: np.ndarray) -> Iterator[tuple[int, dict]]:
        for i, (a, b, c) in enumerate(rows.tolist()):
            yield i, make_example(a, b, c, self.config.prime)

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="test",
            vocab_size=self.config.prime + 2,
            seq_len=SEQ_LEN,
            scored_positions=1,  # c
        )

    def data_sheet(self) -> dict[str, Any]:
        c = self.config
        n = num_pairs(c.prime, c.operation)
        return {
            "source": f"synthetic (archlab data/modular_arithmetic.py: a {c.operation} b mod "
            f"{c.prime}, split by numpy PCG64 from generation_seed)",
            "size": f"{n} sequences of {SEQ_LEN} tokens (all pairs), train_fraction "
            f"{c.train_fraction}",
        }
