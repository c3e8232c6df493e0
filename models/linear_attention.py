"""Linear attention and the gated linear attention family: `linear`, `retnet`, `mamba2`, `gla`.

Every mixer here keeps, per head, a state S (key_dim x value_dim) and reads it with the query:

    S_t = G_t * S_{t-1} + k_t v_t^T,        o_t = S_t^T q_t

The gate G_t is what the family varies, as an ablation knob:
- `linear`:  G_t = 1, with a kernel feature map on q and k (`feature_map`) and optionally the
  Katharopoulos et al. normaliser o_t / (phi(q_t) . sum_{s<=t} phi(k_s) + eps);
- `retnet`:  a constant per-head scalar gamma_h = 1 - 2^(-5-h) (RetNet);
- `mamba2`:  a data-dependent per-head scalar, log G_t = -dt_t * exp(A_log) with the step
  dt_t = softplus(x_t W + b), which also scales the write: dt_t k_t v_t^T (Mamba-2);
- `gla`:     a data-dependent vector over the key dim, log G_t = logsigmoid(x_t W1 W2 + b) / 16
  with a low-rank W1 W2 (GLA), broadcast over the value dim.
The ungated, unnormalised form is `linear` with `feature_map='identity', normalize=False`.

Training uses the chunked form (`chunked`): an inter-chunk state recurrence plus an intra-chunk
attention-like matrix. Decays inside a chunk are exp of pairwise differences of the cumulative
log-gate, masked before the exp, so every exponent is <= 0 and strong decay cannot overflow.
Decoding uses the recurrent form (`recurrent_step`). State and decay math are float32.

The gated mixers share an output head, computed in float32: an optional per-head RMSNorm of o_t
(`output_norm`), times a SiLU gate silu(x W_g) (`output_gate`), then the output projection —
GLA's fused norm-and-swish-gate; RetNet and Mamba-2 use the same pattern (GroupNorm / a gated
RMSNorm). `output_norm` is off by default for the gated family: a per-head norm maps a read-out
near zero (e.g. o_0 = (q_0.k_0) v_0 with q_0.k_0 ~ 0) to a unit vector whose sign flips with
rounding, and in bfloat16 compute this put 1 seed in 4 of a 2-layer d=32 model >5% off float32
(without it: all 8 seeds within 4.3%). Switch it on to follow the papers.
Positions enter only through the decay (and `model.short_conv`): RoPE is not applied here.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from models import blocks, products
from models.mixer import SequenceMixer, valid_mask
from models.registry import CONFIG_SECTIONS, MIXERS, check_choice

FEATURE_MAPS = ("elu", "relu", "identity", "taylor")
NORMALIZER_EPS = 1e-6  # Katharopoulos et al.
TAYLOR_FEATURE_DIM = 16  # Based's default projected dim for the Taylor feature map


# ---------------------------------------------------------------------------------------------
# Pure recurrences. q, k [B, T, H, K]; v [B, T, H, V]; log_gates [B, T, H] (a scalar per head)
# or [B, T, H, K] (a vector over the key dim), all <= 0; state [B, H, K, V]. float32 throughout.
# ---------------------------------------------------------------------------------------------


def recurrent_step(
    q: jax.Array, k: jax.Array, v: jax.Array, log_gate: jax.Array, state: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """One position: q, k [B, H, K]; v [B, H, V]; log_gate [B, H] or [B, H, K]. -> o [B, H, V]."""
    decay = jnp.exp(log_gate.astype(jnp.float32))
    decay = decay[..., None] if log_gate.ndim == q.ndim else decay[..., None, None]
    state = decay * state + k[..., :, None] * v[..., None, :]
    return jnp.einsum("bhk,bhkv->bhv", q, state), state


def _time_major(x: jax.Array) -> jax.Array:
    return jnp.moveaxis(x.astype(jnp.float32), 1, 0)


def recurrent(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_gates: jax.Array,
    initial_state: jax.Array,
    chunk_size: int | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Token-by-token form (a scan over time); `chunk_size` is ignored (same signature as
    `chunked`). Returns (out [B, T, H, V], final state [B, H, K, V])."""
    del chunk_size

    def body(state, xs):
        out, state = recurrent_step(*xs, state)
        return state, out

    xs = tuple(_time_major(a) for a in (q, k, v, log_gates))
    state, out = jax.lax.scan(body, initial_state.astype(jnp.float32), xs)
    return jnp.moveaxis(out, 0, 1), state


def segment_sums(g: jax.Array) -> jax.Array:
    """g [..., C] -> [..., C(i), C(j)] with entry sum_{j<m<=i} g_m for i >= j (0 elsewhere).

    Summed directly rather than as cs_i - cs_j so that the diagonal is exactly 0 with no
    gradient, and no gradient is a difference of large opposite terms (under strong decay the
    true gradients are ~e^-20 and such differences would leave O(eps) garbage in them)."""
    c = g.shape[-1]
    later = np.arange(c)[:, None] > np.arange(c)[None, :]  # [m, j]: m > j
    terms = jnp.where(later, g[..., :, None], 0.0)  # [..., m, j] = g_m if m > j
    return jnp.cumsum(terms, axis=-2)  # [..., i, j] = sum_{j<m<=i} g_m


def sums_after(g: jax.Array, axis: int) -> jax.Array:
    """b_j = sum_{m>j} g_m along `axis` (0 at the last position), summed from the end."""
    g = jnp.moveaxis(g, axis, -1)
    after = jnp.cumsum(g[..., ::-1], axis=-1)[..., ::-1]
    after = jnp.concatenate([after[..., 1:], jnp.zeros_like(g[..., :1])], axis=-1)
    return jnp.moveaxis(after, -1, axis)


# Up to this many chunks, the states entering them are computed at once as a masked product
# (N x N per key channel); beyond it, by a scan over the chunks, whose work grows as N rather than
# N^2. Where each wins on CPU: benchmarks/mqar_step_time.md.
PARALLEL_CHUNKS = 16


def chunk_states(
    log_carry: jax.Array, writes: jax.Array, initial_state: jax.Array | None
) -> tuple[jax.Array, jax.Array]:
    """The recurrence across chunks, S_n = e^{log_carry_n} * S_{n-1} + writes_n, from S_{-1} =
    `initial_state` (None: zero). log_carry [B, H, N] or [B, H, N, K]; writes [B, H, N, K, V].
    Returns (the final state [B, H, K, V], the state entering each chunk [B, H, N, K, V]).

    With N <= PARALLEL_CHUNKS, with L_n = log_carry_n,
        S_n = sum_{m<=n} e^{sum_{m<l<=n} L_l} writes_m + e^{sum_{l<=n} L_l} S_{-1}:
    exponents are sums of log-gates (<= 0), masked before the exp as within
    a chunk, and no loop runs (a scan of a few chunks cost more than the product on CPU)."""
    n = writes.shape[2]
    vector = log_carry.ndim == writes.ndim - 1
    if initial_state is None:
        start = jnp.zeros(writes.shape[:2] + writes.shape[3:], jnp.float32)
    else:
        start = initial_state
    if n == 1:  # no loop, so that an unused final state costs nothing (XLA drops it)
        carry = jnp.exp(log_carry[:, :, 0])
        carry = carry[..., None] if vector else carry[..., None, None]
        return carry * start + writes[:, :, 0], start[:, :, None]
    if n <= PARALLEL_CHUNKS:
        causal = np.tril(np.ones((n, n), bool))
        if vector:  # [B, H, K, N(i), N(j)]
            decay = jnp.exp(
                jnp.where(causal, segment_sums(jnp.swapaxes(log_carry, -1, -2)), -jnp.inf)
            )
            after = jnp.einsum("bhkij,bhjkv->bhikv", decay, writes)
        else:  # [B, H, N(i), N(j)]
            decay = jnp.exp(jnp.where(causal, segment_sums(log_carry), -jnp.inf))
            after = jnp.einsum("bhij,bhjkv->bhikv", decay, writes)
        if initial_state is not None:
            since = jnp.exp(jnp.cumsum(log_carry, axis=2))
            since = since[..., None] if vector else since[..., None, None]
            after += since * initial_state[:, :, None]
        entering = jnp.concatenate([start[:, :, None], after[:, :, :-1]], axis=2)
        return after[:, :, -1], entering
    carry = jnp.exp(log_carry)
    carry = carry[..., None] if vector else carry[..., None, None]

    def advance(state, xs):
        carry, write = xs
        return carry * state + write, state

    xs = (jnp.moveaxis(carry, 2, 0), jnp.moveaxis(writes, 2, 0))
    state, entering = jax.lax.scan(advance, start, xs)
    return state, jnp.moveaxis(entering, 0, 2)


def chunked(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    log_gates: jax.Array,
    initial_state: jax.Array | None,
    chunk_size: int,
    kernel: FeatureKernel | None = None,
) -> tuple[jax.Array, jax.Array]:
    """Chunked-parallel form, equal to `recurrent`. Returns (out [B, T, H, V], final state).
    `initial_state` None is a zero state whose read-out is skipped (training). With a `kernel`
    (scalar gates only), q and k are the vectors before its feature map: the intra-chunk scores
    come from `kernel.pairwise`, and only the state, read and written across chunks, is in
    feature space (the same function as `recurrent` on the mapped q and k).

    T is padded up to a multiple of the chunk with k = v = 0 and log-gate 0 (no decay), which
    leaves the state after the last real position unchanged. Within a chunk, from the state S
    entering it, with a_i = sum_{m<=i} g_m (decay since the chunk start), b_j = sum_{m>j} g_m
    (decay to the chunk end) and D_ij = sum_{j<m<=i} g_m:
        o_i = (q_i * e^{a_i})^T S + sum_{j<=i} [sum_d q_id k_jd e^{D_ijd}] v_j
        S'  = e^{a_C} * S + sum_j (k_j * e^{b_j}) v_j^T
    All exponents are sums of log-gates, so <= 0; pairs j > i are set to -inf before the exp (no
    inf ever appears, in values or gradients).

    Everything but the state entering each chunk is computed for all chunks at once, as batched
    products; only S' = e^{a_C} * S + W runs across them (`chunk_states`: a masked product for a
    few chunks, a scan for many). (A scan whose body held the products was several times slower
    on CPU, its backward most: benchmarks/mqar_step_time.md.)
    """
    b, t, h, _ = q.shape
    c = max(1, min(chunk_size, t))
    n = -(-t // c)
    pad = n * c - t
    vector = log_gates.ndim == q.ndim

    def chunks(x: jax.Array) -> jax.Array:  # [B, T, H, ...] -> [B, H, N, C, ...]
        x = jnp.pad(x.astype(jnp.float32), [(0, 0), (0, pad)] + [(0, 0)] * (x.ndim - 2))
        x = x.reshape(b, n, c, *x.shape[2:])
        return jnp.moveaxis(x, (1, 2), (2, 3))

    q, k, v, g = (chunks(a) for a in (q, k, v, log_gates))
    causal = np.tril(np.ones((c, c), bool))
    if vector:  # g [B, H, N, C, K]: decays per key channel, along the chunk axis (-2)
        since_start = jnp.cumsum(g, axis=-2)
        to_end = sums_after(g, axis=-2)
        # [B, H, N, K, C(i), C(j)]; a fused multiply-and-sum over [..., C, C, K] was slower on
        # CPU (benchmarks/mqar_step_time.md)
        decay = jnp.exp(jnp.where(causal, segment_sums(jnp.swapaxes(g, -1, -2)), -jnp.inf))
        scores = jnp.einsum("...ik,...jk,...kij->...ij", q, k, decay)
        q_read, k_write = q * jnp.exp(since_start), k * jnp.exp(to_end)
        log_carry = since_start[..., -1, :]  # [B, H, N, K]: each chunk's decay, start to end
    else:  # decay [B, H, N, C(i), C(j)]
        since_start = jnp.cumsum(g, axis=-1)
        to_end = sums_after(g, axis=-1)
        decay = jnp.exp(jnp.where(causal, segment_sums(g), -jnp.inf))
        if kernel is None:
            scores = jnp.einsum("...ik,...jk->...ij", q, k) * decay
        else:
            scores = kernel.pairwise(q, k) * decay
            q, k = kernel.features(q), kernel.features(k)
        q_read = q * jnp.exp(since_start)[..., None]
        k_write = k * jnp.exp(to_end)[..., None]
        log_carry = since_start[..., -1]  # [B, H, N]
    out = products.matmul(scores, v)
    writes = products.matmul(products.transposed(k_write), v)  # [B, H, N, K, V]
    reads_first = initial_state is not None
    if initial_state is not None:
        initial_state = initial_state.astype(jnp.float32)
    state, entering = chunk_states(log_carry, writes, initial_state)
    if reads_first:
        out += products.matmul(q_read, entering)
    elif n > 1:
        later = products.matmul(q_read[:, :, 1:], entering[:, :, 1:])
        out = out.at[:, :, 1:].add(later)
    out = jnp.moveaxis(out, 1, 3).reshape(b, n * c, h, v.shape[-1])  # [B, T', H, V]
    return out[:, :t], state


# ---------------------------------------------------------------------------------------------
# Gates: each maps x [..., D] to log-gates [..., H] or [..., H, K].
# ---------------------------------------------------------------------------------------------


def _uniform_log(low: float, high: float):
    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, math.log(low), math.log(high))

    return init


def _dt_bias_init(key, shape, dtype=jnp.float32):
    """Mamba-2: dt ~ log-uniform on [1e-3, 1e-1], stored as softplus^{-1}(dt)."""
    dt = jnp.exp(_uniform_log(1e-3, 1e-1)(key, shape, dtype))
    return dt + jnp.log(-jnp.expm1(-dt))


class ScalarDecay(nn.Module):
    """Mamba-2's data-dependent scalar per head: log g = -dt * A with the step size
    dt = softplus(x W + dt_bias) and A = exp(A_log) ~ U[1, 16]. Params: d*H + 2H."""

    num_heads: int
    dtype: Any = jnp.float32

    def setup(self) -> None:
        heads = (self.num_heads,)
        self.dt = blocks.dense(self.num_heads, ("embed", "heads"), self.dtype)
        self.dt_bias = self.param(
            "dt_bias", nn.with_logical_partitioning(_dt_bias_init, ("heads",)), heads, jnp.float32
        )
        self.A_log = self.param(
            "A_log",
            nn.with_logical_partitioning(_uniform_log(1.0, 16.0), ("heads",)),
            heads,
            jnp.float32,
        )

    def step_and_log_gate(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(dt, log g), each [..., H]."""
        dt = jax.nn.softplus(self.dt(x).astype(jnp.float32) + self.dt_bias)
        return dt, -dt * jnp.exp(self.A_log)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.step_and_log_gate(x)[1]

    @staticmethod
    def param_count(d_model: int, num_heads: int) -> int:
        return d_model * num_heads + 2 * num_heads


class LowRankVectorDecay(nn.Module):
    """GLA's data-dependent gate over the key dim: log g = logsigmoid(x W1 W2 + b) / normalizer,
    W1: d -> rank (no bias), W2: rank -> H*K (with bias). Params: d*r + r*H*K + H*K."""

    num_heads: int
    key_dim: int
    rank: int
    normalizer: float
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        low = blocks.dense(
            self.rank, ("embed", None), self.dtype, name="down", transpose_input_for_grad=True
        )(x)
        logits = blocks.dense(
            (self.num_heads, self.key_dim),
            (None, "heads", "kv"),
            self.dtype,
            use_bias=True,
            name="up",
            transpose_input_for_grad=True,
        )(low)
        return jax.nn.log_sigmoid(logits.astype(jnp.float32)) / self.normalizer

    @staticmethod
    def param_count(d_model: int, num_heads: int, key_dim: int, rank: int) -> int:
        return d_model * rank + rank * num_heads * key_dim + num_heads * key_dim


def retnet_log_decay(num_heads: int) -> jax.Array:
    """log(1 - 2^(-5-h)) for heads h = 0..H-1."""
    return jnp.log1p(-(2.0 ** (-5.0 - jnp.arange(num_heads, dtype=jnp.float32))))


# ---------------------------------------------------------------------------------------------
# The shared mixer skeleton: q/k/v projections, a recurrence, the output head.
# ---------------------------------------------------------------------------------------------


ACTIVATIONS = {"silu": jax.nn.silu, "identity": lambda x: x}
QK_NORMS = ("none", "l2")
L2_EPS = 1e-6


def only_where(real: jax.Array, x: jax.Array) -> jax.Array:
    """x [B, T, ...] with zeros where `real` [B, T] is false."""
    return jnp.where(real.reshape(real.shape + (1,) * (x.ndim - 2)), x, 0.0)


def l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + L2_EPS)


class ProjectedRecurrentMixer(SequenceMixer):
    """Shared by the gated family and the delta rule (models/delta_rule.py). Subclasses give,
    besides every mixer's LETTER and SECTION (its errors quote SECTION), `dims`, `_extra_setup`,
    `_inputs` (q, k, v, usually from `_projections`, and the gate inputs), `_parallel` and
    `_step` (the recurrence), `_hold` when its inputs are not (q, k, v, log-gates) and
    `_extra_param_count`. Options `qk_activation` and
    `v_activation` (silu | identity), and `qk_norm` (none | l2, after the activation), where a
    section has them, act on the projections."""

    def setup(self) -> None:
        key_dim, value_dim = self.dims(self.d_model, self.num_heads, self.options)
        self.key_dim, self.value_dim = key_dim, value_dim
        # The projections of x: their gradients arrive through the recurrence's reshapes and
        # activations, where a transposed input is cheaper (blocks.Dense._transposes_input).
        names, bias = ("embed", "heads", "kv"), self.use_bias
        projection = functools.partial(
            blocks.dense,
            names=names,
            dtype=self.dtype,
            use_bias=bias,
            transpose_input_for_grad=True,
        )
        self.query = projection((self.num_heads, key_dim))
        self.key = projection((self.num_heads, key_dim))
        self.value = projection((self.num_heads, value_dim))
        self.out = blocks.dense(
            self.d_model, ("heads", "kv", "embed"), self.dtype, axis=(-2, -1), use_bias=bias
        )
        if self.options["output_norm"]:
            self.out_norm = blocks.rms_norm(jnp.float32, axis_name="kv")
        if self.options["output_gate"]:
            self.out_gate = projection((self.num_heads, value_dim))
        self._extra_setup()

    def _extra_setup(self) -> None:
        pass

    def _projections(self, x: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """q, k [..., H, K] and v [..., H, V] in float32, after their activations."""
        qk_act = ACTIVATIONS[self.options.get("qk_activation", "identity")]
        v_act = ACTIVATIONS[self.options.get("v_activation", "identity")]
        q, k = (qk_act(p(x).astype(jnp.float32)) for p in (self.query, self.key))
        if self.options.get("qk_norm", "none") == "l2":
            q, k = l2_normalize(q), l2_normalize(k)
        return q, k, v_act(self.value(x).astype(jnp.float32))

    def _output(self, x: jax.Array, o: jax.Array) -> jax.Array:
        """o [B, T, H, V] (float32) -> [B, T, D]: norm, gate, project."""
        if self.options["output_norm"]:
            o = self.out_norm(o)
        if self.options["output_gate"]:
            o = o * jax.nn.silu(self.out_gate(x).astype(jnp.float32))
        return self.out(o.astype(self.dtype))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        o, _ = self._parallel(self._inputs(x), None)  # None: the empty state
        return self._output(x, o)

    def init_state(self, batch_size: int, max_len: int) -> jax.Array:
        return jnp.zeros((batch_size, self.num_heads, self.key_dim, self.value_dim), jnp.float32)

    def prefill(
        self, x: jax.Array, state: jax.Array, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        inputs = self._hold(self._inputs(x), valid_mask(lengths, x.shape[1]))
        o, state = self._parallel(inputs, state)
        return self._output(x, o), state

    def _hold(self, inputs: tuple[jax.Array, ...], real: jax.Array) -> tuple[jax.Array, ...]:
        """`_inputs` with the padding positions (`real` [B, T] false) made ones that leave the
        state as it was: no write (k = 0) and no decay (log-gate 0)."""
        q, k, v, log_gates = inputs
        return q, only_where(real, k), v, only_where(real, log_gates)

    def step(
        self, x: jax.Array, state: jax.Array, positions: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        inputs = tuple(a[:, 0] for a in self._inputs(x[:, None]))
        o, state = self._step(inputs, state)
        return self._output(x[:, None], o[:, None])[:, 0], state

    @classmethod
    def dims(cls, d_model: int, num_heads: int, options: Any) -> tuple[int, int]:
        """(key_dim, value_dim) per head: head_dim * expand_k, head_dim * expand_v."""
        for option in ("qk_activation", "v_activation"):
            if option in options:
                check_choice(f"{cls.SECTION}.{option}", options[option], tuple(ACTIVATIONS))
        if "qk_norm" in options:
            check_choice(f"{cls.SECTION}.qk_norm", options["qk_norm"], QK_NORMS)
        head_dim = d_model // num_heads
        key_dim = int(head_dim * options.get("expand_k", 1.0))
        value_dim = int(head_dim * options.get("expand_v", 1.0))
        if key_dim < 1 or value_dim < 1:
            raise ValueError(
                f"{cls.__name__}: expand_k/expand_v give key_dim={key_dim}, "
                f"value_dim={value_dim}; both must be >= 1"
            )
        return key_dim, value_dim

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """H * key_dim * value_dim: one matrix per head, whatever the length."""
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        return num_heads * key_dim * value_dim

    @classmethod
    def _projection_flops(cls, d_model: int, num_heads: int, options: Any) -> int:
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        hk, hv = num_heads * key_dim, num_heads * value_dim
        gate = hv if options["output_gate"] else 0
        return 2 * d_model * (2 * hk + 2 * hv + gate)

    @classmethod
    def param_count(
        cls, d_model: int, num_heads: int, options: Any, seq_len: int, use_bias: bool
    ) -> int:
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        hk, hv = num_heads * key_dim, num_heads * value_dim
        count = d_model * (2 * hk + hv) + hv * d_model
        if use_bias:
            count += 2 * hk + hv + d_model
        if options["output_norm"]:
            count += value_dim
        if options["output_gate"]:
            count += d_model * hv + (hv if use_bias else 0)
        return count + cls._extra_param_count(d_model, num_heads, options)

    @classmethod
    def _extra_param_count(cls, d_model: int, num_heads: int, options: Any) -> int:
        return 0


# ---------------------------------------------------------------------------------------------
# The gated family.
# ---------------------------------------------------------------------------------------------

GATED_DEFAULTS = {
    # training form: chunks of this many positions (the last may be ragged). 64 (16 before)
    # was the fastest train step at T 64 and 2048 on CPU (benchmarks/mqar_step_time.md).
    "chunk_size": 64,
    "expand_k": 1.0,  # key dim per head = head_dim * expand_k (GLA uses 0.5)
    "expand_v": 1.0,  # value dim per head = head_dim * expand_v (RetNet uses 2)
    "output_norm": False,  # per-head RMSNorm of the read-out (the papers'; off: see docstring)
    "output_gate": True,  # times silu(x W_g) before the output projection
    "qk_activation": "identity",  # on the q and k projections: silu | identity
    "v_activation": "identity",  # on the v projection: silu | identity
    "qk_norm": "none",  # none | l2: unit q and k per head (after the activation), as DeltaNet
}
# Chunks of 8 for GLA: its per-channel decays make the intra-chunk work T·C·K per head, and 8
# was the fastest chunk on CPU (experiments/mqar_mixers.md).
GLA_DEFAULTS = {
    **GATED_DEFAULTS,
    "chunk_size": 8,
    "gate_low_rank_dim": 16,
    "gate_logit_normalizer": 16.0,
}
# Mamba-2 discretizes its input with the same step as the decay: S_t = e^{-dt A} S_{t-1} +
# dt k_t v_t^T, so a position it does not attend to (dt -> 0) is neither written nor forgets;
# and its x, B, C (our v, k, q) pass through a SiLU. On `mqar` (width 64, 2 layers, 600 steps)
# the gate-only form reached 0.07 accuracy, with the dt-scaled write 0.19, and with the SiLUs too
# 0.22 (0.17 already at step 200).
MAMBA2_DEFAULTS = {
    **GATED_DEFAULTS,
    "dt_scales_input": True,
    "qk_activation": "silu",
    "v_activation": "silu",
}
for _name, _defaults in (
    ("retnet", GATED_DEFAULTS),
    ("mamba2", MAMBA2_DEFAULTS),
    ("gla", GLA_DEFAULTS),
):
    CONFIG_SECTIONS.register(_name)(dict(_defaults))


class GatedLinearAttention(ProjectedRecurrentMixer):
    """S_t = G_t * S_{t-1} + k_t v_t^T, o_t = S_t^T q_t with q scaled by key_dim^-1/2; the gate
    G_t is chosen by the subclass (`GATE`). Chunked-parallel for training, recurrent for decoding.
    """

    GATE = ""

    def _extra_setup(self) -> None:
        if self.GATE == "mamba2":
            self.decay = ScalarDecay(self.num_heads, self.dtype)
        elif self.GATE == "gla":
            self.decay = LowRankVectorDecay(
                self.num_heads,
                self.key_dim,
                self.options["gate_low_rank_dim"],
                self.options["gate_logit_normalizer"],
                self.dtype,
            )

    def _inputs(self, x: jax.Array) -> tuple[jax.Array, ...]:
        q, k, v = self._projections(x)
        q = q * self.key_dim**-0.5
        if self.GATE == "retnet":
            log_gates = jnp.broadcast_to(
                retnet_log_decay(self.num_heads), x.shape[:-1] + (self.num_heads,)
            )
        elif self.GATE == "mamba2":
            dt, log_gates = self.decay.step_and_log_gate(x)
            if self.options["dt_scales_input"]:
                v = v * dt[..., None]
        else:
            log_gates = self.decay(x)
        return q, k, v, log_gates

    def _parallel(self, inputs, state):
        return chunked(*inputs, state, self.options["chunk_size"])

    def _step(self, inputs, state):
        return recurrent_step(*inputs, state)

    @classmethod
    def _extra_param_count(cls, d_model: int, num_heads: int, options: Any) -> int:
        if cls.GATE == "mamba2":
            return ScalarDecay.param_count(d_model, num_heads)
        if cls.GATE == "gla":
            key_dim, _ = cls.dims(d_model, num_heads, options)
            return LowRankVectorDecay.param_count(
                d_model, num_heads, key_dim, options["gate_low_rank_dim"]
            )
        return 0

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Projections 2·d·(2·H·K + 2·H·V [+ H·V output gate]), plus per head the chunked core
        2·C·(K + V) (intra-chunk scores and mixing over a full chunk C = min(chunk_size, T))
        + 4·K·V (inter-chunk read-out and state update); gate projections: mamba2 2·d·H,
        gla 2·r·(d + H·K)."""
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        c = min(options["chunk_size"], seq_len)
        core = num_heads * (2 * c * (key_dim + value_dim) + 4 * key_dim * value_dim)
        gate = 0
        if cls.GATE == "mamba2":
            gate = 2 * d_model * num_heads
        elif cls.GATE == "gla":
            gate = 2 * options["gate_low_rank_dim"] * (d_model + num_heads * key_dim)
        return int(cls._projection_flops(d_model, num_heads, options) + core + gate)


@MIXERS.register("retnet")
class RetNet(GatedLinearAttention):
    """Retention: a fixed per-head decay gamma_h = 1 - 2^(-5-h)."""

    LETTER = "R"
    SECTION = GATE = "retnet"


@MIXERS.register("mamba2")
class Mamba2(GatedLinearAttention):
    """Mamba-2 as gated linear attention (SSD): a data-dependent scalar decay per head, and (with
    `dt_scales_input`, Mamba-2's discretization) writes dt_t k_t v_t^T; without it, the gate-only
    form of the family."""

    LETTER = "S"
    SECTION = GATE = "mamba2"


@MIXERS.register("gla")
class GLA(GatedLinearAttention):
    """Gated linear attention: a data-dependent decay per key channel (low-rank gate)."""

    LETTER = "G"
    SECTION = GATE = "gla"


# ---------------------------------------------------------------------------------------------
# Linear attention with a feature map.
# ---------------------------------------------------------------------------------------------

DEFAULTS = {
    "feature_map": "elu",  # elu (elu+1) | relu | identity | taylor (Based's 2nd-order Taylor)
    "feature_dim": 0,  # q/k dim per head before the feature map; 0: head_dim (16 for taylor)
    "normalize": True,  # divide by phi(q_t) . sum_{s<=t} phi(k_s) + eps (Katharopoulos et al.)
    # 64 (16 before): with the Taylor map, a chunk as long as the input needs no feature-space
    # state at all in training (benchmarks/mqar_step_time.md)
    "chunk_size": 64,
    "output_norm": False,  # the gated family's output head, off by default here
    "output_gate": False,
}
CONFIG_SECTIONS.register("linear")(DEFAULTS)


class FeatureKernel(NamedTuple):
    """A feature map and the products of mapped vectors computed without mapping them: Based's
    Taylor map has 1 + d + d^2 features of a d-dim vector, while the product of two needs only
    their dot product."""

    features: Callable[[jax.Array], jax.Array]  # [..., d] -> [..., F]
    # q [..., C, d], k [..., C, d] -> [..., C(i), C(j)]: features(q_i) . features(k_j)
    pairwise: Callable[[jax.Array, jax.Array], jax.Array]


def taylor_products(q: jax.Array, k: jax.Array) -> jax.Array:
    """taylor_feature_map(q_i) . taylor_feature_map(k_j) = 1 + s + s^2 / 2 with
    s = q_i.k_j / sqrt(d)."""
    s = jnp.einsum("...id,...jd->...ij", q, k) / math.sqrt(q.shape[-1])
    return 1.0 + s + 0.5 * s * s


def taylor_feature_map(x: jax.Array) -> jax.Array:
    """Based: phi(x) = [1, x / d^(1/4), vec(x x^T) / (sqrt(2) sqrt(d))], so that
    phi(q).phi(k) = 1 + q.k/sqrt(d) + (q.k)^2 / (2d), the 2nd-order Taylor series of
    exp(q.k / sqrt(d)). [..., d] -> [..., 1 + d + d^2]."""
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).reshape(*x.shape[:-1], d * d)
    ones = jnp.ones_like(x[..., :1])
    return jnp.concatenate([ones, x / d**0.25, outer / (math.sqrt(2.0) * math.sqrt(d))], -1)


TAYLOR = FeatureKernel(taylor_feature_map, taylor_products)


def feature_map(name: str, x: jax.Array) -> jax.Array:
    if name == "elu":
        return jax.nn.elu(x) + 1.0
    if name == "relu":
        return jax.nn.relu(x)
    if name == "identity":
        return x
    if name == "taylor":
        return taylor_feature_map(x)
    raise ValueError(f"unknown linear.feature_map {name!r}; valid: {', '.join(FEATURE_MAPS)}")


@MIXERS.register("linear")
class LinearAttention(ProjectedRecurrentMixer):
    """o_t = sum_{s<=t} (phi(q_t).phi(k_s)) v_s [/ (phi(q_t).sum_{s<=t} phi(k_s) + eps)].

    The normaliser rides along as an extra all-ones value column, so its running sum is one more
    column of the state (value_dim + 1) and the same chunked/recurrent kernels compute both.
    With `identity` and no normalisation this is the gated family's recurrence with G = 1.
    """

    LETTER = "L"
    SECTION = "linear"

    @classmethod
    def dims(cls, d_model: int, num_heads: int, options: Any) -> tuple[int, int]:
        """(projected q/k dim, value dim) per head."""
        check_choice("linear.feature_map", options["feature_map"], FEATURE_MAPS)
        default = TAYLOR_FEATURE_DIM if options["feature_map"] == "taylor" else 0
        return options["feature_dim"] or default or d_model // num_heads, d_model // num_heads

    @classmethod
    def state_dims(cls, d_model: int, num_heads: int, options: Any) -> tuple[int, int]:
        """(feature size after the map, value columns incl. the normaliser's) per head."""
        proj, value_dim = cls.dims(d_model, num_heads, options)
        features = 1 + proj + proj * proj if options["feature_map"] == "taylor" else proj
        return features, value_dim + (1 if options["normalize"] else 0)

    def init_state(self, batch_size: int, max_len: int) -> jax.Array:
        shape = self.state_dims(self.d_model, self.num_heads, self.options)
        return jnp.zeros((batch_size, self.num_heads, *shape), jnp.float32)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        if self.options["feature_map"] != "taylor":
            return super().__call__(x, train=train)
        # Training from the empty state: scores within a chunk from q.k, not 1 + d + d^2
        # features (`FeatureKernel`).
        q, k, v, log_gates = self._inputs(x, mapped=False)
        o, _ = chunked(q, k, v, log_gates, None, self.options["chunk_size"], TAYLOR)
        return self._output(x, self._normalize(o))

    def _inputs(self, x: jax.Array, mapped: bool = True) -> tuple[jax.Array, ...]:
        """q, k (through the feature map if `mapped`), v (with the normaliser's column of
        ones) and zero log-gates."""
        name = self.options["feature_map"]
        q, k = (p(x).astype(jnp.float32) for p in (self.query, self.key))
        if mapped:
            q, k = feature_map(name, q), feature_map(name, k)
        v = self.value(x).astype(jnp.float32)
        if self.options["normalize"]:
            v = jnp.concatenate([v, jnp.ones_like(v[..., :1])], axis=-1)
        return q, k, v, jnp.zeros(x.shape[:-1] + (self.num_heads,), jnp.float32)

    def _normalize(self, o: jax.Array) -> jax.Array:
        if not self.options["normalize"]:
            return o
        return o[..., :-1] / (o[..., -1:] + NORMALIZER_EPS)

    def _parallel(self, inputs, state):
        o, state = chunked(*inputs, state, self.options["chunk_size"])
        return self._normalize(o), state

    def _step(self, inputs, state):
        o, state = recurrent_step(*inputs, state)
        return self._normalize(o), state

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """H * F * (V [+1 normaliser]), F the feature size (1 + f + f^2 for taylor)."""
        features, columns = cls.state_dims(d_model, num_heads, options)
        return num_heads * features * columns

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Projections 2·d·(2·H·f + 2·H·V [+ H·V output gate]), plus per head the chunked core
        2·C·(F + V') + 4·F·V' with F the feature size, V' = V (+1 with the normaliser),
        C = min(chunk_size, T)."""
        features, columns = cls.state_dims(d_model, num_heads, options)
        c = min(options["chunk_size"], seq_len)
        core = num_heads * (2 * c * (features + columns) + 4 * features * columns)
        return int(cls._projection_flops(d_model, num_heads, options) + core)
