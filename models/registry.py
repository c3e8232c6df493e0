"""The model registries.

- `MODELS`: family name -> factory `(model_config, spec, compute_dtype) -> nn.Module`; `spec` is
  the dataset's description (vocab_size, seq_len, num_classes, image_shape; None where not
  applicable). Factories validate the config and raise ValueError on bad values.
- `MIXERS`: sequence-mixer name -> `SequenceMixer` subclass (see models/mixer.py); it refuses a
  class that breaks the mixer contract or takes another mixer's letter.
- `CHANNEL_MIXERS`: channel-mixer name -> module class `(d_model, d_ff, use_bias, options, dtype)`.
- `CONFIG_SECTIONS`: name -> the defaults of the config section `model.<name>` that a family or
  mixer reads its own options from. experiments/base.py builds the config from these, so a new
  architecture's options are overridable (and typo-checked) without editing the base config.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn

from models.mixer import check_contract
from registry import Registry

ModelFactory = Callable[[Any, Any, Any], nn.Module]


class MixerRegistry(Registry[type]):
    """Checks each mixer class as it registers, so that a broken one fails at import with its
    name, not deep inside a model build."""

    def register(self, name: str) -> Callable[[type], type]:
        add = super().register(name)

        def checked(cls: type) -> type:
            check_contract(name, cls)
            owners = {self.get(other).LETTER: other for other in self.names()}
            if cls.LETTER in owners:
                raise ValueError(
                    f"sequence mixer {name!r}: LETTER {cls.LETTER!r} already stands for "
                    f"{owners[cls.LETTER]!r}; letters in use: {', '.join(sorted(owners))}"
                )
            if cls.SECTION not in CONFIG_SECTIONS:
                raise ValueError(
                    f"sequence mixer {name!r}: SECTION {cls.SECTION!r} is not a registered config "
                    f"section; register its defaults with CONFIG_SECTIONS.register first"
                )
            return add(cls)

        return checked


MODELS: Registry[ModelFactory] = Registry("model")
MIXERS = MixerRegistry("sequence mixer")
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
