"""data/: what is fed. TFDS builders prepared locally (no download) and Grain input pipelines.

Use: `ds = data.load("mqar", {"seq_len": 64}, data_dir=None)`, then `ds.spec`, `ds.fingerprint`
and `iter(ds.loader("train", batch_size=32, seed=0, shuffle=True, num_epochs=None))`.
"""

# Importing the builder modules registers them in DATASETS.
from data import (  # noqa: F401
    compression,
    digits,
    fuzzy_recall,
    in_context_recall,
    induction_head,
    memorization,
    modular_arithmetic,
    mqar,
    noisy_recall,
    python_stdlib,
    selective_copying,
    text,
    text_files,
)
from data.config import DataConfigError
from data.dataset import Dataset, default_params, load, shape_spec, text_tokenizer
from data.pipeline import iterator_checkpoint_args
from data.registry import DATASETS
from data.spec import DatasetSpec

__all__ = [
    "DATASETS",
    "DataConfigError",
    "Dataset",
    "DatasetSpec",
    "default_params",
    "shape_spec",
    "text_tokenizer",
    "iterator_checkpoint_args",
    "load",
]
