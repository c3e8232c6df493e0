"""Losses and metrics as pure functions `(logits, batch, aux) -> (loss, metrics)`."""

# Objective modules are imported for their side effect: registering into OBJECTIVES.
from objectives import xent  # noqa: F401
from objectives.build import get_objective
from objectives.registry import OBJECTIVES

__all__ = ["OBJECTIVES", "get_objective"]
