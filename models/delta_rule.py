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

Training and prefill use a sequential `lax.scan` over time (not the chunked WY form): exact,
O(T) sequential steps. Decoding uses the same step. The output head (per-head RMSNorm, SiLU gate,
projection) is the gated linear attention family's (models/linear_attention.py).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from models import blocks
from models.linear_attention import ProjectedRecurrentMixer, ScalarDecay
from models.registry import CONFIG_SECTIONS, MIXERS, check_choice

L2_EPS = 1e-6


def l2_normalize(x: jax.Array) -> jax.Array:
    x = x.astype(jnp.float32)
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=-1, keepdims=True) + L2_EPS)


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


QK_ACTIVATIONS = {"silu": jax.nn.silu, "identity": lambda x: x}
DEFAULTS = {
    "qk_activation": "silu",  # on q and k before the L2 norm: silu | identity
    "expand_v": 1.0,  # value dim per head = head_dim * expand_v (Gated DeltaNet uses 2)
    "output_norm": True,  # per-head RMSNorm of the read-out (DeltaNet's and FLA's default)
    "output_gate": False,  # times silu(x W_g) before the output projection
}
CONFIG_SECTIONS.register("deltanet")(dict(DEFAULTS))
CONFIG_SECTIONS.register("gated_deltanet")({**DEFAULTS, "output_gate": True})


class DeltaRule(ProjectedRecurrentMixer):
    GATED = False

    @classmethod
    def dims(cls, d_model: int, num_heads: int, options: Any) -> tuple[int, int]:
        section = "gated_deltanet" if cls.GATED else "deltanet"
        check_choice(f"{section}.qk_activation", options["qk_activation"], tuple(QK_ACTIVATIONS))
        return super().dims(d_model, num_heads, options)

    def _extra_setup(self) -> None:
        self.beta = blocks.dense(self.num_heads, ("embed", "heads"), self.dtype)
        if self.GATED:
            self.decay = ScalarDecay(self.num_heads, self.dtype)

    def _inputs(self, x: jax.Array) -> tuple[jax.Array, ...]:
        act = QK_ACTIVATIONS[self.options["qk_activation"]]
        q = l2_normalize(act(self.query(x).astype(jnp.float32))) * self.key_dim**-0.5
        k = l2_normalize(act(self.key(x).astype(jnp.float32)))
        v = self.value(x).astype(jnp.float32)
        beta = jax.nn.sigmoid(self.beta(x).astype(jnp.float32))
        if self.GATED:
            log_alpha = self.decay(x)
        else:
            log_alpha = jnp.zeros(x.shape[:-1] + (self.num_heads,), jnp.float32)
        return q, k, v, beta, log_alpha

    def _parallel(self, inputs, state):
        return delta_rule(*inputs, state)

    def _step(self, inputs, state):
        return delta_step(*inputs, state)

    @classmethod
    def _extra_param_count(cls, d_model: int, num_heads: int, options: Any) -> int:
        gate = ScalarDecay.param_count(d_model, num_heads) if cls.GATED else 0
        return d_model * num_heads + gate

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Projections 2·d·(2·H·K + 2·H·V [+ H·V output gate] + H beta [+ H decay]), plus per
        head 6·K·V for the step (k^T S, the rank-1 correction, q^T S)."""
        key_dim, value_dim = cls.dims(d_model, num_heads, options)
        gates = 2 * d_model * num_heads * (2 if cls.GATED else 1)
        core = num_heads * 6 * key_dim * value_dim
        return int(cls._projection_flops(d_model, num_heads, options) + gates + core)


@MIXERS.register("deltanet")
class DeltaNet(DeltaRule):
    LETTER = "D"
    GATED = False


@MIXERS.register("gated_deltanet")
class GatedDeltaNet(DeltaRule):
    LETTER = "E"
    GATED = True
