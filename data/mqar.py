"""Multi-query associative recall (MQAR), Zoology-style: a synthetic test of in-context recall.

Data sheet
- Source: synthetic, generated on the machine by this module (no download). Same parameters give
  the same examples everywhere: a numpy PCG64 generator seeded with (generation_seed, split id).
  Follows `multiquery_ar` of Zoology (Arora, Eyuboglu et al. 2023, github.com/HazyResearch/zoology).
- Size: `train_examples` + `eval_examples` sequences of `seq_len` int32 tokens (defaults 20000 +
  1000 of length 64, about 12 MB prepared).
- Generation: token 0 is never used (free for padding). Each example draws `num_kv_pairs`
  distinct keys from the lower half of the vocabulary [1, vocab_size/2) and as many distinct
  values from the upper half [vocab_size/2, vocab_size), and writes them first as
  k1 v1 k2 v2 .... The rest of the seq_len + 1 tokens is the query region, cut into
  (seq_len + 1 - 2 * num_kv_pairs) // 2 two-token slots and filled with random filler (any
  non-zero token except this example's keys), or with token 0 under `filler=pad` (Zoology's
  random_non_queries=False; the same keys, values and query slots as the random filler).
  `num_queries` distinct keys are each queried once: put in a slot of its own, directly
  followed by its value. Slots are drawn without replacement with P(slot i) proportional to
  (i + 1) ** (power_a - 1), i = 0 being the slot right after the pairs (Zoology's power law:
  with the default power_a = 0.01 short gaps between the pairs and a query are far more likely;
  power_a = 1 is uniform). With targets = the token stream shifted by
  one, the target at a query position is the queried key's value; `loss_mask` is 1 exactly there.
  With the default `answers=hidden` the input after a query key is filler instead of the value,
  which is then only a target (Zoology); with `answers=shown` the value follows its query key in
  the stream, so the values already answered are visible to later queries, and a model that
  binds nothing answers the n-th of K queries by elimination (see `query_order`). Other
  differences from Zoology: a query never repeats a key (Zoology queries all keys, num_queries =
  num_kv_pairs), and the filler never holds a key.
- Intended use: checking that a sequence architecture can retrieve from context. Chance accuracy
  at the answer positions is 1 / (vocab_size / 2) (guessing among the upper-half tokens); a
  2-layer attention model learns it.
- License: generated data, no third-party content; same license as archlab.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from data.config import ParamsConfig, param
from data.registry import DATASETS
from data.synthetic import SyntheticSequenceBuilder, check, common_checks, lm_example


@dataclasses.dataclass(eq=False)
class MqarConfig(ParamsConfig):
    vocab_size: int = param(256, "v")
    seq_len: int = param(64, "t")
    num_kv_pairs: int = param(4, "k")
    num_queries: int = param(4, "q")
    power_a: float = param(0.01, "a")
    train_examples: int = param(20000, "n")
    eval_examples: int = param(1000, "e")
    generation_seed: int = param(0, "s")
    # random: filler tokens drawn from the vocabulary (Zoology's random_non_queries=True), half
    # of them from the keys' lower half; pad: every filler position holds token 0
    # (random_non_queries=False).
    filler: str = param("random", "f", choices=("random", "pad"))
    # hidden: the input after a query key is filler and its value only a target (Zoology);
    # shown: the value is the next input token, as everywhere in the stream. Shown answers let
    # a model answer later queries by eliminating the values already given (see `query_order`):
    # about 0.52 accuracy at 4 queries with no recall at all.
    answers: str = param("hidden", "r", choices=("hidden", "shown"))

    def validate(self) -> None:
        half = self.vocab_size // 2
        check("mqar", self.params(), [
            (self.vocab_size >= 4 and self.vocab_size % 2 == 0, "vocab_size must be even and >= 4"),
            (self.num_kv_pairs >= 1, "num_kv_pairs must be >= 1"),
            (
                self.num_kv_pairs <= half - 1,
                f"num_kv_pairs must be <= {half - 1} (the keys "
                f"[1, {half}) are the lower half of vocab_size={self.vocab_size} minus token 0)",
            ),
            (1 <= self.num_queries <= self.num_kv_pairs, "need 1 <= num_queries <= num_kv_pairs"),
            # Each query takes a two-token slot (key, then its value) after the 2*K pair tokens,
            # within the seq_len + 1 tokens that give seq_len (input, target) positions.
            (
                2 * self.num_kv_pairs + 2 * self.num_queries <= self.seq_len + 1,
                "need 2*num_kv_pairs + 2*num_queries <= seq_len + 1",
            ),
            (self.power_a > 0, "power_a must be > 0 (1 = uniform gaps, small = short gaps)"),
            *common_checks(self),
        ])  # fmt: skip


@functools.lru_cache(maxsize=64)
def gap_probabilities(num_slots: int, power_a: float) -> np.ndarray:
    """P(slot i) for i in [0, num_slots): proportional to (i + 1) ** (power_a - 1)."""
    p = np.arange(1, num_slots + 1, dtype=np.float64) ** (power_a - 1)
    p /= p.sum()
    p.flags.writeable = False  # shared by the cache
    return p


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
    if config.filler == "pad":
        # Drawn and then overwritten, so that both fillers give the same keys, values and slots.
        tokens[2 * k :] = 0
    # Queries sit in disjoint two-token slots after the pairs (key at p, its value at p + 1), the
    # slots drawn by the power law over their distance from the pairs.
    num_slots = (seq_len + 1 - 2 * k) // 2
    slots = rng.choice(
        num_slots, size=q, replace=False, p=gap_probabilities(num_slots, config.power_a)
    )
    positions = 2 * k + 2 * slots
    queried = rng.choice(k, size=q, replace=False)
    tokens[positions] = keys[queried]
    tokens[positions + 1] = values[queried]
    scored = np.zeros(seq_len + 1, dtype=bool)
    scored[positions + 1] = True
    example = lm_example(tokens, scored)
    if config.answers == "hidden":
        # Drawn after the example's other draws: from the same generator state, both settings
        # give the same keys, values, slots and targets.
        answer_inputs = positions[positions + 1 < seq_len] + 1
        hidden = rng.choice(filler, size=len(answer_inputs)) if config.filler == "random" else 0
        example["inputs"] = example["inputs"].copy()  # a view that shares the targets' tokens
        example["inputs"][answer_inputs] = hidden
    return example


@DATASETS.register("mqar")
class Mqar(SyntheticSequenceBuilder):
    CONFIG_CLASS = MqarConfig
    SOURCE = "data/mqar.py"

    def make_example(self, rng: np.random.Generator, split: str) -> dict[str, np.ndarray]:
        del split  # both splits come from the same distribution
        return make_example(rng, self.config)

    def scored_positions(self) -> int:
        return self.config.num_queries

    def slice_attributes(
        self, batch: dict[str, np.ndarray], rows: np.ndarray, positions: np.ndarray
    ) -> dict[str, np.ndarray]:
        """`query_key_distance`: how far back the queried key's pair lies (input position of the
        query minus that of the key), in power-of-two buckets.

        `query_order`: 1 for an example's first query, 2 for its second, .... With
        `answers=shown` each answered value follows its query in the stream, so a model that has
        not bound keys to values can still answer the n-th of K queries by elimination, with
        accuracy 1 / (K - n + 1): chance for the first query, certainty for the K-th of K. This
        slice tells binding from elimination."""
        k = self.config.num_kv_pairs
        inputs = batch["inputs"][rows]
        keys = inputs[:, 0 : 2 * k : 2]
        queried = inputs[np.arange(len(rows)), positions]  # the key read at the scored position
        pair = np.argmax(keys == queried[:, None], axis=1)
        # Filler never holds a key, so every key after the pairs and before `position` is an
        # earlier query.
        index = np.arange(inputs.shape[1])[None, :]
        before = (index >= 2 * k) & (index < positions[:, None])
        is_key = (inputs[:, :, None] == keys[:, None, :]).any(axis=-1)
        order = 1 + np.count_nonzero(is_key & before, axis=1)
        return {
            "query_key_distance": distance_buckets(positions - 2 * pair),
            "query_order": order.astype(str),
        }

    def slice_variants(self) -> dict[str, dict[str, dict[str, int]]]:
        """`num_kv_pairs`: the same task with 1, 2, 4, ... pairs (up to 4x the trained number),
        each variant an evaluation set of its own (Zoology's sweep over K)."""
        c = self.config
        variants = {}
        for k in sorted({2**i for i in range(8)} | {c.num_kv_pairs}):
            q = min(c.num_queries, k)
            if k > 4 * c.num_kv_pairs or k > c.vocab_size // 2 - 1 or 2 * (k + q) > c.seq_len + 1:
                continue
            variants[str(k)] = {"num_kv_pairs": k, "num_queries": q}
        return {"num_kv_pairs": variants}


def distance_buckets(distance: np.ndarray) -> np.ndarray:
    """1, 2-3, 4-7, 8-15, ...: labels of the power-of-two bucket each distance (>= 1) is in."""
    low = 2 ** np.floor(np.log2(np.maximum(distance, 1))).astype(np.int64)
    return np.array([f"{a}" if a == 1 else f"{a}-{2 * a - 1}" for a in low])
