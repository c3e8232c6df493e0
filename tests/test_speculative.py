"""Speculative decoding (generation/speculative.py): lossless against the target alone.

Greedy: the tokens are the target's own greedy tokens, for attention, Mamba and GLA each as the
target and as the draft (a KV cache that rewinds, and recurrent states that must be re-advanced
past a rejection, on both sides). Sampling (at the temperature 1, and with top-k): the joint
distribution of the first four tokens matches the target's own, computed exactly, by a
chi-square test. The models are random, small and different, so their drafts are often
rejected: the tests of a draft and a target assert that proposals were both accepted and
rejected. A draft that is its target has every proposal accepted. Caches that claim to rewind
(and need no re-run after a rejection) are held to it, registry-wide.

The statistical check uses fixed keys, so it is deterministic; a correct decoder fails it at
alpha = 1e-3 for one key in a thousand. The same test rejects the distribution a decoder that
accepted every proposal would give, with the same draws.
"""

from __future__ import annotations

import functools
import itertools
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

import models
from experiments.base import base_config
from generation.decode import Generator
from generation.sampling import Sampling, sampling_logits
from generation.speculative import DraftAndTarget, SpeculativeGenerator

VOCAB = 6  # small, so that a random draft agrees with a random target now and then
T = 32
SPEC = types.SimpleNamespace(vocab_size=VOCAB, seq_len=T, num_classes=None, image_shape=None)
GREEDY = Sampling(temperature=0.0)
ALPHA = 1e-3

# One batch of prompts of different lengths, right-padded with junk (which must not matter).
LENGTHS = np.array([3, 1, 6, 4])
PROMPTS = np.random.default_rng(0).integers(0, VOCAB, (len(LENGTHS), LENGTHS.max()), np.int32)
KEYS = jax.random.split(jax.random.key(0), len(LENGTHS))
NEW_TOKENS = 16
DRAFT_TOKENS = 3

# Each mixer once as the target and once as the draft.
PAIRS = [("attention", "mamba"), ("mamba", "gla"), ("gla", "attention")]
# The target is wider than the draft and seeded apart from it.
SHAPES = {"target": (32, 0), "draft": (16, 1)}  # d_model, init seed


def build(mixer: str, role: str, **overrides) -> nn.Module:
    width, _ = SHAPES[role]
    config = base_config().model
    config.update(dict(name="lm", mixer=mixer, num_layers=1, d_model=width, num_heads=2))
    config.update(dict(d_ff=2 * width, **overrides))
    return models.build_model(config, SPEC, jnp.float32)


@functools.cache
def tiny(mixer: str, role: str) -> tuple[nn.Module, dict]:
    """A random model; its unembedding scaled up 3x, so that its next-token distributions are
    peaked (at init they are nearly uniform, and any two samplers look alike)."""
    model, (_, seed) = build(mixer, role), SHAPES[role]
    init = jax.jit(functools.partial(model.init, train=False))
    params = nn.unbox(init(jax.random.key(seed), jnp.zeros((1, T), jnp.int32)))["params"]
    params["unembed"]["kernel"] = 3.0 * params["unembed"]["kernel"]
    return model, params


def speculative(target: str, draft: str, sampling: Sampling, **settings) -> tuple:
    (target, target_params), (draft, draft_params) = tiny(target, "target"), tiny(draft, "draft")
    decoder = SpeculativeGenerator(target, draft, sampling=sampling, **settings)
    return decoder, DraftAndTarget(target_params, draft_params)


def cut_at(tokens: np.ndarray, stop: int) -> list[int]:
    """Greedy tokens as a stop token would end them: through its first occurrence."""
    tokens = tokens.tolist()
    return tokens[: tokens.index(stop) + 1] if stop in tokens else tokens


def late_stop_token(tokens: np.ndarray) -> int:
    """Of the tokens in greedy outputs [B, N], the one whose first appearance in any row comes
    latest: a stop token that lets rounds run before it ends a row, and leaves the rows without
    it to max_new_tokens."""
    first = {}
    for row in tokens.tolist():
        for i, token in reversed(list(enumerate(row))):
            first[token] = min(first.get(token, i), i)
    return max(first, key=first.get)


@pytest.mark.parametrize(("target", "draft"), PAIRS, ids=[f"{t}<-{d}" for t, d in PAIRS])
def test_greedy_speculative_decoding_gives_the_targets_own_greedy_tokens(target, draft):
    """With a stop token from the target's own output, so that one row ends early and the others
    run to max_new_tokens: the tokens, counts and endings are those of the target alone."""
    model, params = tiny(target, "target")
    own = Generator(model, NEW_TOKENS, GREEDY)(params, PROMPTS, LENGTHS, KEYS)
    stop = late_stop_token(own.tokens)
    decoder, pair = speculative(
        target, draft, GREEDY, max_new_tokens=NEW_TOKENS, draft_tokens=DRAFT_TOKENS,
        stop_tokens=(stop,),
    )  # fmt: skip
    out = decoder(pair, PROMPTS, LENGTHS, KEYS)
    for b in range(len(LENGTHS)):
        expected = cut_at(own.tokens[b], stop)
        assert out.row(b) == expected, f"row {b} (prompt of {LENGTHS[b]})"
        assert bool(out.stopped[b]) == (stop in expected)
        assert (out.tokens[b, len(expected) :] == 0).all()
    assert out.stopped.any()
    drafted = out.speculation
    # Both outcomes happened: some proposals accepted, some rejected.
    assert 0 < drafted.accepted.sum() < drafted.proposed.sum(), drafted
    assert (drafted.proposed == DRAFT_TOKENS * drafted.passes).all()


def test_a_draft_that_is_the_target_is_always_accepted():
    """Every round then keeps all k proposals and adds the bonus token: k + 1 tokens a target
    pass. (GLA: a state that does not rewind, so this is the round that needs no re-run.)"""
    model, params = tiny("gla", "target")
    decoder = SpeculativeGenerator(model, model, NEW_TOKENS, DRAFT_TOKENS, GREEDY)
    out = decoder(DraftAndTarget(params, params), PROMPTS, LENGTHS, KEYS)
    own = Generator(model, NEW_TOKENS, GREEDY)(params, PROMPTS, LENGTHS, KEYS)
    np.testing.assert_array_equal(out.tokens, own.tokens)
    np.testing.assert_array_equal(out.speculation.accepted, out.speculation.proposed)
    # The first token comes from the prompt's prefill; then rounds of k + 1.
    rounds = -(-(NEW_TOKENS - 1) // (DRAFT_TOKENS + 1))
    np.testing.assert_array_equal(out.speculation.passes, rounds)


# --- the distribution of sampled tokens ---------------------------------------------------------

PROMPT = np.array([[2, 0, 5]], np.int32)
SAMPLES = 4096
SAMPLED_TOKENS = 4  # the first comes from the prompt's prefill, the next three from rounds


def joint(target: str, draft_for_the_rest: str | None, sampling: Sampling) -> np.ndarray:
    """The exact probability of every sequence of SAMPLED_TOKENS tokens after PROMPT, sampled
    from the target alone [VOCAB] * SAMPLED_TOKENS, or with the first from the target and the
    rest from `draft_for_the_rest` (what accepting every proposal would give)."""
    n = SAMPLED_TOKENS
    prefixes = np.array(list(itertools.product(range(VOCAB), repeat=n - 1)), np.int32)
    sequences = np.concatenate([np.repeat(PROMPT, len(prefixes), axis=0), prefixes], axis=1)

    def probabilities(role: str, mixer: str) -> np.ndarray:
        model, params = tiny(mixer, role)
        forward = jax.jit(functools.partial(model.apply, train=False))
        logits = forward({"params": params}, sequences)[:, -n:]
        return np.asarray(jax.nn.softmax(sampling_logits(logits, sampling)), np.float64)

    target_p = probabilities("target", target)
    rest_p = target_p if draft_for_the_rest is None else probabilities("draft", draft_for_the_rest)
    out = np.ones([VOCAB] * n)
    for index in itertools.product(range(VOCAB), repeat=n):
        row = np.ravel_multi_index(index[:-1], [VOCAB] * (n - 1))
        p = target_p[row, 0, index[0]]
        p *= np.prod([rest_p[row, i, index[i]] for i in range(1, n)])
        out[index] = p
    return out


def chi_square_p(counts: np.ndarray, probabilities: np.ndarray) -> float:
    """Pearson's goodness of fit, the cells expected fewer than 5 times pooled into one; 0 when
    a draw fell where the distribution has no mass (outside a top-k)."""
    # float32 softmaxes: their product sums to 1 within ~1e-7, scipy wants 1.5e-8.
    counts, expected = counts.ravel(), SAMPLES * probabilities.ravel() / probabilities.sum()
    if counts[expected == 0].any():
        return 0.0
    small = expected < 5
    observed = np.append(counts[~small], counts[small].sum())
    expected = np.append(expected[~small], expected[small].sum())
    return stats.chisquare(observed, expected).pvalue


@pytest.mark.parametrize(
    "sampling",
    [Sampling(temperature=1.0), Sampling(temperature=0.8, top_k=4)],
    ids=["temperature-1", "top-k-4-temperature-0.8"],
)
def test_sampled_tokens_follow_the_targets_own_distribution(sampling):
    """4,096 continuations of one prompt, each with its own key, 2 proposals a round (so the
    first four tokens come by every path: a rejection's residual, an accepted proposal, the bonus
    token); target GLA (re-advanced after a rejection), draft attention."""
    decoder, pair = speculative("gla", "attention", sampling, max_new_tokens=4, draft_tokens=2)
    prompts = np.repeat(PROMPT, SAMPLES, axis=0)
    lengths = np.full(SAMPLES, PROMPT.shape[1])
    out = decoder(pair, prompts, lengths, jax.random.split(jax.random.key(1), SAMPLES))
    drafted = out.speculation
    assert 0 < drafted.accepted.sum() < drafted.proposed.sum(), drafted
    cells = np.ravel_multi_index(out.tokens.T, [VOCAB] * SAMPLED_TOKENS)
    counts = np.bincount(cells, minlength=VOCAB**SAMPLED_TOKENS).reshape([VOCAB] * SAMPLED_TOKENS)
    assert chi_square_p(counts, joint("gla", None, sampling)) > ALPHA
    # The test can tell: the same draws against accepting every proposal.
    assert chi_square_p(counts, joint("gla", "attention", sampling)) < ALPHA


# --- caches that rewind -------------------------------------------------------------------------

REWINDING = [name for name in models.MIXERS.names() if build(name, "draft").rewinds()]


def test_attention_rewinds_unless_windowed_and_recurrent_states_do_not():
    assert "attention" in REWINDING
    assert not {"mamba", "gla"} & set(REWINDING)
    assert not build("attention", "draft", short_conv=3).rewinds()
    windowed = base_config().model.attention.to_dict() | {"window": 4}
    assert not models.MIXERS.get("attention").rewinds(windowed)


@pytest.mark.parametrize("mixer", REWINDING)
def test_a_cache_that_says_it_rewinds_forgets_tokens_fed_past_a_chunks_start(mixer):
    """A cache advanced by junk and then continued from the junk's first position computes what
    the clean cache does, for that chunk and for the next token after it."""
    model, params = tiny(mixer, "draft")

    @functools.partial(jax.jit, static_argnames="method")
    def apply(*args, method: str):
        return model.apply({"params": params}, *args, method=method)

    rng = np.random.default_rng(2)
    prompt, junk, chunk = (rng.integers(0, VOCAB, (2, n), np.int32) for n in (5, 4, 3))
    cache = model.apply({"params": params}, 2, T, method="init_cache")
    _, cache = apply(prompt, cache, 0, 5, method="prefill")
    _, dirty = apply(junk, cache, 5, 4, method="prefill")

    def continued(start: list) -> tuple[jax.Array, jax.Array]:
        logits, after = apply(chunk, start, 5, 3, method="prefill")
        next_logits, _ = apply(chunk[:, 0], after, 8, method="decode_step")
        return logits, next_logits

    for clean, rewound in zip(continued(cache), continued(dirty), strict=True):
        np.testing.assert_allclose(rewound, clean, rtol=1e-6, atol=1e-6)
