"""A distillation teacher: another run's trained model, whose logits the student's train step
computes (`objective.distillation.teacher` names that run's directory).

The teacher is its own run's model (its mixer, width and depth: any model that predicts the
student's vocabulary), built from the config that run recorded (its compute dtype too: the
logits are the ones it was evaluated with), with the parameters of its newest verified checkpoint
placed by the student's sharding rules on the student's mesh (`runtime.assembly.load_teacher`).
They enter the jitted train step as an argument: never a constant compiled into the program,
never part of the train state (so the student's checkpoints do not hold them and the optimizer
never sees them), and the step reads them through stop_gradient.
Nothing in the teacher's run directory is written.

A resumed student distils from the checkpoint it started with: its manifest records the teacher's
step and the checkpoint's fingerprint, and a resumed run reads that step, refusing a checkpoint
whose fingerprint changed, or that is gone, rather than going on from another teacher.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from typing import Any

import flax.linen as nn
import ml_collections

import data
import models
import objectives
from runtime import checkpoint
from runtime.errors import UsageError

TEACHER_KEY = "objective.distillation.teacher"


@dataclasses.dataclass(frozen=True)
class Teacher:
    workdir: str  # absolute
    config: ml_collections.ConfigDict  # the teacher run's own
    model: nn.Module  # its model, at the student's sequence length
    step: int  # the checkpoint its parameters come from
    fingerprint: str  # that checkpoint's (runtime.checkpoint_seal.fingerprint)
    shardings: Any  # of its parameters, on the student's mesh
    params: Any  # restored with those shardings

    def record(self) -> dict[str, Any]:
        """What the student's manifest says about its teacher."""
        model = self.config.model
        return {
            "workdir": self.workdir,
            "step": self.step,
            "checkpoint_sha256": self.fingerprint,
            "num_params": models.count_params(self.params),
            "model": {
                key: model[key]
                for key in ("name", "mixer", "layer_pattern", "d_model", "num_layers")
            },
        }


def check_config(config: ml_collections.ConfigDict) -> None:
    """A teacher is named exactly when the objective trains against one."""
    name, teacher = config.objective.name, config.objective.distillation.teacher
    if objectives.needs_teacher(name) and not teacher:
        raise UsageError(f"objective {name!r} needs {TEACHER_KEY}=<the teacher's run directory>")
    if teacher and not objectives.needs_teacher(name):
        raise UsageError(
            f"{TEACHER_KEY} is set but objective {name!r} takes no teacher "
            f"(objectives that do: {', '.join(objectives.TEACHER_OBJECTIVES)})"
        )


@contextlib.contextmanager
def blamed(path: str) -> Iterator[None]:
    """UsageErrors raised while reading the teacher name it, so the user knows which run."""
    try:
        yield
    except UsageError as e:
        raise UsageError(f"{TEACHER_KEY}={path!r}: {e}") from e


def at_student_length(model: nn.Module, teacher: data.DatasetSpec, student: Any) -> nn.Module:
    """The teacher's model for the student's data: the same vocabulary (else a UsageError, since
    the KL compares distributions over it), at the student's sequence length where the teacher's
    parameters define it there."""
    if teacher.kind != "sequence" or teacher.vocab_size != student.vocab_size:
        predicts = (
            f"{teacher.vocab_size} tokens" if teacher.kind == "sequence" else f"{teacher.kind}s"
        )
        raise UsageError(
            f"the teacher predicts {predicts} ({teacher.name} data), the student's "
            f"{student.name} data has {student.vocab_size}: distillation needs one vocabulary"
        )
    if teacher.seq_len == student.seq_len:
        return model
    reason = model.fixed_length_reason()
    if reason:
        raise UsageError(
            f"the teacher was trained at length {teacher.seq_len} and is defined only there "
            f"({reason}); the student's data has length {student.seq_len}"
        )
    return model.clone(seq_len=student.seq_len)


def checkpoint_to_read(path: str, recorded: dict[str, Any] | None) -> tuple[int, str]:
    """(step, fingerprint) of the teacher's checkpoint to distil from: the one `recorded` in a
    resumed student's manifest, which must still be there unchanged, else the newest verified."""
    if recorded is None:
        return checkpoint.verified_checkpoint(path)
    step, fingerprint = recorded["step"], recorded["checkpoint_sha256"]
    try:
        checkpoint.verify_pinned(path, step, fingerprint)
    except UsageError as e:
        raise UsageError(
            f"{e}; a student resumes only from the teacher it started with: start a new --workdir"
        ) from e
    return step, fingerprint


def recorded(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    """The teacher a run's manifest records (None for a new run, or one without a teacher)."""
    return (manifest or {}).get("teacher")
