"""Parameters as an ordinary run directory (a converted checkpoint, a merged LoRA run), and a
run's parameters read back.

The run is what `launch.train` would leave after checkpointing step 0 of the same config:
config.json, a sealed Orbax checkpoint at step 0 (`runtime.checkpoint.Checkpoints`, the data
iterator at its start, the optimizer's initial state), the source's tokenizer.json when it has
one (launch.generate reads text with it) and manifest.json, whose one attempt is the command
that wrote it (status 'converted', whose `converted_from` names the source directory and the
sha256 of each of its files; or 'merged', see `launch.merge`). `launch.evaluate` reads it as it
is; `launch.train` resumes it at step 1 (a fine-tune of `train.steps` steps on the run's
dataset).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

import models
from convert import hf_dir
from runtime import assembly, checkpoint, manifest
from runtime.checkpoint_seal import file_digests
from runtime.config import to_json
from runtime.workdir import claim_workdir

CONVERTED = "converted"  # the manifest's status until launch.train takes the run on


def write_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    params: Any,
    argv: list[str],
    *,
    module: str,
    status: str,
    provenance: dict[str, Any],
) -> int:
    """Writes the run (`params` at step 0, sealed) as `module` did it, ending its manifest's one
    attempt with `status` and `provenance`'s entries added; returns its parameter count."""
    exp = assembly.build(config)
    claim_workdir(workdir, to_json(config))
    state = assembly.state_with_params(exp, params)
    checkpoints = checkpoint.Checkpoints(workdir, config.checkpoint.max_to_keep, async_save=False)
    try:
        checkpoints.save(0, state, exp.train_iter)
    finally:
        checkpoints.close()  # seals it
    num_params = models.count_params(state.params)
    record = manifest.begin_attempt(workdir, exp, num_params, argv, None, {}, module=module)
    record.update(provenance)
    manifest.end_attempt(workdir, record, status)
    return num_params


def write_converted_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    params: Any,
    source: dict[str, Any],
    argv: list[str],
) -> int:
    """A converted checkpoint's run; `source` goes into the manifest as `converted_from` (with
    the digests of `source['directory']`'s files added)."""
    converted_from = {
        **source,
        "directory": os.path.abspath(source["directory"]),
        "sha256": file_digests(source["directory"]),
    }
    provenance = {"converted_from": converted_from}
    num_params = write_run(
        workdir,
        config,
        params,
        argv,
        module="launch.convert",
        status=CONVERTED,
        provenance=provenance,
    )
    hf_dir.copy_tokenizer(source["directory"], workdir)
    return num_params


def read_params(workdir: str, config: ml_collections.ConfigDict) -> tuple[int, Any]:
    """(the step of the run's newest checkpoint that verifies, its parameters as host arrays);
    `config` is the run's (`runtime.workdir.run_config`)."""
    return assembly.restored_params(config, workdir, "convert")
