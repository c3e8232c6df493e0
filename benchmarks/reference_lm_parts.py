"""What parts of the reference LM's train step cost: the step with one part taken out, side by side.

    python benchmarks/reference_lm_parts.py [--rounds=6] [--variants=full,no_rope,...]

Each variant is `experiments/reference_lm.py`'s jitted train step (the one `launch.train` runs)
built with one function of the model replaced, compiled in this process; the steps of every
variant then take turns, so that a shared machine's load falls on all alike. Prints each
variant's median step time and its ratio to the full step. A part's cost is the full step's time
minus its variant's; the variants compute other numbers (they exist to be timed, never trained).
Figures and what they showed: experiments/reference_lm.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable

import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from experiments import reference_lm
from launch.benchmark import compile_step
from models import attention, blocks
from runtime import assembly, host_memory


def without_attention_core(q, k, v, q_positions, k_positions, window):
    """Keeps the projections and RoPE, drops the scores, softmax and value mixing."""
    return q + k + v


def without_rope(x, positions, base=10_000.0):
    return x


def xla_dot_product_attention(q, k, v, q_positions, k_positions, window):
    return jax.nn.dot_product_attention(q, k, v, is_causal=True, implementation="xla")


# name -> (attention.attend, blocks.apply_rope) the model is built with
VARIANTS: dict[str, tuple[Callable, Callable]] = {
    "full": (attention.attend, blocks.apply_rope),
    "no_attention_core": (without_attention_core, blocks.apply_rope),
    "no_rope": (attention.attend, without_rope),
    "jax_dot_product_attention": (xla_dot_product_attention, blocks.apply_rope),
}


def build(name: str) -> list:
    """[compiled step, state, batch, experiment] of the reference LM built as `name` says."""
    attention.attend, blocks.apply_rope = VARIANTS[name]
    try:
        exp = assembly.build(reference_lm.get_config())
        _, compiled, state, batch = compile_step(exp)
    finally:
        attention.attend, blocks.apply_rope = VARIANTS["full"]
    return [compiled, state, batch, exp]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="timed rounds (one untimed first)")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    names = args.variants.split(",")
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown or names[0] != "full":
        parser.error(f"--variants must start with full and name only: {', '.join(VARIANTS)}")
    host_memory.keep_freed_memory()  # as launch.train runs
    steps = {name: build(name) for name in names}
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(args.rounds + 1):
        for name, built in steps.items():
            compiled, state, batch, exp = built
            start = time.perf_counter()
            state, metrics = compiled(state, batch, *exp.step_extras)
            jax.block_until_ready((state, metrics))
            if round_index:
                times[name].append(time.perf_counter() - start)
            built[1] = state
    full = statistics.median(times["full"])
    for name in names:
        median = statistics.median(times[name])
        print(f"{name:26s} {median * 1e3:7.0f} ms/step  {median / full:5.3f}x of full")


if __name__ == "__main__":
    main()
