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
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from generation.sampling import Sampling, sample


def generates(model: Any) -> bool:
    """Whether a model can be decoded from: sequence models (models/lm.py) have a decode step."""
    return hasattr(model, "decode_step")


@dataclasses.dataclass(frozen=True)
class Speculation:
    """Per row, what a draft model did (generation/speculative.py): draft tokens `proposed`, of
    them `accepted` by the target, and the target's verification `passes`."""

    proposed: np.ndarray
    accepted: np.ndarray
    passes: np.ndarray

    def row(self, b: int) -> dict[str, int]:
        return {
            "proposed": int(self.proposed[b]),
            "accepted": int(self.accepted[b]),
            "target_passes": int(self.passes[b]),
        }


@dataclasses.dataclass(frozen=True)
class Generated:
    """tokens [B, max_new_tokens] int32: a row's first `counts[b]` are its own (a stop token that
    ended it included), the rest are 0; `stopped[b]`: whether a stop token ended it. With
    `keep_logits`, logits [B, max_new_tokens, V] float32: the model's logits each token was
    chosen from (before the sampling settings), zero past a row's count. `prefill_seconds` and
    `decode_seconds`: the wall time of the prefill and of the decoding loop (each waited for;
    the first call of a batch shape includes compiling them). `speculation`: with a draft
    model.
    """

    tokens: np.ndarray
    counts: np.ndarray
    stopped: np.ndarray
    logits: np.ndarray | None = None
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    speculation: Speculation | None = None

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
    keep_logits: bool = False

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
        start = time.perf_counter()
        last_logits, cache = jax.block_until_ready(self.prefill(params, prompts, lengths))
        prefilled = time.perf_counter()
        generated = self.decode(params, cache, last_logits, lengths, keys, active)
        return dataclasses.replace(
            generated,
            prefill_seconds=prefilled - start,
            decode_seconds=time.perf_counter() - prefilled,
        )

    def prefill(self, params: Any, prompts: np.ndarray, lengths: np.ndarray) -> tuple[Any, Any]:
        """The first phase alone: (each row's next-token logits [B, V], the cache after its
        prompt, made for the positions `decode` reaches), still on the device."""
        max_len = self.cache_length(prompts.shape[1])
        lengths = jnp.asarray(lengths, jnp.int32)
        return prefill_prompts(self.model, max_len, params, jnp.asarray(prompts), lengths)

    def decode(
        self,
        params: Any,
        cache: Any,
        last_logits: jax.Array,
        lengths: np.ndarray,
        keys: jax.Array,
        active: np.ndarray | None = None,
    ) -> Generated:
        """The second phase alone: the loop from `prefill`'s logits and cache, which it donates
        (the cache cannot be used again). Returns once the tokens are on the host."""
        lengths = jnp.asarray(lengths, jnp.int32)
        active = np.ones(len(lengths), bool) if active is None else active
        out, _ = _decode(self, params, cache, last_logits, lengths, keys, jnp.asarray(active))
        return Generated(*(None if x is None else np.asarray(x) for x in out))

    def state_bytes(self, params: Any, prompt_length: int) -> int:
        """Bytes of the decoding cache (the state carried through the loop) of one sequence for
        prompts of `prompt_length`: a KV cache grows with the length, a recurrent state does
        not. From the cache's shapes; nothing is allocated."""
        init_cache = functools.partial(
            self.model.apply,
            batch_size=1,
            max_len=self.cache_length(prompt_length),
            method="init_cache",
        )
        cache = jax.eval_shape(init_cache, {"params": params})
        return sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(cache))


@functools.partial(jax.jit, static_argnums=(0, 1))
def prefill_prompts(
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


class Out(NamedTuple):
    """What the loop carries per row, besides the cache."""

    tokens: jax.Array
    counts: jax.Array
    stopped: jax.Array
    logits: jax.Array | None


@functools.partial(jax.jit, static_argnums=0, donate_argnums=2)
def _decode(
    generator: Generator,
    params: Any,
    cache: Any,
    logits: jax.Array,
    lengths: jax.Array,
    keys: jax.Array,
    active: jax.Array,
) -> tuple[tuple, Any]:
    """The loop: ((tokens, counts, stopped, logits or None), the cache after the last token
    fed). The cache comes in donated and goes out in the same buffers."""
    model, sampling, steps = generator.model, generator.sampling, generator.max_new_tokens
    stop_tokens = jnp.asarray(generator.stop_tokens, jnp.int32)
    batch, vocab = logits.shape

    def record(step: jax.Array, logits: jax.Array, out: Out) -> Out:
        """Chooses each row's token at `step` from its logits and writes it down."""
        step_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(keys, step)
        token = jax.vmap(functools.partial(sample, sampling=sampling))(step_keys, logits)
        live = ~out.stopped
        return Out(
            tokens=out.tokens.at[:, step].set(jnp.where(live, token, 0)),
            counts=out.counts + live,
            stopped=out.stopped | jnp.isin(token, stop_tokens),
            logits=None
            if out.logits is None
            else out.logits.at[:, step].set(jnp.where(live[:, None], logits, 0.0)),
        )

    kept = jnp.zeros((batch, steps, vocab), jnp.float32) if generator.keep_logits else None
    empty = Out(jnp.zeros((batch, steps), jnp.int32), jnp.zeros(batch, jnp.int32), ~active, kept)
    out = record(jnp.int32(0), logits, empty)

    def unfinished(carry: tuple[jax.Array, Any, Out]) -> jax.Array:
        step, _, out = carry
        return (step < steps) & ~jnp.all(out.stopped)

    def advance(carry: tuple[jax.Array, Any, Out]) -> tuple[jax.Array, Any, Out]:
        step, cache, out = carry
        fed, positions = out.tokens[:, step - 1], lengths + step - 1
        logits, cache = model.apply({"params": params}, fed, cache, positions, method="decode_step")
        return step + 1, cache, record(step, logits, out)

    _, cache, out = jax.lax.while_loop(unfinished, advance, (jnp.int32(1), cache, out))
    return (out.tokens, out.counts, out.stopped & active, out.logits), cache
