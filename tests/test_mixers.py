"""Every sequence mixer, through the sequence model: causal, and its forms agree.

Registry-wide: a mixer added to MIXERS is covered here without editing this file.
"""

from __future__ import annotations

import functools
import string
import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.core import FrozenDict

import models
from experiments.base import base_config
from models.mixer import ABSTRACT_METHODS, SequenceMixer, class_attributes
from models.registry import MixerRegistry

T = 13  # odd on purpose: chunked forms must handle a ragged last chunk
SPEC = types.SimpleNamespace(vocab_size=29, seq_len=T, num_classes=None, image_shape=None)
VARIANTS = {  # extra block options each mixer is also checked under
    "plain": {},
    "short_conv": {"short_conv": 4},
    "base_conv": {"short_conv": 3, "short_conv_gate": True},  # Zoology's gated short conv
    # Grouped heads and a sliding window shorter than T: the cache path's mask and head layout.
    "gqa_window": {"attention.num_kv_heads": 2, "attention.window": 5},
    "bc_norm": {"mamba.bc_norm": "l2"},
}
# Every mixer under the plain and short-conv blocks; the gated conv is mixer-independent, so two
# mixers (one with a cache, one with a state) cover it.
MIXER_VARIANTS = [(m, v) for m in models.MIXERS.names() for v in ("plain", "short_conv")] + [
    ("attention", "base_conv"),
    ("gla", "base_conv"),
    ("attention", "gqa_window"),
    ("mamba", "bc_norm"),
]


def lm_config(mixer: str, **overrides):
    config = base_config().model
    config.update(dict(name="lm", mixer=mixer, num_layers=2, d_model=32, num_heads=4, d_ff=48))
    config.update_from_flattened_dict(overrides)
    return config


def build(mixer: str, **overrides):
    model = models.build_model(lm_config(mixer, **overrides), SPEC, jnp.float32)
    tokens = jax.random.randint(jax.random.key(1), (2, T), 0, SPEC.vocab_size)
    variables = model.init(jax.random.key(0), tokens, train=False)
    return model, nn.unbox(variables), tokens


def assert_close(actual, expected, rtol=1e-5):
    scale = float(jnp.max(jnp.abs(expected)))
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * max(scale, 1.0))


@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_every_mixer_declares_the_class_attributes_the_model_reads(mixer):
    cls = models.MIXERS.get(mixer)
    declared = class_attributes()
    assert {"LETTER", "SECTION", "FIXED_LENGTH"} <= declared.keys()
    for attribute, kind in declared.items():
        assert isinstance(getattr(cls, attribute), kind), attribute
    assert cls.LETTER in string.ascii_uppercase and len(cls.LETTER) == 1
    assert cls.SECTION in models.CONFIG_SECTIONS


def test_letters_are_unique():
    letters = [models.MIXERS.get(n).LETTER for n in models.MIXERS.names()]
    assert len(letters) == len(set(letters))


def mixer_class(**attributes) -> type:
    """A SequenceMixer subclass implementing every method, with these class attributes."""

    def implemented(*args, **kwargs):
        raise AssertionError("never called: registration only looks at the class")

    return type(
        "Probe", (SequenceMixer,), {**dict.fromkeys(ABSTRACT_METHODS, implemented), **attributes}
    )


FREE_LETTER = min(
    set(string.ascii_uppercase) - {models.MIXERS.get(n).LETTER for n in models.MIXERS}
)
COMPLETE = {"LETTER": FREE_LETTER, "SECTION": "attention"}


@pytest.mark.parametrize(
    ("attributes", "error"),
    [
        ({"SECTION": "attention"}, "does not set LETTER"),
        ({"LETTER": FREE_LETTER}, "does not set SECTION"),
        ({**COMPLETE, "LETTER": "probe"}, "LETTER must be one capital letter"),
        ({**COMPLETE, "FIXED_LENGTH": "yes"}, "FIXED_LENGTH must be a bool"),
        ({**COMPLETE, "LETTER": "A"}, "LETTER 'A' already stands for 'attention'"),
        ({**COMPLETE, "SECTION": "atention"}, "'atention' is not a registered config section"),
    ],
)
def test_a_mixer_breaking_the_contract_is_refused_at_registration(attributes, error):
    with pytest.raises((TypeError, ValueError), match=error):
        models.MIXERS.register("probe")(mixer_class(**attributes))
    assert "probe" not in models.MIXERS


def test_a_mixer_without_a_method_is_refused_at_registration():
    probe = mixer_class(**COMPLETE)
    del probe.step
    with pytest.raises(TypeError, match="does not implement step"):
        models.MIXERS.register("probe")(probe)
    assert "probe" not in models.MIXERS


def test_a_mixer_keeping_the_contract_registers():
    registry = MixerRegistry("sequence mixer")
    probe = mixer_class(**COMPLETE)
    assert registry.register("probe")(probe) is probe
    assert registry.get("probe").FIXED_LENGTH is False


@pytest.mark.parametrize(("mixer", "variant"), MIXER_VARIANTS)
def test_changing_a_token_never_changes_earlier_outputs(mixer, variant):
    """Earlier outputs may move by float round-off only (FFT convolutions spread ~1e-7 of it
    backwards); information from the future would move them by orders of magnitude more."""
    model, variables, tokens = build(mixer, **VARIANTS[variant])
    forward = jax.jit(functools.partial(model.apply, train=False))
    before = forward(variables, tokens)
    scale = float(jnp.max(jnp.abs(before)))
    for t in (0, 6, T - 1):
        changed = tokens.at[:, t].set((tokens[:, t] + 1) % SPEC.vocab_size)
        after = forward(variables, changed)
        np.testing.assert_allclose(after[:, :t], before[:, :t], rtol=0, atol=1e-5 * scale)
        assert float(jnp.max(jnp.abs(after[:, t] - before[:, t]))) > 1e-3 * scale


@pytest.mark.parametrize(("mixer", "variant"), MIXER_VARIANTS)
def test_parallel_prefill_and_token_by_token_decoding_agree(mixer, variant):
    model, variables, tokens = build(mixer, **VARIANTS[variant])
    full = model.apply(variables, tokens, train=False)
    # Jitted as a decoder would be: op by op, the first step alone compiles hundreds of programs.
    step = jax.jit(functools.partial(model.apply, method="decode_step"))
    # Decoding every token from an empty cache.
    cache = model.apply(variables, 2, T, method="init_cache")
    stepped = []
    for t in range(T):
        logits, cache = step(variables, tokens[:, t], cache, jnp.int32(t))
        stepped.append(logits)
    assert_close(jnp.stack(stepped, axis=1), full)
    # A prompt through the parallel form, then cached decoding of the rest.
    prompt = 6
    empty = model.apply(variables, 2, T, method="init_cache")
    logits, cache = model.apply(variables, tokens[:, :prompt], empty, 0, prompt, method="prefill")
    assert_close(logits, full[:, :prompt])
    for t in range(prompt, T):
        logits, cache = step(variables, tokens[:, t], cache, jnp.int32(t))
        assert_close(logits, full[:, t])


def mixer_alone(name: str, **overrides):
    """The mixer `name` as the sequence model builds it, outside a model, with its parameters."""
    cls = models.MIXERS.get(name)
    options = lm_config(name, **overrides)[cls.SECTION].to_dict()
    mixer = cls(d_model=32, num_heads=4, options=FrozenDict(options), seq_len=T)
    init = jax.jit(functools.partial(mixer.init, train=False))  # op by op it compiles each op
    return mixer, nn.unbox(init(jax.random.key(0), jnp.zeros((2, T, 32))))


CHUNK_VARIANTS = [(m, "plain") for m in models.MIXERS.names()] + [("attention", "gqa_window")]


@pytest.mark.parametrize(("mixer", "variant"), CHUNK_VARIANTS)
def test_a_ragged_chunk_continues_any_state_as_stepping_its_real_tokens_does(mixer, variant):
    """Each family's parallel `prefill` against the default one, which steps token by token and
    holds the state at padding: two right-padded chunks, rows at different positions with
    different numbers of real tokens, the second from the state the first left (what prompts of
    different lengths and a speculative decoder's verification rely on). Padding is random, so
    a state that took any of it would differ. With the window (5) shorter than the chunk, the
    ring of keys wraps within one chunk."""
    module, variables = mixer_alone(mixer, **VARIANTS[variant])
    chunks = jax.random.normal(jax.random.key(3), (2, 2, 7, 32))
    starts = [jnp.array([0, 0]), jnp.array([2, 6])]
    lengths = [jnp.array([2, 6]), jnp.array([7, 3])]

    def run(prefill):
        apply = jax.jit(functools.partial(module.apply, method=prefill))
        state = module.apply(variables, 2, T, method="init_state")
        outputs = []
        for chunk, start, length in zip(chunks, starts, lengths, strict=True):
            out, state = apply(variables, chunk, state, start, length)
            outputs.append([out[b, : length[b]] for b in range(2)])
        return outputs, state

    (outputs, state), (stepped, stepped_state) = run("prefill"), run(SequenceMixer.prefill)
    for ours, theirs in zip(jax.tree.leaves(outputs), jax.tree.leaves(stepped), strict=True):
        assert_close(ours, theirs)
    for ours, theirs in zip(jax.tree.leaves(state), jax.tree.leaves(stepped_state), strict=True):
        assert_close(ours, theirs)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"short_conv": 3},
        {"use_bias": True, "norm": "layer", "channel_mixer": "gelu_mlp"},
        {"tie_embeddings": True, "positional": "learned"},
        {"channel_mixer": "none"},
        {"short_conv": 3, "short_conv_gate": True},
    ],
    ids=["default", "short_conv", "gpt2-blocks", "tied-learned", "no-channel-mixer", "base-conv"],
)
@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_parameter_count_matches_the_analytic_formula(mixer, overrides):
    model = models.build_model(lm_config(mixer, **overrides), SPEC, jnp.float32)
    tokens = jax.ShapeDtypeStruct((2, T), jnp.int32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens)
    assert model.describe()["params"] == models.count_params(shapes["params"])


@pytest.mark.parametrize(
    "biases, biased",
    [
        ({"attention.qkv_bias": True}, {"query", "key", "value"}),  # Qwen2's
        ({"attention.out_bias": True}, {"out"}),
        (
            {"attention.qkv_bias": True, "attention.out_bias": True},
            {"query", "key", "value", "out"},
        ),
    ],
)
def test_attention_biases_go_on_their_projections_only(biases, biased):
    model = models.build_model(lm_config("attention", **biases), SPEC, jnp.float32)
    tokens = jax.ShapeDtypeStruct((2, T), jnp.int32)
    shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), tokens)
    block = shapes["params"]["block_0"]
    assert {name for name, p in block["sequence_mixer"].items() if "bias" in p} == biased
    assert not any("bias" in p for p in block["channel"].values())  # unlike model.use_bias
    assert model.describe()["params"] == models.count_params(shapes["params"])


@pytest.mark.parametrize("norm, its_default", [("rms", 1e-6), ("layer", 1e-5)])
def test_norm_eps_sets_every_norm_and_zero_keeps_the_norms_own(norm, its_default):
    def logits(eps):
        model, variables, tokens = build("attention", norm=norm, norm_eps=eps)
        return model.apply(variables, tokens, train=False)

    np.testing.assert_array_equal(logits(0.0), logits(its_default))
    assert not np.allclose(logits(0.0), logits(0.5), rtol=1e-2)


@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_description_reports_flops_and_state(mixer):
    model, _, _ = build(mixer)
    description = model.describe()
    assert description["flops_per_token"] > 2 * description["params"] * 0.5
    assert description["state_size"] > 0


def test_hybrid_pattern_places_mixers_per_layer():
    for pattern in ("AA", "attention,attention", "A"):
        config = lm_config("attention", num_layers=4, layer_pattern=pattern)
        model = models.build_model(config, SPEC, jnp.float32)
        assert model.layer_mixers == ("attention",) * 4
    with pytest.raises(ValueError, match="unknown letters"):
        models.build_model(lm_config("attention", layer_pattern="AZ"), SPEC, jnp.float32)
    with pytest.raises(ValueError, match="does not divide"):
        models.build_model(
            lm_config("attention", num_layers=3, layer_pattern="AA"), SPEC, jnp.float32
        )


@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_bfloat16_compute_stays_close_to_float32(mixer):
    model, variables, tokens = build(mixer)
    bf16 = models.build_model(lm_config(mixer), SPEC, jnp.bfloat16)
    reference = model.apply(variables, tokens, train=False)
    out = bf16.apply(variables, tokens, train=False)
    assert out.dtype == jnp.float32 and np.all(np.isfinite(out))
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(out, reference, atol=0.05 * max(scale, 1.0))
