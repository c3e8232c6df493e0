"""A study small enough for tests, with derived arms: tiny_study's attention arm, its int8 copy
(launch.quantize of its run), a student distilled from it, and a quantized copy of a run that
fails (so never made)."""

import ml_collections

from experiments.base import arm_and_setting
from runtime.config import apply_overrides
from runtime.study_spec import own_overrides, run_of
from tests import tiny_study

ARMS = {
    "float": {"model.mixer": "attention"},
    "int8": {"model.mixer": "attention", "quant.mode": "ptq_int8", "quant.source": run_of("float")},
    "student": {
        "model.mixer": "attention",
        "model.d_model": 16,
        "objective.name": "distillation",
        "objective.distillation.teacher": run_of("float"),
    },
    "broken": tiny_study.ARMS["broken"],
    "broken-int8": {
        **tiny_study.ARMS["broken"],
        "quant.mode": "ptq_int8",
        "quant.source": run_of("broken"),
    },
}
BASELINE = "float"
SEEDS = 2
METRIC = "eval/accuracy"
HIGHER_IS_BETTER = True
HYPOTHESIS = "For the tests' sake: int8 matches the float model within 0.5."
CLAIMS = [("int8", "matches", "float", 0.5)]


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arm, setting = arm_and_setting(arg, ARMS, {"default": {}}, BASELINE, "default")
    config = tiny_study.get_config("attention")
    config.eval.suites = ""  # the suites have their own tests; here a quantized run is quicker
    apply_overrides(config, own_overrides(ARMS[arm]), f"ARMS[{arm!r}]")
    return config
