"""Model families by name.

A model is a `flax.linen.Module` whose `__call__(inputs, *, train)` returns float32 logits and
whose `example_inputs(batch_size)` gives a zero batch of the right shape and dtype for `init`.
Parameters are float32 and boxed with logical axis names.
"""

# Family modules are imported for their side effect: registering into MODELS.
from models import mlp, transformer  # noqa: F401
from models.build import build_model, count_params
from models.registry import MODELS

__all__ = ["MODELS", "build_model", "count_params"]
