"""What does compressing a small language model cost, and does int8 cost the selective SSM more?

Python source (`python_stdlib`, four packages, the byte-level BPE of 1024 tokens), bits per byte
on the validation files: a continuous metric on which any loss of precision shows, where MQAR
accuracy at a budget this study can afford sits at its floor for Mamba and could not drop (see
`compress_lm.md` beside this file, with what was measured). For attention and for Mamba (each
mixer a block, `BLOCK_BY`, compared only with its own float arm), six arms over seeds:

    <mixer>-float               the float model, trained (the baseline of its block)
    <mixer>-ptq_int8_weights    int8 weights after training (launch.quantize of seed s's float run)
    <mixer>-ptq_int8            int8 weights and activations after training (likewise)
    <mixer>-qat_int8            trained with int8 fake quantization (weights and activations)
    <mixer>-distilled           half the width, distilled from seed s's float run
    <mixer>-pruned              50% of the projections' weights zeroed by magnitude during training

The quantized arms quantize the projections (`quant.targets`' default), never a recurrence's
gates or state contractions. Per arm the report gives bits per byte with its CI, the drop from
the float arm with its Welch test, the newest checkpoint's bytes, and the decoding time per token
the generation suite measures.

    python -m launch.study experiments/compress_lm.py --workdir=studies/compress_lm
    python -m launch.study experiments/compress_lm.py --workdir=studies/cq --setting=quick
    --config=experiments/compress_lm.py:mamba-pruned        one trained arm, by hand
"""

import ml_collections

from experiments import text_lm
from experiments.base import arm_and_setting
from runtime.config import apply_overrides
from runtime.study_spec import own_overrides, run_of

MIXERS = ("attention", "mamba")
WIDTH = 64
STUDENT_WIDTH = WIDTH // 2
PRUNED_SPARSITY = 0.5


def mixer_arms(mixer: str) -> dict[str, dict]:
    """One mixer's six arms; every one sets model.mixer, its block."""
    mixer_only = {"model.mixer": mixer}
    float_arm = f"{mixer}-float"
    return {
        float_arm: mixer_only,
        f"{mixer}-ptq_int8_weights": {
            **mixer_only,
            "quant.mode": "ptq_int8_weights",
            "quant.source": run_of(float_arm),
        },
        f"{mixer}-ptq_int8": {
            **mixer_only,
            "quant.mode": "ptq_int8",
            "quant.source": run_of(float_arm),
        },
        f"{mixer}-qat_int8": {**mixer_only, "quant.mode": "qat_int8"},
        f"{mixer}-distilled": {
            **mixer_only,
            "model.d_model": STUDENT_WIDTH,
            "model.d_ff": 2 * STUDENT_WIDTH,
            "objective.name": "distillation",
            "objective.distillation.teacher": run_of(float_arm),
        },
        f"{mixer}-pruned": {**mixer_only, "prune.sparsity": PRUNED_SPARSITY},
    }


ARMS: dict[str, dict] = {name: o for mixer in MIXERS for name, o in mixer_arms(mixer).items()}
BLOCK_BY = "model.mixer"
BASELINE = {mixer: f"{mixer}-float" for mixer in MIXERS}
SEEDS = 3
METRIC = "eval/bits_per_byte"
HIGHER_IS_BETTER = False
HYPOTHESIS = """Post-training int8 costs the selective SSM (Mamba) more than attention: its
recurrence compounds the rounding of the projections that feed it over every position. Supported
when Mamba's drop in validation bits per byte from its float run to that run quantized (int8
weights and activations; and int8 weights only) is larger than attention's, seed by seed (Welch
t-test on the two mixers' per-seed drops, Holm-adjusted p < 0.05)."""
CLAIMS = [
    (
        ("mamba-ptq_int8", "mamba-float"),
        "drops more than",
        ("attention-ptq_int8", "attention-float"),
    ),
    (
        ("mamba-ptq_int8_weights", "mamba-float"),
        "drops more than",
        ("attention-ptq_int8_weights", "attention-float"),
    ),
]
SETTINGS: dict[str, dict] = {
    "default": {},
    # A smoke test of the whole study: a quarter of the steps.
    "quick": {
        "train.steps": 50,
        "optimizer.warmup_steps": 5,
        "eval.every": 50,
        "checkpoint.every": 50,
    },
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arm, setting = arm_and_setting(arg, ARMS, SETTINGS, "attention-float", "default")
    c = text_lm.get_config("attention,quick")  # its corpus: four stdlib packages
    c.model.num_layers = 2
    c.model.d_model = WIDTH
    c.model.num_heads = 2
    c.model.d_ff = 2 * WIDTH
    # Sized so that the 36 runs fit a sitting on 2 cores (the measured cost: compress_lm.md).
    c.train.steps = 200
    c.optimizer.warmup_steps = 20
    c.eval.every = 200
    c.eval.num_batches = 8  # the first 512 validation windows
    c.checkpoint.every = 200
    # Only the generation suite, which times decoding per token: the calibration suite reads the
    # whole validation split, a large share of a short run (measured in compress_lm.md).
    c.eval.suites = "generation"
    apply_overrides(c, own_overrides(ARMS[arm]), f"ARMS[{arm!r}]")
    apply_overrides(c, SETTINGS[setting], f"SETTINGS[{setting!r}]")
    if c.prune.sparsity:
        # The magnitude masks ramp up over the middle half of training, whatever its length.
        c.prune.start_step = c.train.steps // 4
        c.prune.end_step = 3 * c.train.steps // 4
    return c
