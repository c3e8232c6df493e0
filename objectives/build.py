"""Turn the `objective` config section into a `(logits, batch, aux) -> (loss, metrics)` function."""

from __future__ import annotations

import functools
from typing import Any

from objectives.registry import OBJECTIVES, Objective


def get_objective(objective_config: Any) -> Objective:
    """Look up `objective_config.name` and bind its `z_loss` and `label_smoothing`."""
    fn = OBJECTIVES.get(objective_config.name)
    z_loss = float(objective_config.z_loss)
    label_smoothing = float(objective_config.label_smoothing)
    if z_loss < 0:
        raise ValueError(f"objective.z_loss must be >= 0, got {z_loss}")
    if not 0 <= label_smoothing < 1:
        raise ValueError(f"objective.label_smoothing must be in [0, 1), got {label_smoothing}")
    return functools.partial(fn, z_loss=z_loss, label_smoothing=label_smoothing)
