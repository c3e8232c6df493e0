"""What the patch-based image classifiers (vit, mlp_mixer) share: patches in, their GELU MLP,
pooled class logits out, and reading their config sections.

The pieces keep the parameter names each family has always had (`patch_embed/proj`,
`.../mlp/fc1`, `final_norm`, `head`): a seed then draws the same initial values as before.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.channel import GeluMLP

# A patch's flattened pixels are a small, per-patch feature axis; 'kv' is replicated under the
# default sharding rules, which is what such an axis wants.
PATCH_NAMES: blocks.Names = ("kv", "embed")
POOLS = ("cls", "mean")  # the first token (a class token), or the mean over tokens


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

    @staticmethod
    def param_count(patch_size: int, channels: int, d_model: int) -> int:
        return patch_size * patch_size * channels * d_model + d_model


def gelu_mlp(d_model: int, d_ff: int, dtype: Any, name: str) -> GeluMLP:
    """The channel mixer's GELU MLP with biases, its layers named fc1 and fc2 as in ViT."""
    return GeluMLP(d_model, d_ff, use_bias=True, dtype=dtype, layer_names=("fc1", "fc2"), name=name)


def pooled_logits(tokens: jax.Array, num_classes: int, pool: str, dtype: Any) -> jax.Array:
    """Tokens [B, N, D] -> float32 class logits [B, num_classes]: a final LayerNorm, the tokens
    pooled (see POOLS), a linear head.

    Call it inside a family's compact `__call__`: `final_norm` and `head` are then that family's
    own submodules, at the top of its parameter tree."""
    x = layer_norm(dtype, name="final_norm")(tokens)
    x = x[:, 0] if pool == "cls" else jnp.mean(x, axis=1)
    # Classes play the role of the vocabulary: the output label axis.
    logits = blocks.dense(num_classes, ("embed", "vocab"), dtype, use_bias=True, name="head")(x)
    return logits.astype(jnp.float32)


def pooled_logits_param_count(d_model: int, num_classes: int) -> int:
    """Parameters of `pooled_logits`: the LayerNorm's scale and bias, the head's kernel and bias."""
    return 2 * d_model + d_model * num_classes + num_classes


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
