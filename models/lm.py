"""The sequence model every mixer family plugs into: a causal language model

    tokens -> embedding (+ learned positions) -> N x [norm -> (short conv) -> mixer -> residual,
                                                   norm -> channel mixer -> residual]
           -> final norm -> unembedding (or tied embedding) -> float32 logits

Which mixer sits in each layer is config: `model.mixer` for all layers, or `model.layer_pattern`
for hybrids ("AMAM": one letter per mixer's LETTER, or "attention,mamba,..."), repeated to fill
`model.num_layers`. Each mixer reads its options from `model.<its SECTION>`.

The short conv (`model.short_conv`, a kernel size) is a depthwise causal convolution of the
normed input; with `model.short_conv_gate` it is Zoology's BaseConv instead,
h -> conv(h) * (h W + b) + h: the product of each position with its recent past, in every channel.

Decoding: `init_cache(batch_size, max_len)` is the empty cache (every layer's mixer state);
`prefill(tokens, cache, positions, lengths)` advances it by a chunk of tokens in one parallel pass
(rows of different lengths right-padded, each row at its own position); `decode_step(tokens,
cache, positions)` by one token per row. generation/ drives them.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax.core import FrozenDict

from models import blocks
from models.mixer import CausalConv1D
from models.registry import CHANNEL_MIXERS, CONFIG_SECTIONS, MIXERS, MODELS, check_choice, require

POSITIONAL = ("rope", "learned", "none")

# The module paths of the projections (a regular expression, fully matched): in and out of every
# sequence mixer, the channel mixer's, BaseConv's gate and the unembedding. Left out: what sets a
# recurrence's dynamics (Mamba's dt_proj; the decay and write-strength gates `decay/*`, `beta`;
# Hyena's filter MLP), and every contraction that is not a projection (attention scores, the
# scans' state updates). `quant.targets` defaults to it (runtime/quantization.py).
PROJECTIONS = (
    r"block_\d+/("
    r"sequence_mixer/(query|key|value|out|out_gate|in_proj|x_proj|out_proj)"
    r"|channel/(gate|up|down)"
    r"|conv_gate"
    r")|unembed"
)


class Block(nn.Module):
    """One pre-norm residual block: (short conv ->) sequence mixer, then channel mixer."""

    d_model: int
    num_heads: int
    seq_len: int
    mixer: str
    mixer_options: Any
    channel_mixer: str
    channel_options: Any
    d_ff: int
    norm: str
    norm_eps: float
    rope: bool
    use_bias: bool
    short_conv: int
    short_conv_gate: bool
    dropout_rate: float
    dtype: Any

    def setup(self) -> None:
        self.mixer_norm = blocks.norm(self.norm, self.dtype, self.norm_eps)
        if self.short_conv:
            self.conv = CausalConv1D(self.d_model, self.short_conv, self.dtype)
        if self.short_conv and self.short_conv_gate:
            self.conv_gate = blocks.dense(self.d_model, ("embed", "mlp"), self.dtype, use_bias=True)
        self.sequence_mixer = MIXERS.get(self.mixer)(
            d_model=self.d_model,
            num_heads=self.num_heads,
            options=self.mixer_options,
            seq_len=self.seq_len,
            rope=self.rope,
            use_bias=self.use_bias,
            dtype=self.dtype,
        )
        self.has_channel_mixer = self.channel_mixer != "none"
        if self.has_channel_mixer:
            self.channel_norm = blocks.norm(self.norm, self.dtype, self.norm_eps)
            self.channel = CHANNEL_MIXERS.get(self.channel_mixer)(
                self.d_model, self.d_ff, self.use_bias, self.channel_options, self.dtype
            )
        self.dropout = nn.Dropout(self.dropout_rate)

    def _channel_half(self, x: jax.Array, train: bool) -> jax.Array:
        if not self.has_channel_mixer:
            return x
        h = self.channel(self.channel_norm(x), train=train)
        return blocks.constrain(x + self.dropout(h, deterministic=not train))

    def _gate(self, h: jax.Array, conv: jax.Array) -> jax.Array:
        """h: the conv's input, conv: its output -> the mixer's input."""
        if not self.short_conv_gate:
            return conv
        return conv * self.conv_gate(h) + h

    # `train` is positional because nn.remat can only mark positional arguments static.
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        h = self.mixer_norm(x)
        if self.short_conv:
            h = self._gate(h, self.conv(h))
        h = self.sequence_mixer(h, train=train)
        x = blocks.constrain(x + self.dropout(h, deterministic=not train))
        return self._channel_half(x, train)

    def init_state(self, batch_size: int, max_len: int) -> dict[str, Any]:
        state = {"mixer": self.sequence_mixer.init_state(batch_size, max_len)}
        if self.short_conv:
            state["conv"] = self.conv.init_state(batch_size)
        return state

    def step(self, x: jax.Array, state: dict, positions: jax.Array) -> tuple[jax.Array, dict]:
        """x: [B, D], one position per row."""
        h = self.mixer_norm(x)
        new_state = {}
        if self.short_conv:
            conv, new_state["conv"] = self.conv.step(h, state["conv"])
            h = self._gate(h, conv)
        h, new_state["mixer"] = self.sequence_mixer.step(h, state["mixer"], positions)
        x = x + h
        return self._channel_half(x[:, None], False)[:, 0], new_state

    def prefill(
        self, x: jax.Array, state: dict, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, dict]:
        """x: [B, T, D], continued from `state` (see SequenceMixer.prefill)."""
        h = self.mixer_norm(x)
        new_state = {}
        if self.short_conv:
            conv, new_state["conv"] = self.conv.prefill(h, state["conv"], lengths)
            h = self._gate(h, conv)
        h, new_state["mixer"] = self.sequence_mixer.prefill(h, state["mixer"], positions, lengths)
        return self._channel_half(x + h, False), new_state


class SequenceModel(nn.Module):
    """int32 tokens [B, T] -> float32 next-token logits [B, T, vocab_size].

    With `positions` int [B, S], only those positions are normed and unembedded: logits
    [B, S, vocab_size], for losses that score a few positions (the unembedding dominates the
    step at a large vocabulary).
    """

    vocab_size: int
    seq_len: int
    d_model: int
    num_heads: int
    d_ff: int
    layer_mixers: tuple[str, ...]
    options: Any  # FrozenDict: section name -> that mixer's / channel mixer's options
    channel_mixer: str = "swiglu"
    norm: str = "rms"
    norm_eps: float = 0.0  # 0: the norm's own default (blocks.norm)
    positional: str = "rope"
    use_bias: bool = False
    short_conv: int = 0
    short_conv_gate: bool = False
    tie_embeddings: bool = False
    dropout_rate: float = 0.0
    remat: str = "none"  # a policy of blocks.REMAT_POLICIES
    dtype: Any = jnp.float32

    def setup(self) -> None:
        self.embed = blocks.embedding(self.vocab_size, self.d_model, self.dtype)
        if self.positional == "learned":
            self.pos_embedding = self.param(
                "pos_embedding",
                nn.with_logical_partitioning(
                    nn.initializers.normal(blocks.EMBED_INIT_STDDEV), ("length", "embed")
                ),
                (self.seq_len, self.d_model),
                jnp.float32,
            )
        block_cls = blocks.remat_block(Block, self.remat)
        self.layers = [
            block_cls(
                d_model=self.d_model,
                num_heads=self.num_heads,
                seq_len=self.seq_len,
                mixer=mixer,
                mixer_options=self._mixer_options(mixer),
                channel_mixer=self.channel_mixer,
                channel_options=self.options.get(self.channel_mixer, FrozenDict()),
                d_ff=self.d_ff,
                norm=self.norm,
                norm_eps=self.norm_eps,
                rope=self.positional == "rope",
                use_bias=self.use_bias,
                short_conv=self.short_conv,
                short_conv_gate=self.short_conv_gate,
                dropout_rate=self.dropout_rate,
                dtype=self.dtype,
                name=f"block_{i}",
            )
            for i, mixer in enumerate(self.layer_mixers)
        ]
        self.final_norm = blocks.norm(self.norm, self.dtype, self.norm_eps)
        if not self.tie_embeddings:
            self.unembed = blocks.dense(self.vocab_size, ("embed", "vocab"), self.dtype)
        self.dropout = nn.Dropout(self.dropout_rate)

    def example_inputs(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.seq_len), jnp.int32)

    def _mixer_options(self, mixer: str) -> FrozenDict:
        return self.options.get(MIXERS.get(mixer).SECTION, FrozenDict())

    def fixed_length_reason(self) -> str | None:
        """Why the trained parameters define this model only up to `seq_len`, or None when a
        clone with a larger `seq_len` computes the same function on the first positions (so
        evaluation at longer lengths means something)."""
        if self.positional == "learned":
            return "learned positional embeddings exist only for the training positions"
        fixed = sorted({name for name in self.layer_mixers if MIXERS.get(name).FIXED_LENGTH})
        if fixed:
            return f"{', '.join(fixed)} is laid out over the training length"
        return None

    def rewinds(self) -> bool:
        """Whether a cache advanced past a position continues from it as if the later tokens had
        never been fed: every layer's mixer rewinds (SequenceMixer.rewinds), and no short conv
        (its window of recent inputs moves on)."""
        return not self.short_conv and all(
            MIXERS.get(name).rewinds(self._mixer_options(name)) for name in self.layer_mixers
        )

    def describe(self) -> dict[str, int]:
        """Analytic parameter count, forward FLOPs per token and decoding state size (numbers
        carried per sequence at the training length)."""
        d, heads, t, channel = self.d_model, self.num_heads, self.seq_len, self.channel_mixer
        channel_cls, channel_options = CHANNEL_MIXERS.get(channel), self.options.get(channel)
        norm_params = d * (2 if self.norm == "layer" else 1)
        params = self.vocab_size * d + norm_params  # embedding, final norm
        params += 0 if self.tie_embeddings else d * self.vocab_size
        params += t * d if self.positional == "learned" else 0
        flops = 2 * d * self.vocab_size  # unembedding
        state = 0
        for name in self.layer_mixers:
            cls, options = MIXERS.get(name), self._mixer_options(name)
            params += norm_params + cls.param_count(d, heads, options, t, self.use_bias)
            flops += cls.flops_per_token(d, heads, options, t)
            state += cls.state_size(d, heads, options, t)
            if channel != "none":
                params += norm_params
                params += channel_cls.param_count(d, self.d_ff, self.use_bias, channel_options)
                flops += channel_cls.flops_per_token(d, self.d_ff, channel_options)
            if self.short_conv:
                params += (self.short_conv + 1) * d
                flops += 2 * self.short_conv * d
                state += (self.short_conv - 1) * d
            if self.short_conv and self.short_conv_gate:
                params += d * d + d
                flops += 2 * d * d + 2 * d
        return {"params": int(params), "flops_per_token": int(flops), "state_size": int(state)}

    def _embed(self, tokens: jax.Array, positions: jax.Array) -> jax.Array:
        x = self.embed(tokens)
        if self.positional == "learned":
            x = x + jnp.take(self.pos_embedding, positions, axis=0).astype(self.dtype)
        return x

    def _logits(self, x: jax.Array) -> jax.Array:
        x = self.final_norm(x)
        logits = self.embed.attend(x) if self.tie_embeddings else self.unembed(x)
        return logits.astype(jnp.float32)

    def __call__(
        self, inputs: jax.Array, *, train: bool, positions: jax.Array | None = None
    ) -> jax.Array:
        x = self._embed(inputs, jnp.arange(inputs.shape[1]))
        x = blocks.constrain(self.dropout(x, deterministic=not train))
        for layer in self.layers:
            x = layer(x, train)
        if positions is not None:
            x = jnp.take_along_axis(x, positions[..., None], axis=1)  # [B, S, D]
        return self._logits(x)

    def init_cache(self, batch_size: int, max_len: int) -> list[dict]:
        return [layer.init_state(batch_size, max_len) for layer in self.layers]

    def decode_step(
        self, tokens: jax.Array, cache: list[dict], positions: jax.Array
    ) -> tuple[jax.Array, list[dict]]:
        """tokens [B] at `positions` (int [B], or one for every row) -> logits [B, vocab] for
        each row's next position, and the new cache."""
        positions = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), tokens.shape)
        x = self._embed(tokens, positions)
        new_cache = []
        for layer, state in zip(self.layers, cache, strict=True):
            x, state = layer.step(x, state, positions)
            new_cache.append(state)
        return self._logits(x), new_cache

    def prefill(
        self,
        tokens: jax.Array,
        cache: list[dict],
        positions: jax.Array,
        lengths: jax.Array,
        logits_at: jax.Array | None = None,
    ) -> tuple[jax.Array, list[dict]]:
        """Tokens [B, T] in one parallel pass, continued from `cache`: row b's tokens sit at
        positions[b] + 0..T-1 and its first lengths[b] enter the cache, the rest are padding
        (see SequenceMixer.prefill). -> logits [B, T, vocab] (their next-token predictions; at
        padding, unspecified), or with `logits_at` [B, S] (indices into the chunk) only those,
        [B, S, vocab]; and the new cache."""
        positions = jnp.broadcast_to(jnp.asarray(positions, jnp.int32), tokens.shape[:1])
        lengths = jnp.broadcast_to(jnp.asarray(lengths, jnp.int32), tokens.shape[:1])
        x = self._embed(tokens, positions[:, None] + jnp.arange(tokens.shape[1])[None, :])
        new_cache = []
        for layer, state in zip(self.layers, cache, strict=True):
            x, state = layer.prefill(x, state, positions, lengths)
            new_cache.append(state)
        if logits_at is not None:
            x = jnp.take_along_axis(x, logits_at[..., None], axis=1)
        return self._logits(x), new_cache


def layer_mixers(config: Any) -> tuple[str, ...]:
    """One mixer name per layer, from `mixer` or the hybrid `layer_pattern`."""
    pattern = config.layer_pattern
    if not pattern:
        names = [config.mixer]
    elif "," in pattern or pattern in MIXERS:
        names = [name.strip() for name in pattern.split(",")]
    else:
        letters = {MIXERS.get(name).LETTER: name for name in MIXERS.names()}
        unknown = sorted(set(pattern) - letters.keys())
        if unknown:
            valid = ", ".join(f"{k}={v}" for k, v in sorted(letters.items()))
            raise ValueError(
                f"model.layer_pattern {pattern!r}: unknown letters {unknown}; valid: {valid}"
            )
        names = [letters[c] for c in pattern]
    for name in names:
        MIXERS.get(name)
    if config.num_layers % len(names):
        raise ValueError(
            f"model.layer_pattern has {len(names)} layers, which does not divide "
            f"model.num_layers={config.num_layers}"
        )
    return tuple(names * (config.num_layers // len(names)))


def _frozen(section: Any) -> FrozenDict:
    return FrozenDict(section.to_dict() if hasattr(section, "to_dict") else dict(section))


@MODELS.register("lm")
def build_lm(config: Any, spec: Any, dtype: Any) -> SequenceModel:
    check_choice("positional", config.positional, POSITIONAL)
    check_choice("norm", config.norm, tuple(blocks.NORMS))
    check_choice("channel_mixer", config.channel_mixer, CHANNEL_MIXERS.names())
    check_choice("mixer", config.mixer, MIXERS.names())
    if config.d_model % config.num_heads:
        raise ValueError(
            f"model.d_model={config.d_model} is not divisible by num_heads={config.num_heads}"
        )
    if config.positional == "rope" and (config.d_model // config.num_heads) % 2:
        raise ValueError("positional='rope' needs an even head dimension (d_model / num_heads)")
    if config.norm_eps < 0:
        raise ValueError(f"model.norm_eps must be >= 0 (0: the norm's own), got {config.norm_eps}")
    if config.short_conv < 0:
        raise ValueError(f"model.short_conv must be >= 0, got {config.short_conv}")
    if config.short_conv_gate and not config.short_conv:
        raise ValueError("model.short_conv_gate needs a short conv: set model.short_conv (e.g. 3)")
    sections = {name: _frozen(config[name]) for name in CONFIG_SECTIONS.names() if name in config}
    model = SequenceModel(
        vocab_size=require(spec, "vocab_size", "lm"),
        seq_len=require(spec, "seq_len", "lm"),
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        layer_mixers=layer_mixers(config),
        options=FrozenDict(sections),
        channel_mixer=config.channel_mixer,
        norm=config.norm,
        norm_eps=config.norm_eps,
        positional=config.positional,
        use_bias=config.use_bias,
        short_conv=config.short_conv,
        short_conv_gate=config.short_conv_gate,
        tie_embeddings=config.tie_embeddings,
        dropout_rate=config.dropout_rate,
        remat=config.remat,
        dtype=dtype,
    )
    model.describe()  # checks every mixer's options (e.g. num_kv_heads dividing num_heads)
    return model
