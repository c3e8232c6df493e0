"""Which sequence mixer models real text best at a matched parameter count?

The corpus is the Python standard library's source (`python_stdlib`: about 10.7 MB of code and
docstrings that every machine holds), tokenised by a byte-level BPE of 1024 tokens trained on
its train split at preparation; the metric is bits per byte on the validation files, which is
independent of the tokenizer. Four arms at about 1.1M parameters: attention, Mamba, gated linear
attention (GLA) and an attention/Mamba hybrid, each padded to the same count with its channel
mixer's width (tests/test_text_lm.py holds them within 2% of each other). What was measured,
with the commands, is in `text_lm.md` beside this file.

    --config=experiments/text_lm.py              the baseline arm (attention)
    --config=experiments/text_lm.py:mamba        one arm
    --config=experiments/text_lm.py:mamba,quick  one arm, the quick setting
    python -m launch.study experiments/text_lm.py --workdir=studies/text_lm   every arm x seed
"""

import ml_collections

from experiments.base import arm_and_setting, base_config
from runtime.config import apply_overrides

# Arm -> config overrides. The block (pre-norm, SwiGLU) is shared; d_ff brings each arm to the
# attention arm's parameter count (Mamba's mixer has more parameters than attention's).
ARMS: dict[str, dict] = {
    "attention": {"model.mixer": "attention", "model.d_ff": 384},
    "mamba": {"model.mixer": "mamba", "model.d_ff": 248},
    "gla": {"model.mixer": "gla", "model.d_ff": 328},
    "hybrid": {"model.layer_pattern": "attention,mamba", "model.d_ff": 320},
}
BASELINE = "attention"
SEEDS = 3
METRIC = "eval/bits_per_byte"
HIGHER_IS_BETTER = False
HYPOTHESIS = """At about 1.1M parameters, attention models Python source better than the
fixed-state mixers: code repeats identifiers within a file, and attention can copy any earlier
token while Mamba and GLA must have kept it in a fixed-size state. Supported when attention's
final validation bits per byte is significantly lower than Mamba's and than GLA's (Welch t-test
over seeds, Holm-adjusted p < 0.05)."""
CLAIMS = [("attention", "beats", "mamba"), ("attention", "beats", "gla")]
SETTINGS: dict[str, dict] = {
    "full": {},
    # A smoke test of the whole study: a sixth of the steps, on four stdlib packages.
    "quick": {
        "data.python_stdlib.modules": "json,email,logging,asyncio",
        "train.steps": 100,
        "optimizer.warmup_steps": 10,
        "eval.every": 50,
        "checkpoint.every": 100,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arm, setting = arm_and_setting(arg, ARMS, SETTINGS, BASELINE, "full")
    c = base_config()
    c.data.name = "python_stdlib"
    c.data.python_stdlib.tokenizer = "bpe"
    c.data.python_stdlib.vocab_size = 1024
    c.data.python_stdlib.seq_len = 128
    c.model.num_layers = 4
    c.model.d_model = 128
    c.model.num_heads = 4
    # At T 128 on CPU a lax.scan over time is the faster Mamba train step (text_lm.md).
    c.model.mamba.scan = "sequential"
    c.train.steps = 600
    c.train.batch_size = 16
    c.train.log_every = 50
    c.optimizer.learning_rate = 3e-3
    c.optimizer.warmup_steps = 60
    c.eval.every = 200
    c.eval.batch_size = 64
    c.eval.num_batches = 16  # the first 1,024 validation windows: 131,072 scored tokens
    c.checkpoint.every = 200
    # The evaluation suites at fewer points: each length is a preparation and a compilation.
    c.eval.corruption_rates = (0.1, 0.4)
    c.eval.length_factors = (2,)
    apply_overrides(c, ARMS[arm], f"ARMS[{arm!r}]")
    apply_overrides(c, SETTINGS[setting], f"SETTINGS[{setting!r}]")
    return c
