"""The MAD synthetic tasks (Poli et al. 2024) across sequence-mixer families.

Hypothesis: no single fixed-state mixer matches attention on every MAD task; recall tasks
(in-context, noisy, fuzzy) separate them most, memorization least.

An arm is `<mixer>-<task>`, e.g. `--config=experiments/mad_tasks.py:mamba-fuzzy_recall`.
"""

import ml_collections

from experiments import mqar_mixers
from experiments.mqar_mixers import small_recall_config
from runtime.config import apply_overrides

TASKS = (
    "in_context_recall",
    "noisy_recall",
    "fuzzy_recall",
    "selective_copying",
    "compression",
    "memorization",
)
# The MQAR study's arms for these mixers: the same blocks and per-mixer choices in both studies.
MIXERS: dict[str, dict] = {
    name: mqar_mixers.ARMS[name]
    for name in ("attention", "linear", "gla", "deltanet", "mamba", "hyena")
}
ARMS: dict[str, dict] = {
    f"{mixer}-{task}": {**overrides, "data.name": task}
    for mixer, overrides in MIXERS.items()
    for task in TASKS
}
BASELINE = "attention-in_context_recall"
SEEDS = 3
METRIC = "eval/accuracy"
HIGHER_IS_BETTER = True
HYPOTHESIS = """No single fixed-state mixer matches attention on every MAD task, and recall
separates them most: attention beats Mamba on noisy recall and on fuzzy recall, while on
memorization (no context needed) the two do not differ. Supported when both recall claims hold
(Welch t-test over seeds, Holm-adjusted p < 0.05); the memorization arms are read from the
arms table."""
CLAIMS = [
    ("attention-noisy_recall", "beats", "mamba-noisy_recall"),
    ("attention-fuzzy_recall", "beats", "mamba-fuzzy_recall"),
]


def get_config(arm: str | None = None) -> ml_collections.ConfigDict:
    arm = arm or BASELINE
    if arm not in ARMS:
        raise ValueError(f"unknown arm {arm!r}; valid: {', '.join(ARMS)}")
    c = small_recall_config()
    c.eval.every = 200
    apply_overrides(c, ARMS[arm], f"ARMS[{arm!r}]")
    return c
