"""Vision Transformer (ViT) image classifier: patches -> pre-norm bidirectional encoder -> head.

As in Dosovitskiy et al. (2021) at toy scale: non-overlapping patches flattened and projected by
one Dense, learned position embeddings, an optional class token (or global average pooling),
pre-norm encoder blocks (LayerNorm, multi-head self-attention without a mask, GELU MLP, all
projections with biases), a final LayerNorm and a linear head.

Config: the common `model.*` keys (num_layers, d_model, num_heads, d_ff, dropout_rate, remat)
plus `model.vit.patch_size` and `model.vit.pool` ('cls' | 'mean'). `DEFAULTS` is registered as
the `vit` config section; a config without that section gets the defaults.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.channel import GeluMLP
from models.registry import CONFIG_SECTIONS, MODELS, check_choice, require
from models.vision import (
    POOLS,
    PatchEmbed,
    family_config,
    gelu_mlp,
    layer_norm,
    num_patches,
    pooled_logits,
    pooled_logits_param_count,
)

DEFAULTS = {"patch_size": 2, "pool": "cls"}  # pool: one of vision.POOLS
CONFIG_SECTIONS.register("vit")(DEFAULTS)


def bidirectional_attention(q: jax.Array, k: jax.Array, v: jax.Array) -> jax.Array:
    """Unmasked softmax attention. q, k, v: [B, T, H, D] -> [B, T, H, D] in v's dtype.

    Scores and softmax are float32 whatever the compute dtype.
    """
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k, preferred_element_type=jnp.float32)
    scores = scores / jnp.sqrt(jnp.float32(q.shape[-1]))
    probs = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


class SelfAttention(nn.Module):
    """Multi-head bidirectional self-attention with biases on every projection (as in ViT)."""

    num_heads: int
    head_dim: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_model = x.shape[-1]
        heads = (self.num_heads, self.head_dim)
        names: blocks.Names = ("embed", "heads", "kv")
        q = blocks.dense(heads, names, self.dtype, use_bias=True, name="query")(x)
        k = blocks.dense(heads, names, self.dtype, use_bias=True, name="key")(x)
        v = blocks.dense(heads, names, self.dtype, use_bias=True, name="value")(x)
        out = bidirectional_attention(q, k, v)
        out_names: blocks.Names = ("heads", "kv", "embed")
        return blocks.dense(
            d_model, out_names, self.dtype, axis=(-2, -1), use_bias=True, name="out"
        )(out)


class EncoderBlock(nn.Module):
    """One pre-norm residual block: LayerNorm -> attention, LayerNorm -> GELU MLP."""

    num_heads: int
    head_dim: int
    d_ff: int
    dropout_rate: float
    dtype: Any

    # `train` is positional because nn.remat can only mark positional arguments static.
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        drop = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)
        h = layer_norm(self.dtype, name="attn_norm")(x)
        h = SelfAttention(self.num_heads, self.head_dim, self.dtype, name="attn")(h)
        x = blocks.constrain(x + drop(h))
        h = layer_norm(self.dtype, name="mlp_norm")(x)
        h = gelu_mlp(x.shape[-1], self.d_ff, self.dtype, name="mlp")(h)
        return blocks.constrain(x + drop(h))


class ViT(nn.Module):
    """Images [B, H, W, C] float32 -> float32 class logits [B, num_classes]."""

    image_shape: tuple[int, ...]
    num_classes: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    patch_size: int = 2
    pool: str = "cls"
    dropout_rate: float = 0.0
    remat: str = "none"  # a policy of blocks.REMAT_POLICIES
    dtype: Any = jnp.float32

    def example_inputs(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, *self.image_shape), jnp.float32)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        check_choice("vit.pool", self.pool, POOLS)
        x = PatchEmbed(self.patch_size, self.d_model, self.dtype, name="patch_embed")(inputs)
        if self.pool == "cls":
            cls = self.param(
                "cls_token",
                nn.with_logical_partitioning(nn.initializers.zeros_init(), ("embed",)),
                (self.d_model,),
                jnp.float32,
            )
            cls = jnp.broadcast_to(cls.astype(self.dtype), (x.shape[0], 1, self.d_model))
            x = jnp.concatenate([cls, x], axis=1)
        pos = self.param(
            "pos_embedding",
            nn.with_logical_partitioning(
                nn.initializers.normal(blocks.EMBED_INIT_STDDEV), ("length", "embed")
            ),
            (x.shape[1], self.d_model),
            jnp.float32,
        )
        x = x + pos.astype(self.dtype)
        deterministic = not train or self.dropout_rate == 0
        x = blocks.constrain(nn.Dropout(self.dropout_rate, deterministic=deterministic)(x))

        block_cls = blocks.remat_block(EncoderBlock, self.remat)
        for i in range(self.num_layers):
            x = block_cls(
                num_heads=self.num_heads,
                head_dim=self.d_model // self.num_heads,
                d_ff=self.d_ff,
                dropout_rate=self.dropout_rate,
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, train)

        return pooled_logits(x, self.num_classes, self.pool, self.dtype)


@MODELS.register("vit")
def build_vit(config: Any, spec: Any, dtype: Any) -> ViT:
    family = family_config(config, "vit", DEFAULTS)
    image_shape = tuple(require(spec, "image_shape", "vit"))
    num_patches(image_shape, family["patch_size"])
    pool = check_choice("vit.pool", family["pool"], POOLS)
    if config.d_model % config.num_heads:
        raise ValueError(
            f"model.d_model={config.d_model} is not divisible by num_heads={config.num_heads}"
        )
    return ViT(
        image_shape=image_shape,
        num_classes=require(spec, "num_classes", "vit"),
        num_layers=config.num_layers,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        patch_size=family["patch_size"],
        pool=pool,
        dropout_rate=config.dropout_rate,
        remat=config.remat,
        dtype=dtype,
    )


def param_count(config: Any, spec: Any) -> int:
    """Analytic number of parameters of `build_vit(config, spec, ...)`."""
    family = family_config(config, "vit", DEFAULTS)
    image_shape = tuple(spec.image_shape)
    p, d, f, k = family["patch_size"], config.d_model, config.d_ff, spec.num_classes
    n = num_patches(image_shape, p)
    cls = family["pool"] == "cls"
    tokens = n + int(cls)
    embeddings = PatchEmbed.param_count(p, image_shape[2], d) + d * int(cls) + tokens * d
    attention = 4 * (d * d + d)  # query, key, value, out: each d x (heads*head_dim) + bias
    mlp = GeluMLP.param_count(d, f, use_bias=True, options=None)
    block = 2 * (2 * d) + attention + mlp  # two LayerNorms (scale + bias)
    return embeddings + config.num_layers * block + pooled_logits_param_count(d, k)
