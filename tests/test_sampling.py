"""Sampling (generation/sampling.py): each filter alone, the order they compose in, and the
distribution of many draws against the one they are meant to come from.

The statistical checks use a fixed key, so they are deterministic; each states its test and
level. A correct sampler fails a chi-square test at alpha = 1e-3 for one key in a thousand; the
key here passes, and `test_the_frequency_test_rejects_a_sampler_at_the_wrong_temperature` shows
the same test, with as many draws, rejecting a wrong distribution."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from generation.sampling import Sampling, sample, sampling_logits, top_k_logits, top_p_logits
from runtime.errors import UsageError

LOGITS = np.array([2.0, 1.5, 1.0, 0.5, 0.0, -1.0, -3.0], np.float32)
DRAWS = 20_000
ALPHA = 1e-3


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x.astype(np.float64) - x.max())
    return e / e.sum()


@functools.partial(jax.jit, static_argnums=1)
def draws(logits: jax.Array, sampling: Sampling) -> np.ndarray:
    keys = jax.random.split(jax.random.key(0), DRAWS)
    return jax.vmap(lambda key: sample(key, logits, sampling))(keys)


def frequencies(sampling: Sampling) -> np.ndarray:
    tokens = np.asarray(draws(jnp.asarray(LOGITS), sampling))
    return np.bincount(tokens, minlength=len(LOGITS))


def chi_square_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Pearson's goodness of fit over the tokens of nonzero probability (no draw may fall
    outside them)."""
    support = probs > 0
    assert counts[~support].sum() == 0, counts
    return stats.chisquare(counts[support], DRAWS * probs[support]).pvalue


def test_top_k_keeps_the_k_largest_and_zero_keeps_all():
    kept = np.isfinite(top_k_logits(jnp.asarray(LOGITS), 3))
    assert kept.tolist() == [True, True, True, False, False, False, False]
    np.testing.assert_array_equal(top_k_logits(jnp.asarray(LOGITS), 0), LOGITS)


def test_top_p_keeps_the_fewest_largest_reaching_p():
    probs = softmax(LOGITS)
    reach = np.cumsum(probs)  # sorted already: largest first
    for n in (1, 2, 4):
        # Just above the sum of the n largest: one more is needed; exactly at it: n suffice.
        above = np.isfinite(top_p_logits(jnp.asarray(LOGITS), float(reach[n - 1]) + 1e-4))
        assert above.sum() == n + 1
        at = np.isfinite(top_p_logits(jnp.asarray(LOGITS), float(reach[n - 1]) - 1e-6))
        assert at.sum() == n
    np.testing.assert_array_equal(top_p_logits(jnp.asarray(LOGITS), 1.0), LOGITS)


def test_top_p_applies_to_what_top_k_kept_and_before_the_temperature():
    """probs ~ [0.4, 0.3, 0.2, 0.1]: top-p 0.5 alone keeps two; after top-k 2 the two kept are
    renormalised to [0.57, 0.43] and it keeps one. A temperature of 5 (applied first) would
    flatten them so that top-p 0.5 kept two again."""
    logits = jnp.log(jnp.array([0.4, 0.3, 0.2, 0.1]))
    assert np.isfinite(top_p_logits(logits, 0.5)).sum() == 2
    kept = np.isfinite(sampling_logits(logits, Sampling(temperature=5.0, top_k=2, top_p=0.5)))
    assert kept.tolist() == [True, False, False, False]


def test_greedy_is_the_argmax_whatever_the_filters():
    key = jax.random.key(0)
    for sampling in (Sampling(0.0), Sampling(0.0, top_k=3, top_p=0.1)):
        assert int(sample(key, jnp.asarray(LOGITS[::-1].copy()), sampling)) == len(LOGITS) - 1


def test_top_k_never_emits_outside_the_k_most_likely():
    counts = frequencies(Sampling(temperature=5.0, top_k=3))  # hot: the others would show
    assert counts[3:].sum() == 0 and (counts[:3] > 0).all()


def test_draws_at_temperature_one_follow_the_softmax():
    assert chi_square_p(frequencies(Sampling(temperature=1.0)), softmax(LOGITS)) > ALPHA


def test_draws_follow_top_k_then_top_p_then_temperature():
    """Expected by hand: top-3 renormalised is [0.51, 0.31, 0.19], so top-p 0.8 keeps two; then
    their logits over temperature 0.7."""
    top3 = softmax(LOGITS[:3])
    assert top3[0] < 0.8 < top3[:2].sum()
    expected = np.zeros(len(LOGITS))
    expected[:2] = softmax(LOGITS[:2] / 0.7)
    counts = frequencies(Sampling(temperature=0.7, top_k=3, top_p=0.8))
    assert chi_square_p(counts, expected) > ALPHA


def test_the_frequency_test_rejects_a_sampler_at_the_wrong_temperature():
    """Power: draws at temperature 1.2 against softmax at 1 (probabilities a few percent apart)."""
    assert chi_square_p(frequencies(Sampling(temperature=1.2)), softmax(LOGITS)) < ALPHA


@pytest.mark.parametrize(
    ("sampling", "error"),
    [
        (Sampling(temperature=-0.5), "--temperature must be >= 0"),
        (Sampling(top_k=8), r"--top_k must be in \[0, 7\]"),
        (Sampling(top_p=0.0), r"--top_p must be in \(0, 1\]"),
        (Sampling(top_p=1.5), r"--top_p must be in \(0, 1\]"),
    ],
)
def test_settings_that_select_nothing_are_refused(sampling, error):
    with pytest.raises(UsageError, match=error):
        sampling.check(vocab_size=len(LOGITS))
