"""Memorization (MAD): recall values from a key -> value map that is fixed across the dataset.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_memorization_instance` (Poli et al. 2024, "Mechanistic Design and Scaling of
  Hybrid Architectures", github.com/athms/mad-lab). Same parameters give the same map and
  examples everywhere: numpy PCG64 seeded with (generation_seed, 2) for the map and
  (generation_seed, split id) for the examples.
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  2000 + 1000 of length 32, vocabulary 64, i.e. 32 facts; MAD's baseline is 256 examples of
  length 32 over a vocabulary of 256).
- Generation: keys are [0, vocab_size/2), values [vocab_size/2, vocab_size). One random
  bijection from keys to values is drawn for the whole dataset (both splits). Each example
  writes (seq_len + 1) // 2 pairs key, value with distinct keys in random order (with a lone
  leading value token when seq_len is even). `loss_mask` is 1 exactly at the key positions,
  whose targets are the values.
- Departures from MAD: MAD shows an insert token where the value is expected and never shows
  values; here targets are the next input token, so the value follows its key, and keys do not
  repeat within an example (MAD draws them with replacement) so that no value can be copied
  from context. Both splits use the same map: the test split measures how much of the map was
  learnt, not generalization (every key occurs in the train split with near certainty).
- Intended use: factual recall that must be stored in the weights. Chance accuracy at the
  scored positions is 1 / (vocab_size - vocab_size // 2) (1/32 at the default).
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from data import mad
from data.config import ParamsConfig, param
from data.registry import DATASETS
from data.synthetic import SyntheticSequenceBuilder, check, common_checks, lm_example

MAP_STREAM = 2  # the map's generator stream; the splits use 0 and 1


@dataclasses.dataclass(eq=False)
class MemorizationConfig(ParamsConfig):
    vocab_size: int = param(64, "v")
    seq_len: int = param(32, "t")
    train_examples: int = param(2000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("memorization", self.params(), [
            (self.vocab_size >= 4, "vocab_size must be >= 4 (keys and values are its halves)"),
            (self.seq_len >= 1, "seq_len must be >= 1"),
            (
                (self.seq_len + 1) // 2 <= self.vocab_size // 2,
                "need (seq_len + 1) // 2 <= vocab_size // 2 (distinct keys in each example)",
            ),
            *common_checks(self),
        ])  # fmt: skip


@functools.lru_cache(maxsize=16)
def key_value_map(generation_seed: int, vocab_size: int) -> np.ndarray:
    """Entry k is key k's value; the same for every example of the dataset."""
    value_of = mad.memorization_map(
        np.random.default_rng([generation_seed, MAP_STREAM]), vocab_size
    )
    value_of.flags.writeable = False  # shared by the cache
    return value_of


@DATASETS.register("memorization")
class Memorization(SyntheticSequenceBuilder):
    CONFIG_CLASS = MemorizationConfig
    SOURCE = "data/mad.py memorization"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits share the map and the distribution
        c = self.config
        value_of = key_value_map(c.generation_seed, c.vocab_size)
        tokens, scored = mad.memorization(
            rng, vocab_size=c.vocab_size, seq_len=c.seq_len, value_of=value_of
        )
        return lm_example(tokens, scored)

    def scored_positions(self) -> int:
        return (self.config.seq_len + 1) // 2  # one value per pair
