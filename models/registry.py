"""The model registry: family name -> factory `(model_config, spec, compute_dtype) -> nn.Module`.

`spec` is the dataset's description (vocab_size, seq_len, num_classes, image_shape; None where
not applicable). Factories validate the config and raise ValueError on bad values.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from registry import Registry

ModelFactory = Callable[[Any, Any, Any], nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")


def check_choice(option: str, value: str, valid: tuple[str, ...]) -> str:
    """Reject an unknown value of a string-valued config option, listing the valid ones."""
    if value not in valid:
        raise ValueError(f"unknown model.{option} {value!r}; valid: {', '.join(valid)}")
    return value


def require(spec: Any, field: str, family: str) -> Any:
    """Read a dataset spec field a family needs, failing clearly when the dataset lacks it."""
    value = getattr(spec, field, None)
    if value is None:
        raise ValueError(f"model {family!r} needs spec.{field}, which this dataset does not set")
    return value
