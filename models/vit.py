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
from models.registry import CONFIG_SECTIONS, MODELS, check_choice, require

POOLS = ("cls", "mean")
DEFAULTS = {"patch_size": 2, "pool": "cls"}  # pool: cls | mean
CONFIG_SECTIONS.register("vit")(DEFAULTS)

# A patch's flattened pixels are a small, per-patch feature axis; 'kv' is replicated under the
# default sharding rules, which is what such an axis wants.
PATCH_NAMES: blocks.Names = ("kv", "embed")


def layer_norm(dtype: Any, name: str | None = None) -> nn.LayerNorm:
    """ViT's LayerNorm: epsilon 1e-6."""
    return blocks.layer_norm(dtype, name, epsilon=1e-6)


def patchify(images: jax.Array, patch_size: int) -> jax.Array:
    """[B, H, W, C] -> [B, (H/p)*(W/p), p*p*C], patches in row-major order."""
    b, h, w, c = images.shape
    p = patch_size
    x = images.reshape(b, h // p, p, w // p, p, c)
    x = x.transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


class PatchEmbed(nn.Module):
    """Images [B, H, W, C] -> patch tokens [B, N, d_model] (one Dense over flattened patches)."""

    patch_size: int
    d_model: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        x = patchify(images.astype(self.dtype), self.patch_size)
        x = blocks.dense(self.d_model, PATCH_NAMES, self.dtype, use_bias=True, name="proj")(x)
        return blocks.constrain(x)


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


class GeluMLP(nn.Module):
    """d_model -> d_ff -> d_model with GELU and biases."""

    d_ff: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        d_model = x.shape[-1]
        h = blocks.dense(self.d_ff, ("embed", "mlp"), self.dtype, use_bias=True, name="fc1")(x)
        h = blocks.constrain(nn.gelu(h), ("batch", "length", "mlp"))
        return blocks.dense(d_model, ("mlp", "embed"), self.dtype, use_bias=True, name="fc2")(h)


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
        h = GeluMLP(self.d_ff, self.dtype, name="mlp")(h)
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

        x = layer_norm(self.dtype, name="final_norm")(x)
        x = x[:, 0] if self.pool == "cls" else jnp.mean(x, axis=1)
        # Classes play the role of the vocabulary: the output label axis.
        logits = blocks.dense(
            self.num_classes, ("embed", "vocab"), self.dtype, use_bias=True, name="head"
        )(x)
        return logits.astype(jnp.float32)


def family_config(config: Any, family: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The family's sub-section `config.<family>` over `defaults`; unknown keys are errors."""
    section = config.get(family) if hasattr(config, "get") else getattr(config, family, None)
    values = dict(defaults)
    if section is not None:
        given = dict(section.items()) if hasattr(section, "items") else dict(vars(section))
        unknown = sorted(set(given) - set(defaults))
        if unknown:
            raise ValueError(
                f"unknown config key(s) model.{family}.{', '.join(unknown)}; "
                f"valid: {', '.join(sorted(defaults))}"
            )
        values.update(given)
    return values


def num_patches(image_shape: tuple[int, ...], patch_size: int) -> int:
    """Number of non-overlapping patches; raises ValueError if patches do not tile the image."""
    if len(image_shape) != 3:
        raise ValueError(f"spec.image_shape must be (H, W, C), got {image_shape}")
    h, w, _ = image_shape
    if patch_size <= 0 or h % patch_size or w % patch_size:
        raise ValueError(f"patch_size={patch_size} must be positive and divide H={h} and W={w}")
    return (h // patch_size) * (w // patch_size)


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
    patch_embed = p * p * image_shape[2] * d + d
    tokens = n + int(cls)
    embeddings = patch_embed + d * int(cls) + tokens * d
    attention = 4 * (d * d + d)  # query, key, value, out: each d x (heads*head_dim) + bias
    mlp = d * f + f + f * d + d
    block = 2 * (2 * d) + attention + mlp  # two LayerNorms (scale + bias)
    return embeddings + config.num_layers * block + 2 * d + d * k + k
