"""Train-step time of every arm of experiments/mqar_mixers.py, side by side in one process.

    python benchmarks/mqar_step_time.py [--setting=small|hard|long] [--steps=5] [--rounds=4]
        [--arms=a,b] [--config.<key>=value ...]

Each arm's jitted train step (the one launch.train runs: model, objective, AdamW) is compiled and
warmed up on the same real batch; then `--rounds` rounds each time `--steps` steps of every arm
in turn, so that a load that comes and goes on a shared machine falls on every arm alike. Prints
the median time per step over all rounds (wall clock, and the CPU time of this process, all its
threads: steadier than wall time when other jobs share the cores), each as a ratio to the
baseline arm, parameters and decoding state size, and the load average before and after.
`--config.<key>=value` overrides apply to every arm (e.g. `--config.model.mamba.scan=associative`).
The ratios are what to quote; absolute times move with the machine (figures: mqar_step_time.md
beside this file).

`long` is this benchmark's own setting, not a study's: the small setting at T 2048 (64 pairs and
queries, batch 8, only as many examples as one batch), where attention's T^2 should show against
the sub-quadratic mixers.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import ml_collections
import numpy as np

import data
import models
import objectives
from experiments import mqar_mixers
from runtime import host_memory
from runtime import optimizer as optimizer_lib
from runtime.config import apply_overrides, with_flag_overrides
from runtime.errors import UsageError
from runtime.mesh import unbox
from runtime.step import MODEL_INPUT, init_state, make_train_step

# The benchmark's settings beyond the study's: name -> overrides of the `small` setting.
OWN_SETTINGS: dict[str, dict] = {
    "long": {
        "data.mqar.seq_len": 2048,
        "data.mqar.num_kv_pairs": 64,
        "data.mqar.num_queries": 64,
        "data.mqar.train_examples": 8,
        "data.mqar.eval_examples": 1,
        "train.batch_size": 8,
    },
}
SETTINGS = (*mqar_mixers.SETTINGS, *OWN_SETTINGS)


def arm_config(arm: str, setting: str, overrides: list[str]) -> ml_collections.ConfigDict:
    if setting in OWN_SETTINGS:
        config = mqar_mixers.get_config(f"{arm},small")
        apply_overrides(config, OWN_SETTINGS[setting], f"OWN_SETTINGS[{setting!r}]")
    else:
        config = mqar_mixers.get_config(f"{arm},{setting}")
    return with_flag_overrides(config, overrides)


class Arm:
    """One arm's compiled train step, its state and its batch, ready to be stepped."""

    def __init__(self, arm: str, config: ml_collections.ConfigDict) -> None:
        dataset = data.load(config.data.name, config.data[config.data.name].to_dict(), None)
        loader = dataset.loader(
            dataset.spec.train_split,
            batch_size=config.train.batch_size,
            seed=0,
            shuffle=True,
            num_epochs=None,
        )
        batch = next(iter(loader))
        self.batch = jax.device_put({k: np.asarray(v) for k, v in batch.items()})
        model = models.build_model(config.model, dataset.spec, jax.numpy.float32)
        tx = optimizer_lib.make_optimizer(config)
        state = init_state(model, tx, config.seed, model.example_inputs(1))
        self.state = state.replace(params=unbox(state.params))
        self.step = jax.jit(
            make_train_step(
                model,
                tx,
                objectives.get_objective(config.objective),
                MODEL_INPUT[dataset.spec.kind],
                1,
                None,
            ),
            donate_argnums=0,
        )
        self.name = arm
        described = model.describe()
        self.params, self.state_size = described["params"], described["state_size"]
        start = time.perf_counter()
        self.run(1)
        self.compile_s = time.perf_counter() - start
        self.run(3)  # warm-up
        self.times: list[float] = []
        self.cpu_times: list[float] = []

    def run(self, steps: int) -> None:
        for _ in range(steps):
            self.state, metrics = self.step(self.state, self.batch)
        jax.block_until_ready(metrics)

    def time(self, steps: int) -> None:
        for _ in range(steps):
            start, start_cpu = time.perf_counter(), time.process_time()
            self.run(1)
            self.times.append(time.perf_counter() - start)
            self.cpu_times.append(time.process_time() - start_cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="small", choices=SETTINGS)
    parser.add_argument("--steps", type=int, default=5, help="steps per arm per round")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--arms", default=",".join(mqar_mixers.ARMS))
    args, overrides = parser.parse_known_args()
    arms = args.arms.split(",")
    try:
        unknown = [a for a in arms if a not in mqar_mixers.ARMS]
        if unknown:
            raise UsageError(f"unknown arm {unknown[0]!r}; arms: {', '.join(mqar_mixers.ARMS)}")
        bad = [o for o in overrides if not o.startswith("--config.")]
        if bad:
            raise UsageError(f"unrecognised argument {bad[0]!r}")
        if args.steps < 1 or args.rounds < 1:
            raise UsageError("--steps and --rounds must be >= 1")
        configs = {arm: arm_config(arm, args.setting, overrides) for arm in arms}
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    host_memory.keep_freed_memory()  # as launch.train runs, before JAX starts its threads
    load_before = os.getloadavg()
    compiled = [Arm(arm, configs[arm]) for arm in arms]
    for _ in range(args.rounds):
        for arm in compiled:
            arm.time(args.steps)
    load_after = os.getloadavg()
    base = next((a for a in compiled if a.name == mqar_mixers.BASELINE), compiled[0])
    base_ms = 1e3 * statistics.median(base.times)
    base_cpu_ms = 1e3 * statistics.median(base.cpu_times)
    print(
        f"setting {args.setting} {' '.join(overrides)}: median of {args.rounds} rounds x "
        f"{args.steps} steps per arm, interleaved, after 3 warm-up, one process; load average "
        f"(1/5/15 min) {'/'.join(f'{x:.1f}' for x in load_before)} before, "
        f"{'/'.join(f'{x:.1f}' for x in load_after)} after"
    )
    print(
        f"| arm | params | state size | compile s | ms/step | vs {base.name} "
        f"| CPU ms/step | vs {base.name} |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for a in compiled:
        ms, cpu_ms = 1e3 * statistics.median(a.times), 1e3 * statistics.median(a.cpu_times)
        print(
            f"| {a.name} | {a.params:,} | {a.state_size:,} | {a.compile_s:.1f} "
            f"| {ms:.1f} | {ms / base_ms:.2f}x | {cpu_ms:.1f} | {cpu_ms / base_cpu_ms:.2f}x |"
        )


if __name__ == "__main__":
    main()
