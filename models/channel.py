"""Channel mixers: the position-wise half of every sequence block.

Each is registered in CHANNEL_MIXERS and built as `cls(d_model, d_ff, use_bias, options, dtype)`
(`options` is its `model.<name>` config section, if it has one); `__call__(x, *, train)` maps
[B, T, D] -> [B, T, D]. `param_count` and `flops_per_token` give the analytic costs.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.registry import CHANNEL_MIXERS


class ChannelMixer(nn.Module):
    d_model: int
    d_ff: int
    use_bias: bool = False
    options: Any = None
    dtype: Any = jnp.float32

    @classmethod
    def param_count(cls, d_model: int, d_ff: int, use_bias: bool, options: Any) -> int:
        raise NotImplementedError

    @classmethod
    def flops_per_token(cls, d_model: int, d_ff: int, options: Any) -> int:
        raise NotImplementedError


@CHANNEL_MIXERS.register("swiglu")
class SwiGLU(ChannelMixer):
    """Gated MLP (Llama): (silu(x W_gate) * x W_up) W_down."""

    def setup(self) -> None:
        up_names, down_names = ("embed", "mlp"), ("mlp", "embed")
        self.gate = blocks.dense(self.d_ff, up_names, self.dtype, use_bias=self.use_bias)
        self.up = blocks.dense(self.d_ff, up_names, self.dtype, use_bias=self.use_bias)
        self.down = blocks.dense(self.d_model, down_names, self.dtype, use_bias=self.use_bias)

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        h = blocks.constrain(nn.silu(self.gate(x)) * self.up(x), ("batch", "length", "mlp"))
        return self.down(h)

    @classmethod
    def param_count(cls, d_model: int, d_ff: int, use_bias: bool, options: Any) -> int:
        return 3 * d_model * d_ff + (2 * d_ff + d_model if use_bias else 0)

    @classmethod
    def flops_per_token(cls, d_model: int, d_ff: int, options: Any) -> int:
        return 2 * 3 * d_model * d_ff


@CHANNEL_MIXERS.register("gelu_mlp")
class GeluMLP(ChannelMixer):
    """Two-layer MLP with GELU (GPT-2; ViT and MLP-Mixer through models/vision.py)."""

    # Its two layers' names; the image classifiers keep ViT's fc1, fc2 (models/vision.py).
    layer_names: tuple[str, str] = ("up", "down")

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        up, down = self.layer_names
        bias = self.use_bias
        h = blocks.dense(self.d_ff, ("embed", "mlp"), self.dtype, use_bias=bias, name=up)(x)
        h = blocks.constrain(nn.gelu(h), ("batch", "length", "mlp"))
        return blocks.dense(self.d_model, ("mlp", "embed"), self.dtype, use_bias=bias, name=down)(h)

    @classmethod
    def param_count(cls, d_model: int, d_ff: int, use_bias: bool, options: Any) -> int:
        return 2 * d_model * d_ff + (d_ff + d_model if use_bias else 0)

    @classmethod
    def flops_per_token(cls, d_model: int, d_ff: int, options: Any) -> int:
        return 2 * 2 * d_model * d_ff


@CHANNEL_MIXERS.register("none")
class Identity(ChannelMixer):
    """No channel mixer: mixer-only blocks (Mamba stacks, for instance)."""

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        return jnp.zeros_like(x)

    @classmethod
    def param_count(cls, d_model: int, d_ff: int, use_bias: bool, options: Any) -> int:
        return 0

    @classmethod
    def flops_per_token(cls, d_model: int, d_ff: int, options: Any) -> int:
        return 0
