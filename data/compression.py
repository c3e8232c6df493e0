"""Compression (MAD), as a causal language-modelling task: reproduce a random sequence.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_compression_instance` (Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
  Architectures", github.com/athms/mad-lab). Same parameters give the same examples everywhere:
  numpy PCG64 seeded with (generation_seed, split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 32, vocabulary 16, as MAD's baseline of 12800).
- Generation: content tokens are [0, vocab_size - 1); vocab_size - 1 is the separator.
  seq_len / 2 random content tokens (with replacement), the separator, then the same tokens
  again. `loss_mask` is 1 exactly at the seq_len / 2 positions whose targets are the
  reproduction: from the separator on.
- Departure from MAD: MAD's compression is an encoder/decoder task: the model reads the
  sequence and a compression token, and a decoder must rebuild the whole sequence from the
  model's single output vector at that token. archlab's models are causal next-token models,
  so here the model reproduces the sequence after the separator with the earlier tokens (and
  its own reproduction so far, by teacher forcing) in context; the information bottleneck is
  the model's state at the separator only for models whose state is bounded (recurrent/SSM
  mixers), not for attention. Results are not comparable to MAD's compression numbers.
- Intended use: a causal copying test at a fixed offset; for recurrent models, a test of how
  much of the sequence the state keeps. Chance accuracy at the scored positions is
  1 / (vocab_size - 1) (1/15 at the default).
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
class CompressionConfig(ParamsConfig):
    vocab_size: int = param(16, "v")
    seq_len: int = param(32, "t")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("compression", self.params(), [
            (self.vocab_size >= 3, "vocab_size must be >= 3 (content tokens and a separator)"),
            (
                self.seq_len >= 2 and self.seq_len % 2 == 0,
                "seq_len must be even and >= 2 (seq_len / 2 tokens, the separator, the copy)",
            ),
            *common_checks(self),
        ])  # fmt: skip


@DATASETS.register("compression")
class Compression(SyntheticSequenceBuilder):
    CONFIG_CLASS = CompressionConfig
    SOURCE = "data/mad.py compression (causal LM version)"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        c = self.config
        return lm_example(*mad.compression(rng, vocab_size=c.vocab_size, seq_len=c.seq_len))

    def scored_positions(self) -> int:
        return self.config.seq_len // 2  # the reproduction
