"""Entry points the training loop uses: build a model by name, count its parameters."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models.blocks import REMAT_POLICIES
from models.registry import MODELS

COMPUTE_DTYPES = (jnp.float32, jnp.bfloat16)


def build_model(model_config: Any, spec: Any, compute_dtype: Any) -> nn.Module:
    """Build the registered family `model_config.name` for a dataset described by `spec`.

    Parameters are always float32; `compute_dtype` (float32 or bfloat16) sets activations.
    """
    if jnp.dtype(compute_dtype) not in [jnp.dtype(d) for d in COMPUTE_DTYPES]:
        raise ValueError(f"compute_dtype must be float32 or bfloat16, got {compute_dtype}")
    policy = model_config.get("remat", "none")
    if policy not in REMAT_POLICIES:
        raise ValueError(f"unknown remat policy {policy!r}; valid: {', '.join(REMAT_POLICIES)}")
    factory = MODELS.get(model_config.name)
    return factory(model_config, spec, compute_dtype)


def count_params(params: Any) -> int:
    """Total number of scalars in a parameter tree, boxed (logically partitioned) or not."""
    return sum(int(leaf.size) for leaf in jax.tree.leaves(nn.unbox(params)))
