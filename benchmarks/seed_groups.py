"""What training an arm's seeds together (`launch.train --seeds`, runtime/group.py) saves, arm
by arm, side by side.

    python benchmarks/seed_groups.py [--mode=processes|program] [--study=experiments/mqar_mixers.py]
        [--setting=small] [--arms=attention,mamba] [--seeds=3] [--steps=100] [--workers=1,2]
        [--repeats=2]

--mode=processes (default): wall time of the seeds as one `launch.train --seeds=0,1,...`
process, and as one `launch.train` process per seed run --workers at a time (each count given),
which is what `launch.study --no-group-seeds` does; the ways take turns, --repeats times each,
every other repeat in reverse order, so that the load of a shared machine falls on all alike.
Every way starts with an empty persistent compilation cache, shared by its processes as a
study shares one (so a separate seed after the first finds its programs compiled). Evaluation
suites are off; the dataset is prepared before any timing. Prints each sample's seconds with the
1-minute load average before it, and the median ratio of the first separate way to the group.

--mode=program: in this process, the time of one step of all the seeds three ways, taking turns
at every step: the group's step (the lone run's compiled step dispatched once per run, what
`launch.train --seeds` does; each run bitwise its lone self), `lax.map` of the lone step over the
runs' stacked states (one program), and `jax.vmap` of it (one program, the runs' matmuls
batched). After --steps steps from the same states and batches, how far each program's
parameters are from the group's (the largest difference relative to the parameter's largest
magnitude; 0.0e+00: bitwise). Medians over the steps.

Figures go in benchmarks/seed_groups.md.
"""

from __future__ import annotations

import argparse
import functools
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
    """One table row: ms per step of all seeds three ways (the group's step: the lone step
    dispatched per run; `lax.map` of the lone step over the stacked states, one program;
    `jax.vmap` of it, one program), and how far each of the two programs' parameters are from
    the group's after `steps` steps (the largest difference relative to the parameter's largest
    magnitude; 0: bitwise)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from runtime import assembly, group

    config = load_config_file(config_arg)
    exp = assembly.build(config, jax.devices()[:1])
    together = group.of_seeds(exp, seeds)
    extras = exp.step_extras  # the step's read-only arguments (a LoRA base, a teacher), shared
    mapped = jax.jit(
        lambda state, batch: jax.lax.map(lambda run: exp.train_step(*run, *extras), (state, batch)),
        donate_argnums=0,
    )
    vmapped = jax.jit(
        jax.vmap(lambda state, batch: exp.train_step(state, batch, *extras)), donate_argnums=0
    )

    def stack(trees: list) -> object:
        return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)

    batches = [together.next_batch() for _ in range(steps + 1)]  # +1: the compiling step
    stacked_batches = [stack(b) for b in batches]
    ways = {
        "group": lambda states, i: together.train_step(states, batches[i])[0],
        "lax.map": lambda state, i: mapped(state, stacked_batches[i])[0],
        "vmap": lambda state, i: vmapped(state, stacked_batches[i])[0],
    }
    times: dict[str, list[float]] = {name: [] for name in ways}
    with exp.context():
        fresh = [assembly.fresh_state(run) for run in together.runs]
        states = {
            "group": fresh,
            **{name: stack(jax.device_get(fresh)) for name in ("lax.map", "vmap")},
        }
        for i in range(len(batches)):
            # The ways take turns at every step, each first in turn: a shared machine's load
            # falls on all alike.
            order = list(ways)[i % len(ways) :] + list(ways)[: i % len(ways)]
            for name in order:
                start = time.perf_counter()
                states[name] = jax.block_until_ready(ways[name](states[name], i))
                if i:
                    times[name].append(time.perf_counter() - start)
    group_params = [jax.device_get(s.params) for s in states["group"]]

    def largest_difference(name: str) -> float:
        worst = 0.0
        stacked = jax.device_get(states[name].params)
        for i, alone in enumerate(group_params):
            other = jax.tree.map(lambda x, i=i: x[i], stacked)
            for a, b in zip(jax.tree.leaves(alone), jax.tree.leaves(other), strict=True):
                worst = max(worst, float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30)))
        return worst

    ms = " | ".join(f"{1e3 * statistics.median(times[name]):.0f}" for name in ways)
    diffs = " | ".join(f"{largest_difference(name):.1e}" for name in ("lax.map", "vmap"))
    return f"{ms} | {diffs}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("processes", "program"), default="processes")
    parser.add_argument("--study", default="experiments/mqar_mixers.py")
    parser.add_argument("--setting", default="small")
    parser.add_argument("--arms", help="comma-separated (default: all the study's arms)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--workers", default="1,2", help="separate processes at a time")
    parser.add_argument("--repeats", type=int, default=2, help="of each way, taking turns")
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
        print("arm | group (dispatch) | lax.map | vmap | lax.map rel. diff | vmap rel. diff | load")
        for arm in arms:
            row = program_step_times(spec.config_arg(arm, args.setting), seeds, args.steps)
            print(f"{arm} | {row} | {load()}", flush=True)
        return
    print(
        f"{len(seeds)} seeds x {args.steps} steps, {os.cpu_count()} cores, {args.repeats} "
        "repeats taking turns; seconds per arm (1-min load average before each)"
    )
    ways = ["together"] + [f"separate x{w}" for w in workers]
    print(" | ".join(["arm", *ways, f"{ways[1]} / together (median)"]))
    with tempfile.TemporaryDirectory() as root:
        for arm in arms:
            config = spec.config_arg(arm, args.setting)
            prepare_data(config)  # outside the timings
            samples: dict[str, list[tuple[float, float]]] = {way: [] for way in ways}
            for repeat in range(args.repeats):
                # Every other repeat in reverse order, so a change in the machine's load falls
                # on every way alike.
                for way in ways if repeat % 2 == 0 else ways[::-1]:
                    out = f"{root}/{arm}/{repeat}/{way.replace(' ', '_')}"
                    before = os.getloadavg()[0]
                    if way == "together":
                        fn = functools.partial(
                            train,
                            config,
                            f"{out}/seed_{{seed}}",
                            f"{out}/cache",
                            f"--seeds={','.join(map(str, seeds))}",
                            *overrides,
                        )
                    else:
                        fn = functools.partial(
                            separate, config, out, seeds, int(way.split("x")[1]), overrides
                        )
                    samples[way].append((timed(fn), before))
            cells = [" ".join(f"{t:.0f} ({load:.1f})" for t, load in samples[way]) for way in ways]
            ratio = statistics.median(t for t, _ in samples[ways[1]]) / statistics.median(
                t for t, _ in samples["together"]
            )
            print(f"{arm} | {' | '.join(cells)} | {ratio:.2f}x", flush=True)


def separate(config: str, out: str, seeds: list[int], workers: int, overrides: list[str]) -> None:
    """Each seed as its own launch.train process, `workers` at a time, sharing one persistent
    compilation cache (as launch.study --no-group-seeds does)."""
    with ThreadPoolExecutor(workers) as pool:
        list(
            pool.map(
                lambda s: train(
                    config, f"{out}/seed_{s}", f"{out}/cache", f"--config.seed={s}", *overrides
                ),
                seeds,
            )
        )


if __name__ == "__main__":
    main()
