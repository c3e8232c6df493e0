"""The model registries.

- `MODELS`: family name -> factory `(model_config, spec, compute_dtype) -> nn.Module`; `spec` is
  the dataset's description (vocab_size, seq_len, num_classes, image_shape; None where not
  applicable). Factories validate the config and raise ValueError on bad values.
- `MIXERS`: sequence-mixer name -> `SequenceMixer` subclass (see models/mixer.py).
- `CHANNEL_MIXERS`: channel-mixer name -> module class `(d_model, d_ff, use_bias, options, dtype)`.
- `CONFIG_SECTIONS`: name -> the defaults of the config section `model.<name>` that a family or
  mixer reads its own options from. experiments/base.py builds the config from these, so a new
  architecture's options are overridable (and typo-checked) without editing the base config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from registry import Registry

ModelFactory = Callable[[Any, Any, Any], nn.Module]

MODELS: Registry[ModelFactory] = Registry("model")
MIXERS: Registry[type] = Registry("sequence mixer")
CHANNEL_MIXERS: Registry[type] = Registry("channel mixer")
CONFIG_SECTIONS: Registry[dict[str, Any]] = Registry("model config section")


def check_choice(option: str, value: str, valid: tuple[str, ...] | list[str]) -> str:
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
