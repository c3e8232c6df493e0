"""What a study file declares, read and checked before anything runs.

A study is one file in experiments/. Next to `get_config(arg)` (which builds one arm's config
from `"<arm>"` or `"<arm>,<setting>"`), it declares:

    ARMS = {"attention": {...overrides...}, "mamba": {...}}   # arm name -> config overrides
    BASELINE = "attention"                 # every other arm is compared with it
    SEEDS = 3                              # seeds per arm unless --seeds says otherwise
    METRIC = "eval/accuracy"               # the primary metric ...
    HIGHER_IS_BETTER = True                # ... and its direction
    HYPOTHESIS = "In words, with its success criterion."
    CLAIMS = [("deltanet", "beats", "mamba")]   # the criterion, as comparisons on METRIC
    SETTINGS = {"small": {...}, "hard": {...}}  # optional: named variants of every arm

A claim is (arm, relation, other arm) with relation "beats" or "loses to" on the primary
metric's final value; the study's verdict is the claims' verdicts.
"""

from __future__ import annotations

import os

from analysis.study import RELATIONS, Claim, StudySpec
from runtime.config import load_python_file
from runtime.errors import UsageError

REQUIRED = ("ARMS", "BASELINE", "SEEDS", "METRIC", "HIGHER_IS_BETTER", "HYPOTHESIS", "CLAIMS")


def load_study(path: str) -> StudySpec:
    """Reads and checks a study file; every problem is a one-line UsageError."""
    module = load_python_file(path, "study file")
    missing = [name for name in REQUIRED if not hasattr(module, name)]
    if missing:
        raise UsageError(
            f"study file {path!r} does not declare {', '.join(missing)} "
            "(a study declares ARMS, BASELINE, SEEDS, METRIC, HIGHER_IS_BETTER, HYPOTHESIS, CLAIMS)"
        )
    arms = dict(module.ARMS)
    valid = ", ".join(arms)
    where = f"study file {path!r}"
    if not arms:
        raise UsageError(f"{where}: ARMS is empty")
    if module.BASELINE not in arms:
        raise UsageError(f"{where}: BASELINE {module.BASELINE!r} is not an arm; valid: {valid}")
    if not isinstance(module.SEEDS, int) or module.SEEDS < 1:
        raise UsageError(f"{where}: SEEDS must be an integer >= 1, got {module.SEEDS!r}")
    if not isinstance(module.HIGHER_IS_BETTER, bool):
        raise UsageError(f"{where}: HIGHER_IS_BETTER must be True or False")
    claims = []
    for claim in module.CLAIMS:
        if len(claim) != 3 or claim[1] not in RELATIONS:
            raise UsageError(
                f"{where}: claim {claim!r} must be (arm, relation, arm) with relation "
                f"one of {', '.join(repr(r) for r in RELATIONS)}"
            )
        for arm in (claim[0], claim[2]):
            if arm not in arms:
                raise UsageError(f"{where}: claim names arm {arm!r}; valid: {valid}")
        claims.append(Claim(*claim))
    return StudySpec(
        name=os.path.splitext(os.path.basename(path))[0],
        path=path,
        arms=arms,
        baseline=module.BASELINE,
        seeds=module.SEEDS,
        metric=module.METRIC,
        higher_is_better=module.HIGHER_IS_BETTER,
        hypothesis=" ".join(str(module.HYPOTHESIS).split()),
        claims=tuple(claims),
        settings=tuple(getattr(module, "SETTINGS", {})),
    )
