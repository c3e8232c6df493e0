"""Hugging Face checkpoints in and out: a local transformers model directory (config.json and
safetensors) becomes an ordinary archlab run at step 0, and a run's newest checkpoint becomes a
directory transformers loads. `python -m launch.convert` is the command; this package is the
work, one module per job:

- `hf_dir`: the directory on disk (read config.json and every tensor as float32; write them);
- `tensor_map`: which tensor is which parameter and how its layout differs, one table read both
  ways;
- `llama` (Llama, Mistral, Qwen2) and `mamba` (Mamba-1): each family's config keys and table;
- `families`: which family converts a checkpoint or an archlab model;
- here: the config of a converted run, and the parameters in and out.

Nothing is approximated: a setting without an exact archlab counterpart is refused, one line.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import flax
import jax
import ml_collections
import numpy as np

from convert import families, hf_dir, tensor_map
from convert.hf_config import required
from experiments.base import base_config
from runtime import assembly
from runtime import mesh as mesh_lib
from runtime.config import apply_overrides, with_flag_overrides
from runtime.errors import UsageError

# A converted run's dataset unless --config.data.name says otherwise: its vocabulary is a
# parameter, so it takes the checkpoint's, and a pretrained LM can do the task (copy the token
# that followed the trigger's earlier occurrence) with the induction heads it has.
DEFAULT_DATASET = "induction_head"


def checkpoint_config(
    hf: dict[str, Any], overrides: list[str]
) -> tuple[ModuleType, ml_collections.ConfigDict]:
    """(family, the converted run's whole config) for a checkpoint's config.json `hf`: its model
    keys, DEFAULT_DATASET with the checkpoint's vocabulary, then the user's `--config.<key>=value`
    `overrides` (anything but the model keys the checkpoint fixes). Every failure, a dataset of
    another vocabulary among them, is a UsageError."""
    family = families.for_checkpoint(hf)
    model_keys = family.archlab_model(hf)
    vocab_size = required(hf, "vocab_size")
    config = base_config()
    apply_overrides(config, model_keys, "the checkpoint's config.json")
    config.data.name = DEFAULT_DATASET
    config = with_flag_overrides(config, overrides)
    given = {a[len("--config.") :].split("=", 1)[0] for a in overrides}
    fixed = sorted(given & set(model_keys))
    if fixed:
        raise UsageError(f"--config.{fixed[0]} is the checkpoint's own: config.json sets it")
    tuning = sorted(k for k in given if k.split(".")[0] in ("finetune", "lora"))
    if tuning:
        raise UsageError(
            f"--config.{tuning[0]}: a converted run holds the checkpoint's own parameters; "
            "fine-tune it into a new run with launch.train --config.finetune.from_run=<run>"
        )
    name = config.data.name
    if "vocab_size" in config.data.get(name, {}) and f"data.{name}.vocab_size" not in given:
        config.data[name].vocab_size = vocab_size
    assembly.check(config)
    spec = assembly.data_shapes(config)
    if spec.vocab_size != vocab_size:
        raise UsageError(
            f"dataset {name!r} has a vocabulary of {spec.vocab_size}, the checkpoint "
            f"{vocab_size}: choose a dataset with the checkpoint's (--config.data.name; "
            f"{DEFAULT_DATASET} takes any)"
        )
    return family, config


def param_shapes(config: ml_collections.ConfigDict) -> dict[str, tuple[int, ...]]:
    """{'block_0/sequence_mixer/query/kernel': shape, ...} of the model `config` builds, from
    its shapes alone (nothing is initialised)."""
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    boxed = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), model.example_inputs(1), train=False)["params"]
    )
    flat = flax.traverse_util.flatten_dict(mesh_lib.unbox(boxed), sep="/")
    return {path: tuple(leaf.shape) for path, leaf in flat.items()}


def params_from_checkpoint(
    directory: str, hf: dict[str, Any], family: ModuleType, config: ml_collections.ConfigDict
) -> dict[str, Any]:
    """archlab's parameter tree (float32 numpy) for the model `config` builds, from the
    checkpoint in `directory` whose config.json is `hf`."""
    tensors = family.hf_tensors(hf, hf_dir.read_tensors(directory))
    table = family.tensor_table(config.model)
    flat = tensor_map.to_archlab(table, tensors, param_shapes(config))
    return flax.traverse_util.unflatten_dict(flat, sep="/")


def hf_config_for(config: ml_collections.ConfigDict) -> tuple[ModuleType, dict[str, Any]]:
    """(family, config.json) of the transformers model that computes what archlab's `config`
    computes; a model none computes is a UsageError naming the setting."""
    family = families.for_model(config.model)
    spec = assembly.data_shapes(config)
    return family, family.hf_config(config.model, spec.vocab_size, spec.seq_len)


def write_checkpoint(config: ml_collections.ConfigDict, params: Any, directory: str) -> None:
    """`params` (archlab's tree, for the model of `config`) as a transformers model directory."""
    family, hf = hf_config_for(config)
    flat = flax.traverse_util.flatten_dict(jax.device_get(params), sep="/")
    tensors = tensor_map.to_hf(family.tensor_table(config.model), flat)
    hf_dir.write(directory, hf, {k: np.asarray(v) for k, v in tensors.items()})
