"""Speculative decoding against the target alone, side by side in one process.

    python benchmarks/speculative_decoding.py --target=runs/big --draft=runs/small \
        [--draft_tokens=2,4,6] [--temperatures=0,1] [--max_new_tokens=128] [--batch_size=1] \
        [--prompts=5] [--repeats=3] [--seed=0]

Restores both runs' newest checkpoints (the draft must share the target's tokens, as for
`launch.generate --draft_workdir`), compiles every decoder once, then times each on the same
prompts, the decoders interleaved within each repeat so that a machine's load falls on all of
them alike. Prints, per temperature: the target alone, the draft alone (what one draft token
costs), and speculative decoding at each k, with the draft tokens accepted, the tokens a target
pass yields, and the median milliseconds per generated token, wall and CPU (the process's, all
threads), each with its speedup over the target alone. On a machine shared with other jobs the
CPU time is the steadier figure: a multithreaded step waits for its slowest thread, and wall
time then grows with the load more for some decoders than for others.
On a text run the prompts are the first `--prompts` of a few openings of documentation text
(pydoc_text's kind); otherwise random ids.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from generation.batches import generate_all
from generation.codecs import text_codec
from generation.decode import Generator
from generation.sampling import Sampling
from generation.speculative import DraftAndTarget, SpeculativeGenerator
from launch.generate import check_same_tokens, sequence_model
from runtime import assembly, host_memory
from runtime.workdir import run_config

# Openings of the kind pydoc's text has.
TEXT_PROMPTS = (
    "Return a new ",
    "This module provides ",
    "If the argument is ",
    "The default value of ",
    "Raises ValueError if ",
    "class ",
    "Help on function ",
)


def restored(workdir: str) -> tuple:
    config = run_config(workdir)
    spec = assembly.data_shapes(config)
    model = sequence_model(config, spec, workdir)
    step, params = assembly.restored_params(config, workdir, "benchmark")
    return config, spec, model, step, params


def prompts(config, vocab_size: int, count: int, seed: int) -> list[list[int]]:
    codec = text_codec(config)
    if codec is None:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, vocab_size, 8).tolist() for _ in range(count)]
    return [codec.encode(text) for text in TEXT_PROMPTS[:count]]


def timed(generator, params, prompt_ids, batch_size: int, seed: int) -> tuple[tuple, list]:
    """((wall seconds, CPU seconds of the whole process), the continuations)."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = generate_all(
        generator, params, prompt_ids, num_samples=batch_size, batch_size=batch_size, seed=seed
    )
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def main() -> None:
    host_memory.keep_freed_memory()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", required=True)
    parser.add_argument("--draft", required=True)
    parser.add_argument("--draft_tokens", default="2,4,6")
    parser.add_argument("--temperatures", default="0,1")
    parser.add_argument("--max_new_tokens", type=int, default=128)
    parser.add_argument("--batch_size", type=int, default=1, help="samples of each prompt at once")
    parser.add_argument("--prompts", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config, spec, target, step, target_params = restored(args.target)
    draft_config, _, draft, draft_step, draft_params = restored(args.draft)
    check_same_tokens(config, draft_config, args.draft)
    prompt_ids = prompts(config, spec.vocab_size, args.prompts, args.seed)
    print(
        f"target {args.target} (step {step}, {target.describe()['params']:,} parameters), "
        f"draft {args.draft} (step {draft_step}, {draft.describe()['params']:,} parameters); "
        f"{len(prompt_ids)} prompts x {args.batch_size} samples, {args.max_new_tokens} new "
        f"tokens each; {jax.devices()[0].platform}, median of {args.repeats}"
    )
    for temperature in (float(t) for t in args.temperatures.split(",")):
        sampling = Sampling(temperature)
        new = args.max_new_tokens
        runs = {
            "target": (Generator(target, new, sampling), target_params),
            "draft": (Generator(draft, new, sampling), draft_params),
        }
        pair = DraftAndTarget(target_params, draft_params)
        for k in (int(k) for k in args.draft_tokens.split(",")):
            runs[f"k={k}"] = (SpeculativeGenerator(target, draft, new, k, sampling), pair)
        # The first call of each compiles it; its output is the one reported.
        outputs = {
            name: timed(*run, prompt_ids, args.batch_size, args.seed)[1]
            for name, run in runs.items()
        }
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(timed(*run, prompt_ids, args.batch_size, args.seed)[0])
        tokens = sum(len(c.tokens) for c in outputs["target"])
        # Median milliseconds per token: (wall, CPU) per decoder.
        ms = {
            name: tuple(statistics.median(t[i] for t in spent) / tokens * 1e3 for i in (0, 1))
            for name, spent in times.items()
        }
        print(f"\ntemperature {temperature:g}: {tokens} tokens a repeat")
        print(
            "| decoder | draft tokens accepted | tokens / target pass | wall ms / token | "
            "speedup | CPU ms / token | CPU speedup |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        (target_wall, target_cpu) = ms["target"]
        for name, (wall, cpu) in ms.items():
            accepted, passes = drafting(outputs[name], outputs["target"], temperature == 0)
            print(
                f"| {name} | {accepted} | {passes} | {wall:.2f} | {target_wall / wall:.2f}x | "
                f"{cpu:.2f} | {target_cpu / cpu:.2f}x |"
            )


def drafting(out: list, alone: list, greedy: bool) -> tuple[str, str]:
    """(the share of draft tokens accepted, the tokens a target pass yields), as printed; a
    greedy output that is not the target's own is flagged (speculative decoding is lossless)."""
    drafted = [c.draft for c in out if c.draft is not None]
    if not drafted:
        return "-", "-"
    accepted, proposed = (sum(d[key] for d in drafted) for key in ("accepted", "proposed"))
    passes = sum(d["target_passes"] + 1 for d in drafted)  # + the prompt's prefill
    rate = f"{accepted / proposed:.1%}"
    if greedy and [c.tokens for c in out] != [c.tokens for c in alone]:
        rate += " (NOT THE TARGET'S TOKENS)"
    return rate, f"{sum(len(c.tokens) for c in out) / passes:.2f}"


if __name__ == "__main__":
    main()
