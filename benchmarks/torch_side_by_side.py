"""archlab against PyTorch eager on the reference LM, in one process, side by side.

    pip install -e '.[bench]'     # torch==2.13.0, CPU build: a benchmark-only extra
    python benchmarks/torch_side_by_side.py [--steps=10] [--warmup=2] [--threads=N]

Both train `experiments/reference_lm.py` (6 layers, d_model 512, 8 heads, SwiGLU d_ff 2048,
vocab 256, 256 tokens x batch 8, float32, AdamW): archlab's jitted train step (the one
`launch.train` runs) and its PyTorch twin (benchmarks/torch_reference_lm.py, checked to compute
the same logits by tests/test_torch_twin.py), on the same batch. Steps alternate between the two
(archlab, torch default AdamW, torch fused AdamW, repeat) so that a shared machine's load falls
on all alike, and float32 matmuls are timed after each round (`runtime.peak_flops`, the probe
`launch.train` times at start-up on CPU): their best rate is the peak that MFU is quoted
against. Prints median step times, tokens/s, MFU and the tokens/s ratio; writes
the figures as JSON under benchmarks/results/.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import time

import jax
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.torch_reference_lm import ReferenceLM, check_param_count, make_train_step
from experiments import reference_lm
from launch.benchmark import compile_step
from runtime import assembly, host_memory, peak_flops


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=10, help="timed rounds")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds first")
    parser.add_argument(
        "--threads", type=int, default=len(os.sched_getaffinity(0)), help="torch's threads"
    )
    args = parser.parse_args()
    # The allocator setting launch.train runs with, here for both frameworks of this process.
    host_memory.keep_freed_memory()
    torch.set_num_threads(args.threads)

    config = reference_lm.get_config()
    exp = assembly.build(config)
    compile_seconds, compiled, state, batch = compile_step(exp)
    torch_models = {
        "torch eager": ReferenceLM.from_config(config),
        "torch eager, fused AdamW": ReferenceLM.from_config(config),
    }
    for model in torch_models.values():
        check_param_count(model, config)  # the same model, parameter for parameter
    torch_steps = {
        name: make_train_step(model, config, fused="fused" in name)
        for name, model in torch_models.items()
    }
    host = jax.device_get(batch)
    inputs = torch.from_numpy(host["inputs"].astype("int64"))
    targets = torch.from_numpy(host["targets"].astype("int64"))

    def archlab_step() -> None:
        nonlocal state
        state, metrics = compiled(state, batch, *exp.step_extras)
        jax.block_until_ready((state, metrics))

    steps = {"archlab (JAX/XLA)": archlab_step}
    steps.update(
        {
            name: (lambda s=s: s(inputs, targets, return_loss=True))
            for name, s in torch_steps.items()
        }
    )
    times: dict[str, list[float]] = {name: [] for name in steps}
    peaks = []
    for round_index in range(args.warmup + args.steps):
        for name, step in steps.items():
            seconds = timed(step)
            if round_index >= args.warmup:
                times[name].append(seconds)
        if round_index >= args.warmup:
            peaks.append(peak_flops.matmul_flops_per_second())

    tokens = exp.tokens_per_step
    flops = exp.model_flops_per_step
    peak = max(peaks)  # the best rate seen: the conservative peak on a shared machine
    medians = {name: statistics.median(t) for name, t in times.items()}
    base = medians["archlab (JAX/XLA)"]
    print(
        f"reference LM: {exp.model.describe()['params']:,} parameters, {tokens} tokens/step, "
        f"{flops / 1e9:.0f} GFLOP/step (3 x forward); archlab compile {compile_seconds:.1f} s"
    )
    print(
        f"matmul peak (best of {len(peaks)} rounds' probes): {peak / 1e9:.0f} GFLOP/s "
        f"(median {statistics.median(peaks) / 1e9:.0f}); torch threads {args.threads}"
    )
    for name, median in medians.items():
        print(
            f"  {name:26s} {median * 1e3:8.0f} ms/step  {tokens / median:7.0f} tokens/s  "
            f"MFU {100 * flops / median / peak:5.1f}%  "
            f"archlab/this tokens/s {median / base:5.2f}x"
        )
    result = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "tokens_per_step": tokens,
        "model_flops_per_step": flops,
        "archlab_compile_seconds": compile_seconds,
        "peak_flops_per_second": peak,
        "peak_flops_per_second_samples": peaks,
        "torch_threads": args.threads,
        "step_seconds": times,
        "step_seconds_median": medians,
        "archlab_tokens_per_second_over": {name: m / base for name, m in medians.items()},
        "versions": {"jax": jax.__version__, "torch": torch.__version__},
    }
    out = os.path.join(
        "benchmarks",
        "results",
        f"torch_side_by_side-{datetime.datetime.now(datetime.UTC):%Y%m%d-%H%M%S}.json",
    )
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
    print(f"written: {out}")


if __name__ == "__main__":
    main()
