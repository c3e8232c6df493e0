"""Which sequence mixers solve multi-query associative recall at width 64?

Hypothesis: attention solves MQAR (vocab 256, T 64, 4 key-value pairs) at width 64 with two layers;
the zoo issue adds the other mixers as arms of this same study.

`--config=experiments/mqar_mixers.py` runs the default arm; `...:<arm>` picks one.
"""

import ml_collections

from experiments.base import base_config

ARMS: dict[str, dict] = {
    "attention": {"model.mixer": "attention"},
}
BASELINE = "attention"


def get_config(arm: str | None = None) -> ml_collections.ConfigDict:
    c = base_config()
    c.data.name = "mqar"
    # One head of width 64: with 4 heads of 16, attention sat at ~0.31 accuracy (picking among
    # the in-context values) for 3000 steps; with one it jumps to > 0.99 after ~1500 steps.
    c.model.num_heads = 1
    c.train.steps = 2000
    c.train.batch_size = 64
    c.train.log_every = 100
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 50
    c.eval.every = 250
    c.checkpoint.every = 250
    arm = arm or BASELINE
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    for key, value in ARMS[arm].items():
        c.update_from_flattened_dict({key: value})
    return c
