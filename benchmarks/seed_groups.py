"""What training an arm's seeds together (`launch.train --seeds`, runtime/group.py) saves, arm
by arm, side by side.

    python benchmarks/seed_groups.py [--mode=processes|program] [--study=experiments/mqar_mixers.py]
        [--setting=small] [--arms=attention,mamba] [--seeds=3] [--steps=100] [--workers=1,2]

--mode=processes (default): wall time of the seeds as one `launch.train --seeds=0,1,...`
process, then as one `launch.train` process per seed run --workers at a time (each count given),
which is what `launch.study --no-group-seeds` does. Every way starts with an empty persistent
compilation cache, shared by its processes as a study shares one (so a separate seed after the
first finds its programs compiled). Evaluation suites are off; the dataset is prepared before any
timing. Prints seconds per way, the ratio to the group, and the load average before and after
each arm (the machine may be shared).

--mode=program: in this process, the time of one step of all the seeds three ways: the lone
runs' jitted steps one after another, the group's step (`lax.map` of the lone step), and
`jax.vmap` of the lone step (their matmuls batched); after --steps steps from the same states and
batches, whether the group's parameters are bitwise the lone runs' and how far vmap's are (the
largest difference relative to the parameter's largest magnitude). Medians over the steps.

Figures go in experiments/mqar_mixers.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from runtime.config import load_config_file  # noqa: E402
from runtime.study_spec import load_study  # noqa: E402


def train(config: str, workdir: str, cache: str, *args: str) -> None:
    env = {
        **os.environ,
        "JAX_COMPILATION_CACHE_DIR": cache,
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
    }
    command = [sys.executable, "-m", "launch.train", f"--config={config}", f"--workdir={workdir}"]
    result = subprocess.run(
        [*command, *args], cwd=REPO, env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}{result.stderr}")


def prepare_data(config_arg: str) -> None:
    import data

    config = load_config_file(config_arg)
    data.load(config.data.name, config.data[config.data.name].to_dict(), config.data.dir or None)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def program_step_times(config_arg: str, seeds: list[int], steps: int) -> str:
    """One table row: ms per step of all seeds (lone steps, lax.map group, vmap), whether the
    group is bitwise the lone runs, and vmap's largest relative difference."""
    import jax
    import numpy as np

    from runtime import assembly, group

    config = load_config_file(config_arg)
    exp = assembly.build(config, jax.devices()[:1])
    together = group.of_seeds(exp, seeds)
    vmapped = jax.jit(jax.vmap(lambda state, batch: exp.train_step(state, batch)))
    batches = [together.next_batch() for _ in range(steps + 1)]  # +1: the compiling step

    def lone(states: list, batch: dict) -> list:
        return [exp.train_step(s, b)[0] for s, b in zip(states, together.split(batch), strict=True)]

    ways = {
        "lone": (lone, [assembly.fresh_state(run) for run in together.runs]),
        "group": (lambda s, b: together.train_step(s, b)[0], None),
        "vmap": (lambda s, b: vmapped(s, b)[0], None),
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    finals = {}
    with exp.context():
        for name, (step, state) in ways.items():
            state = state or together.stack([assembly.fresh_state(r) for r in together.runs])
            for i, batch in enumerate(batches):
                start = time.perf_counter()
                state = jax.block_until_ready(step(state, batch))
                if i:
                    times[name].append(time.perf_counter() - start)
            finals[name] = state
    lone_params = [jax.device_get(s.params) for s in finals["lone"]]

    def largest_difference(name: str) -> float:
        worst = 0.0
        others = together.split(jax.device_get(finals[name].params))
        for alone, other in zip(lone_params, others, strict=True):
            for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(other), strict=True):
                worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)))
        return worst

    ms = " | ".join(f"{1e3 * statistics.median(times[name]):.0f}" for name in ways)
    bitwise = largest_difference("group") == 0.0
    return f"{ms} | {'yes' if bitwise else 'NO'} | {largest_difference('vmap'):.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("processes", "program"), default="processes")
    parser.add_argument("--study", default="experiments/mqar_mixers.py")
    parser.add_argument("--setting", default="small")
    parser.add_argument("--arms", help="comma-separated (default: all the study's arms)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="separate processes at a time")
    args = parser.parse_args()
    spec = load_study(args.study)
    arms = args.arms.split(",") if args.arms else list(spec.arms)
    workers = [int(w) for w in args.workers.split(",")]
    overrides = [
        f"--config.train.steps={args.steps}",
        "--config.eval.suites=",
        f"--config.checkpoint.every={args.steps}",
    ]
    seeds = list(range(args.seeds))
    if args.mode == "program":
        print(f"{len(seeds)} seeds, {os.cpu_count()} cores; ms per step of all seeds")
        print("arm | lone steps | group (lax.map) | vmap | group bitwise | vmap rel. diff | load")
        for arm in arms:
            row = program_step_times(spec.config_arg(arm, args.setting), seeds, args.steps)
            print(f"{arm} | {row} | {load()}", flush=True)
        return
    print(f"{len(seeds)} seeds x {args.steps} steps, {os.cpu_count()} cores; seconds per arm")
    header = ["arm", "together"] + [f"separate x{w}" for w in workers] + ["load before/after"]
    print(" | ".join(header))
    with tempfile.TemporaryDirectory() as root:
        for arm in arms:
            config = spec.config_arg(arm, args.setting)
            prepare_data(config)  # outside the timings
            before = load()
            out = f"{root}/{arm}"
            seconds = [
                timed(
                    lambda out=out, config=config: train(
                        config,
                        f"{out}/together/seed_{{seed}}",
                        f"{out}/together-cache",
                        f"--seeds={','.join(map(str, seeds))}",
                        *overrides,
                    )
                )
            ]
            for w in workers:

                def separate(w=w, out=out, config=config) -> None:
                    with ThreadPoolExecutor(w) as pool:
                        list(
                            pool.map(
                                lambda s: train(
                                    config,
                                    f"{out}/x{w}/seed_{s}",
                                    f"{out}/x{w}-cache",
                                    f"--config.seed={s}",
                                    *overrides,
                                ),
                                seeds,
                            )
                        )

                seconds.append(timed(separate))
            ratios = [f"{t:.0f} ({t / seconds[0]:.2f}x)" for t in seconds[1:]]
            print(f"{arm} | {seconds[0]:.0f} | {' | '.join(ratios)} | {before} / {load()}")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
