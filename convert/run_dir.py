"""A converted Hugging Face checkpoint as an ordinary run directory (runtime/derived_run.py: what
`launch.train` would leave after checkpointing step 0 of the same config), and a run's
parameters read back for export.

The run has the source's tokenizer.json when it has one (launch.generate reads text with it),
and its manifest's one attempt ends with status 'converted', whose `converted_from` names the
source directory and the sha256 of each of its files. `launch.evaluate` reads it as it is;
`launch.train` resumes it at step 1 (a fine-tune of `train.steps` steps on the run's dataset).
"""

from __future__ import annotations

import os
from typing import Any

import ml_collections

import models
from convert import hf_dir
from runtime import assembly, derived_run
from runtime.checkpoint_seal import file_digests

CONVERTED = "converted"  # the manifest's status until launch.train takes the run on


def write_converted_run(
    workdir: str,
    config: ml_collections.ConfigDict,
    params: Any,
    source: dict[str, Any],
    argv: list[str],
) -> int:
    """A converted checkpoint's run (runtime/derived_run.py), with the checkpoint's tokenizer;
    returns its parameter count. `source` goes into the manifest as `converted_from` (with the
    digests of `source['directory']`'s files added)."""
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
    hf_dir.copy_tokenizer(source["directory"], workdir)
    return models.count_params(state.params)


def read_params(workdir: str, config: ml_collections.ConfigDict) -> tuple[int, Any]:
    """(the step of the run's newest checkpoint that verifies, its parameters as host arrays);
    `config` is the run's (`runtime.workdir.run_config`)."""
    return assembly.restored_params(config, workdir, "convert")
