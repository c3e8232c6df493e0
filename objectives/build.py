"""Turn the `objective` config section into a `(logits, batch, aux) -> (loss, metrics)` function."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from objectives.registry import OBJECTIVES, Objective

# The numeric keys of the `objective` config section and their defaults. Each objective takes the
# ones it declares as keyword-only parameters; the rest are validated and otherwise ignored.
OPTION_DEFAULTS = {
    "z_loss": 0.0,
    "label_smoothing": 0.0,
    "temperature": 2.0,  # distillation: softmax temperature of teacher and student
    "alpha": 0.5,  # distillation: weight of the hard-label cross-entropy (1 - alpha: the KL)
}


# Objectives trained against a teacher's logits (batch['teacher_logits'], computed in the train step
# by the run that objective.distillation.teacher names), each with the objective that scores the
# student on the hard labels alone: evaluation uses that one, so it needs no teacher and its
# metrics mean what they mean in every other run.
TEACHER_OBJECTIVES = {"distillation": "next_token_xent"}


def needs_teacher(name: str) -> bool:
    """Does objective `name` train against a teacher's logits?"""
    return name in TEACHER_OBJECTIVES


def _check(options: dict[str, float]) -> None:
    if options["z_loss"] < 0:
        raise ValueError(f"objective.z_loss must be >= 0, got {options['z_loss']}")
    if not 0 <= options["label_smoothing"] < 1:
        raise ValueError(
            f"objective.label_smoothing must be in [0, 1), got {options['label_smoothing']}"
        )
    if options["temperature"] <= 0:
        raise ValueError(f"objective.temperature must be > 0, got {options['temperature']}")
    if not 0 <= options["alpha"] <= 1:
        raise ValueError(f"objective.alpha must be in [0, 1], got {options['alpha']}")


def get_objective(objective_config: Any) -> Objective:
    """Look up `objective_config.name` and bind the options it takes (see `bind_options`)."""
    return bind_options(OBJECTIVES.get(objective_config.name), objective_config)


def get_eval_objective(objective_config: Any) -> Objective:
    """What evaluation scores: the objective itself, or for one trained against a teacher its
    hard-label objective (TEACHER_OBJECTIVES), with the same options."""
    name = TEACHER_OBJECTIVES.get(objective_config.name, objective_config.name)
    return bind_options(OBJECTIVES.get(name), objective_config)


def bind_options(fn: Callable[..., Any], objective_config: Any) -> Objective:
    """`fn` with the options it declares as keyword-only parameters bound from the config section
    (see OPTION_DEFAULTS), each checked. A key missing from the section takes its default, so
    configs written before an option existed still load."""
    options = {
        key: float(objective_config.get(key, default)) for key, default in OPTION_DEFAULTS.items()
    }
    _check(options)
    accepted = {
        name
        for name, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY
    }
    return functools.partial(fn, **{k: v for k, v in options.items() if k in accepted})
