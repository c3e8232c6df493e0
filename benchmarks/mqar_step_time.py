"""Train-step time of every arm of experiments/mqar_mixers.py, side by side in one process.

    python benchmarks/mqar_step_time.py [--setting=small|hard] [--steps=20] [--arms=a,b]

Each arm's jitted train step (the one launch.train runs: model, objective, AdamW) is compiled,
warmed up, then timed on the same real batch; prints the median time per step and its ratio to
the baseline arm, plus parameters and decoding state size. Run it on an otherwise idle machine:
the ratios are what to quote, absolute times move with the machine.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

import data
import models
import objectives
from experiments import mqar_mixers
from runtime import host_memory
from runtime import optimizer as optimizer_lib
from runtime.mesh import unbox
from runtime.step import MODEL_INPUT, init_state, make_train_step


def time_arm(arm: str, setting: str, steps: int) -> dict:
    config = mqar_mixers.get_config(f"{arm},{setting}")
    dataset = data.load(config.data.name, config.data[config.data.name].to_dict(), None)
    batch = next(
        iter(
            dataset.loader(
                dataset.spec.train_split,
                batch_size=config.train.batch_size,
                seed=0,
                shuffle=True,
                num_epochs=None,
            )
        )
    )
    batch = jax.device_put({k: np.asarray(v) for k, v in batch.items()})
    model = models.build_model(config.model, dataset.spec, jax.numpy.float32)
    tx = optimizer_lib.make_optimizer(config)
    state = init_state(model, tx, config.seed, model.example_inputs(1))
    state = state.replace(params=unbox(state.params))
    step = jax.jit(
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
    start = time.perf_counter()
    state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    compile_s = time.perf_counter() - start
    for _ in range(3):  # warm-up
        state, metrics = step(state, batch)
    jax.block_until_ready(metrics)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = step(state, batch)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - start)
    described = model.describe()
    return {
        "arm": arm,
        "params": described["params"],
        "state_size": described["state_size"],
        "compile_s": compile_s,
        "step_ms": 1e3 * statistics.median(times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setting", default="small", choices=list(mqar_mixers.SETTINGS))
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--arms", default=",".join(mqar_mixers.ARMS))
    args = parser.parse_args()
    host_memory.keep_freed_memory()  # as launch.train runs, before JAX starts its threads
    rows = [time_arm(arm, args.setting, args.steps) for arm in args.arms.split(",")]
    base = next((r for r in rows if r["arm"] == mqar_mixers.BASELINE), rows[0])
    print(f"setting {args.setting}, median of {args.steps} steps after 3 warm-up, one process")
    print("| arm | params | state size | compile s | ms/step | vs " + base["arm"] + " |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['arm']} | {r['params']:,} | {r['state_size']:,} | {r['compile_s']:.1f} "
            f"| {r['step_ms']:.1f} | {r['step_ms'] / base['step_ms']:.2f}x |"
        )


if __name__ == "__main__":
    main()
