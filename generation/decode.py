"""Generating from a sequence model (models/lm.py): a parallel prefill, then a jitted loop.

Prompts of different lengths share a batch right-padded: every row sits at its own position
(the model's `prefill` and `decode_step` take a position per row) and only a row's real tokens
enter its cache or state. The prefill is one parallel pass over the padded prompts; decoding is
one jitted `lax.while_loop` over the cache, which it donates, stepping every row by one token
until each has produced `max_new_tokens` or a stop token (the loop ends as soon as every row has
stopped). A row's randomness is its own key, folded with the step: the same keys give the same
tokens whatever else is in the batch.

The cache is made for exactly the positions the loop reaches: a row of n prompt tokens feeds
positions 0 .. n + max_new_tokens - 2 (the last token is never fed back).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from generation.sampling import Sampling, sample


@dataclasses.dataclass(frozen=True)
class Generated:
    """tokens [B, max_new_tokens] int32: a row's first `counts[b]` are its own (a stop token that
    ended it included), the rest are 0; `stopped[b]`: whether a stop token ended it."""

    tokens: np.ndarray
    counts: np.ndarray
    stopped: np.ndarray

    def row(self, b: int) -> list[int]:
        return self.tokens[b, : self.counts[b]].tolist()


@dataclasses.dataclass(frozen=True)
class Generator:
    """Generation settings for one model; `__call__` runs them on a batch of prompts. The jitted
    programs are cached per batch shape, so batches of one shape compile once."""

    model: Any  # a models.lm.SequenceModel
    max_new_tokens: int
    sampling: Sampling
    stop_tokens: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")

    def cache_length(self, prompt_length: int) -> int:
        """Positions a cache needs for prompts padded to `prompt_length`."""
        return prompt_length + self.max_new_tokens - 1

    def __call__(
        self,
        params: Any,
        prompts: np.ndarray,
        lengths: np.ndarray,
        keys: jax.Array,
        active: np.ndarray | None = None,
    ) -> Generated:
        """prompts [B, P] int32, right-padded; lengths [B] (each >= 1); keys [B] (one PRNG key
        per row); active [B] bool (default all): inactive rows (a last, short batch filled up to
        its shape) count as stopped from the start and produce nothing."""
        lengths = jnp.asarray(lengths, jnp.int32)
        active = np.ones(len(lengths), bool) if active is None else active
        max_len = self.cache_length(prompts.shape[1])
        last_logits, cache = _prefill(self.model, max_len, params, jnp.asarray(prompts), lengths)
        tokens, counts, stopped, _ = _decode(
            self, params, cache, last_logits, lengths, keys, jnp.asarray(active)
        )
        return Generated(np.asarray(tokens), np.asarray(counts), np.asarray(stopped))


@functools.partial(jax.jit, static_argnums=(0, 1))
def _prefill(
    model: Any, max_len: int, params: Any, prompts: jax.Array, lengths: jax.Array
) -> tuple[jax.Array, Any]:
    """One parallel pass over the padded prompts, from an empty cache of `max_len` positions ->
    each row's next-token logits [B, V] (at its last real token) and the cache after its real
    tokens."""
    variables = {"params": params}
    cache = model.apply(variables, prompts.shape[0], max_len, method="init_cache")
    starts = jnp.zeros_like(lengths)
    last = (lengths - 1)[:, None]
    logits, cache = model.apply(variables, prompts, cache, starts, lengths, last, method="prefill")
    return logits[:, 0], cache


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _decode(
    generator: Generator,
    params: Any,
    cache: Any,
    logits: jax.Array,
    lengths: jax.Array,
    keys: jax.Array,
    active: jax.Array,
) -> tuple[jax.Array, jax.Array, jax.Array, Any]:
    """The loop: (tokens, counts, stopped, the cache after the last token fed). The cache comes
    in donated and goes out in the same buffers."""
    model, sampling = generator.model, generator.sampling
    stop_tokens = jnp.asarray(generator.stop_tokens, jnp.int32)

    def draw(logits: jax.Array, step: jax.Array) -> jax.Array:
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
        return jax.vmap(functools.partial(sample, sampling=sampling))(step_keys, logits)

    def record(step, token, tokens, counts, stopped):
        live = ~stopped
        tokens = tokens.at[:, step].set(jnp.where(live, token, 0))
        counts = counts + live
        stopped = stopped | jnp.isin(token, stop_tokens)
        return tokens, counts, stopped

    batch = lengths.shape[0]
    tokens = jnp.zeros((batch, generator.max_new_tokens), jnp.int32)
    counts = jnp.zeros((batch,), jnp.int32)
    stopped = ~active
    tokens, counts, stopped = record(0, draw(logits, 0), tokens, counts, stopped)

    def unfinished(carry) -> jax.Array:
        step, _, _, _, stopped = carry
        return (step < generator.max_new_tokens) & ~jnp.all(stopped)

    def advance(carry):
        step, cache, tokens, counts, stopped = carry
        logits, cache = model.apply(
            {"params": params},
            tokens[:, step - 1],
            cache,
            lengths + step - 1,
            method="decode_step",
        )
        tokens, counts, stopped = record(step, draw(logits, step), tokens, counts, stopped)
        return step + 1, cache, tokens, counts, stopped

    carry = (jnp.int32(1), cache, tokens, counts, stopped)
    _, cache, tokens, counts, stopped = jax.lax.while_loop(unfinished, advance, carry)
    return tokens, counts, stopped & active, cache
