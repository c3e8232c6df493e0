"""An MLP classifier on scikit-learn's 8x8 digits: the smallest image task, a smoke test for
image models (the zoo adds ViT and MLP-Mixer)."""

import ml_collections

from experiments.base import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "digits"
    c.model.name = "mlp"
    c.model.d_model = 128
    c.objective.name = "classification_xent"
    c.train.steps = 300
    c.train.batch_size = 64
    c.eval.batch_size = 100
    c.eval.every = 100
    c.checkpoint.every = 100
    c.optimizer.warmup_steps = 20
    return c
