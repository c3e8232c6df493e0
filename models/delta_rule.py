"""The delta rule: `deltanet` and `gated_deltanet`.

Per head, a state S (key_dim x value_dim, i.e. the transpose of the papers' V x K) is corrected
towards each new association instead of only accumulating it:

    S_t = a_t (I - b_t k_t k_t^T) S_{t-1} + b_t k_t v_t^T,      o_t = S_t^T q_t

equivalently S' = a_t S_{t-1}; S_t = S' + b_t k_t (v_t - S'^T k_t)^T. q and k are L2-normalised
per head (q then scaled by key_dim^-1/2), after a SiLU (`qk_activation`, FLA's default),
b_t = sigmoid(x_t W_b) per head. The SiLU matters for learning: on `mqar` (width 64, 2 layers,
1 head) DeltaNet reached 0.94 accuracy at step 300 with it and 0.19 at step 600 without.
DeltaNet has a_t = 1; Gated DeltaNet adds Mamba-2's data-dependent scalar decay
log a_t = -softplus(x W + b) exp(A_log).

Training and prefill use the chunked-parallel form (`chunked_delta_rule`; Yang et al. 2024,
"Parallelizing Linear Transformers with the Delta Rule over Sequence Length", with Gated
DeltaNet's scalar decay, as FLA's `chunk_delta_rule` / `chunk_gated_delta_rule`): within a chunk
of C positions the C rank-1 corrections collapse, through the WY / UT transform, into one unit
lower-triangular solve and matrix products, leaving T/C sequential steps. `delta_rule` (a
`lax.scan` of `delta_step` over time) is the reference it is tested against; decoding uses
`delta_step`. The output head (per-head RMSNorm, SiLU gate, projection) is the gated linear
attention family's (models/linear_attention.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from models import blocks
from models.linear_attention import (
    ProjectedRecurrentMixer,
    ScalarDecay,
    l2_normalize,
    only_where,
    segment_sums,
)
from models.registry import CONFIG_SECTIONS, MIXERS


def delta_step(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_alpha: jax.Array,
    state: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One position: q, k [B, H, K]; v [B, H, V]; beta, log_alpha [B, H]; state [B, H, K, V]."""
    state = jnp.exp(log_alpha)[..., None, None] * state
    error = v - jnp.einsum("bhk,bhkv->bhv", k, state)
    state = state + (beta[..., None] * k)[..., :, None] * error[..., None, :]
    return jnp.einsum("bhk,bhkv->bhv", q, state), state


def delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_alpha: jax.Array,
    initial_state: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """Scan over time. q, k [B, T, H, K]; v [B, T, H, V]; beta, log_alpha [B, T, H].
    Returns (out [B, T, H, V], final state [B, H, K, V]), float32."""

    def body(state, xs):
        out, state = delta_step(*xs, state)
        return state, out

    xs = tuple(jnp.moveaxis(a.astype(jnp.float32), 1, 0) for a in (q, k, v, beta, log_alpha))
    state, out = jax.lax.scan(body, initial_state.astype(jnp.float32), xs)
    return jnp.moveaxis(out, 0, 1), state


def _to_chunks(x: jax.Array, chunk: int) -> jax.Array:
    """[B, T, H, ...] -> [B, H, N, C, ...] in float32, T zero-padded up to N·C."""
    b, t = x.shape[:2]
    n = -(-t // chunk)
    x = jnp.pad(x.astype(jnp.float32), [(0, 0), (0, n * chunk - t)] + [(0, 0)] * (x.ndim - 2))
    x = x.reshape(b, n, chunk, *x.shape[2:])
    return jnp.moveaxis(x, (1, 2), (2, 3))


def _from_chunks(x: jax.Array, length: int) -> jax.Array:
    """[B, H, N, C, V] -> [B, T, H, V], dropping the padding."""
    b, h, n, c, v = x.shape
    return jnp.moveaxis(x, 1, 3).reshape(b, n * c, h, v)[:, :length]


@jax.custom_vjp
def unit_lower_inverse(a: jax.Array) -> jax.Array:
    """(I + a)^-1 for a [..., C, C] strictly lower triangular (zero on and above the diagonal).

    Forward substitution, one row at a time: exact up to rounding and backward stable, unlike
    the Neumann doubling product (I - a)(I + a^2)(I + a^4)..., whose terms cancel
    catastrophically when keys in a chunk are nearly parallel. `solve_triangular` (batched
    LAPACK trsm, one call per tiny matrix) made the whole forward+backward ~80x slower on CPU.
    The gradient is the closed form d(M^-1) = -M^-1 dM M^-1 (two matmuls) rather than autodiff
    back through the C-step loop."""
    c = a.shape[-1]

    def row(i, inverse):  # row i = e_i - sum_{j<i} a_ij (row j), rows j < i already final
        a_i = jnp.take(a, i, axis=-2)  # zero from column i on
        return inverse.at[..., i, :].add(-jnp.einsum("...j,...jk->...k", a_i, inverse))

    return jax.lax.fori_loop(1, c, row, jnp.broadcast_to(jnp.eye(c, dtype=a.dtype), a.shape))


def _unit_lower_inverse_fwd(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    inverse = unit_lower_inverse(a)
    return inverse, inverse


def _unit_lower_inverse_bwd(inverse: jax.Array, grad: jax.Array) -> tuple[jax.Array]:
    inverse_t = jnp.swapaxes(inverse, -1, -2)
    return (-jnp.tril(inverse_t @ grad @ inverse_t, -1),)  # only the strictly lower part is used


unit_lower_inverse.defvjp(_unit_lower_inverse_fwd, _unit_lower_inverse_bwd)


def wy_representation(
    k: jax.Array, v: jax.Array, beta: jax.Array, decay: jax.Array, since_start: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The UT transform of one chunk: (U, W) with U = T V, W = T (e^a * K), where
    T = (I + strictly-lower(diag(beta) K K^T * decay))^-1 diag(beta).

    k [..., C, K], v [..., C, V], beta and since_start (a_i) [..., C], decay [..., C, C].
    Unrolling the step inside a chunk from the entering state S gives S_i = e^{a_i} S +
    sum_{j<=i} e^{D_ij} k_j u_j^T with u_i = beta_i (v_i - e^{a_i} S^T k_i - sum_{j<i} e^{D_ij}
    (k_i.k_j) u_j): a unit lower-triangular system whose solution is u = U - W S."""
    c = k.shape[-2]
    strictly_lower = np.tril(np.ones((c, c), bool), -1)
    a = jnp.where(strictly_lower, jnp.einsum("...ik,...jk->...ij", k, k) * decay, 0.0)
    t = unit_lower_inverse(beta[..., :, None] * a)
    u = jnp.einsum("...ij,...jv->...iv", t, beta[..., None] * v)
    w = jnp.einsum("...ij,...jk->...ik", t, (beta * jnp.exp(since_start))[..., None] * k)
    return u, w


def chunked_delta_rule(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    beta: jax.Array,
    log_alpha: jax.Array,
    initial_state: jax.Array,
    chunk_size: int,
) -> tuple[jax.Array, jax.Array]:
    """Chunked-parallel (WY / UT transform) form, equal to `delta_rule`. Shapes as there.

    Within a chunk of C positions, with a_i = sum_{m<=i} g_m (decay since the chunk start, g =
    log_alpha) and D_ij = sum_{j<m<=i} g_m, and S the state entering the chunk:
        u   = U - W S                                  (corrected values; `wy_representation`)
        o_i = e^{a_i} S^T q_i + sum_{j<=i} e^{D_ij} (q_i.k_j) u_j
        S'  = e^{a_C} S + sum_j e^{D_Cj} k_j u_j^T
    Everything but u and S' is computed for all chunks at once; only these two matrix products
    per chunk run in a sequential scan. All exponents are sums of log-gates, so <= 0, and pairs
    j > i are set to -inf before the exp: strong decay cannot overflow, in values or gradients.
    T is padded up to a multiple of the chunk with k = v = 0, beta = 0, log_alpha = 0, which
    leaves the state after the last real position unchanged.
    """
    t = q.shape[1]
    c = max(1, min(chunk_size, t))
    q, k, v, beta, g = (_to_chunks(a, c) for a in (q, k, v, beta, log_alpha))
    causal = np.tril(np.ones((c, c), bool))
    decay = jnp.exp(jnp.where(causal, segment_sums(g), -jnp.inf))  # [B, H, N, C, C]: e^{D_ij}
    since_start = jnp.cumsum(g, axis=-1)  # [B, H, N, C]: a_i
    u, w = wy_representation(k, v, beta, decay, since_start)
    k_write = k * decay[..., -1, :, None]  # k_j e^{D_Cj}: decayed to the chunk end
    carry = jnp.exp(since_start[..., -1])[..., None, None]  # [B, H, N, 1, 1]: e^{a_C}

    def body(state, xs):
        u, w, k_write, carry = xs
        new_v = u - jnp.einsum("bhck,bhkv->bhcv", w, state)
        next_state = carry * state + jnp.einsum("bhck,bhcv->bhkv", k_write, new_v)
        return next_state, (state, new_v)

    xs = tuple(jnp.moveaxis(a, 2, 0) for a in (u, w, k_write, carry))
    state, (entering, new_v) = jax.lax.scan(body, initial_state.astype(jnp.float32), xs)
    entering, new_v = jnp.moveaxis(entering, 0, 2), jnp.moveaxis(new_v, 0, 2)
    scores = jnp.einsum("bhnik,bhnjk->bhnij", q, k) * decay
    out = jnp.einsum("bhnij,bhnjv->bhniv", scores, new_v) + jnp.einsum(
        "bhnik,bhnkv->bhniv", q * jnp.exp(since_start)[..., None], entering
    )
    return _from_chunks(out, t), state


DEFAULTS = {
    "qk_activation": "silu",  # on q and k before the L2 norm: silu | identity
    "v_activation": "identity",  # on v: silu | identity
    "expand_v": 1.0,  # value dim per head = head_dim * expand_v (Gated DeltaNet uses 2)
    "output_norm": True,  # per-head RMSNorm of the read-out (DeltaNet's and FLA's default)
    "output_gate": False,  # times silu(x W_g) before the output projection
    # positions per chunk of the training form. Core forward+backward on CPU (B 64, H 1,
    # K = V = 64) against the sequential scan: 32 was 11x faster at T 64 and 7.2x at T 256,
    # 16 9x and 6.8x, 8 4x and 3.9x; in the whole MQAR train step 64 (32 before) was faster
    # still at T 64 and no slower at T 2048 (benchmarks/mqar_step_time.md)
    "chunk_size": 64,
}
CONFIG_SECTIONS.register("deltanet")(dict(DEFAULTS))
CONFIG_SECTIONS.register("gated_deltanet")({**DEFAULTS, "output_gate": True})


class DeltaRule(ProjectedRecurrentMixer):
    GATED = False

    def _extra_setup(self) -> None:
        self.beta = blocks.dense(self.num_heads, ("embed", "heads"), self.dtype)
        if self.GATED:
            self.decay = ScalarDecay(self.num_heads, self.dtype)

    def _inputs(self, x: jax.Array) -> tuple[jax.Array, ...]:
        q, k, v = self._projections(x)
        q, k = l2_normalize(q) * self.key_dim**-0.5, l2_normalize(k)
        beta = jax.nn.sigmoid(self.beta(x).astype(jnp.float32))
        if self.GATED:
            log_alpha = self.decay(x)
        else:
            log_alpha = jnp.zeros(x.shape[:-1] + (self.num_heads,), jnp.float32)
        return q, k, v, beta, log_alpha

    def _hold(self, inputs: tuple[jax.Array, ...], real: jax.Array) -> tuple[jax.Array, ...]:
        """No write (k = 0, beta = 0) and no decay (log alpha = 0) at padding positions."""
        q, k, v, beta, log_alpha = inputs
        return q, only_where(real, k), v, only_where(real, beta), only_where(real, log_alpha)

    def _parallel(self, inputs, state):
        if state is None:  # the empty state
            q, _, v = inputs[:3]
            state = jnp.zeros(q.shape[:1] + q.shape[2:] + v.shape[-1:], jnp.float32)
        return chunked_delta_rule(*inputs, state, self.options["chunk_size"])

    def _step(self, inputs, state):
        return delta_step(*inputs, state)

    @classmethod
    def _extra_param_count(cls, d_model: int, num_heads: int, options: Any) -> int:
        gate = ScalarDecay.param_count(d_model, num_heads) if cls.GATED else 0
        return d_model * num_heads + gate

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Projections 2·d·(2·H·K + 2·H·V [+ H·V output gate] + H beta [+ H decay]), plus per
        head the chunked core (`chunked_delta_rule`, full C x C blocks, C = min(chunk_size, T)):
        2·C·K for K K^T, 2·C² for the row-by-row inverse, 2·C·(K + V) for W and U, 2·C·(K + V)
        for the intra-chunk scores and mixing, and 6·K·V against the state (W S, q^T S and the
        state update). Decoding one token with `delta_step` costs 6·K·V instead."""
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        gates = 2 * d_model * num_heads * (2 if cls.GATED else 1)
        c = min(options["chunk_size"], seq_len)
        intra = 2 * c * key_dim + 2 * c * c + 4 * c * (key_dim + value_dim)
        core = num_heads * (intra + 6 * key_dim * value_dim)
        return int(cls._projection_flops(d_model, num_heads, options) + gates + core)


@MIXERS.register("deltanet")
class DeltaNet(DeltaRule):
    LETTER = "D"
    SECTION = "deltanet"
    GATED = False


@MIXERS.register("gated_deltanet")
class GatedDeltaNet(DeltaRule):
    LETTER = "E"
    SECTION = "gated_deltanet"
    GATED = True
