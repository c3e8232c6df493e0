"""A trained run quantized after training, as a new run directory (`launch.quantize`'s work).

The new run is the source's config with `quant.mode` set to a post-training mode
(`runtime.quantization`) and `quant.source` naming the source; its checkpoint, at the source's
step, holds the int8 kernels with their scales and every other parameter as trained, and its
manifest names the source run (`quantized_from`). Then, with the code of this moment and the
source's `eval.suites`:

- `metrics.jsonl`: one row at the source's step, the quantized model's `eval/` metrics as the
  training loop computes them (`runtime.loop.evaluate`, the same batches), so that a study reads
  the quantized run's final metrics as it reads a trained run's;
- `source_eval/`: the suites on the source model (written here, never into the source run);
- `eval/` and `model_card.md`: the same suites on the quantized model, as `launch.evaluate`;
- `quantization.json`: what was quantized, and the bytes and decoding times of both.

The model card's Quantization section sets the two evaluations side by side.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import ml_collections

from analysis.runs import QUANTIZATION_FILE, SOURCE_EVAL_DIR, jsonable
from atomic_write import write_json_atomically
from evaluation.run import evaluate_into, evaluate_run, suite_names
from runtime import assembly, derived_run, loop, quantization
from runtime.errors import UsageError
from runtime.metric_writers import MetricWriter
from runtime.workdir import check_writable_directory, run_config
from shrink import measurements

QUANTIZED = "quantized"  # the new run's manifest status


def default_mode(source_mode: str) -> str:
    """The post-training mode that matches how the source trained: a QAT run simulated int8
    weights and activations, so it becomes `ptq_int8`; a float run `ptq_int8_weights`."""
    return "ptq_int8" if source_mode == quantization.QUANTIZATION_AWARE else "ptq_int8_weights"


def quantized_config(
    config: ml_collections.ConfigDict, source: str, mode: str, targets: str | None
) -> ml_collections.ConfigDict:
    """The source run's config with the quantization set and the source recorded."""
    if config.quant.mode in quantization.POST_TRAINING:
        raise UsageError(
            f"run {source!r} is already quantized (quant.mode={config.quant.mode}); quantize its "
            f"source run {config.quant.source!r} instead"
        )
    if mode not in quantization.POST_TRAINING:
        valid = ", ".join(quantization.POST_TRAINING)
        raise UsageError(f"unknown post-training quant.mode {mode!r}; valid: {valid}")
    out = ml_collections.ConfigDict(config.to_dict())
    out.quant.mode = mode
    out.quant.targets = config.quant.targets if targets is None else targets
    out.quant.source = os.path.abspath(source)
    return out


def check_new_run(into: str) -> None:
    if os.path.exists(into):
        raise UsageError(
            f"--into={into!r} exists: launch.quantize writes a new run, never over one"
        )
    check_writable_directory(into, "--into")


def quantize_run(
    source: str, into: str, mode: str | None, targets: str | None, argv: list[str]
) -> dict[str, Any]:
    """Writes the quantized run `into` from run `source`; returns quantization.json's contents
    with both evaluations' summaries added (`before`, `after`). Everything a user can get wrong
    is a UsageError before anything is written."""
    check_new_run(into)
    config = run_config(source)
    qconfig = quantized_config(config, source, mode or default_mode(config.quant.mode), targets)
    names = suite_names(config.eval.suites)
    assembly.check(qconfig)  # among others: targets that match no projection
    assembly.require_checkpoints(source, "quantize")

    source_exp = assembly.build(config)
    step, state = assembly.restored_state(source_exp, source, "quantize")
    model, _ = assembly.model_and_objective(qconfig, source_exp.dataset.spec)
    params = quantization.quantize_params(model, jax.device_get(state.params))
    quantized = quantization.quantized_paths(params)
    exp, quantized_state = derived_run.write_run(
        into,
        qconfig,
        params,
        step=step,
        argv=argv,
        module="launch.quantize",
        status=QUANTIZED,
        origin={"quantized_from": {"workdir": os.path.abspath(source), "step": step}},
    )

    write_eval_row(into, exp, quantized_state.params, step)
    before = evaluate_into(
        source_exp, state.params, os.path.join(into, SOURCE_EVAL_DIR), step, names
    )
    report = {
        "source": {"workdir": os.path.abspath(source), "step": step, "mode": config.quant.mode},
        "mode": qconfig.quant.mode,
        "targets": qconfig.quant.targets,
        "quantized": quantized,
        "scales": "absmax, one per output channel (weights); per token, computed as it runs "
        "(activations, ptq_int8 only)",
        "checkpoint_bytes": {
            "before": measurements.checkpoint_bytes(source, step),
            "after": measurements.checkpoint_bytes(into, step),
        },
        "parameter_bytes": {
            "before": measurements.parameter_bytes(state.params),
            "after": measurements.parameter_bytes(quantized_state.params),
        },
        "decode": decode_times(source_exp, state.params, exp, quantized_state.params),
    }
    write_json_atomically(os.path.join(into, QUANTIZATION_FILE), jsonable(report), indent=2)
    after = evaluate_run(exp, quantized_state.params, into, step, names)  # and the model card
    return {**report, "before": before, "after": after}


def write_eval_row(workdir: str, exp: assembly.Experiment, params: Any, step: int) -> None:
    """metrics.jsonl's one row: the loop's evaluation of `params` at `step`."""
    with exp.context():
        scalars = loop.evaluate(exp.eval_step, params, exp.dataset, exp.config, exp.batch_sharding)
    writer = MetricWriter(workdir, 0)
    try:
        writer.write(step, scalars)
    finally:
        writer.close(QUANTIZED)


def decode_times(
    source_exp: assembly.Experiment, source_params: Any, exp: assembly.Experiment, params: Any
) -> dict[str, Any]:
    """Seconds per generated token of the source and the quantized model, same prompts."""
    if not hasattr(exp.model, "decode_step"):
        return {"not_applicable": f"a {exp.config.model.name!r} model does not decode"}
    prompts = measurements.decode_prompts(exp)
    new_tokens = exp.dataset.spec.seq_len - prompts.shape[1]
    seconds = measurements.decode_seconds_per_token(
        {"before": (source_exp.model, source_params), "after": (exp.model, params)},
        prompts,
        new_tokens,
    )
    return {
        "seconds_per_token": seconds,
        "batch": int(prompts.shape[0]),
        "prompt_tokens": int(prompts.shape[1]),
        "new_tokens": int(new_tokens),
        "backend": jax.default_backend(),
        "method": f"greedy generation of {new_tokens} tokens for a batch of "
        f"{prompts.shape[0]} prompts of {prompts.shape[1]} tokens (their prefill included), "
        f"over {new_tokens}; the median of {measurements.TIMED_REPEATS} runs each, the two "
        "models taking turns, after one that compiles",
    }
