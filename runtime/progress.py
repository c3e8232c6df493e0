"""What a person watching the run sees: a progress bar on a terminal, log lines otherwise."""

from __future__ import annotations

import sys
import time

import jax
from tqdm import tqdm


class Progress:
    def __init__(self, first_step: int, total_steps: int, quiet: bool = False):
        self.total = total_steps
        self.active = jax.process_index() == 0 and not quiet
        self.interactive = self.active and sys.stderr.isatty()
        self._start, self._first = time.monotonic(), first_step
        self._bar = (
            tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True)
            if self.interactive
            else None
        )

    def advance(self, step: int) -> None:
        if self._bar is not None:
            self._bar.update(step - self._bar.n)

    def report(self, step: int, scalars: dict[str, float], label: str = "") -> None:
        """Called at each logging step with the values just written (of each run of a group,
        named by `label`)."""
        if not self.active:
            return
        loss = scalars.get("train/loss")
        rate = scalars.get("perf/steps_per_sec")
        mfu = scalars.get("perf/mfu")  # absent for models that do not state their FLOPs
        mfu_shown = f"{100 * mfu:.3g}%" if mfu is not None else None
        if self._bar is not None:
            postfix = {"loss": f"{loss:.4f}" if loss is not None else "-"}
            if mfu_shown:
                postfix["MFU"] = mfu_shown
            self._bar.set_postfix(postfix)
            return
        elapsed = time.monotonic() - self._start
        done = max(step - self._first, 1)
        eta = elapsed / done * (self.total - step)
        parts = [f"{label}step {step}/{self.total}"]
        parts += [f"{k}={v:.4g}" for k, v in scalars.items() if not k.startswith("perf/")]
        if rate is not None:
            parts.append(f"{rate:.2f} steps/s")
        if mfu_shown:
            parts.append(f"MFU {mfu_shown}")
        parts.append(f"ETA {eta:.0f}s")
        print("  ".join(parts), flush=True)

    def message(self, text: str) -> None:
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(text)
        else:
            print(text, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
