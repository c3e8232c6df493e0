"""Which conversion handles a checkpoint (by its config.json's model_type) or an archlab model
(by the mixer in its layers). A family is a module with `ARCHITECTURES` (model_type -> the
transformers class), `archlab_model`, `hf_tensors`, `hf_config` and `tensor_table`."""

from __future__ import annotations

from types import ModuleType
from typing import Any

import ml_collections

from convert import llama, mamba
from models.lm import layer_mixers
from runtime.errors import UsageError

BY_MIXER: dict[str, ModuleType] = {"attention": llama, "mamba": mamba}
BY_MODEL_TYPE: dict[str, ModuleType] = {
    model_type: family for family in BY_MIXER.values() for model_type in family.ARCHITECTURES
}


def for_checkpoint(hf: dict[str, Any]) -> ModuleType:
    """The family of a Hugging Face config.json; an architecture none converts is a UsageError
    naming the ones that do."""
    supported = ", ".join(f"{f.ARCHITECTURES[t]} ({t})" for t, f in BY_MODEL_TYPE.items())
    model_type = hf.get("model_type")
    family = BY_MODEL_TYPE.get(model_type)
    if family is None:
        raise UsageError(f"cannot convert model_type {model_type!r}: supported are {supported}")
    expected = family.ARCHITECTURES[model_type]
    other = [name for name in hf.get("architectures") or [expected] if name != expected]
    if other:
        raise UsageError(
            f"cannot convert architecture {other[0]!r}: only the causal LM {expected} of "
            f"model_type {model_type!r} converts"
        )
    return family


def for_model(model: ml_collections.ConfigDict) -> ModuleType:
    """The family that exports archlab's `model` (its config section): the same mixer in every
    layer, one of BY_MIXER's; else a UsageError."""
    if model.name != "lm":
        raise UsageError(
            f"cannot export model.name={model.name!r} to Hugging Face: only sequence models "
            "(model.name='lm') convert"
        )
    try:
        mixers = sorted(set(layer_mixers(model)))
    except ValueError as e:
        raise UsageError(str(e)) from e
    if len(mixers) != 1 or mixers[0] not in BY_MIXER:
        raise UsageError(
            f"cannot export layers of {', '.join(mixers)} to Hugging Face: every layer must be "
            f"one of {', '.join(BY_MIXER)} (Llama, Mistral, Qwen2; Mamba)"
        )
    return BY_MIXER[mixers[0]]
