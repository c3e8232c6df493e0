"""Where a training process's wall time goes: its phases in order (imports, checks, building the
experiment, the first step, the steps, evaluation, checkpoints, the evaluation suites...) and,
inside each, the seconds JAX spent tracing, lowering and compiling.

`launch.train` prints the breakdown when it ends and keeps it in each run's manifest (the
attempt's `phases`), so a study's start-up cost can be read from its runs rather than guessed.
Compilation time comes from JAX's own monitoring events, never from timing a first call and
subtracting a later one. Figures: benchmarks/startup.md.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from typing import Any

from jax import monitoring

# JAX's duration events for one jit compilation (jax/_src/dispatch.py and compiler.py); a
# persistent-cache hit skips the backend compile and records its retrieval instead.
COMPILE_EVENTS = {
    "/jax/core/compile/jaxpr_trace_duration": "trace",
    "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
    "/jax/core/compile/backend_compile_duration": "compile",
    "/jax/compilation_cache/cache_retrieval_time_sec": "cache read",
}


def seconds_since_process_start() -> float | None:
    """Wall seconds since this process started (Linux's /proc), else None: what the interpreter
    and the imports cost before any of our code ran."""
    try:
        with open("/proc/self/stat") as f:
            # Field 22, counted after the command name (which may hold spaces) closes with ')'.
            started_ticks = int(f.read().rpartition(")")[2].split()[19])
        return time.clock_gettime(time.CLOCK_BOOTTIME) - started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


class PhaseClock:
    """Wall seconds per named phase and the compilation seconds JAX reports inside each.

    Phases may be entered more than once (evaluation at every `eval.every`) and add up; a phase
    entered inside another (a checkpoint during the steps) is taken out of the outer one's time,
    so the phases add up to the wall time they cover. Compilations count towards the innermost
    phase open when JAX reports them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.compiling: dict[str, float] = {}
        self.compilations: dict[str, int] = {}
        self._open: list[str] = []
        monitoring.register_event_duration_secs_listener(self._on_event)
        self._listening = True

    def record_since_start(self, name: str) -> None:
        """Adds `name` for the time before this process ran our code, where the OS tells it."""
        elapsed = seconds_since_process_start()
        if elapsed is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self._open.append(name)
        self.seconds.setdefault(name, 0.0)  # the record lists phases in the order they began
        start = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - start
            self._open.pop()
            self.seconds[name] = self.seconds.get(name, 0.0) + elapsed
            if self._open:  # the outer phase did not run while this one did
                outer = self._open[-1]
                self.seconds[outer] = self.seconds.get(outer, 0.0) - elapsed

    def _on_event(self, event: str, duration: float, **_: Any) -> None:
        if event in COMPILE_EVENTS and self._open:
            name = self._open[-1]
            self.compiling[name] = self.compiling.get(name, 0.0) + duration
            if COMPILE_EVENTS[event] == "trace":
                self.compilations[name] = self.compilations.get(name, 0) + 1

    def close(self) -> None:
        """Stops listening to JAX (a process may make several clocks: the tests do). Once."""
        if self._listening:
            monitoring.unregister_event_duration_listener(self._on_event)
            self._listening = False

    def __enter__(self) -> PhaseClock:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()  # also when the block raised: no listener outlives its clock

    def record(self) -> list[dict[str, float | str]]:
        """For the manifest: [{"phase", "seconds", "compiling_seconds", "compilations"}] in the
        order the phases first began (a list: the manifest's keys are written sorted)."""
        return [
            {
                "phase": name,
                "seconds": round(seconds, 3),
                "compiling_seconds": round(self.compiling.get(name, 0.0), 3),
                "compilations": self.compilations.get(name, 0),
            }
            for name, seconds in self.seconds.items()
        ]

    def line(self) -> str:
        """One line for the log: `time: imports 4.1 s, build 2.0 s (compiling 0.3 s in 2), ...`."""
        parts = []
        for entry in self.record():
            part = f"{entry['phase']} {entry['seconds']:.1f} s"
            if entry["compilations"]:
                n = entry["compilations"]
                part += f" (compiling {entry['compiling_seconds']:.1f} s in {n})"
            parts.append(part)
        total = sum(self.seconds.values())
        return f"time: {', '.join(parts)}; {total:.1f} s in all"
