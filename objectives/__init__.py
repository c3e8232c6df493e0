"""Losses and metrics as pure functions `(logits, batch, aux) -> (loss, metrics)`."""

# Objective modules are imported for their side effect: registering into OBJECTIVES.
from objectives import distill, xent  # noqa: F401
from objectives.build import (
    OPTION_DEFAULTS,
    TEACHER_OBJECTIVES,
    bind_options,
    get_eval_objective,
    get_objective,
    needs_teacher,
)
from objectives.metrics import derived_metrics
from objectives.registry import OBJECTIVES

__all__ = [
    "OBJECTIVES",
    "OPTION_DEFAULTS",
    "TEACHER_OBJECTIVES",
    "bind_options",
    "derived_metrics",
    "get_eval_objective",
    "get_objective",
    "needs_teacher",
]
