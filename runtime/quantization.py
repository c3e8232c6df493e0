"""`quant.*`: int8 quantization of a model's projections with qwix, at the one place a config's
model is built (`runtime.assembly.model_and_objective`), so training, evaluation and generation
all run the same quantized model.

qwix wraps an unchanged linen model (`qwix.quantize_model`): while the wrapped methods run, it
intercepts `jax.lax.dot_general` (what `models.blocks.Dense` computes) in every module whose path
(`block_0/channel/up`) fully matches `quant.targets` (default: `models.lm.PROJECTIONS`, the
projections, never a recurrence's gates or state contractions), and quantizes there.
`quant.mode`:

- `none`: the float model.
- `qat_int8` (quantization-aware training, trained by `launch.train`): the forward pass rounds
  each targeted projection's weights and input activations to int8 and back (fake quantization;
  gradients pass straight through). Parameters stay float32; a run resumes like any other.
- `ptq_int8_weights` / `ptq_int8` (post-training, written by `launch.quantize` from a trained
  run): each targeted kernel is stored int8 with float32 scales; `ptq_int8` also rounds each
  targeted projection's input to int8 as it runs (dynamic range: nothing is calibrated). Such a
  run is evaluated and generates from; it does not train.

Scales are absmax, symmetric: weights per output channel (one scale for every index of the
kernel's non-contracted axes), activations per token. Embeddings and norms are not matrix
products and stay float.

qwix is imported only by runs that quantize (it costs 0.6 s at startup).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections

from registry import Registry
from runtime.errors import UsageError

NONE = "none"
QUANTIZATION_AWARE = "qat_int8"
POST_TRAINING = ("ptq_int8_weights", "ptq_int8")

# The methods of a model that compute with its parameters: qwix intercepts inside these.
_METHODS = ("__call__", "decode_step", "prefill")

# quant.mode -> (the qwix module, targets pattern) -> the provider that quantizes those modules
MODES: Registry[Callable[[Any, str], Any]] = Registry("quant.mode")


@MODES.register(NONE)
def _none(qwix: Any, targets: str) -> None:
    return None


@MODES.register("ptq_int8_weights")
def _ptq_int8_weights(qwix: Any, targets: str) -> Any:
    return qwix.PtqProvider([qwix.QuantizationRule(module_path=targets, weight_qtype=jnp.int8)])


@MODES.register("ptq_int8")
def _ptq_int8(qwix: Any, targets: str) -> Any:
    rule = qwix.QuantizationRule(module_path=targets, weight_qtype=jnp.int8, act_qtype=jnp.int8)
    return qwix.PtqProvider([rule])


@MODES.register(QUANTIZATION_AWARE)
def _qat_int8(qwix: Any, targets: str) -> Any:
    from runtime.qat_provider import QatProvider  # qwix's, fixed (see there)

    # No bwd_qtype: gradients stay float, and pass the rounding straight through.
    rule = qwix.QtRule(module_path=targets, weight_qtype=jnp.int8, act_qtype=jnp.int8)
    return QatProvider([rule])


def check(quant: ml_collections.ConfigDict) -> None:
    """A known mode and a targets pattern that compiles (UsageError otherwise)."""
    try:
        MODES.get(quant.mode)
    except ValueError as e:
        raise UsageError(str(e)) from e
    try:
        re.compile(quant.targets)
    except re.error as e:
        raise UsageError(f"quant.targets {quant.targets!r} is not a regular expression: {e}") from e


def check_trainable(quant: ml_collections.ConfigDict) -> None:
    """Post-training modes hold int8 weights, which have no gradient: they are not trained."""
    if quant.mode in POST_TRAINING:
        raise UsageError(
            f"quant.mode={quant.mode} is post-training quantization and does not train: train "
            f"with quant.mode={NONE} or {QUANTIZATION_AWARE}, then quantize the run with "
            "python -m launch.quantize"
        )


def wrap(model: nn.Module, quant: ml_collections.ConfigDict) -> nn.Module:
    """`model` as `quant` says: itself for mode none, else wrapped by qwix. A targets pattern that
    matches none of the model's modules is a UsageError naming the ones it could match."""
    check(quant)
    if quant.mode == NONE:
        return model
    import qwix

    provider = MODES.get(quant.mode)(qwix, quant.targets)
    methods = tuple(name for name in _METHODS if hasattr(model, name))
    wrapped = qwix.quantize_model(model, provider, methods=methods)
    _abstract_variables(wrapped)  # one abstract trace: qwix records which rules matched
    if provider.get_unused_rules():
        raise UsageError(
            f"quant.targets {quant.targets!r} matches no module of this model that computes a "
            f"matrix product; its modules with a kernel: {', '.join(kernel_modules(model))}"
        )
    return wrapped


def _abstract_variables(model: nn.Module) -> Any:
    return jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), model.example_inputs(1), train=False)
    )


def kernel_modules(model: nn.Module) -> list[str]:
    """Paths of the modules that own a `kernel` parameter (projections, and convolutions): what
    a targets pattern is written against."""
    flat = flax.traverse_util.flatten_dict(nn.unbox(_abstract_variables(model)["params"]))
    return ["/".join(path[:-1]) for path in flat if path[-1] == "kernel"]


def quantize_params(quantized_model: nn.Module, params: Any) -> Any:
    """Float parameters (unboxed, as trained) -> the tree `quantized_model` (a post-training
    mode's) takes: each targeted kernel int8 with its scales, every other parameter as it was."""
    import qwix

    abstract = _abstract_variables(quantized_model)["params"]
    return jax.jit(lambda arrays: qwix.quantize_params(arrays, abstract))(params)


def quantized_paths(params: Any) -> list[str]:
    """'block_0/channel/up/kernel', ...: the parameters `params` holds quantized (qwix keeps
    each as an int8 `QArray` of values and scales, inside a wrapper that says how)."""
    import qwix

    flat = flax.traverse_util.flatten_dict(params, sep="/")
    return [
        path for path, leaf in flat.items() if isinstance(getattr(leaf, "array", None), qwix.QArray)
    ]
