"""Induction head: after a trigger token recurs, predict the token that followed it before.

Data sheet
- Source: synthetic, generated on the machine by this module (no download). Same parameters
  give the same examples everywhere: a numpy PCG64 generator seeded with (generation_seed,
  split id).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults
  10000 + 1000 of length 64).
- Generation: ordinary tokens are [0, vocab_size - 1); vocab_size - 1 is the trigger. An
  example is seq_len + 1 uniform random ordinary tokens in which the trigger is written twice:
  at a uniform position i in [0, seq_len - 3], and at position seq_len - 1, the last input.
  The token after the second trigger (the last target) is the token at i + 1, the one that
  followed the first trigger. `loss_mask` is 1 only at that last position. The trigger occurs
  nowhere else; the answer token may also occur elsewhere by chance.
- Intended use: the classic induction-head probe (Olsson et al. 2022): a 2-layer attention
  model solves it with a previous-token head and an induction head. Chance accuracy at the
  scored position is 1 / (vocab_size - 1) (1/63 at the default).
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from data.config import ParamsConfig, param
from data.registry import DATASETS
from data.synthetic import SyntheticSequenceBuilder, check, common_checks, lm_example


@dataclasses.dataclass(eq=False)
class InductionHeadConfig(ParamsConfig):
    vocab_size: int = param(64, "v")
    seq_len: int = param(64, "t")
    train_examples: int = param(10000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")

    def validate(self) -> None:
        check("induction_head", self.params(), [
            (self.vocab_size >= 3, "vocab_size must be >= 3 (ordinary tokens and a trigger)"),
            (self.seq_len >= 3, "seq_len must be >= 3 (trigger, its follower, trigger again)"),
            *common_checks(self),
        ])  # fmt: skip


def make_example(rng: np.random.Generator, config: InductionHeadConfig) -> dict[str, np.ndarray]:
    """One sequence as (inputs, targets, loss_mask)."""
    seq_len, trigger = config.seq_len, config.vocab_size - 1
    tokens = rng.integers(0, trigger, size=seq_len + 1)
    first = rng.integers(0, seq_len - 2)  # its follower, at first + 1 <= seq_len - 2, is ordinary
    tokens[first] = trigger
    tokens[seq_len - 1] = trigger
    tokens[seq_len] = tokens[first + 1]
    scored = np.zeros(seq_len + 1, dtype=bool)
    scored[seq_len] = True
    return lm_example(tokens, scored)


@DATASETS.register("induction_head")
class InductionHead(SyntheticSequenceBuilder):
    CONFIG_CLASS = InductionHeadConfig
    SOURCE = "data/induction_head.py"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        return make_example(rng, self.config)

    def scored_positions(self) -> int:
        return 1  # the answer after the second trigger
