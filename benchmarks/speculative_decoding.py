"""Speculative decoding against the target alone, side by side in one process.

    XLA_FLAGS="--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1" \
    python benchmarks/speculative_decoding.py --target=runs/big --draft=runs/small \
        [--draft_tokens=2,4,6] [--temperatures=0,1] [--max_new_tokens=128] [--batch_size=1] \
        [--prompts=5] [--repeats=5] [--seed=0]

Restores both runs' newest checkpoints (the draft must share the target's tokens, as for
`launch.generate --draft_workdir`), compiles every decoder once, then times each on the same
prompts (a batch of `--batch_size` samples of one prompt at a time, padded to one width): in each
repeat, every prompt goes through every decoder back to back, so that the decoders are compared
under the same load. Prints, per temperature: the target alone, the draft alone (what its tokens
cost), and speculative decoding at each k, with the draft tokens accepted, the tokens a target
pass yields (the prompt's prefill counted as one), the milliseconds per generated token (the
median, and the best: each prompt's fastest repeat) and the speedup over the target alone (the
median over (repeat, prompt) of the target's time over the decoder's for that same prompt and
repeat, and the ratio of the bests).

On a machine shared with other jobs, the best times are the steadier figures (the co-runners
only ever slow a run down), and one thread (the XLA_FLAGS above) the steadier setting: a
multithreaded step waits for its slowest thread, so under load a decoder's time grows with its
number of steps more than with its work. On a text run the prompts are openings of
documentation text (pydoc_text's kind); otherwise random ids.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np

from generation.codecs import text_codec
from generation.decode import Generator
from generation.sampling import Sampling
from generation.speculative import DraftAndTarget, SpeculativeGenerator, check_same_tokens
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
    model, _ = assembly.model_and_objective(config, spec)
    step, params = assembly.restored_params(config, workdir, "benchmark")
    return config, spec, model, step, params


def prompts(config, vocab_size: int, count: int, seed: int) -> list[list[int]]:
    codec = text_codec(config)
    if codec is None:
        rng = np.random.default_rng(seed)
        return [rng.integers(0, vocab_size, 8).tolist() for _ in range(count)]
    return [codec.encode(text) for text in TEXT_PROMPTS[:count]]


def batch(prompt: list[int], width: int, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """`rows` copies of one prompt, right-padded to `width`: (tokens, lengths)."""
    tokens = np.zeros((rows, width), np.int32)
    tokens[:, : len(prompt)] = prompt
    return tokens, np.full(rows, len(prompt), np.int32)


def timed(run: tuple, tokens: np.ndarray, lengths: np.ndarray, keys: jax.Array) -> tuple:
    """(wall seconds, the generated batch)."""
    generator, params = run
    start = time.perf_counter()
    out = generator(params, tokens, lengths, keys)
    return time.perf_counter() - start, out


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
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    config, spec, target, step, target_params = restored(args.target)
    draft_config, _, draft, draft_step, draft_params = restored(args.draft)
    check_same_tokens(config, draft_config, args.draft)
    prompt_ids = prompts(config, spec.vocab_size, args.prompts, args.seed)
    width = max(len(p) for p in prompt_ids)
    batches = [batch(p, width, args.batch_size) for p in prompt_ids]
    keys = jax.random.split(jax.random.key(args.seed), args.batch_size)
    print(
        f"target {args.target} (step {step}, {target.describe()['params']:,} parameters), "
        f"draft {args.draft} (step {draft_step}, {draft.describe()['params']:,} parameters); "
        f"{len(prompt_ids)} prompts x {args.batch_size} samples, {args.max_new_tokens} new "
        f"tokens each; {jax.devices()[0].platform}, {args.repeats} repeats"
    )
    new = args.max_new_tokens
    for temperature in (float(t) for t in args.temperatures.split(",")):
        sampling = Sampling(temperature)
        runs = {
            "target": (Generator(target, new, sampling), target_params),
            "draft": (Generator(draft, new, sampling), draft_params),
        }
        pair = DraftAndTarget(target_params, draft_params)
        for k in (int(k) for k in args.draft_tokens.split(",")):
            runs[f"k={k}"] = (SpeculativeGenerator(target, draft, new, k, sampling), pair)
        # The first call of each compiles it; its outputs are the ones reported.
        outputs = {name: [timed(run, *b, keys)[1] for b in batches] for name, run in runs.items()}
        times = {name: [] for name in runs}  # seconds per (repeat, prompt)
        for _ in range(args.repeats):
            for b in batches:
                for name, run in runs.items():
                    times[name].append(timed(run, *b, keys)[0])
        tokens = new * args.batch_size  # a batch's: no stop tokens
        print(f"\ntemperature {temperature:g}: {tokens * len(batches)} tokens a repeat")
        print(
            "| decoder | draft tokens accepted | tokens / target pass | ms / token, median | "
            "ms / token, best | speedup, median | speedup, best |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in runs:
            accepted, passes = drafting(outputs[name], outputs["target"], temperature == 0)
            median, best, paired, best_ratio = summary(times[name], times["target"], len(batches))
            print(
                f"| {name} | {accepted} | {passes} | {median / tokens * 1e3:.2f} | "
                f"{best / tokens * 1e3:.2f} | {paired:.2f}x | {best_ratio:.2f}x |"
            )


def summary(spent: list[float], alone: list[float], prompts: int) -> tuple[float, ...]:
    """A decoder's seconds per (repeat, prompt) in that order, and the target's -> (the median
    seconds of a batch, the best (each prompt's fastest repeat, averaged over the prompts), the
    median over (repeat, prompt) of the target's time over the decoder's, and the ratio of the
    bests)."""

    def best(times: list[float]) -> float:
        return statistics.mean(min(times[i::prompts]) for i in range(prompts))

    ratios = [a / s for a, s in zip(alone, spent, strict=True)]
    return (
        statistics.median(spent),
        best(spent),
        statistics.median(ratios),
        best(alone) / best(spent),
    )


def drafting(out: list, alone: list, greedy: bool) -> tuple[str, str]:
    """(the share of draft tokens accepted, the tokens a target pass yields) over the generated
    batches `out`, as printed; a greedy output that is not the target's own is flagged
    (speculative decoding is lossless)."""
    drafted = [g.speculation for g in out if g.speculation is not None]
    if not drafted:
        return "-", "-"
    accepted, proposed, passes = (
        sum(int(getattr(d, key).sum()) for d in drafted)
        for key in ("accepted", "proposed", "passes")
    )
    passes += sum(len(d.passes) for d in drafted)  # each row's prompt prefill
    made = sum(int(g.counts.sum()) for g in out)
    rate = f"{accepted / proposed:.1%}"
    if greedy and any((g.tokens != a.tokens).any() for g, a in zip(out, alone, strict=True)):
        rate += " (NOT THE TARGET'S TOKENS)"
    return rate, f"{made / passes:.2f}"


if __name__ == "__main__":
    main()
