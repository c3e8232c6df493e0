"""What a compressed run costs beside its source: bytes on disk and in memory, time per decoded
token. Measured, never estimated: int8 weights need not decode faster (on CPU, XLA dequantizes
them before a float matmul), and the report says what was measured.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

import jax
import numpy as np

from generation.decode import Generator
from generation.sampling import Sampling
from runtime import assembly, checkpoint

DECODE_BATCH = 8
TIMED_REPEATS = 5


def checkpoint_bytes(workdir: str, step: int) -> int:
    """Bytes of every file of the run's checkpoint at `step` (state, data iterator, metadata,
    seal)."""
    directory = os.path.join(workdir, checkpoint.CHECKPOINT_DIR, str(step))
    return sum(
        os.path.getsize(os.path.join(root, name))
        for root, _, names in os.walk(directory)
        for name in names
    )


def parameter_bytes(params: Any) -> int:
    """Bytes of the parameters' arrays (an int8 kernel's values and its float32 scales)."""
    return sum(int(leaf.nbytes) for leaf in jax.tree.leaves(params))


def decode_prompts(exp: assembly.Experiment) -> np.ndarray:
    """The first DECODE_BATCH evaluation sequences' first halves: [DECODE_BATCH, seq_len // 2]."""
    batch = next(iter(exp.dataset.eval_loader(DECODE_BATCH)))
    return np.asarray(batch["inputs"][:, : exp.dataset.spec.seq_len // 2], np.int32)


def decode_seconds_per_token(
    model: Any, params: Any, prompts: np.ndarray, new_tokens: int
) -> float:
    """Wall seconds per generated token of greedy generation for the whole batch of `prompts`:
    one parallel prefill of the prompts, then `new_tokens` decoding steps, over `new_tokens`
    (what launch.generate spends per token at this batch size). The median of TIMED_REPEATS
    calls after one that compiles."""
    lengths = np.full(len(prompts), prompts.shape[1], np.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), len(prompts))
    generator = Generator(model, new_tokens, Sampling(temperature=0.0))
    generator(params, prompts, lengths, keys)  # compiles
    times = []
    for _ in range(TIMED_REPEATS):
        start = time.perf_counter()
        generator(params, prompts, lengths, keys)  # returns host arrays: the work is done
        times.append(time.perf_counter() - start)
    return statistics.median(times) / new_tokens
