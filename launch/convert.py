"""Hugging Face checkpoints in and out.

    python -m launch.convert --from_hf=<model dir> --workdir=<new run> [--config.<key>=...]
    python -m launch.convert --workdir=<run> --to_hf=<new dir>

--from_hf reads a local transformers directory (config.json and safetensors weights, nothing
downloaded) of Llama, Mistral, Qwen2 or Mamba-1 and writes an ordinary run at step 0: config.json
(the model keys from the checkpoint; data `induction_head` with the checkpoint's vocabulary unless
--config.data.name names another dataset of that vocabulary; every other key as given by
--config.<key>=value or base_config's), manifest.json naming the source and its files' sha256,
and a sealed step-0 checkpoint. Evaluate it with `launch.evaluate --workdir=<run>`; fine-tune it
with `launch.train --config=experiments/from_run.py:<run> --workdir=<run>`, which resumes at
step 1 and trains to the train.steps given here.

--to_hf writes the run's newest checkpoint as config.json and a float32 model.safetensors that
transformers' AutoModelForCausalLM loads. A tokenizer.json travels along both ways. See convert/
for what maps to what.

Exit status 2 with one `error: ...` line, before anything is written, for a checkpoint or model
with a setting that has no exact counterpart (it is named), an architecture not converted, a
missing or misshapen tensor, a dataset of another vocabulary, or a target that exists.
"""

from __future__ import annotations

import sys

import convert
from convert import hf_dir, run_dir
from runtime import host_memory
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error
from runtime.workdir import check_writable_directory, run_config


def parse_args(argv: list[str]) -> tuple:
    parser = ArgumentParser(prog="python -m launch.convert", description=__doc__.split("\n\n")[0])
    parser.add_argument("--from_hf", help="a transformers model directory to convert into a run")
    parser.add_argument("--to_hf", help="a new directory to write the run's checkpoint into")
    parser.add_argument("--workdir", required=True, help="the run (new with --from_hf)")
    args, rest = parser.parse_known_args(argv[1:])
    unknown = [a for a in rest if not a.startswith("--config.")]
    if unknown:
        raise UsageError(f"unrecognized arguments: {' '.join(unknown)}")
    if (args.from_hf is None) == (args.to_hf is None):
        raise UsageError("give one of --from_hf=<model dir> (into a run) or --to_hf=<dir> (out)")
    if rest and args.to_hf is not None:
        raise UsageError("--config.<key> overrides apply to --from_hf only: --to_hf exports a run")
    return args, rest


def from_hf(directory: str, workdir: str, overrides: list[str], argv: list[str]) -> None:
    hf = hf_dir.read_config(directory)
    family, config = convert.checkpoint_config(hf, overrides)
    hf_dir.check_new_directory(workdir, "--workdir")
    check_writable_directory(workdir)
    params = convert.params_from_checkpoint(directory, hf, family, config)
    source = {"directory": directory, "model_type": hf["model_type"]}
    count = run_dir.write_converted_run(workdir, config, params, source, argv)
    print(f"converted {hf['model_type']} ({count:,} parameters) into run {workdir} at step 0")


def to_hf(workdir: str, directory: str) -> None:
    config = run_config(workdir)
    convert.hf_config_for(config)  # a model transformers cannot compute fails before any work
    hf_dir.check_new_directory(directory, "--to_hf")
    check_writable_directory(directory, "--to_hf")
    step, params = run_dir.read_params(workdir, config)
    convert.write_checkpoint(config, params, directory)
    hf_dir.copy_tokenizer(workdir, directory)
    print(f"wrote step {step} of run {workdir} to {directory}")


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    args, overrides = parse_args(argv)
    if args.from_hf is not None:
        from_hf(args.from_hf, args.workdir, overrides, argv)
    else:
        to_hf(args.workdir, args.to_hf)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
