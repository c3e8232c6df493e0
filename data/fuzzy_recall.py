"""Fuzzy in-context recall (MAD): recall where keys and values are motifs of varying length.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_fuzzy_in_context_recall_instance` (Poli et al. 2024, "Mechanistic Design and
  Scaling of Hybrid Architectures", github.com/athms/mad-lab), multi_query=True. Same
  parameters give the same examples everywhere: numpy PCG64 seeded with (generation_seed,
  split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 64; MAD's baseline is 12800 of length 128, vocabulary 16, motifs of
  up to 3 tokens).
- Generation: with C = vocab_size - 1, key tokens are [0, C/2), value tokens [C/2, C), and
  vocab_size - 1 is the padding token. A key is a motif of 1..k_motif_size distinct key
  tokens (in the test split always k_motif_size), a value a motif of 1..v_motif_size distinct
  value tokens, all uniform. A random probe pair is placed at a random point, other pairs
  (recurring keys keep the value they were first given) are appended while the sequence is
  shorter than seq_len - |probe| - k_motif_size - v_motif_size, the probe key and value end
  the sequence, and padding fills the left. `loss_mask` is 1 at every position whose target is
  a value token of a key shown before in the sequence (always including the final probe).
- Departures from MAD: the loss mask is the same in both splits (MAD trains on every next
  token); the planted probe is always placed inside the sequence (MAD's position can fall past
  its end, leaving the final query unanswerable).
- Intended use: recall that needs to aggregate several tokens into a key. Chance accuracy at
  the scored positions is about 1 / (C - C // 2) (1/8 at the default).
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
class FuzzyRecallConfig(ParamsConfig):
    vocab_size: int = param(16, "v")
    seq_len: int = param(64, "t")
    k_motif_size: int = param(3, "k")
    v_motif_size: int = param(3, "w")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        value_lo, value_hi = mad.recall_vocab(self.vocab_size, 0, num_special=1)
        body = mad.fuzzy_recall_min_body(self.seq_len, self.k_motif_size, self.v_motif_size)
        check("fuzzy_recall", self.params(), [
            (self.k_motif_size >= 1 and self.v_motif_size >= 1, "motif sizes must be >= 1"),
            (
                value_lo >= self.k_motif_size,
                f"k_motif_size must be <= {value_lo}, the number of key tokens "
                "(vocab_size - 1) // 2",
            ),
            (
                value_hi - value_lo >= self.v_motif_size,
                f"v_motif_size must be <= {value_hi - value_lo}, the number of value tokens",
            ),
            (body >= 1, "need seq_len > 2 * (k_motif_size + v_motif_size)"),
            *common_checks(self),
        ])  # fmt: skip


@DATASETS.register("fuzzy_recall")
class FuzzyRecall(SyntheticSequenceBuilder):
    CONFIG_CLASS = FuzzyRecallConfig
    SOURCE = "data/mad.py fuzzy_recall"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        c = self.config
        tokens, scored = mad.fuzzy_recall(
            rng,
            vocab_size=c.vocab_size,
            seq_len=c.seq_len,
            k_motif_size=c.k_motif_size,
            v_motif_size=c.v_motif_size,
            is_training=split == "train",
        )
        return lm_example(tokens, scored)
