"""Mixture-of-experts channel mixer: a float32 router sends each token to its top-k SwiGLU experts.

Routing is tokens-choose-top-k (Switch Transformer, GShard, ST-MoE) with the gates of the chosen
experts renormalised to sum to 1. Each sequence in the batch is one routing group: an expert takes
at most `capacity = ceil(capacity_factor * seq_len * top_k / num_experts)` tokens of a sequence,
and a token's assignment past that is dropped (it contributes zero; the residual stream carries
the token on). `capacity_factor = 0` is dropless (capacity = seq_len).

Buffer slots are filled in token order (position-major, then the token's 1st, 2nd, ... choice),
so whether a token is dropped depends only on earlier tokens of its own sequence: a causal model
stays causal, and other sequences in the batch never change a sequence's output. Dispatch and
combine are one-hot einsums (GShard style), so everything is dense and shards by logical axes;
expert weights carry 'expert' first.

Auxiliary losses are sown into the 'aux_loss' collection, already multiplied by their weights:
`load_balance` (Switch: num_experts * sum_e f_e * P_e, where f_e is the fraction of the group's
tokens that chose expert e among their top-k, before capacity, and P_e the mean router probability
of e; its minimum, at uniform routing, is top_k) and `router_z` (ST-MoE: the mean of
logsumexp(router logits)^2). Both are averaged over groups.

Caveat: single-token decoding routes one token per group, so it never drops; with a finite
capacity a full forward pass that drops tokens can differ from token-by-token decoding.
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.channel import ChannelMixer
from models.registry import CHANNEL_MIXERS, CONFIG_SECTIONS

DEFAULTS = {
    "num_experts": 4,
    "top_k": 2,  # experts per token
    "capacity_factor": 1.25,  # 0: no capacity limit (dropless)
    "load_balance_weight": 0.01,
    "router_z_weight": 0.001,
}
CONFIG_SECTIONS.register("moe")(DEFAULTS)


def resolve_options(options: Any) -> dict[str, Any]:
    """The `model.moe` section over the defaults, validated."""
    opts = {**DEFAULTS, **dict(options or {})}
    unknown = sorted(set(opts) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown model.moe options {unknown}; valid: {', '.join(DEFAULTS)}")
    if opts["num_experts"] < 1:
        raise ValueError(f"moe.num_experts must be >= 1, got {opts['num_experts']}")
    if not 1 <= opts["top_k"] <= opts["num_experts"]:
        raise ValueError(
            f"moe.top_k must be in [1, num_experts={opts['num_experts']}], got {opts['top_k']}"
        )
    for key in ("capacity_factor", "load_balance_weight", "router_z_weight"):
        if opts[key] < 0:
            raise ValueError(f"moe.{key} must be >= 0, got {opts[key]}")
    return opts


def expert_capacity(tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """Slots per expert per group; never more than the group's tokens (each token picks an expert
    at most once), and all of them when capacity_factor is 0."""
    if capacity_factor == 0:
        return tokens
    return max(1, min(tokens, math.ceil(capacity_factor * tokens * top_k / num_experts)))


def route(
    logits: jax.Array, top_k: int, capacity: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Tokens-choose-top-k routing of float32 router logits [G, S, E].

    Returns (dispatch [G, S, E, C] 0/1, combine [G, S, E, C] gate weights, chosen [G, S, E] 0/1
    before capacity, probs [G, S, E]).
    """
    num_experts = logits.shape[-1]
    probs = jax.nn.softmax(logits, axis=-1)
    gates, index = jax.lax.top_k(probs, top_k)  # [G, S, K]
    gates = gates / jnp.sum(gates, axis=-1, keepdims=True)
    choice = jax.nn.one_hot(index, num_experts, dtype=jnp.int32)  # [G, S, K, E]
    # Position of each (token, choice) in its expert's buffer, filled token by token.
    g, s = logits.shape[:2]
    flat = choice.reshape(g, s * top_k, num_experts)
    position = (jnp.cumsum(flat, axis=1) * flat - 1).reshape(g, s, top_k, num_experts)
    position = jnp.max(position, axis=2)  # [G, S, E]; -1 where the expert was not chosen
    dispatch = jax.nn.one_hot(position, capacity, dtype=jnp.float32)  # out of range -> zeros
    gate_per_expert = jnp.einsum("gsk,gske->gse", gates, choice.astype(jnp.float32))
    combine = gate_per_expert[..., None] * dispatch
    chosen = jnp.max(choice, axis=2).astype(jnp.float32)
    return dispatch, combine, chosen, probs


def load_balance_loss(probs: jax.Array, chosen: jax.Array) -> jax.Array:
    """Switch Transformer: E * sum_e f_e * P_e per group, averaged over groups. [G, S, E] each."""
    f = jnp.mean(chosen, axis=1)
    p = jnp.mean(probs, axis=1)
    return jnp.mean(probs.shape[-1] * jnp.sum(f * p, axis=-1))


def router_z_loss(logits: jax.Array) -> jax.Array:
    """ST-MoE: mean over tokens of logsumexp(router logits)^2."""
    return jnp.mean(jnp.square(jax.nn.logsumexp(logits, axis=-1)))


class _Experts(nn.Module):
    """`num_experts` SwiGLU MLPs applied to their buffers [E, G, C, D] in one batched einsum."""

    num_experts: int
    d_model: int
    d_ff: int
    use_bias: bool
    dtype: Any

    def _kernel(self, name: str, shape: tuple[int, ...], names: tuple[str, ...]) -> jax.Array:
        init = nn.initializers.variance_scaling(
            1.0, "fan_in", "truncated_normal", in_axis=1, out_axis=2, batch_axis=(0,)
        )
        return self.param(name, nn.with_logical_partitioning(init, names), shape, jnp.float32)

    def _bias(self, name: str, size: int, names: tuple[str, ...]) -> jax.Array:
        init = nn.with_logical_partitioning(nn.initializers.zeros_init(), names)
        return self.param(name, init, (self.num_experts, size), jnp.float32).astype(self.dtype)

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        e, d, f = self.num_experts, self.d_model, self.d_ff
        gate = self._kernel("gate", (e, d, f), ("expert", "embed", "mlp"))
        up = self._kernel("up", (e, d, f), ("expert", "embed", "mlp"))
        down = self._kernel("down", (e, f, d), ("expert", "mlp", "embed"))
        x = x.astype(self.dtype)
        h_gate = jnp.einsum("egcd,edf->egcf", x, gate.astype(self.dtype))
        h_up = jnp.einsum("egcd,edf->egcf", x, up.astype(self.dtype))
        if self.use_bias:
            h_gate = h_gate + self._bias("gate_bias", f, ("expert", "mlp"))[:, None, None]
            h_up = h_up + self._bias("up_bias", f, ("expert", "mlp"))[:, None, None]
        h = nn.silu(h_gate) * h_up
        h = blocks.constrain(h.astype(self.dtype), ("expert", "batch", None, "mlp"))
        y = jnp.einsum("egcf,efd->egcd", h, down.astype(self.dtype))
        if self.use_bias:
            y = y + self._bias("down_bias", d, ("expert", "embed"))[:, None, None]
        return y.astype(self.dtype)


@CHANNEL_MIXERS.register("moe")
class MoE(ChannelMixer):
    """Top-k routed SwiGLU experts, each of width d_ff; options from `model.moe`."""

    def setup(self) -> None:
        opts = resolve_options(self.options)
        self.num_experts, self.top_k = opts["num_experts"], opts["top_k"]
        self.capacity_factor = float(opts["capacity_factor"])
        self.load_balance_weight = float(opts["load_balance_weight"])
        self.router_z_weight = float(opts["router_z_weight"])
        self.router = blocks.dense(self.num_experts, ("embed", "expert"), jnp.float32)
        self.experts = _Experts(
            self.num_experts, self.d_model, self.d_ff, self.use_bias, self.dtype
        )

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        # x [G, S, D]: every sequence is one routing group.
        logits = self.router(x.astype(jnp.float32))  # float32 whatever the compute dtype
        capacity = expert_capacity(x.shape[1], self.num_experts, self.top_k, self.capacity_factor)
        dispatch, combine, chosen, probs = route(logits, self.top_k, capacity)
        self.sow(
            "aux_loss", "load_balance", self.load_balance_weight * load_balance_loss(probs, chosen)
        )
        self.sow("aux_loss", "router_z", self.router_z_weight * router_z_loss(logits))
        buffers = jnp.einsum("gsd,gsec->egcd", x.astype(self.dtype), dispatch.astype(self.dtype))
        buffers = blocks.constrain(buffers, ("expert", "batch", None, "embed"))
        out = self.experts(buffers)
        y = jnp.einsum("egcd,gsec->gsd", out, combine.astype(self.dtype))
        return blocks.constrain(y.astype(self.dtype))

    @classmethod
    def param_count(cls, d_model: int, d_ff: int, use_bias: bool, options: Any) -> int:
        e = resolve_options(options)["num_experts"]
        bias = (2 * d_ff + d_model) if use_bias else 0
        return d_model * e + e * (3 * d_model * d_ff + bias)

    @classmethod
    def flops_per_token(cls, d_model: int, d_ff: int, options: Any) -> int:
        """Router plus top_k experts (one-hot dispatch/combine and capacity padding excluded)."""
        opts = resolve_options(options)
        return 2 * d_model * opts["num_experts"] + opts["top_k"] * 2 * 3 * d_model * d_ff
