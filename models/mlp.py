"""A GELU multilayer perceptron image classifier (the baseline for small image sets)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.registry import MODELS, require


class MLPClassifier(nn.Module):
    """Images [B, H, W, C] -> float32 class logits [B, num_classes]."""

    image_shape: tuple[int, ...]
    num_classes: int
    num_layers: int
    d_model: int
    dropout_rate: float = 0.0
    dtype: Any = jnp.float32

    def example_inputs(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, *self.image_shape), jnp.float32)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        x = inputs.reshape(inputs.shape[0], -1).astype(self.dtype)
        deterministic = not train or self.dropout_rate == 0
        # Kernels alternate ('embed', 'mlp') / ('mlp', 'embed') as in Megatron-style MLPs, so a
        # rule sharding 'mlp' splits consecutive layers on alternate sides and never names one
        # mesh axis twice in a kernel.
        names: tuple[str, str] = ("embed", "mlp")
        for i in range(self.num_layers):
            x = blocks.dense(self.d_model, names, self.dtype, use_bias=True, name=f"hidden_{i}")(x)
            x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(nn.gelu(x))
            x = nn.with_logical_constraint(x, ("batch", names[1]))
            names = (names[1], names[0])
        # Classes play the role of the vocabulary: the output label axis.
        logits = blocks.dense(
            self.num_classes, (names[0], "vocab"), self.dtype, use_bias=True, name="head"
        )(x)
        return logits.astype(jnp.float32)


@MODELS.register("mlp")
def build_mlp(config: Any, spec: Any, dtype: Any) -> MLPClassifier:
    image_shape = tuple(require(spec, "image_shape", "mlp"))
    if math.prod(image_shape) <= 0:
        raise ValueError(f"spec.image_shape must be positive, got {image_shape}")
    return MLPClassifier(
        image_shape=image_shape,
        num_classes=require(spec, "num_classes", "mlp"),
        num_layers=config.num_layers,
        d_model=config.d_model,
        dropout_rate=config.dropout_rate,
        dtype=dtype,
    )
