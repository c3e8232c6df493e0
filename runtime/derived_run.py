"""A run directory whose parameters come from somewhere other than its own training (a converted
Hugging Face checkpoint, a quantized run): what `launch.train` would leave after checkpointing
`step` of the same config. config.json, a sealed Orbax checkpoint at `step` (the data iterator at
its start, the optimizer's initial state for these parameters) and manifest.json, whose one
attempt is the command that made it, ending with its own status, and which names the origin.
`launch.evaluate` and `launch.generate` read it like any run.
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import ml_collections

import models
from runtime import assembly, checkpoint, manifest
from runtime.config import to_json
from runtime.step import TrainState
from runtime.workdir import claim_workdir


def write_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    params: Any,
    *,
    step: int,
    argv: list[str],
    module: str,
    status: str,
    origin: dict[str, Any],
) -> tuple[assembly.Experiment, TrainState]:
    """Writes the run (its manifest gets `origin`'s entries) and returns the experiment its config
    builds with the state saved."""
    exp = assembly.build(config)
    claim_workdir(workdir, to_json(config))
    state = assembly.state_with_params(exp, params)
    state = state.replace(step=jnp.asarray(step, state.step.dtype))
    checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint.max_to_keep, async_save=False)
    try:
        checkpoints.save(step, state, exp.train_iter)
    finally:
        checkpoints.close()  # seals it
    num_params = models.count_params(state.params)
    record = manifest.begin_attempt(workdir, exp, num_params, argv, None, {}, module=module)
    record.update(origin)
    manifest.end_attempt(workdir, record, status)
    return exp, state
