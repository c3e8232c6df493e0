"""MLP-Mixer image classifier: patches -> (token-mixing MLP, channel-mixing MLP) blocks -> head.

As in Tolstikhin et al. (2021) at toy scale: non-overlapping patches flattened and projected by
one Dense, then blocks of a token-mixing MLP (across patches, shared over channels) and a
channel-mixing MLP (across channels, shared over patches), each pre-LayerNorm with a skip
connection; a final LayerNorm, global average pooling over patches and a linear head. There are
no position embeddings: token mixing is position-specific by construction.

Config: the common `model.*` keys (num_layers, d_model, d_ff = channel-MLP width, dropout_rate,
remat; num_heads is unused) plus `model.mlp_mixer.patch_size` and
`model.mlp_mixer.tokens_mlp_dim`. `DEFAULTS` is registered as the `mlp_mixer` config section; a
config without that section gets the defaults.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.channel import GeluMLP
from models.registry import CONFIG_SECTIONS, MODELS, require
from models.vision import (
    PatchEmbed,
    family_config,
    gelu_mlp,
    layer_norm,
    num_patches,
    pooled_logits,
    pooled_logits_param_count,
)

DEFAULTS = {"patch_size": 2, "tokens_mlp_dim": 32}
CONFIG_SECTIONS.register("mlp_mixer")(DEFAULTS)


class TokenMixing(nn.Module):
    """MLP across the patch axis: [B, N, D] -> [B, N, D], weights shared over channels."""

    tokens_mlp_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        n = x.shape[-2]
        y = jnp.swapaxes(x, -1, -2)  # [B, D, N]
        y = blocks.dense(
            self.tokens_mlp_dim, ("length", "mlp"), self.dtype, use_bias=True, name="fc1"
        )(y)
        y = nn.gelu(y)
        y = blocks.dense(n, ("mlp", "length"), self.dtype, use_bias=True, name="fc2")(y)
        return jnp.swapaxes(y, -1, -2)


class MixerBlock(nn.Module):
    """x + TokenMixing(LN(x)), then x + channel mixing(LN(x)): ViT's GELU MLP across channels,
    shared over patches."""

    tokens_mlp_dim: int
    d_ff: int
    dropout_rate: float
    dtype: Any

    # `train` is positional because nn.remat can only mark positional arguments static.
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        drop = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)
        h = layer_norm(self.dtype, name="token_norm")(x)
        h = TokenMixing(self.tokens_mlp_dim, self.dtype, name="token_mixing")(h)
        x = blocks.constrain(x + drop(h))
        h = layer_norm(self.dtype, name="channel_norm")(x)
        h = gelu_mlp(x.shape[-1], self.d_ff, self.dtype, name="channel_mixing")(h)
        return blocks.constrain(x + drop(h))


class MLPMixer(nn.Module):
    """Images [B, H, W, C] float32 -> float32 class logits [B, num_classes]."""

    image_shape: tuple[int, ...]
    num_classes: int
    num_layers: int
    d_model: int
    d_ff: int
    patch_size: int = 2
    tokens_mlp_dim: int = 32
    dropout_rate: float = 0.0
    remat: str = "none"  # a policy of blocks.REMAT_POLICIES
    dtype: Any = jnp.float32

    def example_inputs(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, *self.image_shape), jnp.float32)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        x = PatchEmbed(self.patch_size, self.d_model, self.dtype, name="patch_embed")(inputs)
        block_cls = blocks.remat_block(MixerBlock, self.remat)
        for i in range(self.num_layers):
            x = block_cls(
                tokens_mlp_dim=self.tokens_mlp_dim,
                d_ff=self.d_ff,
                dropout_rate=self.dropout_rate,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, train)
        return pooled_logits(x, self.num_classes, "mean", self.dtype)


@MODELS.register("mlp_mixer")
def build_mlp_mixer(config: Any, spec: Any, dtype: Any) -> MLPMixer:
    family = family_config(config, "mlp_mixer", DEFAULTS)
    image_shape = tuple(require(spec, "image_shape", "mlp_mixer"))
    num_patches(image_shape, family["patch_size"])
    if family["tokens_mlp_dim"] <= 0:
        raise ValueError(
            f"model.mlp_mixer.tokens_mlp_dim must be positive, got {family['tokens_mlp_dim']}"
        )
    return MLPMixer(
        image_shape=image_shape,
        num_classes=require(spec, "num_classes", "mlp_mixer"),
        num_layers=config.num_layers,
        d_model=config.d_model,
        d_ff=config.d_ff,
        patch_size=family["patch_size"],
        tokens_mlp_dim=family["tokens_mlp_dim"],
        dropout_rate=config.dropout_rate,
        remat=config.remat,
        dtype=dtype,
    )


def param_count(config: Any, spec: Any) -> int:
    """Analytic number of parameters of `build_mlp_mixer(config, spec, ...)`."""
    family = family_config(config, "mlp_mixer", DEFAULTS)
    image_shape = tuple(spec.image_shape)
    p, s = family["patch_size"], family["tokens_mlp_dim"]
    d, f, k = config.d_model, config.d_ff, spec.num_classes
    n = num_patches(image_shape, p)
    patch_embed = PatchEmbed.param_count(p, image_shape[2], d)
    token_mlp = n * s + s + s * n + n
    channel_mlp = GeluMLP.param_count(d, f, use_bias=True, options=None)
    block = 2 * (2 * d) + token_mlp + channel_mlp  # two LayerNorms (scale + bias)
    return patch_embed + config.num_layers * block + pooled_logits_param_count(d, k)
