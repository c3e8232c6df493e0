"""Where metrics go: `metrics.jsonl` and TensorBoard event files, from process 0 only.

On resume both are cut back to the restored step, so a run that was killed and rerun ends with
the same `metrics.jsonl` as one that never stopped.
"""

from __future__ import annotations

import json
import os

import jax
from tensorboardX import SummaryWriter

from analysis.runs import METRICS_FILE, read_metrics
from atomic_write import write_atomically


def truncate_metrics(workdir: str, last_step: int) -> None:
    """Keeps rows up to `last_step` (the checkpoint resumed from); rewrites the file atomically."""
    rows = [r for r in read_metrics(workdir) if r["step"] <= last_step]
    write_atomically(
        os.path.join(workdir, METRICS_FILE), "".join(json.dumps(r) + "\n" for r in rows)
    )


class MetricWriter:
    """Appends one JSON object per logged step and mirrors scalars to TensorBoard."""

    def __init__(self, workdir: str, resume_step: int):
        self.active = jax.process_index() == 0
        if not self.active:
            return
        truncate_metrics(workdir, resume_step)
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a")  # noqa: SIM115
        # purge_step hides events a killed attempt wrote past the checkpoint we resume from.
        self._tb = SummaryWriter(
            os.path.join(workdir, "tensorboard"),
            purge_step=resume_step + 1 if resume_step else None,
        )

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if not self.active:
            return
        self._jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self._jsonl.flush()
        for name, value in scalars.items():
            self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.active:
            self._jsonl.close()
            self._tb.close()
