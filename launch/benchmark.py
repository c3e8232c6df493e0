"""How fast a config trains, measured beside what it should cost: one JSON per run.

    python -m launch.benchmark --config=experiments/reference_lm.py [--steps=30] [--warmup=5] \
        [--output=benchmarks/results/x.json] [--config.train.batch_size=16 ...]

What it reports, all from one process:
- compile time of the jitted train step (the one `launch.train` runs);
- step time: median over `--steps` calls of the bare compiled step on one device-resident batch,
  each waited for, after `--warmup` calls (half before the loop below, half after); tokens/s
  from it;
- model FLOPs per step, analytic: 3 x forward FLOPs per token x tokens per step (the backward pass
  costs twice the forward); forward FLOPs per token are the model's own `describe()`: 2 per
  multiply-accumulate of every projection, attention's scores and mixing over the causal half of
  the map (T/2 keys on average), and the unembedding at every position. XLA's own count of the
  compiled step is reported beside it;
- achieved FLOP/s and MFU against the devices' peak, the one `launch.train` logs `perf/mfu`
  against (`runtime.peak_flops`): the datasheet's dense bf16 peak on a GPU or TPU it knows, on
  CPU the best rate of a few float32 matmuls timed once at start-up;
- peak memory: the process's peak resident set (CPU) or the device allocator's peak (GPU), and
  XLA's memory analysis of the compiled step;
- the loop's overhead: end-to-end steps/s of `runtime.loop.train_loop` (real data, logging
  at `train.log_every`, metric files) over the bare step's rate; eval and checkpoints are kept out
  of the timed steps.
"""

from __future__ import annotations

import datetime
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from typing import Any

import jax
import ml_collections
from absl import flags
from ml_collections import config_flags

import models
from analysis.runs import read_metrics
from atomic_write import write_json_atomically
from runtime import assembly, checkpoint, group, host_memory, loop, peak_flops
from runtime import mesh as mesh_lib
from runtime.config import parse_flags, to_json
from runtime.errors import UsageError, exit_on_usage_error
from runtime.metric_writers import MetricWriter
from runtime.progress import Progress

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Experiment config file[:arg].", lock_config=True
)
_STEPS = flags.DEFINE_integer("steps", 30, "Timed steps (bare step and loop each).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Untimed steps first (compilation, caches).")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file (default: benchmarks/results/...).")


def peak_memory() -> dict[str, int | None]:
    stats = jax.devices()[0].memory_stats() or {}
    return {
        # Linux reports ru_maxrss in KiB.
        "process_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "device_peak_bytes": stats.get("peak_bytes_in_use"),
    }


def compiled_memory(compiled: Any) -> dict[str, int] | None:
    analysis = compiled.memory_analysis()
    if analysis is None:
        return None
    return {
        "arguments_bytes": analysis.argument_size_in_bytes,
        "outputs_bytes": analysis.output_size_in_bytes,
        "temporaries_bytes": analysis.temp_size_in_bytes,
        "aliased_bytes": analysis.alias_size_in_bytes,  # donated state, counted once
    }


def xla_flops(compiled: Any) -> float | None:
    cost = compiled.cost_analysis()
    if isinstance(cost, list):  # older JAX: one dict per computation
        cost = cost[0] if cost else None
    return float(cost["flops"]) if cost and "flops" in cost else None


def compile_step(exp: assembly.Experiment) -> tuple[float, Any, Any, Any]:
    """(compile seconds, compiled step, fresh state, one device-resident batch)."""
    state = assembly.fresh_state(exp)
    with exp.context():
        batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
        start = time.perf_counter()
        compiled = exp.train_step.lower(state, batch, *exp.step_extras).compile()
        return time.perf_counter() - start, compiled, state, batch


def time_steps(
    compiled: Any, state: Any, batch: Any, steps: int, extras: tuple = ()
) -> tuple[Any, list[float]]:
    """(state, seconds per step); `extras`: the step's further arguments (a teacher's params)."""
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        state, metrics = compiled(state, batch, *extras)
        jax.block_until_ready((state, metrics))
        times.append(time.perf_counter() - start)
    return state, times


def timed_log_steps(log_every: int, warmup: int, total: int) -> list[int]:
    """The logging steps of a `total`-step loop whose interval starts after the warm-up: those
    whose `perf/steps_per_sec` the loop's rate is read from."""
    return [step for step in range(log_every, total + 1, log_every) if step - log_every >= warmup]


def loop_steps_per_second(exp: assembly.Experiment, warmup: int, peak: peak_flops.Peak) -> float:
    """End-to-end rate of the training loop, from its own `perf/steps_per_sec` records: only
    logging intervals that start after the warm-up steps (so compilation is out) count."""
    with tempfile.TemporaryDirectory() as workdir:
        checkpoints = checkpoint.Checkpoints(workdir, max_to_keep=1, async_save=False)
        writer = MetricWriter(workdir, 0)
        progress = Progress(0, exp.config.train.steps, quiet=True)
        state = assembly.fresh_state(exp)
        status = "failed"
        try:
            (status,) = loop.train_loop(
                group.alone(exp), state, 0, [checkpoints], [writer], progress, [], peak
            )
        finally:
            checkpoints.close()
            writer.close(status)
        if status != "completed":
            raise RuntimeError(f"the benchmark's training loop ended {status}")
        rows = read_metrics(workdir)
    every = exp.config.train.log_every
    timed = timed_log_steps(every, warmup, exp.config.train.steps)
    intervals = [
        (every, r["perf/steps_per_sec"])
        for r in rows
        if "perf/steps_per_sec" in r and r["step"] in timed
    ]
    if not intervals:  # main checked that some fit: the loop did not log where it should
        raise RuntimeError(f"the benchmark's loop logged no rate at steps {timed}")
    steps = sum(n for n, _ in intervals)
    return steps / sum(n / rate for n, rate in intervals)


def benchmark(config: ml_collections.ConfigDict, steps: int, warmup: int) -> dict[str, Any]:
    # The loop runs warmup + steps steps; eval and checkpoints only after the last one.
    config.train.steps = warmup + steps
    config.eval.every = config.checkpoint.every = config.train.steps
    exp = assembly.build(config)
    peak = peak_flops.device_peak()  # as launch.train does: once, before anything compiles

    compile_seconds, compiled, state, batch = compile_step(exp)
    state, _ = time_steps(compiled, state, batch, warmup, exp.step_extras)
    # Half the bare steps before the loop and half after: a machine whose load changes
    # meanwhile moves both figures alike.
    state, times = time_steps(compiled, state, batch, (steps + 1) // 2, exp.step_extras)
    loop_rate = loop_steps_per_second(exp, warmup, peak)
    _, more_times = time_steps(compiled, state, batch, steps // 2, exp.step_extras)
    times = times + more_times
    step_seconds = statistics.median(times)
    model_flops = exp.model_flops_per_step
    achieved = model_flops / step_seconds if model_flops else None
    return {
        "config": json.loads(to_json(config)),
        "devices": {
            "platform": jax.devices()[0].platform,
            "kind": jax.devices()[0].device_kind,
            "count": jax.device_count(),
            "mesh": dict(exp.mesh.shape),
        },
        "num_params": models.count_params(exp.abstract_state.params),
        "tokens_per_step": exp.tokens_per_step,
        "compile_seconds": compile_seconds,
        "step_seconds_median": step_seconds,
        "step_seconds_min": min(times),
        "step_seconds_max": max(times),
        "tokens_per_second": exp.tokens_per_step / step_seconds,
        "model_flops_per_step": model_flops,
        "model_flops_formula": "3 x forward FLOPs per token (model.describe) x tokens per step",
        "xla_flops_per_step": xla_flops(compiled),
        "achieved_flops_per_second": achieved,
        **peak.record(),
        "mfu": achieved / peak.flops_per_second if achieved else None,
        "memory": {**peak_memory(), "compiled_step": compiled_memory(compiled)},
        "loop": {
            "end_to_end_steps_per_second": loop_rate,
            "bare_steps_per_second": 1 / step_seconds,
            "ratio": loop_rate * step_seconds,
            "log_every": config.train.log_every,
        },
        "steps": steps,
        "warmup": warmup,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }


def summary_lines(result: dict[str, Any]) -> list[str]:
    def si(x: float | None, unit: str) -> str:
        if x is None:
            return "n/a"
        for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
            if abs(x) >= scale:
                return f"{x / scale:.3g} {prefix}{unit}"
        return f"{x:.3g} {unit}"

    loop = result["loop"]
    mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] is not None else "n/a"
    return [
        f"devices        {result['devices']['count']} x {result['devices']['kind']}"
        f"  mesh {result['devices']['mesh']}",
        f"parameters     {result['num_params']:,}",
        f"compile        {result['compile_seconds']:.2f} s",
        f"step           {1e3 * result['step_seconds_median']:.1f} ms median "
        f"({1e3 * result['step_seconds_min']:.1f}-{1e3 * result['step_seconds_max']:.1f})",
        f"tokens/s       {result['tokens_per_second']:,.0f}",
        f"model FLOPs    {si(result['model_flops_per_step'], 'FLOP')} per step "
        f"(XLA counts {si(result['xla_flops_per_step'], 'FLOP')})",
        f"achieved       {si(result['achieved_flops_per_second'], 'FLOP/s')}",
        f"peak           {si(result['peak_flops_per_second'], 'FLOP/s')} "
        f"({result['peak_flops_source']})",
        f"MFU            {mfu}",
        f"memory         peak RSS {si(result['memory']['process_peak_rss_bytes'], 'B')}, "
        f"device peak {si(result['memory']['device_peak_bytes'], 'B')}",
        f"loop overhead  end-to-end {loop['end_to_end_steps_per_second']:.2f} steps/s vs bare "
        f"{loop['bare_steps_per_second']:.2f}: {100 * loop['ratio']:.1f}% "
        f"(logging every {loop['log_every']} steps)",
    ]


def default_output(config_arg: str) -> str:
    stem = os.path.splitext(os.path.basename(config_arg.replace(":", "-")))[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
    return os.path.join("benchmarks", "results", f"{stem}-{stamp}.json")


@exit_on_usage_error
def main(argv: list[str]) -> int:
    keeps_freed_memory = host_memory.keep_freed_memory()  # before JAX starts its threads
    parse_flags(argv)
    if _STEPS.value < 1 or _WARMUP.value < 1:
        raise UsageError("--steps and --warmup must be >= 1")
    assembly.check_names(_CONFIG.value)  # train.log_every >= 1 among the rest
    every, total = _CONFIG.value.train.log_every, _WARMUP.value + _STEPS.value
    if not timed_log_steps(every, _WARMUP.value, total):
        raise UsageError(
            f"no logging interval of train.log_every={every} steps fits after "
            f"--warmup={_WARMUP.value} in {total} steps; raise --steps or lower train.log_every"
        )
    config_arg = next(a.split("=", 1)[1] for a in argv if a.startswith("--config="))
    output = _OUTPUT.value or default_output(config_arg)
    if os.path.exists(output):
        raise UsageError(f"{output!r} exists; choose another --output")
    result = benchmark(_CONFIG.value, _STEPS.value, _WARMUP.value)
    result["command"] = [sys.executable, "-m", "launch.benchmark", *argv[1:]]
    result["malloc_keeps_freed_memory"] = keeps_freed_memory  # runtime/host_memory.py
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    write_json_atomically(output, result, indent=2)
    print("\n".join(summary_lines(result)))
    print(f"written: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
