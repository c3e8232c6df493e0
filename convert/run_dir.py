"""A converted checkpoint as an ordinary run directory, and a run's parameters read back.

The run is what `launch.train` would leave after checkpointing step 0 of the same config:
config.json, a sealed Orbax checkpoint at step 0 (`runtime.checkpoint.Checkpoints`, the data
iterator at its start, the optimizer's initial state) and manifest.json, whose one attempt is
the conversion (status 'converted') and whose `converted_from` names the source directory and
the sha256 of each of its files. `launch.evaluate` reads it as it is; `launch.train` resumes it
at step 1 (a fine-tune of `train.steps` steps on the run's dataset).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

import models
from runtime import assembly, derived_run
from runtime.checkpoint_seal import file_digests

CONVERTED = "converted"  # the manifest's status until launch.train takes the run on


def write_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    params: Any,
    source: dict[str, Any],
    argv: list[str],
) -> int:
    """Writes the run; returns its parameter count. `source` goes into the manifest as
    `converted_from` (with the digests of `source['directory']`'s files added)."""
    origin = {
        **source,
        "directory": os.path.abspath(source["directory"]),
        "sha256": file_digests(source["directory"]),
    }
    _, state = derived_run.write_run(
        workdir,
        config,
        params,
        step=0,
        argv=argv,
        module="launch.convert",
        status=CONVERTED,
        origin={"converted_from": origin},
    )
    return models.count_params(state.params)


def read_params(workdir: str, config: ml_collections.ConfigDict) -> tuple[int, Any]:
    """(the step of the run's newest checkpoint that verifies, its parameters as host arrays);
    `config` is the run's (`runtime.workdir.run_config`)."""
    return assembly.restored_params(config, workdir, "convert")
