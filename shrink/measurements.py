"""What a compressed run costs beside its source: bytes on disk and in memory, time per decoded
token. Measured, never estimated: int8 weights need not decode faster (on CPU, XLA dequantizes
them before a float matmul), and the report says what was measured.
"""

from __future__ import annotations

import functools
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
TIMED_REPEATS = 7


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
    models: dict[str, tuple[Any, Any]], prompts: np.ndarray, new_tokens: int
) -> dict[str, float]:
    """{name: wall seconds per generated token} for each (model, params) of `models`: greedy
    generation for the whole batch of `prompts`, one parallel prefill of them and `new_tokens`
    decoding steps, over `new_tokens` (what launch.generate spends per token at this batch
    size). After one call each that compiles, the models take turns, TIMED_REPEATS calls each,
    so that a change in the machine's load falls on all of them alike; the median of each."""
    lengths = np.full(len(prompts), prompts.shape[1], np.int32)
    keys = jax.random.split(jax.random.PRNGKey(0), len(prompts))
    runs = {
        name: functools.partial(
            Generator(model, new_tokens, Sampling(temperature=0.0)), params, prompts, lengths, keys
        )
        for name, (model, params) in models.items()
    }
    for run in runs.values():
        run()  # compiles
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(TIMED_REPEATS):
        for name, run in runs.items():
            start = time.perf_counter()
            run()  # returns host arrays: the work is done
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) / new_tokens for name, t in times.items()}
