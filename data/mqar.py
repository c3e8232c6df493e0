"""Multi-query associative recall (MQAR), Zoology-style: a synthetic test of in-context recall.

Data sheet
- Source: synthetic, generated on the machine by this module (no download). Same parameters give
  the same examples everywhere: a numpy PCG64 generator seeded with (generation_seed, split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults 20000 +
  1000 of length 64, about 12 MB prepared).
- Generation: token 0 is never used (free for padding). Each example draws `num_kv_pairs`
  distinct keys from the lower half of the vocabulary [1, vocab_size/2) and as many distinct
  values from the upper half [vocab_size/2, vocab_size), and writes them first as
  k1 v1 k2 v2 .... The rest is random filler (any non-zero token except this example's keys),
  into which `num_queries` distinct keys are placed, each directly followed by its value, at
  non-overlapping random positions. With targets = the token stream shifted by one, the target
  at a query position is the queried key's value; `loss_mask` is 1 exactly there.
- Intended use: checking that a sequence architecture can retrieve from context. Chance accuracy
  at the answer positions is 1 / (vocab_size / 2); a 2-layer attention model learns it.
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow_datasets as tfds

from data.builder import ArchlabBuilder, sequence_features
from data.config import DataConfigError, ParamsConfig, param
from data.registry import DATASETS
from data.spec import DatasetSpec

# Split ids mix into the generator seed so train and test are different streams.
_SPLIT_IDS = {"train": 0, "test": 1}


@dataclasses.dataclass(eq=False)
class MqarConfig(ParamsConfig):
    vocab_size: int = param(256, "v")
    seq_len: int = param(64, "t")
    num_kv_pairs: int = param(4, "k")
    num_queries: int = param(4, "q")
    train_examples: int = param(20000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        half = self.vocab_size // 2
        checks = [
            (self.vocab_size >= 4 and self.vocab_size % 2 == 0, "vocab_size must be even and >= 4"),
            (self.num_kv_pairs >= 1, "num_kv_pairs must be >= 1"),
            (
                self.num_kv_pairs <= half - 1,
                f"num_kv_pairs must be <= {half - 1} (the keys "
                f"[1, {half}) are the lower half of vocab_size={self.vocab_size} minus token 0)",
            ),
            (1 <= self.num_queries <= self.num_kv_pairs, "need 1 <= num_queries <= num_kv_pairs"),
            # Each query takes two tokens (key, then its value) after the 2*K pair tokens, within
            # the seq_len + 1 tokens that give seq_len (input, target) positions.
            (
                2 * self.num_kv_pairs + 2 * self.num_queries <= self.seq_len + 1,
                "need 2*num_kv_pairs + 2*num_queries <= seq_len + 1",
            ),
            (self.train_examples >= 1 and self.eval_examples >= 1, "example counts must be >= 1"),
            (self.generation_seed >= 0, "generation_seed must be >= 0"),
        ]
        for ok, message in checks:
            if not ok:
                raise DataConfigError(f"mqar: {message}; got {self.params()}")


def make_example(rng: np.random.Generator, config: MqarConfig) -> dict[str, np.ndarray]:
    """One MQAR sequence as (inputs, targets, loss_mask)."""
    vocab, seq_len = config.vocab_size, config.seq_len
    k, q, half = config.num_kv_pairs, config.num_queries, config.vocab_size // 2
    keys = rng.choice(np.arange(1, half), size=k, replace=False)
    values = rng.choice(np.arange(half, vocab), size=k, replace=False)
    tokens = np.empty(seq_len + 1, dtype=np.int32)
    tokens[0 : 2 * k : 2] = keys
    tokens[1 : 2 * k : 2] = values
    # Filler never repeats this example's keys, so a key appears only in its pair or as a query.
    filler = np.setdiff1d(np.arange(1, vocab), keys)
    tokens[2 * k :] = rng.choice(filler, size=seq_len + 1 - 2 * k)
    # Queries sit in disjoint two-token slots after the pairs: key at p, its value at p + 1.
    slots = rng.choice((seq_len + 1 - 2 * k) // 2, size=q, replace=False)
    positions = 2 * k + 2 * slots
    queried = rng.choice(k, size=q, replace=False)
    tokens[positions] = keys[queried]
    tokens[positions + 1] = values[queried]
    loss_mask = np.zeros(seq_len, dtype=np.float32)
    loss_mask[positions] = 1.0
    return {"inputs": tokens[:-1], "targets": tokens[1:], "loss_mask": loss_mask}


@DATASETS.register("mqar")
class Mqar(ArchlabBuilder):
    CONFIG_CLASS = MqarConfig
    LICENSE = "Generated data; same license as archlab."

    def _features(self) -> tfds.features.FeaturesDict:
        return sequence_features(self.config.seq_len)

    def _split_generators(self, dl_manager: Any) -> dict[str, Iterator]:
        del dl_manager  # nothing to download
        sizes = {"train": self.config.train_examples, "test": self.config.eval_examples}
        return {split: self._generate_examples(split, n) for split, n in sizes.items()}

    def _generate_examples(self, split: str, num_examples: int) -> Iterator[tuple[int, dict]]:
        rng = np.random.default_rng([self.config.generation_seed, _SPLIT_IDS[split]])
        for i in range(num_examples):
            yield i, make_example(rng, self.config)

    def spec(self) -> DatasetSpec:
        return DatasetSpec(
            name=self.name,
            kind="sequence",
            splits=self.split_sizes(),
            eval_split="test",
            vocab_size=self.config.vocab_size,
            seq_len=self.config.seq_len,
        )

    def data_sheet(self) -> dict[str, Any]:
        n = self.config.train_examples + self.config.eval_examples
        return {
            "source": "synthetic (archlab data/mqar.py, numpy PCG64 from generation_seed)",
            "size": f"{n} sequences of {self.config.seq_len} tokens",
        }
