"""Where metrics go: the backends `tracking.backends` names, written by process 0 only.

    jsonl        metrics.jsonl, one JSON object per logged step; required (resume, studies,
                 reports and reproduction read it)
    tensorboard  TensorBoard event files in tensorboard/ (tensorboardX, no TensorFlow)
    mlflow       an MLflow run per run, a parent run per study (runtime/mlflow_tracking.py)

Every backend continues from the checkpoint a run resumes from: metrics.jsonl is cut back to the
restored step (a killed and rerun run ends with the same file as one that never stopped),
TensorBoard hides what a killed attempt wrote past it, and MLflow continues the same run (its
history is append-only: see runtime/mlflow_tracking.py).
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import jax
import ml_collections

from analysis.runs import CONFIG_FILE, METRICS_FILE, read_json, read_metrics
from atomic_write import write_atomically
from registry import Registry
from runtime import mlflow_tracking
from runtime.errors import UsageError

REQUIRED = "jsonl"


class Writer(Protocol):
    """One backend's view of one run: scalars at a step, then the run's final status
    ('completed', 'preempted', 'diverged' or 'failed')."""

    def write(self, step: int, scalars: Mapping[str, float]) -> None: ...

    def close(self, status: str) -> None: ...


class StudyRecord(Protocol):
    """A backend's record of a study, which the study's runs join: the environment that tells a
    run launched for the study where that is, and the study's results once it ends."""

    def child_env(self) -> dict[str, str]: ...

    def finish(self, study_dir: str, summary: Mapping[str, Any] | None, status: str) -> None: ...


def _nothing(*_: Any) -> None:
    return None


@dataclasses.dataclass(frozen=True)
class Backend:
    """`open(workdir, resume_step, experiment)` starts writing a run's metrics; `experiment`
    groups runs where the backend has such a thing (a lone run: its config file's name). The
    rest is optional: `settings`, the tracking.* keys only this backend reads; `check` a
    config's tracking section before anything runs, `publish` the files a run writes after
    training (eval/, the model card), `open_study(study_dir, tracking, study_name, launch)` a
    study's own record (None: the backend keeps none)."""

    open: Callable[[str, int, str], Writer]
    settings: tuple[str, ...] = ()
    check: Callable[[ml_collections.ConfigDict], None] = _nothing
    publish: Callable[[str], None] = _nothing
    open_study: Callable[..., StudyRecord | None] = _nothing


BACKENDS: Registry[Backend] = Registry("tracking backend")


class JsonlWriter:
    """Appends one JSON object per logged step to metrics.jsonl, cut back to `resume_step`."""

    def __init__(self, workdir: str, resume_step: int, experiment: str):
        truncate_metrics(workdir, resume_step)
        self._file = open(os.path.join(workdir, METRICS_FILE), "a")  # noqa: SIM115

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        self._file.write(json.dumps({"step": step, **scalars}) + "\n")
        self._file.flush()

    def close(self, status: str) -> None:
        self._file.close()


def summary_writer_class() -> type:
    """tensorboardX's SummaryWriter, imported without torch where torch is not yet loaded:
    tensorboardX imports torch, when it is installed (the test extras), only to name a tensor
    type, and importing torch is a large part of a short run's start-up (benchmarks/startup.md);
    archlab writes scalars alone. A later `import torch` is unaffected."""
    if "torch" in sys.modules:
        from tensorboardX import SummaryWriter
    else:
        sys.modules["torch"] = None  # `import torch` raises ImportError, which tensorboardX allows
        try:
            from tensorboardX import SummaryWriter
        finally:
            del sys.modules["torch"]
    return SummaryWriter


class TensorBoardWriter:
    def __init__(self, workdir: str, resume_step: int, experiment: str):
        SummaryWriter = summary_writer_class()  # noqa: N806 (a class)

        # purge_step hides events a killed attempt wrote past the checkpoint we resume from.
        self._tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"),
            purge_step=resume_step + 1 if resume_step else None,
        )

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)

    def close(self, status: str) -> None:
        self._tb.close()


BACKENDS.register("jsonl")(Backend(open=JsonlWriter))
BACKENDS.register("tensorboard")(Backend(open=TensorBoardWriter))
BACKENDS.register("mlflow")(
    Backend(
        open=mlflow_tracking.RunWriter,
        settings=("mlflow_uri",),
        check=mlflow_tracking.check,
        publish=mlflow_tracking.publish_run_outputs,
        open_study=mlflow_tracking.StudyRun.open,
    )
)


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Keeps rows up to `last_step` (the checkpoint resumed from); rewrites the file atomically."""
    rows = [r for r in read_metrics(workdir) if r["step"] <= last_step]
    write_atomically(
        os.path.join(workdir, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in rows)
    )


def _split(spec: str) -> list[str]:
    return [name.strip() for name in spec.split(",") if name.strip()]


def backend_names(spec: str) -> list[str]:
    """'jsonl,mlflow' -> the names, each checked (an unknown one lists the valid); jsonl must be
    among them."""
    names = _split(spec)
    for name in names:
        BACKENDS.get(name)
    if len(set(names)) < len(names):
        raise UsageError(f"tracking.backends {spec!r} names a backend twice")
    if REQUIRED not in names:
        raise UsageError(
            f"tracking.backends {spec!r} must include {REQUIRED} (metrics.jsonl is what resume, "
            f"studies and reports read); valid: {', '.join(BACKENDS.names())}"
        )
    return names


def check(tracking: ml_collections.ConfigDict) -> list[str]:
    """A config's tracking section, before anything runs; returns the backends' names. Setting
    a key of a backend the list leaves out is an error: the run would not log there."""
    names = backend_names(tracking.backends)
    for name in BACKENDS.names():
        backend = BACKENDS.get(name)
        if name in names:
            backend.check(tracking)
        elif set_keys := [key for key in backend.settings if tracking[key]]:
            raise UsageError(
                f"tracking.{set_keys[0]} is set but tracking.backends {tracking.backends!r} "
                f"does not include {name}"
            )
    return names


class MetricWriter:
    """Every backend of a run, as one writer; nothing is written by processes other than 0."""

    def __init__(
        self,
        workdir: str,
        resume_step: int,
        backends: Sequence[str] = (REQUIRED,),
        experiment: str = "archlab",
    ):
        self._writers: list[Writer] = []
        if jax.process_index() != 0:
            return
        try:
            for name in backends:
                self._writers.append(BACKENDS.get(name).open(workdir, resume_step, experiment))
        except BaseException:
            self.close("failed")  # the ones already open: TensorBoard's thread must end
            raise

    def write(self, step: int, scalars: Mapping[str, float]) -> None:
        for writer in self._writers:
            writer.write(step, scalars)

    def close(self, status: str) -> None:
        for writer in self._writers:
            writer.close(status)
        self._writers = []


def publish_outputs(workdir: str) -> None:
    """Sends the files a run writes after training (eval/, model card) to the backends its
    config.json names that keep files; from process 0."""
    if jax.process_index() != 0:
        return
    config = read_json(os.path.join(workdir, CONFIG_FILE)) or {}
    for name in _split(config.get("tracking", {}).get("backends", "")):
        if name in BACKENDS:
            BACKENDS.get(name).publish(workdir)


def open_study(
    study_dir: str, tracking: ml_collections.ConfigDict, study_name: str, launch: Mapping
) -> list[StudyRecord]:
    """The study's own record in every backend of its runs that keeps one."""
    records = (
        BACKENDS.get(name).open_study(study_dir, tracking, study_name, launch)
        for name in backend_names(tracking.backends)
    )
    return [record for record in records if record is not None]
