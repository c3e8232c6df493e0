"""A byte-level language model on CPython's own documentation (the `pydoc_text` dataset)."""

import ml_collections

from experiments.base import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "pydoc_text"
    c.model.num_layers = 4
    c.model.d_model = 128
    c.model.d_ff = 512
    c.train.steps = 2000
    c.train.batch_size = 32
    c.train.log_every = 100
    c.eval.every = 500
    c.eval.num_batches = 20
    c.checkpoint.every = 500
    return c
