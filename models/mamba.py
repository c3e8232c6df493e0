"""Mamba (Gu & Dao, 2023): the selective state-space mixer, Mamba-1 parameterisation.

    x, z = in_proj(u)                                   two streams of width E = expand * d
    x = silu(causal_depthwise_conv(x))                  kernel d_conv, with bias
    dt, B, C = x_proj(x)                                widths dt_rank, d_state, d_state
    delta = softplus(dt_proj(dt))                       dt_rank -> E, with bias
    h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t      per channel, A = -exp(A_log) [E, N]
    y_t = C_t . h_t + D x_t
    out = out_proj(y * silu(z))

Initialisation follows the reference: dt_proj's bias is the inverse softplus of a step size drawn
log-uniformly in [dt_min, dt_max] (floored at 1e-4), its kernel uniform in +-dt_rank^-0.5;
A_log = log(1..N) for every channel (S4D-real); D = 1.

The training form runs the recurrence in float32 over [B, T, E, N] (memory O(T E N) per sequence:
no hardware-aware kernel here), either as `jax.lax.associative_scan` (`scan='associative'`,
log T depth, for accelerators) or as a `lax.scan` over time with its own backward pass
(`scan='sequential'`, T steps, `fused_scan`; on CPU the faster at T 64 and T 2048:
benchmarks/mqar_step_time.md). `step` runs one token at a time over the state (conv window of
the last d_conv - 1 inputs, SSM state [B, E, N]).

Mamba has a fixed parameterisation: `num_heads`, `rope` and `use_bias` are ignored (its
projections never have biases, its conv and dt_proj always do, as in the reference).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.linear_attention import QK_NORMS, l2_normalize, only_where
from models.mixer import CausalConv1D, SequenceMixer, valid_mask
from models.registry import CONFIG_SECTIONS, MIXERS, check_choice

DEFAULTS = {
    "expand": 2,  # E = expand * d_model, the width of the SSM
    "d_state": 16,  # N, state size per channel
    "d_conv": 4,  # kernel of the depthwise causal conv before the SSM
    "dt_rank": 0,  # rank of the step-size projection; 0: ceil(d_model / 16)
    "dt_min": 0.001,  # range of the initial step sizes (log-uniform)
    "dt_max": 0.1,
    "scan": "associative",  # training form: associative (log T depth) | sequential (T steps)
    # none | l2: unit-norm B and C per token, the SSM's keys and queries, like the gated arms'
    # qk_norm (Falcon-Mamba RMS-normalises B, C and delta, for stability). Off by default: it
    # slowed learning on MQAR (experiments/mqar_mixers.md).
    "bc_norm": "none",
}
SCANS = ("associative", "sequential")
CONFIG_SECTIONS.register("mamba")(DEFAULTS)

DT_INIT_FLOOR = 1e-4


def dims(d_model: int, options: Any) -> tuple[int, int, int, int]:
    """(d_inner, d_state, d_conv, dt_rank), validated."""
    expand, d_state, d_conv = options["expand"], options["d_state"], options["d_conv"]
    dt_rank = options["dt_rank"] or math.ceil(d_model / 16)
    if expand < 1 or d_state < 1 or d_conv < 1 or dt_rank < 0:
        raise ValueError(
            f"mamba: expand, d_state and d_conv must be >= 1 and dt_rank >= 0, got "
            f"expand={expand}, d_state={d_state}, d_conv={d_conv}, dt_rank={options['dt_rank']}"
        )
    if not 0 < options["dt_min"] <= options["dt_max"]:
        raise ValueError(
            f"mamba: need 0 < dt_min <= dt_max, got {options['dt_min']}, {options['dt_max']}"
        )
    check_choice("mamba.scan", options["scan"], SCANS)
    check_choice("mamba.bc_norm", options["bc_norm"], QK_NORMS)
    return int(expand * d_model), d_state, d_conv, dt_rank


def selective_scan(
    x: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array,
    initial_state: jax.Array | None = None,
    method: str = "associative",
) -> tuple[jax.Array, jax.Array]:
    """The selective scan over a whole sequence, all in float32.

    x, delta [b, T, E] (delta already positive: softplus applied); A [E, N]; B, C [b, T, N];
    D [E]; initial_state [b, E, N] or None (zeros). Returns y [b, T, E] and the state after the
    last step [b, E, N], where h_t = exp(delta_t A) h_{t-1} + delta_t B_t x_t and
    y_t = C_t . h_t + D x_t. `method`: 'associative' (parallel over time) or 'sequential'
    (`fused_scan`: the same arithmetic as stepping `selective_step`).
    """
    if method == "sequential":
        return _sequential_scan(x, delta, A, B, C, D, initial_state)
    x, delta, A, B, C, D = (a.astype(jnp.float32) for a in (x, delta, A, B, C, D))
    decay = jnp.exp(delta[..., None] * A)  # [b, T, E, N]
    inputs = (delta * x)[..., None] * B[:, :, None, :]  # [b, T, E, N]
    if initial_state is not None:
        inputs = inputs.at[:, 0].add(decay[:, 0] * initial_state.astype(jnp.float32))

    def combine(earlier, later):
        a1, b1 = earlier
        a2, b2 = later
        return a1 * a2, a2 * b1 + b2

    _, states = jax.lax.associative_scan(combine, (decay, inputs), axis=1)
    y = jnp.einsum("bten,btn->bte", states, C, precision=jax.lax.Precision.HIGHEST)
    return y + D * x, states[:, -1]


def _sequential_scan(x, delta, A, B, C, D, initial_state):
    x, delta, A, B, C, D = (a.astype(jnp.float32) for a in (x, delta, A, B, C, D))
    if initial_state is None:
        initial_state = jnp.zeros((x.shape[0], x.shape[2], A.shape[1]), jnp.float32)
    time_major = (jnp.moveaxis(a, 1, 0) for a in (x, delta, B, C))
    # The loop holds the state as [b, N, E]: E (the wide axis) innermost, where CPU vector
    # units run along it, and sums over N are then adds of whole rows (mqar_step_time.md).
    h0 = jnp.swapaxes(initial_state.astype(jnp.float32), 1, 2)
    y, state = fused_scan(*time_major, A.T, h0)
    return jnp.moveaxis(y, 0, 1) + D * x, jnp.swapaxes(state, 1, 2)


# Loop iterations per compiled loop body: two fuse a pair of steps, which ran faster than one
# (or four) on CPU (benchmarks/mqar_step_time.md).
UNROLL = 2


@jax.custom_vjp
def fused_scan(
    x: jax.Array, delta: jax.Array, B: jax.Array, C: jax.Array, A: jax.Array, h0: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """The recurrence without the skip term, time-major: x, delta [T, b, E]; B, C [T, b, N];
    A [N, E]; h0 [b, N, E] -> (y [T, b, E], h_{T-1} [b, N, E]), a `lax.scan` whose body does
    one whole step.

    No [T, b, N, E] tensor but the states entering each step is ever made: decays, inputs and
    read-outs are formed inside the loop, where a step's [b, N, E] stays in cache, and the
    backward pass (below) is one reverse loop of the same kind over the states the forward one
    kept. Products are multiplies and sums, which XLA fuses into the loop, not einsums. Autodiff
    of the scan, or the decays and inputs formed for all steps at once outside it, cost several
    times as much on CPU (benchmarks/mqar_step_time.md)."""
    return _fused_forward(x, delta, B, C, A, h0)[:2]


def _fused_forward(x, delta, B, C, A, h0):
    """(y, the last state, the state entering each step [T, b, N, E])."""

    def step(before, xs):
        x_t, delta_t, B_t, C_t = xs
        h = jnp.exp(delta_t[:, None] * A) * before + (delta_t * x_t)[:, None] * B_t[..., None]
        return h, (jnp.sum(h * C_t[..., None], axis=1), before)

    last, (y, entering) = jax.lax.scan(step, h0, (x, delta, B, C), unroll=UNROLL)
    return y, last, entering


def _fused_scan_fwd(x, delta, B, C, A, h0):
    y, last, entering = _fused_forward(x, delta, B, C, A, h0)
    return (y, last), (x, delta, B, C, A, entering)


def _fused_scan_bwd(residuals, grads):
    """With lam_t = dL/dh_t = g_y_t C_t + a_{t+1} lam_{t+1} (a_t = exp(delta_t A)), run from
    the end: dL/db_t = lam_t for the input b_t = delta_t x_t B_t, dL/da_t = lam_t h_{t-1}."""
    x, delta, B, C, A, entering = residuals
    grad_y, grad_last = grads

    def step(carry, xs):
        later, grad_A = carry  # later: a_{t+1} lam_{t+1}
        x_t, delta_t, B_t, C_t, grad_y_t, h_before = xs
        lam = grad_y_t[:, None] * C_t[..., None] + later
        decay = jnp.exp(delta_t[:, None] * A)
        dx = delta_t * x_t
        h_t = decay * h_before + dx[:, None] * B_t[..., None]  # recomputed
        grad_decay = lam * h_before * decay  # through the exp: d/d(delta_t A)
        grad_dx = jnp.sum(lam * B_t[..., None], axis=1)  # d/d(delta_t x_t)
        grads_t = (
            grad_dx * delta_t,
            jnp.sum(grad_decay * A, axis=1) + grad_dx * x_t,
            jnp.sum(lam * dx[:, None], axis=2),
            jnp.sum(h_t * grad_y_t[:, None], axis=2),
        )
        grad_A = grad_A + jnp.sum(grad_decay * delta_t[:, None], axis=0)
        return (decay * lam, grad_A), grads_t

    xs = (x, delta, B, C, grad_y, entering)
    (grad_h0, grad_A), (grad_x, grad_delta, grad_B, grad_C) = jax.lax.scan(
        step, (grad_last, jnp.zeros_like(A)), xs, reverse=True, unroll=UNROLL
    )
    return grad_x, grad_delta, grad_B, grad_C, grad_A, grad_h0


fused_scan.defvjp(_fused_scan_fwd, _fused_scan_bwd)


def selective_step(
    x: jax.Array,
    delta: jax.Array,
    A: jax.Array,
    B: jax.Array,
    C: jax.Array,
    D: jax.Array,
    state: jax.Array,
) -> tuple[jax.Array, jax.Array]:
    """One step of the recurrence, float32: x, delta [b, E]; B, C [b, N]; state [b, E, N]."""
    x, delta, A, B, C, D = (a.astype(jnp.float32) for a in (x, delta, A, B, C, D))
    decay = jnp.exp(delta[..., None] * A)
    state = decay * state.astype(jnp.float32) + (delta * x)[..., None] * B[:, None, :]
    y = jnp.einsum("ben,bn->be", state, C, precision=jax.lax.Precision.HIGHEST)
    return y + D * x, state


def _dt_bias_init(dt_min: float, dt_max: float):
    """Inverse softplus of step sizes drawn log-uniformly in [dt_min, dt_max]."""

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        u = jax.random.uniform(key, shape, jnp.float32)
        dt = jnp.exp(u * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
        dt = jnp.maximum(dt, DT_INIT_FLOOR)
        return (dt + jnp.log(-jnp.expm1(-dt))).astype(dtype)

    return init


def _dt_kernel_init(dt_rank: int):
    """Uniform in +-dt_rank^-0.5, so the step-size projection preserves variance at init."""
    bound = dt_rank**-0.5

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _a_log_init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
    del key
    return jnp.broadcast_to(jnp.log(jnp.arange(1, shape[-1] + 1, dtype=jnp.float32)), shape).astype(
        dtype
    )


class StepSizeProjection(nn.Module):
    """dt_rank -> E in float32, with the reference initialisation of kernel and bias. Its own
    module so that its bias is called `bias` (and is exempt from weight decay like others)."""

    features: int
    rank: int
    dt_min: float
    dt_max: float

    def setup(self) -> None:
        self.kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(_dt_kernel_init(self.rank), (None, "mlp")),
            (self.rank, self.features),
            jnp.float32,
        )
        self.bias = self.param(
            "bias",
            nn.with_logical_partitioning(_dt_bias_init(self.dt_min, self.dt_max), ("mlp",)),
            (self.features,),
            jnp.float32,
        )

    def __call__(self, dt: jax.Array) -> jax.Array:
        dt = jnp.dot(dt.astype(jnp.float32), self.kernel, precision=jax.lax.Precision.HIGHEST)
        return dt + self.bias


@MIXERS.register("mamba")
class Mamba(SequenceMixer):
    LETTER = "M"
    SECTION = "mamba"

    def setup(self) -> None:
        d_inner, d_state, d_conv, dt_rank = dims(self.d_model, self.options)
        self.d_inner, self.d_state, self.dt_rank = d_inner, d_state, dt_rank
        self.in_proj = blocks.dense((2, d_inner), ("embed", None, "mlp"), self.dtype)
        self.conv = CausalConv1D(d_inner, d_conv, self.dtype, names=("conv", "mlp"))
        self.x_proj = blocks.dense(dt_rank + 2 * d_state, ("mlp", None), self.dtype)
        self.dt_proj = StepSizeProjection(
            d_inner, dt_rank, self.options["dt_min"], self.options["dt_max"]
        )
        self.A_log = self.param(
            "A_log",
            nn.with_logical_partitioning(_a_log_init, ("mlp", "state")),
            (d_inner, d_state),
            jnp.float32,
        )
        self.D = self.param(
            "D",
            nn.with_logical_partitioning(nn.initializers.ones_init(), ("mlp",)),
            (d_inner,),
            jnp.float32,
        )
        self.out_proj = blocks.dense(self.d_model, ("mlp", "embed"), self.dtype)

    def _ssm_inputs(self, x: jax.Array) -> tuple[jax.Array, ...]:
        """x [..., E] (after conv and SiLU) -> delta [..., E], B, C [..., N], A [E, N] (float32)."""
        dt, B, C = jnp.split(
            self.x_proj(x).astype(jnp.float32), [self.dt_rank, self.dt_rank + self.d_state], -1
        )
        if self.options["bc_norm"] == "l2":
            B, C = l2_normalize(B), l2_normalize(C)
        return jax.nn.softplus(self.dt_proj(dt)), B, C, -jnp.exp(self.A_log)

    def _gate_out(self, y: jax.Array, z: jax.Array) -> jax.Array:
        return self.out_proj(y.astype(self.dtype) * nn.silu(z))

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        xz = self.in_proj(x)  # [B, T, 2, E]
        x, z = xz[..., 0, :], xz[..., 1, :]
        x_conv = nn.silu(self.conv(x))
        delta, B, C, A = self._ssm_inputs(x_conv)
        y, _ = selective_scan(x_conv, delta, A, B, C, self.D, None, self.options["scan"])
        return self._gate_out(y, z)

    def init_state(self, batch_size: int, max_len: int) -> dict[str, jax.Array]:
        """The conv window (last d_conv - 1 inputs) and the SSM state [B, E, N] (float32)."""
        return {
            "conv": self.conv.init_state(batch_size),
            "ssm": jnp.zeros((batch_size, self.d_inner, self.d_state), jnp.float32),
        }

    def step(self, x: jax.Array, state: dict, positions: jax.Array) -> tuple[jax.Array, dict]:
        xz = self.in_proj(x)  # [B, 2, E]
        x, z = xz[..., 0, :], xz[..., 1, :]
        x_conv, conv_state = self.conv.step(x, state["conv"])
        x_conv = nn.silu(x_conv)
        delta, B, C, A = self._ssm_inputs(x_conv)
        y, ssm = selective_step(x_conv, delta, A, B, C, self.D, state["ssm"])
        return self._gate_out(y, z), {"conv": conv_state, "ssm": ssm}

    def prefill(
        self, x: jax.Array, state: dict, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, dict]:
        """The selective scan from the state; at padding positions delta = 0, so the SSM state
        neither decays nor takes an input (exp(0 A) h + 0 B x = h)."""
        xz = self.in_proj(x)
        x, z = xz[..., 0, :], xz[..., 1, :]
        x_conv, conv_state = self.conv.prefill(x, state["conv"], lengths)
        x_conv = nn.silu(x_conv)
        delta, B, C, A = self._ssm_inputs(x_conv)
        delta = only_where(valid_mask(lengths, x.shape[1]), delta)
        y, ssm = selective_scan(x_conv, delta, A, B, C, self.D, state["ssm"], self.options["scan"])
        return self._gate_out(y, z), {"conv": conv_state, "ssm": ssm}

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """SSM state E·N plus the conv window (d_conv - 1)·E, independent of length."""
        d_inner, d_state, d_conv, _ = dims(d_model, options)
        return d_inner * d_state + (d_conv - 1) * d_inner

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """2·d·2E (in_proj) + 2·K·E (conv) + 2·E·(R + 2N) (x_proj) + 2·R·E (dt_proj)
        + 6·E·N (scan: h = a·h + b, b = (Δx)·B, y = C·h, 2 each) + 2·E·d (out_proj),
        with E = expand·d, K = d_conv, R = dt_rank, N = d_state; element-wise work on [E]
        (softplus, exp, SiLU, gating, D skip) is not counted."""
        e, n, k, r = dims(d_model, options)
        return (
            2 * d_model * 2 * e
            + 2 * k * e
            + 2 * e * (r + 2 * n)
            + 2 * r * e
            + 6 * e * n
            + (2 * e * d_model)
        )

    @classmethod
    def param_count(
        cls, d_model: int, num_heads: int, options: Any, seq_len: int, use_bias: bool
    ) -> int:
        """in_proj d·2E, conv (K+1)·E, x_proj E·(R+2N), dt_proj (R+1)·E, A_log E·N, D E,
        out_proj E·d; `use_bias` does not apply."""
        e, n, k, r = dims(d_model, options)
        return (
            d_model * 2 * e
            + (k + 1) * e
            + e * (r + 2 * n)
            + (r + 1) * e
            + e * n
            + e
            + (e * d_model)
        )
