"""Generating without a cache: every new token from the model's parallel forward pass over the
whole prefix, the prompt and every token generated so far. It is the baseline that decoding over
a cache (generation/decode.py) is measured against (`launch.benchmark --decode`), and a check of
it: both must choose the same tokens.

The prefix lives in one buffer of the final length (prompt + max_new_tokens - 1), zero past the
tokens known so far, so the forward pass has one shape and compiles once: a causal model's output
at a position never depends on what lies after it. Each pass unembeds only the last known
position. The loop over new tokens is one jitted `lax.fori_loop`, like the cached loop, and a row's
token at step s is drawn with fold_in(its key, s), as there, so the same keys give the same
tokens. Prompts share one length (no padding within a row).
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from generation.sampling import Sampling, sample


def recompute_generate(
    model: Any,
    sampling: Sampling,
    max_new_tokens: int,
    params: Any,
    prompts: np.ndarray,
    keys: jax.Array,
) -> jax.Array:
    """prompts [B, P] int32 (every row P real tokens); keys [B] -> tokens [B, max_new_tokens]
    int32, on the device (no stop tokens: every row runs to max_new_tokens)."""
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return _recompute(model, sampling, max_new_tokens, params, jnp.asarray(prompts), keys)


@functools.partial(jax.jit, static_argnums=(0, 1, 2))
def _recompute(
    model: Any,
    sampling: Sampling,
    steps: int,
    params: Any,
    prompts: jax.Array,
    keys: jax.Array,
) -> jax.Array:
    batch, prompt_length = prompts.shape
    length = prompt_length + steps - 1  # the last token is never fed back
    prefix = jnp.zeros((batch, length), jnp.int32).at[:, :prompt_length].set(prompts)

    def generate(step: jax.Array, carry: tuple[jax.Array, jax.Array]) -> tuple:
        prefix, tokens = carry
        last = prompt_length + step - 1  # the last known position
        at = jnp.full((batch, 1), last, jnp.int32)
        logits = model.apply({"params": params}, prefix, train=False, positions=at)[:, 0]
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
        token = jax.vmap(functools.partial(sample, sampling=sampling))(step_keys, logits)
        # The last step's token lands past the buffer: dropped, as it is never fed back.
        prefix = prefix.at[:, last + 1].set(token, mode="drop")
        return prefix, tokens.at[:, step].set(token)

    tokens = jnp.zeros((batch, steps), jnp.int32)
    _, tokens = jax.lax.fori_loop(0, steps, generate, (prefix, tokens))
    return tokens
