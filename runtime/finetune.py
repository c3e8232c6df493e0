"""Fine-tuning from another run: `finetune.from_run=<run dir>[@step]`.

A run that names one starts from that run's parameters, at its newest checkpoint that verifies or
at checkpoint `step`, with a fresh optimizer; with LoRA (`runtime.lora`) they are its frozen base.
Any run will do: one trained, converted from Hugging Face (`launch.convert`), merged
(`launch.merge`), fine-tuned, or itself a LoRA run (its base with its adapters merged in).

Before anything is computed the source must be a run whose model has this model's parameters,
path for path and shape for shape (`check_shapes`). The checkpoint chosen is pinned in the new
run's manifest (`finetuned_from`: the run, the step and the digest of its seal), so that resuming
reads that same checkpoint even after the source has trained on, and a checkpoint changed or
deleted since is refused in one line rather than replaced. A source is only ever read.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import flax
import jax
import ml_collections
from jax.sharding import Mesh

from runtime import checkpoint, lora, manifest
from runtime import mesh as mesh_lib
from runtime.errors import UsageError
from runtime.workdir import run_config


@dataclass(frozen=True)
class Source:
    """The checkpoint a fine-tuning run starts from."""

    run: str  # absolute path of the run directory
    step: int
    checkpoint_sha256: str  # runtime.checkpoint_seal.fingerprint of the step's checkpoint

    def record(self) -> dict[str, Any]:
        return asdict(self)


def requested(config: ml_collections.ConfigDict) -> tuple[str, int | None] | None:
    """(run directory, step or None) from finetune.from_run, or None when it is empty. A path
    may hold '@' itself: only a final '@<digits>' is a step."""
    spec = config.finetune.from_run
    if not spec:
        return None
    run, at, step = spec.rpartition("@")
    if at and step.isdigit():
        return run, int(step)
    return spec, None


def source_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config the source run recorded (UsageError, naming the key, if it is not a run)."""
    run, _ = requested(config)
    try:
        return run_config(run)
    except UsageError as e:
        raise UsageError(f"finetune.from_run: {e}") from e


def check_shapes(ours: Any, theirs: Any, source: str) -> None:
    """This model's parameters (`ours`) and the source run's (`theirs`), shapes only, are the
    same tree of the same shapes; else one UsageError naming the first parameter that differs."""

    def shapes(tree: Any) -> dict[str, tuple[int, ...]]:
        flat = flax.traverse_util.flatten_dict(tree, sep="/")
        return {path: tuple(leaf.shape) for path, leaf in flat.items()}

    mine, its = shapes(ours), shapes(theirs)
    for path in sorted(mine.keys() | its.keys()):
        if path not in its:
            raise UsageError(
                f"finetune.from_run: run {source!r} has no parameter {path} (shape "
                f"{mine[path]} in this model): it is another architecture"
            )
        if path not in mine:
            raise UsageError(
                f"finetune.from_run: run {source!r} has parameter {path} (shape {its[path]}), "
                "which this model lacks: it is another architecture"
            )
        if mine[path] != its[path]:
            raise UsageError(
                f"finetune.from_run: parameter {path} has shape {its[path]} in run {source!r} "
                f"but {mine[path]} in this model"
            )


def pinned(workdir: str) -> Source | None:
    """The source a run's manifest records, if it has one."""
    record = manifest.read(workdir) or {}
    entry = record.get(manifest.FINETUNED_FROM)
    return Source(**entry) if entry else None


def resolve(config: ml_collections.ConfigDict, workdir: str | None) -> Source | None:
    """The checkpoint finetune.from_run means for the run in `workdir`: the one its manifest
    pinned when it started, else (a new run) the one named now. None without finetune.from_run."""
    request = requested(config)
    if request is None:
        return None
    if workdir is not None and (source := pinned(workdir)) is not None:
        return source
    return choose(*request)


def choose(run: str, step: int | None) -> Source:
    """Checkpoint `step` of `run`, or its newest, that verifies against its seal."""
    try:
        step, fingerprint = checkpoint.verified_checkpoint(run, step)
    except UsageError as e:
        raise UsageError(f"finetune.from_run: {e}") from e
    return Source(os.path.abspath(run), step, fingerprint)


def verify(source: Source) -> None:
    """The pinned checkpoint is still there, with the bytes it had when it was pinned."""
    try:
        checkpoint.verify_pinned(source.run, source.step, source.checkpoint_sha256)
    except UsageError as e:
        raise UsageError(
            f"finetune.from_run: the checkpoint this run started from is unusable: {e}; restore "
            "it, or start a new run"
        ) from e


def read_params(source: Source, boxed_params: Any, mesh: Mesh, rules: tuple) -> Any:
    """The model parameters of the source's checkpoint (verified), born sharded like
    `boxed_params` (this model's, boxed shapes) on `mesh`. A LoRA source's are its base's with
    its adapters merged in, its base read the same way from the checkpoint it pinned."""
    verify(source)
    config = run_config(source.run)
    shardings = mesh_lib.to_shardings(mesh_lib.param_specs(boxed_params), mesh, rules)
    if not lora.enabled(config):
        return _restore(source, boxed_params, shardings)
    targets = lora.find_targets(config.lora.targets, boxed_params)
    boxed_adapters = jax.eval_shape(
        lambda: lora.init_adapters(targets, config.lora.rank, jax.random.PRNGKey(0))
    )
    adapter_shardings = mesh_lib.to_shardings(mesh_lib.param_specs(boxed_adapters), mesh, rules)
    adapters = _restore(source, boxed_adapters, adapter_shardings)
    base_source = pinned(source.run)
    if base_source is None:
        raise UsageError(f"LoRA run {source.run!r} records no base (no finetuned_from)")
    base = read_params(base_source, boxed_params, mesh, rules)
    merge = jax.jit(
        lambda b, a: lora.merge(b, a, lora.update_scale(config)), out_shardings=shardings
    )
    return merge(base, adapters)


def _restore(source: Source, boxed: Any, shardings: Any) -> Any:
    abstract = checkpoint.abstract_like(mesh_lib.unbox(boxed), shardings)
    return checkpoint.restore_params(source.run, source.step, abstract)
