"""Generation (generation/decode.py) from every sequence mixer: the prefill and the decoding loop
against the parallel forward pass. Registry-wide: a mixer added to MIXERS is covered here
without editing this file."""

from __future__ import annotations

import functools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from experiments.base import base_config
from generation.decode import Generator
from generation.recompute import recompute_generate
from generation.sampling import Sampling

T = 12  # the model's length: the longest prompt (8) and 4 new tokens fit, with one to spare
SPEC = types.SimpleNamespace(vocab_size=29, seq_len=T, num_classes=None, image_shape=None)
LENGTHS = np.array([5, 1, 8])  # one batch: a short, a one-token and a long prompt
NEW_TOKENS = 4

# Every mixer alone, and the cases where decoding takes another path: a sliding window shorter
# than the prompts (the ring of keys wraps while prefilling and decoding) with grouped heads, a
# hybrid of a cache, a recurrent state and a long convolution, MoE routing (dropless: with a
# capacity the parallel pass drops tokens that one-at-a-time decoding never does), and learned
# positions with a short conv (per-row positions at the embedding, the conv's window per row).
CASES = {name: {"mixer": name} for name in models.MIXERS.names()} | {
    "attention-window": {
        "mixer": "attention",
        "attention.window": 3,
        "attention.num_kv_heads": 2,
    },
    "hybrid-AMH": {"mixer": "attention", "layer_pattern": "AMH", "num_layers": 3},
    "moe": {"mixer": "attention", "channel_mixer": "moe", "moe.capacity_factor": 0.0},
    "learned-positions-short-conv": {"mixer": "gla", "positional": "learned", "short_conv": 3},
}


def tiny_model(**overrides):
    config = base_config().model
    config.update(dict(name="lm", num_layers=1, d_model=32, num_heads=4, d_ff=48))
    config.update_from_flattened_dict(overrides)
    model = models.build_model(config, SPEC, jnp.float32)
    # Jitted: op by op, initialising a model compiles each op alone, and took longer than the test.
    init = jax.jit(functools.partial(model.init, train=False))
    return model, nn.unbox(init(jax.random.key(0), jnp.zeros((1, T), jnp.int32)))["params"]


def padded(rows: list[np.ndarray], width: int, key: int) -> np.ndarray:
    """Rows right-padded to `width` with random tokens: a prefill that let padding into a state
    would then continue from the wrong tokens."""
    junk = np.random.default_rng(key).integers(0, SPEC.vocab_size, (len(rows), width))
    for b, row in enumerate(rows):
        junk[b, : len(row)] = row
    return junk.astype(np.int32)


@pytest.mark.parametrize("case", CASES)
def test_greedy_generation_is_the_argmax_of_the_forward_pass_after_each_token(case):
    """Prompts of different lengths in one batch; each generated token must be the argmax of the
    full parallel forward pass over the prompt and the tokens generated before it."""
    model, params = tiny_model(**CASES[case])
    rng = np.random.default_rng(1)
    prompts = [rng.integers(0, SPEC.vocab_size, n) for n in LENGTHS]
    generate = Generator(model, NEW_TOKENS, Sampling(temperature=0.0), keep_logits=True)
    keys = jax.random.split(jax.random.key(0), len(prompts))
    out = generate(params, padded(prompts, LENGTHS.max(), 2), LENGTHS, keys)
    np.testing.assert_array_equal(out.counts, NEW_TOKENS)
    sequences = [np.concatenate([p, out.row(b)]) for b, p in enumerate(prompts)]
    forward = jax.jit(functools.partial(model.apply, train=False))
    logits = forward({"params": params}, padded(sequences, T, 3))
    for b, n in enumerate(LENGTHS):
        recomputed = logits[b, n - 1 : n - 1 + NEW_TOKENS]
        assert out.row(b) == np.argmax(recomputed, axis=-1).tolist(), f"row {b} (prompt of {n})"
        # The logits too: a state off by a little (padding let in with a small weight) can leave
        # the argmax alone.
        scale = max(float(np.abs(recomputed).max()), 1.0)
        np.testing.assert_allclose(out.logits[b], recomputed, rtol=1e-5, atol=1e-5 * scale)


def test_the_decoding_state_is_a_kv_cache_that_grows_or_a_recurrent_state_that_does_not():
    """What the generation suite reports as a sequence's decoding state (Generator.state_bytes):
    attention caches a key and a value (d_model float32 each) and the slot's position (int32)
    for every position fed; Mamba's state is its analytic size in float32 at any length."""
    d_model = 32
    attention, params = tiny_model(mixer="attention")
    generate = Generator(attention, NEW_TOKENS, Sampling(temperature=0.0))
    per_position = 2 * d_model * 4 + 4
    assert generate.state_bytes(params, 8) == (8 + NEW_TOKENS - 1) * per_position
    assert generate.state_bytes(params, 8) - generate.state_bytes(params, 2) == 6 * per_position

    mamba, params = tiny_model(mixer="mamba")
    generate = Generator(mamba, NEW_TOKENS, Sampling(temperature=0.0))
    analytic = 4 * mamba.describe()["state_size"]
    assert generate.state_bytes(params, 8) == generate.state_bytes(params, 2) == analytic


def test_recomputing_the_prefix_draws_the_tokens_the_cache_does():
    """generation/recompute.py, the baseline `launch.benchmark --decode` times: with the same keys
    it draws the same sampled tokens as the cached loop (greedy is the benchmark's own check)."""
    model, params = tiny_model(mixer="gla")
    prompts = np.random.default_rng(4).integers(0, SPEC.vocab_size, (3, 6)).astype(np.int32)
    sampling = Sampling(temperature=1.0)
    keys = jax.random.split(jax.random.key(5), len(prompts))
    cached = Generator(model, NEW_TOKENS, sampling)(params, prompts, np.full(3, 6), keys)
    recomputed = recompute_generate(model, sampling, NEW_TOKENS, params, prompts, keys)
    np.testing.assert_array_equal(recomputed, cached.tokens)
    assert len(np.unique(cached.tokens)) > 2  # drawn, not one token repeated
