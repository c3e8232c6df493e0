"""`manifest.json`: everything needed to say where a run's numbers came from."""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import sys
from typing import Any

import jax

from analysis.runs import MANIFEST_FILE, read_json
from atomic_write import write_atomically
from runtime import source
from runtime.source import Source

# The checkpoint a fine-tuning run started from (runtime.finetune.Source.record()); read back to
# resume from the same one.
FINETUNED_FROM = "finetuned_from"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "tensorflow-datasets",
    "ml-collections",
    "numpy",
    "dp-accounting",
    "qwix",
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


# Instruction-set extensions XLA's CPU code generator targets on the host it runs on: float
# results on CPU can differ between hosts with different sets. Seen: a run bitwise identical
# across two commits on one machine differed in its 4th significant figure on another.
SIMD_EXTENSIONS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",  # aarch64
    "sve",
)


def cpu() -> dict[str, Any]:
    """The host CPU as far as CPU results depend on it: model name, which of SIMD_EXTENSIONS it
    reports (Linux's /proc/cpuinfo, first processor) and the threads this process may use (XLA
    splits work between them, which can change summation order)."""
    model, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    model = value
                elif key in ("flags", "Features"):  # x86, aarch64
                    flags = set(value.split())
                elif not key:  # the first processor's block ends
                    break
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "simd": [name for name in SIMD_EXTENSIONS if name in flags],
        "threads": threads,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    return {
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "local_device_count": jax.local_device_count(),  # per process
        "mesh": dict(mesh.shape),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu(),
    }


def read(workdir: str) -> dict[str, Any] | None:
    return read_json(os.path.join(workdir, MANIFEST_FILE))


def write(workdir: str, manifest: dict[str, Any]) -> None:
    """Atomic: a kill mid-write leaves the previous manifest intact."""
    text = json.dumps(manifest, indent=2, sort_keys=True)
    _write_atomic(os.path.join(workdir, MANIFEST_FILE), text.encode())


def write_patch(workdir: str, source: Source) -> None:
    """The uncommitted changes the run runs with, beside its manifest (which names the file in
    `git.patch`): the manifest stays small for the tools that read every run of a study, and
    the patch is a plain file that `git apply` takes. Attempts with the same changes share it."""
    if source.patch_file and not os.path.exists(os.path.join(workdir, source.patch_file)):
        _write_atomic(os.path.join(workdir, source.patch_file), source.patch)


def _write_atomic(path: str, content: bytes) -> None:
    if jax.process_index() == 0:
        write_atomically(path, content)


def command_line(module: str, argv: list[str]) -> list[str]:
    """`[python, -m, module, args...]`: a command as the manifest records it."""
    return [sys.executable, "-m", module, *argv[1:]]


def new_attempt(
    module: str, argv: list[str], resumed_from_step: int | None, git: dict[str, Any]
) -> dict[str, Any]:
    """One entry per launch of the same run: how, when, from which checkpoint, on which code."""
    return {
        "git": git,
        "command": command_line(module, argv),
        "cwd": os.getcwd(),
        "start_time": now(),
        "resumed_from_step": resumed_from_step,
        "end_time": None,
        "status": "running",
    }


def begin_attempt(
    workdir: str,
    exp: Any,
    num_params: int,
    argv: list[str],
    resumed_from_step: int | None,
    extra_environment: dict[str, Any],
    module: str = "launch.train",
    group: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Reads (or starts) the run's manifest, records this launch of `module` as a new attempt
    with the code, packages, environment and data it runs with, writes it, and returns it.
    A run trained in a group of seeds (runtime/group.py) records as `argv` the command that
    trains it alone, and the group (its seeds, run directories and command) as `group`."""
    config = exp.config
    record = read(workdir) or {
        "config": json.loads(config.to_json_best_effort()),
        "seed": config.seed,
        "attempts": [],
        "start_time": now(),
        "num_params": num_params,
        "trainable_params": exp.trainable_params,  # fewer than num_params with LoRA
        "tokens_per_step": exp.tokens_per_step,  # examples per step for non-sequence data
        # Analytic costs where the family states them: FLOPs per token, decoding state size.
        "model": exp.model.describe() if hasattr(exp.model, "describe") else {},
    }
    code = source.current(REPO_ROOT)
    if warning := code.warning():
        print(f"warning: {warning}", file=sys.stderr)
    git = code.record()
    previous = record["attempts"][-1]["git"] if record["attempts"] else None
    if previous and (previous["commit"], previous["diff_sha256"]) != (
        git["commit"],
        git["diff_sha256"],
    ):
        print(
            f"warning: resuming a run started at commit {previous['commit']} "
            f"(diff {previous['diff_sha256']}) with code at {git['commit']} "
            f"(diff {git['diff_sha256']})",
            file=sys.stderr,
        )
    record.update(
        git=git,
        versions=versions(),
        environment={**environment(exp.mesh), **extra_environment},
        datasets={exp.dataset.spec.name: exp.dataset.fingerprint},
        status="running",
    )
    if exp.finetune_source is not None:
        record[FINETUNED_FROM] = exp.finetune_source.record()
    if exp.privacy is not None:
        # The (epsilon, delta) of the whole run: it also bounds every checkpoint before the end.
        record["privacy"] = exp.privacy.guarantee(config.train.steps)
    if exp.teacher is not None:
        # Which run and checkpoint the student distils from; a resumed run reads the same one.
        record["teacher"] = exp.teacher.record()
    attempt = new_attempt(module, argv, resumed_from_step, git)
    if group is not None:
        attempt["group"] = group
    record["attempts"].append(attempt)
    write_patch(workdir, code)
    write(workdir, record)
    return record


def end_attempt(workdir: str, record: dict[str, Any], status: str) -> None:
    """The run's and this attempt's status and end time, written."""
    record.update(status=status, end_time=now())
    record["attempts"][-1].update(end_time=now(), status=status)
    write(workdir, record)


def record_phases(workdir: str, record: dict[str, Any], phases: dict[str, Any]) -> None:
    """Where the attempt's process spent its time (`runtime.phases`), added to its `record` (as
    begin_attempt returned it) once the process is done: the evaluation suites run after the
    attempt's end is recorded. A group's runs share one breakdown."""
    record["attempts"][-1]["phases"] = phases
    write(workdir, record)
