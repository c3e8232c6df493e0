"""The MAD synthetic tasks (Poli et al. 2024) across sequence-mixer families.

Hypothesis: no single fixed-state mixer matches attention on every MAD task; recall tasks
(in-context, noisy, fuzzy) separate them most, memorization least.

An arm is `<mixer>-<task>`, e.g. `--config=experiments/mad_tasks.py:mamba-fuzzy_recall`.
"""

import ml_collections

from experiments.mqar_mixers import small_recall_config

TASKS = (
    "in_context_recall",
    "noisy_recall",
    "fuzzy_recall",
    "selective_copying",
    "compression",
    "memorization",
)
MIXERS: dict[str, dict] = {
    "attention": {"model.mixer": "attention"},
    "gla": {"model.mixer": "gla"},
    "deltanet": {"model.mixer": "deltanet"},
    "mamba": {"model.mixer": "mamba", "model.channel_mixer": "none", "model.num_layers": 4},
    "hyena": {"model.mixer": "hyena"},
}
ARMS: dict[str, dict] = {
    f"{mixer}-{task}": {**overrides, "data.name": task}
    for mixer, overrides in MIXERS.items()
    for task in TASKS
}
BASELINE = "attention-in_context_recall"


def get_config(arm: str | None = None) -> ml_collections.ConfigDict:
    arm = arm or BASELINE
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    c = small_recall_config()
    c.eval.every = 200
    c.update_from_flattened_dict(ARMS[arm])
    return c
