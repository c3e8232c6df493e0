"""In-context recall (MAD): recall the value bound to a key earlier in the same sequence.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_in_context_recall_instance` (Poli et al. 2024, "Mechanistic Design and Scaling of
  Hybrid Architectures", github.com/athms/mad-lab) in its benchmark setting (multi_query=True).
  Same parameters give the same examples everywhere: numpy PCG64 seeded with (generation_seed,
  split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 64; MAD's baseline is 12800 examples of length 128, vocabulary 16).
- Generation: keys are the tokens [0, vocab_size/2), values [vocab_size/2, vocab_size). Each
  example gives every key a random value (with replacement), then writes key-value pairs with
  keys drawn uniformly with replacement, so keys recur; the last pair repeats a key already
  shown. When seq_len is even the sequence starts with one lone random value token (a whole
  number of pairs must fit the seq_len + 1 tokens). `loss_mask` is 1 at every position whose
  target is the value of a key shown before in the sequence (including the final query).
- Departures from MAD: the loss mask is the same in both splits (MAD trains on every next
  token and scores only the recalls at test time); the first pair is never silently noise.
- Intended use: in-context recall at a small vocabulary, many recalls per sequence. Chance
  accuracy at the scored positions is 1 / (vocab_size - vocab_size // 2) (1/8 at the default),
  guessing among the value tokens.
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data import mad
from data.config import ParamsConfig, param
from data.registry import DATASETS
from data.synthetic import SyntheticSequenceBuilder, check, common_checks, lm_example


@dataclasses.dataclass(eq=False)
class InContextRecallConfig(ParamsConfig):
    vocab_size: int = param(16, "v")
    seq_len: int = param(64, "t")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("in_context_recall", self.params(), [
            (self.vocab_size >= 4, "vocab_size must be >= 4 (keys and values are its halves)"),
            (self.seq_len >= 3, "seq_len must be >= 3 (a pair, then a query of it)"),
            *common_checks(self),
        ])  # fmt: skip


@DATASETS.register("in_context_recall")
class InContextRecall(SyntheticSequenceBuilder):
    CONFIG_CLASS = InContextRecallConfig
    SOURCE = "data/mad.py in_context_recall"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        c = self.config
        return lm_example(*mad.in_context_recall(rng, vocab_size=c.vocab_size, seq_len=c.seq_len))
