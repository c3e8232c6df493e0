"""What sealing and verifying checkpoints costs, beside what Orbax's save and restore cost.

    python benchmarks/checkpoint_seal_cost.py [--config=experiments/reference_lm.py] [--repeats=3]

Saves the config's freshly initialised train state (parameters and optimizer state) with the
run's own `runtime.checkpoint.Checkpoints` (synchronously, so the save is timed whole), then
times, side by side in this process: Orbax's save, writing the seal, checking it, and Orbax's
restore. Prints the medians and the checkpoint's size. Figures go in experiments/reference_lm.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from runtime import assembly, checkpoint, host_memory  # noqa: E402
from runtime import checkpoint_seal as seal  # noqa: E402
from runtime.config import load_config_file  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    host_memory.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default="experiments/reference_lm.py")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    exp = assembly.build(load_config_file(args.config), jax.devices()[:1])
    state = assembly.fresh_state(exp)
    times: dict[str, list[float]] = {"save": [], "seal": [], "check": [], "restore": []}
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as workdir:
            checkpoints = checkpoint.Checkpoints(workdir, max_to_keep=1, async_save=False)
            step = repeat + 1

            def save(checkpoints=checkpoints, step=step) -> None:
                checkpoints.manager.save(
                    step,
                    args=checkpoint.ocp.args.Composite(
                        **{
                            checkpoint.STATE: checkpoint.ocp.args.StandardSave(state),
                            checkpoint.DATA: checkpoint.data.iterator_checkpoint_args(
                                exp.train_iter, restore=False
                            ),
                        }
                    ),
                )
                checkpoints.manager.wait_until_finished()

            step_dir = checkpoints.step_dir(step)
            times["save"].append(timed(save))
            times["seal"].append(timed(lambda step_dir=step_dir: seal.write_seal(step_dir)))
            times["check"].append(timed(lambda step_dir=step_dir: seal.check_seal(step_dir)))
            size = sum(
                os.path.getsize(os.path.join(root, name))
                for root, _, names in os.walk(step_dir)
                for name in names
            )
            checkpoints._sealed.append(step)  # sealed above, by hand, to time it alone

            def restore(checkpoints=checkpoints) -> None:
                with exp.context():
                    checkpoints.restore_latest(exp.abstract_state, exp.train_iter)

            times["restore"].append(timed(restore))
            checkpoints.close()
    medians = {k: statistics.median(v) for k, v in times.items()}
    print(f"checkpoint: {size / 1e6:.1f} MB ({args.config}, {args.repeats} repeats, medians)")
    for name, value in medians.items():
        print(f"  {name:8s} {value * 1e3:8.1f} ms")
    print(
        f"  seal / save {medians['seal'] / medians['save']:.2f}x; "
        f"restore (its check included) / check {medians['restore'] / medians['check']:.2f}x"
    )


if __name__ == "__main__":
    main()
