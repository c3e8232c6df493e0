"""The model decoding speed is measured on (`launch.benchmark --decode`): the reference LM's
Llama-style block (experiments/reference_lm.py: RMSNorm, RoPE, SwiGLU, no biases, bytes of
`pydoc_text`) at 2 layers, d_model 128, 2 heads of 64, d_ff 512, so that every mixer x batch x
context of the benchmark's default compiles and runs in minutes on two CPU cores. At this width
attention's cache already outweighs the weights a step reads from about a thousand tokens of
context on, which is where the mixers part ways. The benchmark sets `model.mixer` per line of
its plot and the model's length to its longest context; the parameters are random (timing needs
no training).
"""

import ml_collections

from experiments import reference_lm


def get_config() -> ml_collections.ConfigDict:
    c = reference_lm.get_config()
    c.model.num_layers = 2
    c.model.d_model = 128
    c.model.num_heads = 2
    c.model.d_ff = 512
    return c
