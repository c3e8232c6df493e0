"""Model families by name.

A model is a `flax.linen.Module` whose `__call__(inputs, *, train)` returns float32 logits (the
sequence model also takes `positions` [B, S] and then returns only those positions' logits) and
whose `example_inputs(batch_size)` gives a zero batch of the right shape and dtype for `init`.
Parameters are float32 and boxed with logical axis names.
"""

# Family modules are imported for their side effect: registering into MODELS.
import models.mlp_mixer  # noqa: F401
import models.vit  # noqa: F401
from models import (  # noqa: F401
    attention,
    channel,
    delta_rule,
    hyena,
    linear_attention,
    lm,
    mamba,
    mlp,
    moe,
)
from models.build import build_model, count_params
from models.registry import CHANNEL_MIXERS, CONFIG_SECTIONS, MIXERS, MODELS

__all__ = [
    "CHANNEL_MIXERS",
    "CONFIG_SECTIONS",
    "MIXERS",
    "MODELS",
    "build_model",
    "count_params",
]
