"""Building blocks shared by architecture families: projections, norms, embeddings, RoPE.

Every parameter is born boxed with logical axis names, so sharding is decided by
`config.sharding.rules` in the training loop and never here. Parameters are float32; `dtype` is
the compute dtype. Numerically fragile steps (norm statistics, attention softmax, RoPE angles)
run in float32 whatever the compute dtype is.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import products

Dtype = Any
Names = tuple[str | None, ...]

# Small embedding init: with tied embeddings the same matrix produces logits, and a unit-variance
# table would give logits of scale sqrt(d_model) at step 0.
EMBED_INIT_STDDEV = 0.02

ACTIVATION_NAMES: Names = ("batch", "length", "embed")

# `model.remat`: what a block keeps for the backward pass; the rest is recomputed. Less memory for
# more FLOPs, the same numbers. jax.checkpoint_policies names the policies.
REMAT_POLICIES: dict[str, Any] = {
    "none": None,  # no rematerialisation: every activation is kept
    "full": jax.checkpoint_policies.nothing_saveable,  # only each block's input is kept
    "dots": jax.checkpoint_policies.dots_saveable,  # matmul outputs kept, elementwise recomputed
    # ... except batched matmuls (attention scores), usually the largest activations of all
    "dots_no_batch": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
}


def remat_block(block_cls: type[nn.Module], policy: str) -> type[nn.Module]:
    """`block_cls` rematerialised under the named policy (unchanged for 'none'). Blocks take
    `train` as their second positional argument, which remat must treat as static."""
    if policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; valid: {', '.join(REMAT_POLICIES)}")
    if policy == "none":
        return block_cls
    return nn.remat(block_cls, static_argnums=(2,), policy=REMAT_POLICIES[policy])


# The code of `jax.lax.dot_general` as imported: qwix swaps it while a quantized model runs.
_PLAIN_DOT_GENERAL_CODE = jax.lax.dot_general.__code__


def constrain(x: jax.Array, names: Names = ACTIVATION_NAMES) -> jax.Array:
    """Logical sharding constraint; a no-op outside `nn.logical_axis_rules`."""
    return nn.with_logical_constraint(x, names)


class Dense(nn.Module):
    """Linear map contracting input axes `axis` into `features`; no bias unless asked.

    Used instead of nn.DenseGeneral because DenseGeneral initialises multi-axis kernels at a
    flattened 2-D shape, and a boxed initializer then applies its 3-name constraint to a 2-D
    array and fails under a mesh (i.e. in sharded init).
    """

    features: tuple[int, ...]
    names: Names
    axis: tuple[int, ...] = (-1,)
    use_bias: bool = False
    dtype: Dtype = jnp.float32
    # On CPU, form the weight gradient from a transposed copy of the input (_transposes_input).
    transpose_input_for_grad: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        axis = tuple(a % x.ndim for a in self.axis)
        n_in, n_out = len(axis), len(self.features)
        init = nn.initializers.variance_scaling(
            1.0,
            "fan_in",
            "truncated_normal",
            in_axis=tuple(range(n_in)),
            out_axis=tuple(range(n_in, n_in + n_out)),
        )
        kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(init, self.names),
            tuple(x.shape[a] for a in axis) + self.features,
            jnp.float32,
        )
        # flax's promote_dtype rather than .astype: qwix (quant.mode, runtime/quantization.py)
        # intercepts it and passes an int8 kernel through for its own dot_general to dequantize.
        x, kernel = nn.dtypes.promote_dtype(x, kernel, dtype=self.dtype)
        if axis == (x.ndim - 1,) and x.ndim > 2:
            # [batch, length, in] as one [tokens, in] matrix: the weight gradient then contracts
            # a single axis, where with two XLA on CPU first copies the activation gradient into
            # a transposed layout, element by element (experiments/reference_lm.md: the step).
            tokens = x.reshape(-1, x.shape[-1])
            if self._transposes_input():
                y = products.matmul(tokens, kernel.reshape(kernel.shape[0], -1))
            else:
                y = jax.lax.dot_general(tokens, kernel, (((1,), (0,)), ((), ())))
            y = y.reshape(*x.shape[:-1], *self.features)
        else:
            y = jax.lax.dot_general(x, kernel, ((axis, tuple(range(n_in))), ((), ())))
        if self.use_bias:
            bias = self.param(
                "bias",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), self.names[n_in:]),
                self.features,
                jnp.float32,
            )
            y = y + bias.astype(self.dtype)
        return y

    def _transposes_input(self) -> bool:
        """Whether this call takes `products.matmul`. XLA on CPU otherwise transposes the
        gradient arriving at the projection, inside the fusion that computes it; after a mixer's
        chain of activation, norm and chunk reshapes, that fusion's transposed writes cost more
        than the product (benchmarks/mqar_step_time.md). Not under qwix, whose quantized product
        must keep its own gradient."""
        return (
            self.transpose_input_for_grad
            and jax.lax.dot_general.__code__ is _PLAIN_DOT_GENERAL_CODE
        )


def dense(
    features: int | tuple[int, ...],
    names: Names,
    dtype: Dtype,
    *,
    axis: int | tuple[int, ...] = -1,
    use_bias: bool = False,
    name: str | None = None,
    transpose_input_for_grad: bool = False,
) -> Dense:
    """A projection whose kernel (and bias) carry logical names; `names` covers kernel axes."""
    features = features if isinstance(features, tuple) else (features,)
    axis = axis if isinstance(axis, tuple) else (axis,)
    return Dense(features, names, axis, use_bias, dtype, transpose_input_for_grad, name=name)


def rms_norm(
    dtype: Dtype, name: str | None = None, axis_name: str = "embed", epsilon: float = 1e-6
) -> nn.RMSNorm:
    """RMSNorm over the last axis; statistics are reduced in float32."""
    return nn.RMSNorm(
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
        name=name,
    )


def layer_norm(
    dtype: Dtype, name: str | None = None, axis_name: str = "embed", epsilon: float = 1e-5
) -> nn.LayerNorm:
    """LayerNorm (scale and bias) over the last axis; GPT-2 uses epsilon 1e-5, ViT 1e-6."""
    return nn.LayerNorm(
        epsilon=epsilon,
        dtype=dtype,
        param_dtype=jnp.float32,
        scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (axis_name,)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (axis_name,)),
        name=name,
    )


NORMS = {"rms": rms_norm, "layer": layer_norm}


def norm(kind: str, dtype: Dtype, epsilon: float = 0.0) -> nn.Module:
    """The norm NORMS[kind] with `epsilon` (`model.norm_eps`); 0 keeps that norm's own default."""
    return NORMS[kind](dtype, **({"epsilon": epsilon} if epsilon else {}))


def embedding(
    num_embeddings: int, features: int, dtype: Dtype, name: str | None = None
) -> nn.Embed:
    """Token embedding table named ('vocab', 'embed'); `.attend` gives tied logits."""
    return nn.Embed(
        num_embeddings=num_embeddings,
        features=features,
        dtype=dtype,
        param_dtype=jnp.float32,
        embedding_init=nn.with_logical_partitioning(
            nn.initializers.normal(EMBED_INIT_STDDEV), ("vocab", "embed")
        ),
        name=name,
    )


def rotate_half(x: jax.Array) -> jax.Array:
    """[x1, x2] -> [-x2, x1] over the last axis (the GPT-NeoX / Llama convention)."""
    x1, x2 = jnp.split(x, 2, axis=-1)
    return jnp.concatenate([-x2, x1], axis=-1)


def apply_rope(x: jax.Array, positions: jax.Array, base: float = 10_000.0) -> jax.Array:
    """Rotary position embedding, rotate-half convention.

    x: [..., T, H, D] with D even; positions: [T] (or broadcastable to x's leading [..., T]).
    Pair (i, i + D/2) is rotated by angle position * base**(-2i/D).
    """
    head_dim = x.shape[-1]
    if head_dim % 2:
        raise ValueError(f"RoPE needs an even head dimension, got {head_dim}")
    inv_freq = base ** (-jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim)
    angles = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., T, D/2]
    angles = jnp.concatenate([angles, angles], axis=-1)[..., None, :]  # broadcast over heads
    xf = x.astype(jnp.float32)
    out = xf * jnp.cos(angles) + rotate_half(xf) * jnp.sin(angles)
    return out.astype(x.dtype)
