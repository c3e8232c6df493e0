"""A study small enough for tests: two arms of the MQAR study at conftest's TINY size.

Hypothesis for the tests' sake only; at 20 steps neither arm learns much.
"""

import ml_collections

from experiments import mqar_mixers
from experiments.base import arm_and_setting
from runtime.config import apply_overrides
from tests.conftest import tiny_overrides

ARMS = {
    "attention": {"model.mixer": "attention"},
    "deltanet": {"model.mixer": "deltanet"},
    # Passes the study's checks (real keys) and fails inside launch.train: a failing run.
    "broken": {"model.mixer": "no_such_mixer"},
}
BASELINE = "attention"
SEEDS = 2
METRIC = "eval/accuracy"
HIGHER_IS_BETTER = True
HYPOTHESIS = "At 20 steps, DeltaNet beats attention on tiny MQAR."
CLAIMS = [("deltanet", "beats", "attention")]
SETTINGS = {"default": {}, "longer": {"train.steps": 30}}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arm, setting = arm_and_setting(arg, ARMS, SETTINGS, BASELINE, "default")
    config = mqar_mixers.get_config(BASELINE)
    apply_overrides(config, tiny_overrides(), "conftest's TINY")
    # The study's report shows the suites' headline numbers per arm: the cheapest suite suffices.
    config.eval.suites = "calibration"
    apply_overrides(config, ARMS[arm], f"ARMS[{arm!r}]")
    apply_overrides(config, SETTINGS[setting], f"SETTINGS[{setting!r}]")
    return config
