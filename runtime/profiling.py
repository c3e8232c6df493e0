"""A trace of chosen training steps (`profile.*`) with JAX's profiler: XLA's ops as they ran on
the devices (on CPU, each op on its thread pool), the host's threads and, at
`profile.python_tracer_level=1`, every Python call; each step the loop dispatches is marked
(`train`, with its step number). Written by process 0 under the run directory, in the layout
TensorBoard's profile plugin (xprof) reads, with a Chrome trace and a Perfetto trace beside it:

    <workdir>/profile/plugins/profile/steps_<first>-<last>/<host>.xplane.pb
                                                          <host>.trace.json.gz
                                                          perfetto_trace.json.gz

Steps are global: a resumed attempt traces those of the window that it runs. The state is waited
for before the trace starts and the last traced step's outputs before it stops, so the trace
holds whole steps and no others. Tracing changes no number the run computes.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from runtime.errors import UsageError

DIRECTORY = "profile"  # under the run directory
HOST_TRACER_LEVELS = range(4)  # tsl's host tracer: 0 off, 1 user annotations .. 3 verbose
PYTHON_TRACER_LEVELS = range(2)


def check(config: ml_collections.ConfigDict) -> None:
    """Raises UsageError for a profile no run can take (only when one is asked for)."""
    p = config.profile
    if p.start_step == 0:
        return
    if p.start_step < 0:
        raise UsageError(f"profile.start_step must be >= 1 (0: no trace), got {p.start_step}")
    if p.num_steps < 1:
        raise UsageError(f"profile.num_steps must be >= 1, got {p.num_steps}")
    last = p.start_step + p.num_steps - 1
    if last > config.train.steps:
        raise UsageError(
            f"profile.start_step={p.start_step} with profile.num_steps={p.num_steps} traces up "
            f"to step {last}, past train.steps={config.train.steps}"
        )
    for key, levels in (
        ("host_tracer_level", HOST_TRACER_LEVELS),
        ("python_tracer_level", PYTHON_TRACER_LEVELS),
    ):
        if p[key] not in levels:
            raise UsageError(
                f"profile.{key} must be one of {', '.join(map(str, levels))}, got {p[key]}"
            )


def traced_steps(settings: ml_collections.ConfigDict, first_step: int) -> range:
    """The steps of the window [start_step, start_step + num_steps) that an attempt whose first
    step is `first_step` runs; empty without a profile."""
    if settings.start_step == 0:
        return range(0)
    return range(max(settings.start_step, first_step), settings.start_step + settings.num_steps)


class StepProfiler:
    """Traces `traced_steps` of this attempt, on process 0 (processes on one host would write
    files of the same name). The loop calls `before_step` and `after_step` at every step and
    `close` when it ends, however it ends; what a person watching should know goes to `say`."""

    def __init__(
        self,
        settings: ml_collections.ConfigDict,
        workdir: str,
        first_step: int,
        say: Callable[[str], None],
    ):
        self.settings = settings
        self.root = os.path.abspath(os.path.join(workdir, DIRECTORY))
        self.steps = traced_steps(settings, first_step) if jax.process_index() == 0 else range(0)
        self._say = say
        self._folder: str | None = None  # the trace's own folder, while tracing
        if settings.start_step and jax.process_index() == 0:
            say(self._plan(first_step))

    def _plan(self, first_step: int) -> str:
        s = self.settings
        if not self.steps:
            return (
                f"profile: steps {s.start_step}-{s.start_step + s.num_steps - 1} ran before this "
                f"attempt, which starts at step {first_step}; nothing is traced"
            )
        compiles = " (the first compiles the step)" if first_step == self.steps.start else ""
        return f"profile: tracing steps {self.steps.start}-{self.steps[-1]}{compiles}"

    def before_step(self, step: int, state: Any) -> None:
        if not self.steps or step != self.steps.start:
            return
        jax.block_until_ready(state)  # the steps before stay out of the trace
        options = jax.profiler.ProfileOptions()
        options.host_tracer_level = self.settings.host_tracer_level
        options.python_tracer_level = self.settings.python_tracer_level
        options.session_id = self._free_folder_name()
        jax.profiler.start_trace(
            self.root, create_perfetto_trace=self.settings.perfetto, profiler_options=options
        )
        self._folder = os.path.join(self.root, "plugins", "profile", options.session_id)

    def after_step(self, step: int, outputs: Any) -> None:
        if self._folder is not None and step == self.steps[-1]:
            jax.block_until_ready(outputs)  # the last step's device work is in the trace
            self._stop(f"steps {self.steps.start}-{step}")

    def close(self, step: int) -> None:
        """Stops a trace the loop left before its last step (preempted, diverged, failed)."""
        if self._folder is not None:
            self._stop(f"steps {self.steps.start}-{step} (stopped early)")

    def _stop(self, traced: str) -> None:
        jax.profiler.stop_trace()
        folder, self._folder = self._folder, None
        perfetto = (
            f", or {folder}/perfetto_trace.json.gz at https://ui.perfetto.dev"
            if self.settings.perfetto
            else ""
        )
        self._say(
            f"profile: {traced} traced to {folder}; open with `tensorboard --logdir "
            f"{self.root}` (Profile tab; needs `pip install xprof`) or `xprof --logdir="
            f"{self.root}`{perfetto}"
        )

    def _free_folder_name(self) -> str:
        """steps_<first>-<last>, with a suffix where an earlier attempt left that name (killed
        after tracing, before its checkpoint): a trace is never overwritten."""
        name = candidate = f"steps_{self.steps.start}-{self.steps[-1]}"
        suffix = 2
        while os.path.exists(os.path.join(self.root, "plugins", "profile", candidate)):
            candidate, suffix = f"{name}.{suffix}", suffix + 1
        return candidate
