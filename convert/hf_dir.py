"""A Hugging Face model directory on disk: `config.json` beside safetensors weights (one file, or
shards listed by `model.safetensors.index.json`). Read into float32 numpy, written as one
float32 `model.safetensors`. Nothing here imports torch or transformers."""

from __future__ import annotations

import glob
import json
import os
from typing import Any

import numpy as np
import safetensors
import safetensors.numpy

from analysis.runs import TOKENIZER_FILE
from atomic_write import write_atomically, write_json_atomically
from runtime.errors import UsageError

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"


def read_config(directory: str) -> dict[str, Any]:
    path = os.path.join(directory, CONFIG_FILE)
    if not os.path.isdir(directory):
        raise UsageError(f"--from_hf={directory!r} is not a directory")
    if not os.path.isfile(path):
        raise UsageError(f"--from_hf={directory!r} has no {CONFIG_FILE}")
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UsageError(f"{path} does not read as JSON: {e}") from e
    if not isinstance(config, dict):
        raise UsageError(f"{path} is not a JSON object")
    return config


def weight_files(directory: str) -> list[str]:
    """The safetensors files of the checkpoint: the index's shards, or every *.safetensors."""
    index = os.path.join(directory, INDEX_FILE)
    if os.path.isfile(index):
        with open(index) as f:
            names = sorted(set(json.load(f)["weight_map"].values()))
        return [os.path.join(directory, name) for name in names]
    files = sorted(glob.glob(os.path.join(directory, "*.safetensors")))
    if not files:
        raise UsageError(
            f"--from_hf={directory!r} has no *.safetensors weights (PyTorch pickles such as "
            "pytorch_model.bin are not read: save the model with safetensors)"
        )
    return files


def read_tensors(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of the checkpoint, as float32 (bfloat16 and float16 widen exactly)."""
    tensors: dict[str, np.ndarray] = {}
    for path in weight_files(directory):
        # The flax framework, because numpy has no bfloat16; JAX hands it over as ml_dtypes'.
        with safetensors.safe_open(path, framework="flax") as f:
            for name in f.keys():  # noqa: SIM118 (a safe_open handle is not a dict)
                if name in tensors:
                    raise UsageError(f"tensor {name!r} is in two files of {directory!r}")
                tensors[name] = np.asarray(f.get_tensor(name)).astype(np.float32)
    return tensors


def check_new_directory(directory: str, flag: str) -> None:
    """`directory` does not exist or is empty: a conversion never writes over anything."""
    if os.path.exists(directory) and (not os.path.isdir(directory) or os.listdir(directory)):
        raise UsageError(f"{flag}={directory!r} exists and is not empty: give a new directory")


def copy_tokenizer(source: str, target: str) -> None:
    """The tokenizer.json of directory `source`, if it has one, into directory `target` (a
    checkpoint's text encoding travels with it between a Hugging Face directory and a run)."""
    path = os.path.join(source, TOKENIZER_FILE)
    if os.path.isfile(path):
        os.makedirs(target, exist_ok=True)
        with open(path, "rb") as f:
            write_atomically(os.path.join(target, TOKENIZER_FILE), f.read())


def write(directory: str, config: dict[str, Any], tensors: dict[str, np.ndarray]) -> None:
    """config.json and model.safetensors (float32), the weights first: a directory with a
    config.json is complete."""
    os.makedirs(directory, exist_ok=True)
    # transformers refuses safetensors files whose metadata does not name their framework.
    data = safetensors.numpy.save(tensors, metadata={"format": "pt"})
    write_atomically(os.path.join(directory, WEIGHTS_FILE), data)
    config = {**config, "torch_dtype": "float32", "dtype": "float32"}
    write_json_atomically(os.path.join(directory, CONFIG_FILE), config, indent=2, sort_keys=True)
