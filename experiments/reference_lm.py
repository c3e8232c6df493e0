"""The reference language model that speed is measured on (launch.benchmark, benchmarks/).

A Llama-style byte-level decoder: 6 layers, d_model 512, 8 heads, SwiGLU with d_ff 2048, RMSNorm,
RoPE, no biases, untied embeddings; vocab 256 (bytes of `pydoc_text`), 256 tokens per sequence,
batch 8, float32, AdamW. `benchmarks/torch_side_by_side.py` builds the same model in PyTorch.
"""

import ml_collections

from experiments.base import base_config


def get_config() -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "pydoc_text"
    c.data.pydoc_text.seq_len = 256
    c.model.num_layers = 6
    c.model.d_model = 512
    c.model.num_heads = 8
    c.model.d_ff = 2048
    c.train.steps = 200
    c.train.batch_size = 8
    c.train.log_every = 10
    c.optimizer.warmup_steps = 20
    c.eval.every = 100
    c.eval.num_batches = 4
    c.eval.batch_size = 8
    c.checkpoint.every = 200
    return c
