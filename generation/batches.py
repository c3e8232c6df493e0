"""Many prompts, each continued several times, as batches of one shape.

Continuation g (prompt i's sample s, g = i * num_samples + s) draws with the key
fold_in(key(seed), g), whichever batch and row it lands in. Every batch is padded to the longest
prompt and filled up to the same number of rows (the filler rows are inactive), so the prefill
and the decoding loop compile once for all of them.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import numpy as np

from generation.decode import Generator
from generation.speculative import SpeculativeGenerator


@dataclasses.dataclass(frozen=True)
class Continuation:
    prompt: int  # index into the prompts
    sample: int
    tokens: list[int]  # the stop token that ended it included
    stopped: bool  # ended by a stop token (else by max_new_tokens)
    # With a draft model: its tokens proposed and accepted, and the target's passes (Speculation).
    draft: dict[str, int] | None = None


def generate_all(
    generator: Generator | SpeculativeGenerator,
    params: Any,
    prompts: list[list[int]],
    *,
    num_samples: int,
    batch_size: int,
    seed: int,
) -> list[Continuation]:
    """Every prompt `num_samples` times, `batch_size` continuations at a time, in order."""
    requests = [(i, s) for i in range(len(prompts)) for s in range(num_samples)]
    rows = min(batch_size, len(requests))
    width = max(len(p) for p in prompts)
    base = jax.random.key(seed)
    out = []
    for start in range(0, len(requests), rows):
        batch = requests[start : start + rows]
        tokens = np.zeros((rows, width), np.int32)
        lengths = np.ones(rows, np.int32)
        for r, (i, _) in enumerate(batch):
            tokens[r, : len(prompts[i])] = prompts[i]
            lengths[r] = len(prompts[i])
        keys = jax.vmap(jax.random.fold_in, in_axes=(None, 0))(base, np.arange(start, start + rows))
        active = np.arange(rows) < len(batch)
        generated = generator(params, tokens, lengths, keys, active)
        drafted = generated.speculation
        out.extend(
            Continuation(
                i,
                s,
                generated.row(r),
                bool(generated.stopped[r]),
                None if drafted is None else drafted.row(r),
            )
            for r, (i, s) in enumerate(batch)
        )
    return out
