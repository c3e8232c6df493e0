"""Hyena (Poli et al., 2023): implicit long convolutions interleaved with element-wise gates.

    x_0, ..., x_{N-1}, v = short_conv(in_proj(u))       N + 1 streams of width d, kernel 3
    z = v
    for n = N-1..1:  z = h_n * (x_n z) + D_n (x_n z)     h_n: a causal filter as long as the input
    out = out_proj(x_0 z)

This is safari's HyenaOperator, the reference implementation: order N has N + 1 projections and
N - 1 long convolutions, and every long convolution reads a gated input. Order 2 is
y = x_0 * (h * (x_1 v)), H3's q * SSM(k v): the product of the two projections before the long
convolution is what binds a key to its value for recall. (Read literally, the paper's
Definition 3.1 convolves v itself first, z_{n+1} = x_n (h_n * z_n), with N filters for order N;
safari's code, which produced the paper's results, is what this follows.

The filters are implicit (safari's HyenaFilter): h_n(t) = window(t) * FFN(pos(t)) with
pos(t) = [t / L, cos(2 pi f k / L), -sin(2 pi f k / L)] for `(emb_dim - 1) / 2` frequencies f
(t = k / (L - 1), k the position), an FFN emb_dim -> F -> F -> F -> (N-1)·d with sine activations
(one learnt frequency vector shared by the three, initialised to 1), and, with `modulate`, an
exponential window exp(-t |delta_c|) whose rates are spread over the channels from
log(target) / slow_decay_pct to log(target) / fast_decay_pct (fixed, as in safari). They are
evaluated at the training length L = `seq_len`; a shorter input uses their first T taps, a
longer one is an error.

The window is a prior for short memory, and with safari's rates a strong one: only the slowest
channels reach across the whole input, so a task that must carry a token that far (recall) has
few channels to do it with; `modulate=False` drops it (what that does to MQAR:
experiments/mqar_mixers.md).

The long convolution is computed in float32, either by FFT zero-padded to 2T
(`long_conv='fft'`, O(T log T)) or directly (`long_conv='direct'`, a depthwise convolution with a
length-T kernel, O(T^2)). Both are causal by construction, but only the direct one is causal to
the last bit: the FFT spreads float32 round-off (~1e-7 relative) from later inputs onto earlier
outputs. The default is the FFT, as in the paper; the registry-wide causality test allows that
round-off (1e-5 of the output scale) and no more.

Decoding keeps, per filter, every input the long convolution has seen ([B, N-1, max_len, d]) and
takes each output as a dot product with the filter read backwards: exact and O(T) per token.
The filter itself is recomputed at every step (a few FLOPs per position per channel). A prefill
writes its chunk's inputs into that store and runs the training form's convolution over all of
it, so a prompt costs one convolution at `max_len` per filter.

Hyena has a fixed parameterisation: `num_heads`, `rope` and `use_bias` are ignored. As in
safari, the input and output projections have biases and the short convolution has one.
The filter's positional features are fixed here (safari trains them at a learning rate of 1e-5).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import blocks
from models.mixer import CausalConv1D, SequenceMixer, valid_mask
from models.registry import CONFIG_SECTIONS, MIXERS

DEFAULTS = {
    "order": 2,  # N: N + 1 input projections, N - 1 long convolutions (safari's order)
    "filter_order": 32,  # F: hidden width of the implicit filter's FFN
    "emb_dim": 5,  # positional features fed to the filter FFN: time + (emb_dim - 1)/2 cos/sin
    "short_filter": 3,  # kernel of the depthwise causal conv on the projections
    "modulate": True,  # multiply the filters by an exponentially decaying window
    "fast_decay_pct": 0.3,  # fastest window reaches `target` at this fraction of the length
    "slow_decay_pct": 1.5,  # slowest window reaches `target` at this fraction of the length
    "target": 1e-2,
    "long_conv": "fft",  # fft: O(T log T), causal up to float rounding | direct: O(T^2), bitwise
}
CONFIG_SECTIONS.register("hyena")(DEFAULTS)

LONG_CONVS = ("direct", "fft")
INNER_LAYERS = 2  # hidden F -> F layers of the filter FFN (safari's num_inner_mlps)
SIN_FREQ_INIT = 1.0  # initial frequency of the sine activations (safari's w)


def check(options: Any) -> None:
    if options["order"] < 2 or options["filter_order"] < 1 or options["short_filter"] < 1:
        raise ValueError(
            "hyena: order must be >= 2 (one long convolution per order above 1), filter_order "
            f"and short_filter >= 1; got {options['order']}, "
            f"{options['filter_order']}, {options['short_filter']}"
        )
    if options["emb_dim"] < 3 or options["emb_dim"] % 2 == 0:
        raise ValueError(
            f"hyena.emb_dim must be odd and >= 3 (time, cos, sin), got {options['emb_dim']}"
        )
    if options["long_conv"] not in LONG_CONVS:
        raise ValueError(
            f"hyena.long_conv {options['long_conv']!r}; valid: {', '.join(LONG_CONVS)}"
        )


def positional_features(length: int, emb_dim: int) -> np.ndarray:
    """[length, emb_dim]: normalised time t in [0, 1], then cos and -sin of (emb_dim - 1) / 2
    frequencies linearly spaced in [1e-4, bands - 1] over the length (safari's
    PositionalEmbedding)."""
    bands = (emb_dim - 1) // 2
    t = np.linspace(0.0, 1.0, length)[:, None]
    angle = 2 * math.pi * np.arange(length)[:, None] / length
    f = np.linspace(1e-4, bands - 1, bands)[None, :]
    return np.concatenate([t, np.cos(f * angle), -np.sin(f * angle)], axis=-1).astype(np.float32)


def decay_window(length: int, channels: int, options: Any) -> np.ndarray:
    """[length, channels]: exp(-t |delta_c|), rates spread linearly over the channels (safari's
    ExponentialModulation); ones when `modulate` is off."""
    if not options["modulate"]:
        return np.ones((length, channels), np.float32)
    log_target = math.log(options["target"])
    rates = np.linspace(
        log_target / options["slow_decay_pct"], log_target / options["fast_decay_pct"], channels
    )
    t = np.linspace(0.0, 1.0, length)[:, None]
    return np.exp(-t * np.abs(rates)[None, :]).astype(np.float32)


def fft_causal_conv(u: jax.Array, h: jax.Array) -> jax.Array:
    """y_t = sum_{s <= t} h_{t-s} u_s by FFT, zero-padded to 2T (no wrap-around), float32.
    u [B, T, C]; h [T, C]."""
    t = u.shape[1]
    n = 2 * t
    u_f = jnp.fft.rfft(u.astype(jnp.float32), n=n, axis=1)
    h_f = jnp.fft.rfft(h.astype(jnp.float32), n=n, axis=0)
    return jnp.fft.irfft(u_f * h_f[None], n=n, axis=1)[:, :t]


def direct_causal_conv(u: jax.Array, h: jax.Array) -> jax.Array:
    """The same convolution as a depthwise conv with the reversed filter as kernel: each output
    reads only its own and earlier inputs. u [B, T, C]; h [T, C]."""
    t, c = h.shape
    return jax.lax.conv_general_dilated(
        u.astype(jnp.float32),
        h.astype(jnp.float32)[::-1, None, :],  # [W, I=1, O=C]
        window_strides=(1,),
        padding=[(t - 1, 0)],
        dimension_numbers=("NWC", "WIO", "NWC"),
        feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST,
    )


class HyenaFilter(nn.Module):
    """`num_filters` implicit filters [num_filters, length, d], float32."""

    d_model: int
    num_filters: int
    filter_order: int
    emb_dim: int
    length: int
    options: Any

    def setup(self) -> None:
        f = self.filter_order
        self.layers = [blocks.dense(f, (None, None), jnp.float32, use_bias=True)] + [
            blocks.dense(f, (None, None), jnp.float32, use_bias=True) for _ in range(INNER_LAYERS)
        ]
        self.freq = self.param(
            "freq",
            nn.with_logical_partitioning(nn.initializers.constant(SIN_FREQ_INIT), (None,)),
            (f,),
            jnp.float32,
        )
        self.last = blocks.dense((self.num_filters, self.d_model), (None, None, "mlp"), jnp.float32)

    def __call__(self) -> jax.Array:
        h = jnp.asarray(positional_features(self.length, self.emb_dim))
        for layer in self.layers:
            h = jnp.sin(self.freq * layer(h))
        h = self.last(h)  # [L, N-1, d]
        window = decay_window(self.length, self.num_filters * self.d_model, self.options)
        h = h * jnp.asarray(window).reshape(self.length, self.num_filters, self.d_model)
        return jnp.transpose(h, (1, 0, 2))


@MIXERS.register("hyena")
class Hyena(SequenceMixer):
    LETTER = "H"
    SECTION = "hyena"
    # The filters' positional features are t / L for the training length L: a model built for a
    # longer input would be another function on the first L positions too.
    FIXED_LENGTH = True

    def setup(self) -> None:
        check(self.options)
        n, d = self.options["order"], self.d_model
        self.num_filters = n - 1
        self.in_proj = blocks.dense((n + 1, d), ("embed", None, "mlp"), self.dtype, use_bias=True)
        # One depthwise conv per stream: the same as safari's single conv over (N+1)·d channels.
        self.short_convs = [
            CausalConv1D(d, self.options["short_filter"], self.dtype, names=("conv", "mlp"))
            for _ in range(n + 1)
        ]
        self.filter = HyenaFilter(
            d,
            self.num_filters,
            self.options["filter_order"],
            self.options["emb_dim"],
            self.seq_len,
            self.options,
        )
        self.filter_bias = self.param(
            "filter_bias",
            nn.with_logical_partitioning(nn.initializers.normal(1.0), (None, "mlp")),
            (self.num_filters, d),
            jnp.float32,
        )
        self.out_proj = blocks.dense(d, ("mlp", "embed"), self.dtype, use_bias=True)

    def _long_conv(self, z: jax.Array, h: jax.Array, n: int) -> jax.Array:
        conv = fft_causal_conv if self.options["long_conv"] == "fft" else direct_causal_conv
        return conv(z, h) + self.filter_bias[n] * z

    def _gates(self, streams: list[jax.Array]) -> tuple[jax.Array, list[jax.Array], jax.Array]:
        """(x_0, the gate in front of each filter in order of use, v), as float32: the gating
        chain stays in float32. Safari uses x_{N-1}, ..., x_1 in turn (reversed(x[1:]))."""
        x0, *rest, v = (s.astype(jnp.float32) for s in streams)
        return x0, rest[::-1], v

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        t = x.shape[1]
        if t > self.seq_len:
            raise ValueError(f"hyena: input length {t} exceeds the filter length {self.seq_len}")
        proj = self.in_proj(x)  # [B, T, N+1, d]
        streams = [conv(proj[..., i, :]) for i, conv in enumerate(self.short_convs)]
        x0, gates, z = self._gates(streams)
        filters = self.filter()[:, :t]  # [N-1, T, d]
        for n, gate in enumerate(gates):
            z = self._long_conv(gate * z, filters[n], n)
        return self.out_proj((x0 * z).astype(self.dtype))

    def init_state(self, batch_size: int, max_len: int) -> dict[str, Any]:
        """Short-conv windows per stream, and every long-conv input so far [B, N-1, max_len, d]
        (float32, like the gating chain that produces them)."""
        if max_len > self.seq_len:
            raise ValueError(f"hyena: max_len {max_len} exceeds the filter length {self.seq_len}")
        return {
            "short": [conv.init_state(batch_size) for conv in self.short_convs],
            "long": jnp.zeros((batch_size, self.num_filters, max_len, self.d_model), jnp.float32),
        }

    def _short_convs(
        self, proj: jax.Array, state: dict, lengths: jax.Array
    ) -> tuple[list[jax.Array], list[jax.Array]]:
        """Each stream's short conv over the chunk proj [B, T, N+1, d], and its state after."""
        streams, short = [], []
        for i, conv in enumerate(self.short_convs):
            y, s = conv.prefill(proj[..., i, :], state["short"][i], lengths)
            streams.append(y)
            short.append(s)
        return streams, short

    def step(self, x: jax.Array, state: dict, positions: jax.Array) -> tuple[jax.Array, dict]:
        """Each long-conv output as a dot product of the stored inputs with the filter read
        backwards from the row's position: O(max_len) per token."""
        ones = jnp.ones_like(positions)
        streams, short = self._short_convs(self.in_proj(x[:, None]), state, ones)
        x0, gates, z = self._gates([s[:, 0] for s in streams])
        history = state["long"]
        max_len = history.shape[2]
        rows = jnp.arange(x.shape[0])
        lag = positions[:, None] - jnp.arange(max_len)[None, :]  # [B, L]: each input's tap
        filters = self.filter()[:, :max_len]
        for n, gate in enumerate(gates):
            z = gate * z
            history = history.at[rows, n, positions].set(z)
            taps = jnp.where((lag >= 0)[..., None], filters[n][jnp.clip(lag, 0, max_len - 1)], 0.0)
            y = jnp.einsum("bld,bld->bd", history[:, n], taps, precision=jax.lax.Precision.HIGHEST)
            z = y + self.filter_bias[n] * z
        return self.out_proj((x0 * z).astype(self.dtype)), {"short": short, "long": history}

    def prefill(
        self, x: jax.Array, state: dict, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, dict]:
        """The chunk's long-conv inputs are written into the stored ones, then each long
        convolution runs over all of them (the training form, at the stored length) and is
        read at the chunk's positions. Inputs written for padding sit past the row's position,
        where a causal convolution does not look, and are overwritten before it does."""
        t = x.shape[1]
        streams, short = self._short_convs(self.in_proj(x), state, lengths)
        x0, gates, z = self._gates(streams)
        history = state["long"]
        max_len = history.shape[2]
        chunk_positions = positions[:, None] + jnp.arange(t)[None, :]  # [B, T]
        # Padding is written past the end, which drops it.
        writes = jnp.where(valid_mask(lengths, t), chunk_positions, max_len)
        reads = jnp.minimum(chunk_positions, max_len - 1)[..., None]
        rows = jnp.arange(x.shape[0])[:, None]
        filters = self.filter()[:, :max_len]
        for n, gate in enumerate(gates):
            z = gate * z
            history = history.at[rows, n, writes].set(z, mode="drop")
            z = jnp.take_along_axis(self._long_conv(history[:, n], filters[n], n), reads, axis=1)
        return self.out_proj((x0 * z).astype(self.dtype)), {"short": short, "long": history}

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """(N-1)·d·T long-conv inputs plus (N+1)·(short_filter-1)·d short-conv windows."""
        check(options)
        n = options["order"]
        return (n - 1) * d_model * seq_len + (n + 1) * (options["short_filter"] - 1) * d_model

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """2·d·(N+1)·d (in_proj) + 2·S·(N+1)·d (short conv) + (N-1)·d·c (long convs) + 2·d·d
        (out_proj), with c = T for `direct` (T/2 taps on average, x2) and c = 10·log2(2T) + 6 for
        `fft` (a forward and an inverse real FFT of length 2T at ~2.5·n·log2(n) each, and a complex
        product, per token). The filter FFN runs once per forward pass, shared by the batch, and
        element-wise work (gates, D term) is not counted."""
        check(options)
        d, n, s, t = d_model, options["order"], options["short_filter"], seq_len
        per_channel = t if options["long_conv"] == "direct" else 10 * math.log2(2 * t) + 6
        convs = (n - 1) * d * per_channel
        return int(2 * d * (n + 1) * d + 2 * s * (n + 1) * d + convs + 2 * d * d)

    @classmethod
    def param_count(
        cls, d_model: int, num_heads: int, options: Any, seq_len: int, use_bias: bool
    ) -> int:
        """in_proj (d+1)·(N+1)·d, short convs (S+1)·(N+1)·d, filter FFN (E+1)·F + 2·(F+1)·F +
        F·(N-1)·d + F (sine frequencies), filter bias (N-1)·d, out_proj (d+1)·d; `use_bias` does
        not apply."""
        check(options)
        d, n, s = d_model, options["order"], options["short_filter"]
        f, e = options["filter_order"], options["emb_dim"]
        filter_ffn = (e + 1) * f + INNER_LAYERS * (f + 1) * f + f * (n - 1) * d + f
        return (
            (d + 1) * (n + 1) * d + (s + 1) * (n + 1) * d + filter_ffn + (n - 1) * d + (d + 1) * d
        )
