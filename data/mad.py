"""Generators of the MAD synthetic tasks, as causal next-token examples.

MAD is the task suite of Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid
Architectures" (reference generators: github.com/athms/mad-lab, mad/data/instances.py). Each
function here draws one example from a numpy generator, keeping MAD's vocabulary layout and
sampling, and returns `seq_len + 1` tokens plus a mask of the tokens to predict (see
`data.synthetic.lm_example`). The thin builders (in_context_recall.py, noisy_recall.py,
fuzzy_recall.py, selective_copying.py, compression.py, memorization.py) hold the parameters and
each task's data sheet, which says where it departs from MAD.

Shared departures from MAD: targets are always the next input token (MAD's copying and
memorization targets are not), and the loss mask marks the scored tokens in both splits (MAD
trains the recall tasks on every next token and scores only at test time).

Pair-structured tasks (the recall tasks, memorization) need a whole number of pairs in their
seq_len + 1 tokens; when seq_len is even, the sequence therefore starts with one lone random
value token, never scored, as if the tail of an earlier pair.
"""

from __future__ import annotations

import numpy as np

Tokens = tuple[np.ndarray, np.ndarray]  # (seq_len + 1 tokens, which of them are scored)


def recall_vocab(vocab_size: int, noise_vocab_size: int, num_special: int) -> tuple[int, int]:
    """(first value token, end of values) for MAD's recall layout: keys [0, first value),
    values [first value, end), then noise tokens, then `num_special` special tokens."""
    content = vocab_size - num_special - noise_vocab_size
    return content // 2, content


def _lead(rng: np.random.Generator, seq_len: int, value_lo: int, value_hi: int) -> np.ndarray:
    # One lone value token when seq_len + 1 is odd (see the module docstring).
    return rng.integers(value_lo, value_hi, size=1 - seq_len % 2)


def in_context_recall(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    noise_vocab_size: int = 0,
    frac_noise: float = 0.0,
) -> Tokens:
    """MAD's (noisy) in-context recall, multi-query.

    Keys [0, C//2), values [C//2, C) with C = vocab_size - noise_vocab_size, noise tokens
    [C, vocab_size). Each example draws a value per key (with replacement, so two keys may
    share one) and writes key-value pairs whose keys are drawn uniformly with replacement; each
    pair is, with probability frac_noise, two random noise tokens instead (never all of them).
    The last pair repeats a key already shown. Scored: every value whose key was shown earlier.
    """
    value_lo, value_hi = recall_vocab(vocab_size, noise_vocab_size, num_special=0)
    num_pairs = (seq_len + 1) // 2 - 1  # before the final probe pair
    lead = _lead(rng, seq_len, value_lo, value_hi)
    table = rng.integers(value_lo, value_hi, size=value_lo)  # this example's value of each key
    keys = rng.integers(0, value_lo, size=num_pairs)
    pairs = np.stack([keys, table[keys]], axis=1)
    is_noise = rng.random(num_pairs) < frac_noise
    is_noise[rng.integers(num_pairs)] = False  # at least one real pair before the probe
    if noise_vocab_size > 0:
        noise = rng.integers(value_hi, vocab_size, size=(num_pairs, 2))
        pairs[is_noise] = noise[is_noise]
    real = np.flatnonzero(~is_noise)
    _, first = np.unique(keys[real], return_index=True)
    repeated = np.zeros(num_pairs, dtype=bool)
    repeated[real] = True
    repeated[real[first]] = False
    probe = rng.choice(np.unique(keys[real]))
    tokens = np.concatenate([lead, pairs.ravel(), [probe, table[probe]]])
    pair_scored = np.stack([np.zeros(num_pairs, dtype=bool), repeated], axis=1).ravel()
    scored = np.concatenate([np.zeros(len(lead), dtype=bool), pair_scored, [False, True]])
    return tokens, scored


def fuzzy_recall_min_body(seq_len: int, k_motif_size: int, v_motif_size: int) -> int:
    """The least length up to which fuzzy recall adds pairs (the bound with the longest probe);
    it must be >= 1 for the probe to have a place in the body."""
    return seq_len - 2 * (k_motif_size + v_motif_size)


def fuzzy_recall(
    rng: np.random.Generator,
    *,
    vocab_size: int,
    seq_len: int,
    k_motif_size: int,
    v_motif_size: int,
    is_training: bool,
) -> Tokens:
    """MAD's fuzzy in-context recall, multi-query.

    Keys are motifs of 1..k_motif_size distinct tokens from [0, C//2) (test split: always
    k_motif_size), values motifs of 1..v_motif_size distinct tokens from [C//2, C), C =
    vocab_size - 1; token vocab_size - 1 pads on the left. A random probe pair is placed at a
    random point of the sequence and repeated at its end. Pairs are appended while the sequence
    is shorter than the bound; a key keeps the value it got when first shown. Scored: every
    value token of a key shown earlier (always including the final probe's value).
    """
    pad = vocab_size - 1
    value_lo, value_hi = recall_vocab(vocab_size, 0, num_special=1)
    num_keys, num_values = value_lo, value_hi - value_lo
    # Pre-draw everything the loop may use: each row of an argsort of uniforms is a uniformly
    # random ordering, so its first m entries are a uniform motif of m distinct tokens.
    max_pairs = seq_len // 2 + 1
    key_rows = np.argsort(rng.random((max_pairs + 1, num_keys)), axis=1)[:, :k_motif_size]
    value_rows = np.argsort(rng.random((max_pairs + 1, num_values)), axis=1)[:, :v_motif_size]
    value_rows = value_rows + value_lo
    if is_training:
        key_sizes = rng.integers(1, k_motif_size + 1, size=max_pairs + 1)
    else:
        key_sizes = np.full(max_pairs + 1, k_motif_size)
    value_sizes = rng.integers(1, v_motif_size + 1, size=max_pairs + 1)

    # The probe uses the last pre-drawn row; the body rows 0, 1, ....
    probe_key = tuple(key_rows[-1, : key_sizes[-1]].tolist())
    probe_value = tuple(value_rows[-1, : value_sizes[-1]].tolist())
    limit = seq_len - len(probe_key) - len(probe_value) - (k_motif_size + v_motif_size)
    # MAD draws the probe's position from [0, seq_len - 2 * probe size), which can lie past the
    # end of the body, and places it only at a pair boundary past that position, which the body
    # can end before: the final query is then unanswerable. Here it is drawn inside the body and
    # placed, at the latest, before the pair that could end the body.
    probe_at = int(rng.integers(0, limit))

    tokens: list[int] = []
    scored: list[bool] = []
    shown: dict[tuple[int, ...], tuple[int, ...]] = {}
    probe_placed = False
    row = 0
    while len(tokens) < limit:
        last_chance = len(tokens) + k_motif_size + v_motif_size >= limit
        if not probe_placed and (len(tokens) >= probe_at or last_chance):
            key, value, probe_placed = probe_key, probe_value, True
            is_scored = False  # MAD never scores the planted probe
        else:
            key = tuple(key_rows[row, : key_sizes[row]].tolist())
            if key == probe_key:
                value, probe_placed = probe_value, True
            else:
                value = shown.get(key, tuple(value_rows[row, : value_sizes[row]].tolist()))
            is_scored = key in shown
            row += 1
        tokens += [*key, *value]
        scored += [False] * len(key) + [is_scored] * len(value)
        shown[key] = value
    tokens += [*probe_key, *probe_value]
    scored += [False] * len(probe_key) + [True] * len(probe_value)
    num_pad = seq_len + 1 - len(tokens)
    return np.array([pad] * num_pad + tokens), np.array([False] * num_pad + scored)


def selective_copying(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, num_tokens_to_copy: int
) -> Tokens:
    """MAD's selective copying.

    Tokens [0, vocab_size - 2); blank = vocab_size - 2, copy = vocab_size - 1. num_tokens_to_copy
    random tokens (with replacement) with seq_len - 2 * num_tokens_to_copy blanks inserted at
    random points before them (each blank before a uniformly drawn one of the tokens, as MAD's
    np.insert), then the copy token, then the tokens again. Scored: the copy.
    """
    blank, copy = vocab_size - 2, vocab_size - 1
    n = num_tokens_to_copy
    to_copy = rng.integers(0, vocab_size - 2, size=n)
    where = rng.integers(0, n, size=seq_len - 2 * n)
    body = np.insert(to_copy, where, blank)
    tokens = np.concatenate([body, [copy], to_copy])
    scored = np.zeros(seq_len + 1, dtype=bool)
    scored[-n:] = True
    return tokens, scored


def compression(rng: np.random.Generator, *, vocab_size: int, seq_len: int) -> Tokens:
    """MAD's compression as a causal LM task.

    Tokens [0, vocab_size - 1); separator = vocab_size - 1. seq_len / 2 random tokens (with
    replacement), the separator, then the same tokens again. Scored: the reproduction.
    """
    n = seq_len // 2
    content = rng.integers(0, vocab_size - 1, size=n)
    tokens = np.concatenate([content, [vocab_size - 1], content])
    scored = np.zeros(seq_len + 1, dtype=bool)
    scored[-n:] = True
    return tokens, scored


def memorization_map(rng: np.random.Generator, vocab_size: int) -> np.ndarray:
    """The fixed key -> value map: entry k is key k's value, a bijection [0, V/2) -> [V/2, V)."""
    half = vocab_size // 2
    return half + rng.permutation(vocab_size - half)[:half]


def memorization(
    rng: np.random.Generator, *, vocab_size: int, seq_len: int, value_of: np.ndarray
) -> Tokens:
    """MAD's memorization: pairs (key, value_of[key]) with distinct keys from [0, V/2).

    Scored: the values. The map is the same for every example, so it can only be learnt into
    the weights; keys do not repeat within an example, so no value can be read from context.
    """
    half = vocab_size // 2
    lead = _lead(rng, seq_len, half, vocab_size)
    keys = rng.choice(half, size=(seq_len + 1) // 2, replace=False)
    pairs = np.stack([keys, value_of[keys]], axis=1).ravel()
    scored = np.tile([False, True], len(keys))
    return np.concatenate([lead, pairs]), np.concatenate([np.zeros(len(lead), dtype=bool), scored])
