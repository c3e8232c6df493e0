"""Noisy in-context recall (MAD): in-context recall with pairs of noise tokens in between.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_noisy_in_context_recall_instance` (Poli et al. 2024, "Mechanistic Design and
  Scaling of Hybrid Architectures", github.com/athms/mad-lab), multi_query=True. Same
  parameters give the same examples everywhere: numpy PCG64 seeded with (generation_seed,
  split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 64; MAD's baseline is 12800 of length 128, vocabulary 32 of which 16
  noise, frac_noise 0.2).
- Generation: with C = vocab_size - noise_vocab_size, keys are [0, C/2), values [C/2, C) and
  noise tokens [C, vocab_size). As in_context_recall (random value per key, key-value pairs
  with recurring keys, a final query of a key already shown, a lone leading value token when
  seq_len is even), except that each pair but one is replaced, with probability frac_noise, by
  two random noise tokens. `loss_mask` is 1 at every position whose target is the value of a
  key shown before in the sequence; noise is never scored.
- Departures from MAD: the loss mask is the same in both splits (MAD trains on every next
  token); at least one real pair always precedes the final query (MAD can, rarely, query a key
  it never showed).
- Intended use: in-context recall that must ignore distractors. Chance accuracy at the scored
  positions is 1 / (C - C // 2) (1/8 at the default).
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
class NoisyRecallConfig(ParamsConfig):
    vocab_size: int = param(32, "v")
    seq_len: int = param(64, "t")
    noise_vocab_size: int = param(16, "z")
    frac_noise: float = param(0.2, "f")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("noisy_recall", self.params(), [
            (self.noise_vocab_size >= 1, "noise_vocab_size must be >= 1"),
            (
                self.vocab_size - self.noise_vocab_size >= 4,
                "vocab_size - noise_vocab_size must be >= 4 (keys and values are its halves)",
            ),
            (0.0 <= self.frac_noise < 1.0, "frac_noise must be in [0, 1)"),
            (self.seq_len >= 3, "seq_len must be >= 3 (a pair, then a query of it)"),
            *common_checks(self),
        ])  # fmt: skip


@DATASETS.register("noisy_recall")
class NoisyRecall(SyntheticSequenceBuilder):
    CONFIG_CLASS = NoisyRecallConfig
    SOURCE = "data/mad.py in_context_recall with noise"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        c = self.config
        tokens, scored = mad.in_context_recall(
            rng,
            vocab_size=c.vocab_size,
            seq_len=c.seq_len,
            noise_vocab_size=c.noise_vocab_size,
            frac_noise=c.frac_noise,
        )
        return lm_example(tokens, scored)
