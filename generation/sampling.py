"""Choosing the next token from logits: pure functions of (logits, settings[, key]).

The settings compose as MaxText's `sample_topk_topp_weighted` does, in this order:
1. top-k: keep the k largest logits (k = 0 keeps all);
2. top-p: of those, keep the fewest, largest first, whose probability (softmax of the kept
   logits, at temperature 1) sums to at least p (p = 1 keeps all);
3. temperature: divide the kept logits by it, then draw from their softmax.
Temperature 0 is greedy decoding: the argmax, whatever k and p. Logits tied with the last one
kept are kept too, so a tie at the k-th place can let more than k through.

`sampling_logits` is the distribution a draw comes from (-inf outside what was kept), so that a
speculative decoder can compare a draft's and a target's probabilities under the same settings.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from runtime.errors import UsageError


@dataclasses.dataclass(frozen=True)
class Sampling:
    temperature: float = 1.0  # 0: greedy
    top_k: int = 0  # 0: the whole vocabulary
    top_p: float = 1.0  # 1: no nucleus cut

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def check(self, vocab_size: int) -> None:
        """UsageError for settings that select nothing or do not fit the vocabulary."""
        if not self.temperature >= 0:
            raise UsageError(f"--temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 <= self.top_k <= vocab_size:
            raise UsageError(
                f"--top_k must be in [0, {vocab_size}] (0: the whole vocabulary of "
                f"{vocab_size}), got {self.top_k}"
            )
        if not 0 < self.top_p <= 1:
            raise UsageError(f"--top_p must be in (0, 1], got {self.top_p}")


def top_k_logits(logits: jax.Array, k: int) -> jax.Array:
    """logits [..., V] with all but the k largest set to -inf; k = 0 keeps them all."""
    if k == 0:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]
    return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_logits(logits: jax.Array, p: float) -> jax.Array:
    """logits [..., V] with -inf outside the nucleus: the fewest largest logits whose softmax
    probabilities sum to at least p. p = 1 keeps them all."""
    if p >= 1:
        return logits
    descending = jnp.flip(jnp.sort(logits, axis=-1), axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(descending, axis=-1), axis=-1)
    # The first place where the running sum reaches p is the last one kept (rounding can leave
    # the sum just under p at the end: then every logit is kept).
    last = jnp.minimum(jnp.sum(cumulative < p, axis=-1, keepdims=True), logits.shape[-1] - 1)
    cutoff = jnp.take_along_axis(descending, last, axis=-1)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def sampling_logits(logits: jax.Array, sampling: Sampling) -> jax.Array:
    """The logits a draw comes from: top-k, then top-p, then divided by the temperature
    (which must be > 0 here: greedy decoding draws nothing)."""
    kept = top_p_logits(top_k_logits(logits, sampling.top_k), sampling.top_p)
    return kept / sampling.temperature


def sample(key: jax.Array, logits: jax.Array, sampling: Sampling) -> jax.Array:
    """One token id (int32) per row of logits [..., V]: the argmax when greedy, otherwise a
    draw from softmax(sampling_logits)."""
    if sampling.greedy:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return jax.random.categorical(key, sampling_logits(logits, sampling)).astype(jnp.int32)
