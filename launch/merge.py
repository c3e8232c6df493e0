"""A LoRA run's adapters folded into its base: an ordinary run.

    python -m launch.merge --workdir=<LoRA run> --into=<new run dir> [--step=N]

Restores the LoRA run's newest checkpoint that verifies (or checkpoint --step) and its base (the
checkpoint of finetune.from_run it pinned when it started), and writes --into as a run at step 0:
config.json (the LoRA run's, with lora.rank=0 and finetune.from_run=''), a sealed checkpoint of
the merged parameters, base + (alpha / rank) A B (`runtime.lora.merge`, what the LoRA run
computed with), with a fresh optimizer state, and manifest.json with status 'merged' and
`merged_from`: the LoRA run (its directory, step and checkpoint digest), the base it was pinned
to, and the LoRA settings. `launch.evaluate`, `launch.generate` and `launch.convert --to_hf` read
it as any run; `launch.train --config=experiments/from_run.py:<dir> --workdir=<dir>` trains every
parameter of it on, and `finetune.from_run=<dir>` starts a new run from it.

Exit status 2 with one line, before anything is written: a run that is not a LoRA run, one
without a (verified) checkpoint, an --into that exists and is not empty.
"""

from __future__ import annotations

import copy
import os
import sys

import ml_collections

import models
from convert import hf_dir
from runtime import assembly, checkpoint, derived_run, finetune, host_memory, lora
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error
from runtime.workdir import check_writable_directory, run_config

MERGED = "merged"  # the manifest's status until launch.train takes the run on


def merged_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The LoRA run's config as an ordinary run's: no adapters, and no source to read (its
    parameters are its own checkpoint's)."""
    merged = copy.deepcopy(config)
    merged.lora.rank = 0
    merged.finetune.from_run = ""
    return merged


def provenance(config: ml_collections.ConfigDict, workdir: str, step: int) -> dict:
    """`merged_from`: the LoRA run's checkpoint, its base's, and its LoRA settings."""
    _, digest = checkpoint.verified_checkpoint(workdir, step)
    return {
        "merged_from": {
            "lora_run": {
                "run": os.path.abspath(workdir),
                "step": step,
                "checkpoint_sha256": digest,
            },
            "base": finetune.pinned(workdir).record(),
            "lora": config.lora.to_dict(),
        }
    }


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    parser = ArgumentParser(prog="python -m launch.merge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="a LoRA run (lora.rank > 0)")
    parser.add_argument("--into", required=True, help="the new run directory to write")
    parser.add_argument("--step", type=int, help="the checkpoint (default: the newest)")
    args = parser.parse_args(argv[1:])
    config = run_config(args.workdir)
    if not lora.enabled(config):
        raise UsageError(
            f"run {args.workdir!r} is not a LoRA run (lora.rank is 0): its parameters are "
            "already whole"
        )
    hf_dir.check_new_directory(args.into, "--into")
    check_writable_directory(args.into, "--into")
    step, params = assembly.restored_params(config, args.workdir, "merge", args.step)
    _, state = derived_run.write_run(
        args.into,
        merged_config(config),
        params,
        step=0,
        argv=argv,
        module="launch.merge",
        status=MERGED,
        origin=provenance(config, args.workdir, step),
    )
    count = models.count_params(state.params)
    print(f"merged step {step} of LoRA run {args.workdir} into run {args.into} ({count:,} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
