"""Selective copying (MAD): copy the content tokens of a sequence, skipping the blanks.

Data sheet
- Source: synthetic, generated on the machine by data/mad.py (no download), after MAD's
  `generate_selective_copying_instance` (Poli et al. 2024, "Mechanistic Design and Scaling of
  Hybrid Architectures", github.com/athms/mad-lab). Same parameters give the same examples
  everywhere: numpy PCG64 seeded with (generation_seed, split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 64 with 8 tokens to copy; MAD's baseline is 12800 of length 256 with
  16 to copy, vocabulary 16).
- Generation: content tokens are [0, vocab_size - 2); vocab_size - 2 is the blank and
  vocab_size - 1 the copy token. num_tokens_to_copy random content tokens (with replacement),
  with seq_len - 2 * num_tokens_to_copy blanks inserted among them (each blank goes before a
  uniformly drawn one of the content tokens, as MAD's np.insert), then the copy token, then the
  content tokens again in order. `loss_mask` is 1 exactly at the num_tokens_to_copy positions
  whose targets are the copy: from the copy token on.
- Departures from MAD: the copy is read back as input (teacher forcing: targets are the next
  input token), where MAD shows blanks after the copy token; MAD draws the blanks' places from
  numpy's global generator, here from the example's own.
- Intended use: content-dependent filtering over a long context. Chance accuracy at the scored
  positions is 1 / (vocab_size - 2) (1/14 at the default).
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
class SelectiveCopyingConfig(ParamsConfig):
    vocab_size: int = param(16, "v")
    seq_len: int = param(64, "t")
    num_tokens_to_copy: int = param(8, "c")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("selective_copying", self.params(), [
            (self.vocab_size >= 3, "vocab_size must be >= 3 (content, blank and copy tokens)"),
            (self.num_tokens_to_copy >= 1, "num_tokens_to_copy must be >= 1"),
            (
                self.seq_len >= 2 * self.num_tokens_to_copy + 1,
                "need seq_len >= 2 * num_tokens_to_copy + 1 (at least one blank)",
            ),
            *common_checks(self),
        ])  # fmt: skip


@DATASETS.register("selective_copying")
class SelectiveCopying(SyntheticSequenceBuilder):
    CONFIG_CLASS = SelectiveCopyingConfig
    SOURCE = "data/mad.py selective_copying"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        c = self.config
        tokens, scored = mad.selective_copying(
            rng, vocab_size=c.vocab_size, seq_len=c.seq_len, num_tokens_to_copy=c.num_tokens_to_copy
        )
        return lm_example(tokens, scored)

    def scored_positions(self) -> int:
        return self.config.num_tokens_to_copy
