"""How fast sequence models decode, measured side by side: the work of `launch.benchmark
--decode`.

For each mixer (one model per mixer, the rest of the config shared, random-initialised: timing
needs no training) and each batch x context cell that fits, on a prompt of `context` random
tokens per row:
- prefill latency: `Generator.prefill`, one parallel pass that fills a cache of context +
  new_tokens - 1 positions;
- time per token with the cache: `Generator.decode`'s jitted loop (greedy), its time over its
  new_tokens - 1 model steps, so the cache is of the context's size throughout; tokens/s is the
  batch over it;
- the same generation by recomputing the whole prefix for every token
  (generation/recompute.py), at the batches `recompute_batches` names, for its first
  `recompute_tokens` tokens (every one costs a forward pass over the same padded prefix, so how
  many does not change its time per token, only the run's length; the prefix of context +
  recompute_tokens - 1 positions is if anything shorter than the cache, in the recompute's
  favour): its time over those passes.
  Both must choose the same tokens, and the result says whether they did (`same_tokens`);
- decoding-state bytes per sequence: the cache pytree's bytes over the batch.

Everything is compiled first (one untimed call of each program per cell), then timed in rounds:
each round times every (mixer, cell) once (a prefill, DECODES_PER_ROUND decodings from copies of
its cache, a recompute), in a fresh random order, so load from other work on the machine falls
on every figure alike. Every call is timed on two clocks: wall-clock time, what a user waits for,
and this process's CPU time (every thread's), which waiting for a core on a busy machine does not
inflate. Each figure keeps the median and the minimum over its samples; ratios and the targets
read the wall clock's minimum and the CPU time's median (HEADLINE).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

import models
from generation.decode import Generator, generates
from generation.recompute import recompute_generate
from generation.sampling import Sampling
from runtime import assembly
from runtime.config import apply_overrides
from runtime.errors import UsageError

GREEDY = Sampling(temperature=0.0)
CLOCKS = ("wall", "cpu")
# The figure each clock is read by. The quickest wall-clock run is the one other work on the
# machine disturbed least (timeit's advice); CPU time does not count waiting for a core, so its
# median is the typical cost.
HEADLINE = {"wall": "min", "cpu": "median"}
DECODES_PER_ROUND = 3  # decoding is the shortest call, the one a busy machine jars most
FLAT_WITHIN = 0.2  # the bar: time per token within 20% from the shortest to the longest
CACHE_SPEEDUP = 10.0  # the bar: cached decoding >= 10x the recompute, attention at 512
SPEEDUP_CONTEXT = 512


@dataclasses.dataclass(frozen=True)
class Settings:
    """What to measure; `check` says what is wrong with it in one line."""

    batches: tuple[int, ...]
    contexts: tuple[int, ...]
    new_tokens: int
    repeats: int
    recompute_batches: tuple[int, ...]
    recompute_tokens: int  # the recompute's tokens: its time per token does not depend on them
    max_batch_tokens: int  # a cell of batch x context above it is skipped

    def check(self) -> None:
        for name in ("batches", "contexts"):
            values = getattr(self, name)
            if not values or min(values) < 1:
                raise UsageError(f"--{name} must be positive integers, got {list(values)}")
        if self.new_tokens < 2:
            raise UsageError(
                f"--new_tokens must be >= 2 (one prefill, then steps), got {self.new_tokens}"
            )
        if self.repeats < 1:
            raise UsageError(f"--repeats must be >= 1, got {self.repeats}")
        if not 1 <= self.recompute_tokens <= self.new_tokens:
            raise UsageError(
                f"--recompute_tokens must be in [1, --new_tokens={self.new_tokens}], got "
                f"{self.recompute_tokens}"
            )
        extra = sorted(set(self.recompute_batches) - set(self.batches))
        if extra:
            raise UsageError(
                f"--recompute_batches {extra} are not among --batches {list(self.batches)}"
            )
        if not self.cells():
            raise UsageError(
                f"no batch x context cell fits --max_batch_tokens={self.max_batch_tokens}"
            )

    def positions(self, context: int) -> int:
        """Cache positions for a prompt of `context`: it and every token fed back after it."""
        return context + self.new_tokens - 1

    def fits(self, batch: int, context: int) -> bool:
        return batch * context <= self.max_batch_tokens

    def cells(self) -> list[tuple[int, int]]:
        return [(b, c) for b in self.batches for c in self.contexts if self.fits(b, c)]

    def skipped(self) -> list[dict[str, int]]:
        return [
            {"batch": b, "context": c}
            for b in self.batches
            for c in self.contexts
            if not self.fits(b, c)
        ]


def _typed(current: Any, value: str, where: str) -> Any:
    """`value` as the type of the config value it replaces."""
    try:
        if isinstance(current, bool):
            if value.lower() not in ("true", "false"):
                raise ValueError(value)
            return value.lower() == "true"
        return type(current)(value)
    except ValueError:
        raise UsageError(f"{where}: {value!r} cannot be read as {type(current).__name__}") from None


def mixer_variants(config: ml_collections.ConfigDict, entries: Sequence[str]) -> dict[str, dict]:
    """Each entry of --mixers ('mamba', or 'attention:window=128' with options of the mixer's
    config section after colons) -> its config overrides, by the entry as its label."""
    variants = {}
    for entry in entries:
        name, *options = entry.split(":")
        section = models.MIXERS.get(name).SECTION
        overrides: dict[str, Any] = {"model.mixer": name, "model.layer_pattern": ""}
        for option in options:
            key, sep, value = option.partition("=")
            where = f"--mixers entry {entry!r}"
            if not sep or key not in config.model[section]:
                valid = ", ".join(sorted(config.model[section].keys()))
                raise UsageError(
                    f"{where}: expected <option>=<value> with an option of "
                    f"model.{section} ({valid}), got {option!r}"
                )
            overrides[f"model.{section}.{key}"] = _typed(config.model[section][key], value, where)
        if entry in variants:
            raise UsageError(f"--mixers names {entry!r} twice")
        variants[entry] = overrides
    return variants


@dataclasses.dataclass(frozen=True)
class Contender:
    """One mixer's model, random-initialised, and its generator."""

    label: str
    overrides: dict
    generator: Generator
    params: Any
    num_params: int


def build_contender(
    config: ml_collections.ConfigDict, label: str, overrides: dict, settings: Settings
) -> Contender:
    """The config's model with the variant's overrides, built for the longest context (so a
    mixer laid out over its length, Hyena, takes every cell), at the config's seed."""
    config = copy.deepcopy(config)
    apply_overrides(config, overrides, f"--mixers entry {label!r}")
    seq_len = settings.positions(max(settings.contexts))
    spec = dataclasses.replace(assembly.data_shapes(config), seq_len=seq_len)
    model, _ = assembly.model_and_objective(config, spec)
    if not generates(model):
        raise UsageError(
            f"model.name={config.model.name!r} does not decode: use a sequence model "
            "(model.name=lm)"
        )
    init = jax.jit(lambda key: model.init(key, model.example_inputs(1), train=False)["params"])
    params = nn.unbox(init(jax.random.key(config.seed)))
    generator = Generator(model, settings.new_tokens, GREEDY)
    return Contender(label, overrides, generator, params, models.count_params(params))


Sample = tuple[float, float]  # (wall-clock seconds, CPU seconds of this process)


def clocks() -> Sample:
    return time.perf_counter(), time.process_time()


def since(start: Sample) -> Sample:
    now = clocks()
    return now[0] - start[0], now[1] - start[1]


def spread(samples: list[Sample], per: int) -> dict[str, dict[str, Any]]:
    """{clock: {"median", "min", "samples"}} of samples, each divided by `per` (tokens)."""
    by_clock = ([x / per for x in xs] for xs in zip(*samples, strict=True))
    return {
        clock: {"median": statistics.median(xs), "min": min(xs), "samples": xs}
        for clock, xs in zip(CLOCKS, by_clock, strict=True)
    }


def headline(figure: dict[str, dict[str, float]], clock: str) -> float:
    return figure[clock][HEADLINE[clock]]


@dataclasses.dataclass
class Cell:
    """One (mixer, batch, context): its inputs and the samples each timed call took."""

    contender: Contender
    batch: int
    context: int
    prompts: np.ndarray
    recompute_tokens: int  # 0: no recompute here
    state_bytes_per_sequence: int = 0
    same_tokens: bool | None = None
    first_call_seconds: float = 0.0  # every program's compilation and first run
    prefill: list[Sample] = dataclasses.field(default_factory=list)
    decode: list[Sample] = dataclasses.field(default_factory=list)
    recomputed: list[Sample] = dataclasses.field(default_factory=list)

    def __post_init__(self) -> None:
        self.keys = jax.random.split(jax.random.key(0), self.batch)  # unused when greedy
        self.lengths = np.full(self.batch, self.context, np.int32)

    def _recompute(self) -> np.ndarray:
        c = self.contender
        return np.asarray(
            recompute_generate(
                c.generator.model, GREEDY, self.recompute_tokens, c.params, self.prompts, self.keys
            )
        )

    def compile(self) -> None:
        """Runs every program once (compiling it), records the state size and whether the
        cached and the recomputed generation chose the same tokens."""
        c, start = self.contender, time.perf_counter()
        logits, cache = c.generator.prefill(c.params, self.prompts, self.lengths)
        self.state_bytes_per_sequence = sum(x.nbytes for x in jax.tree.leaves(cache)) // self.batch
        generated = c.generator.decode(c.params, cache, logits, self.lengths, self.keys)
        if self.recompute_tokens:
            tokens = self._recompute()
            self.same_tokens = bool(np.array_equal(tokens, generated.tokens[:, : tokens.shape[1]]))
        self.first_call_seconds = time.perf_counter() - start

    def time_once(self) -> None:
        """One round: a prefill, DECODES_PER_ROUND decodings from copies of its cache (decoding
        donates the cache it is given), a recompute."""
        c, start = self.contender, clocks()
        logits, cache = c.generator.prefill(c.params, self.prompts, self.lengths)
        jax.block_until_ready((logits, cache))
        self.prefill.append(since(start))
        copies = [jax.tree.map(jnp.copy, cache) for _ in range(DECODES_PER_ROUND - 1)]
        for fresh in jax.block_until_ready(copies) + [cache]:
            start = clocks()
            c.generator.decode(c.params, fresh, logits, self.lengths, self.keys)  # host arrays
            self.decode.append(since(start))
        if self.recompute_tokens:
            start = clocks()
            self._recompute()
            self.recomputed.append(since(start))

    def row(self, new_tokens: int) -> dict[str, Any]:
        per_token = spread(self.decode, new_tokens - 1)
        row: dict[str, Any] = {
            "mixer": self.contender.label,
            "batch": self.batch,
            "context": self.context,
            "state_bytes_per_sequence": self.state_bytes_per_sequence,
            "first_call_seconds": self.first_call_seconds,
            "prefill_seconds": spread(self.prefill, 1),
            "seconds_per_token": per_token,
            "tokens_per_second": {k: self.batch / headline(per_token, k) for k in CLOCKS},
            "recompute": None,
            "speedup": None,
        }
        if self.recompute_tokens:
            again = spread(self.recomputed, self.recompute_tokens)
            row["recompute"] = {
                "seconds_per_token": again,
                "tokens_per_second": {k: self.batch / headline(again, k) for k in CLOCKS},
                "same_tokens": self.same_tokens,
            }
            row["speedup"] = {k: headline(again, k) / headline(per_token, k) for k in CLOCKS}
        return row


def measure(
    config: ml_collections.ConfigDict,
    mixers: dict[str, dict],
    settings: Settings,
    log: Callable[[str], None] = lambda line: None,
) -> dict[str, Any]:
    """Every mixer x cell, compiled, then timed in `settings.repeats` interleaved rounds."""
    loads = [os.getloadavg()]
    vocab = assembly.data_shapes(config).vocab_size
    rng = np.random.default_rng(config.seed)
    prompts = {(b, c): rng.integers(0, vocab, (b, c), dtype=np.int32) for b, c in settings.cells()}
    cells = []
    for label, overrides in mixers.items():
        contender = build_contender(config, label, overrides, settings)
        for (batch, context), tokens in prompts.items():
            again = settings.recompute_tokens if batch in settings.recompute_batches else 0
            cell = Cell(contender, batch, context, tokens, again)
            log(f"compiling {label} batch {batch} context {context}")
            cell.compile()
            cells.append(cell)
    loads.append(os.getloadavg())
    for round_ in range(settings.repeats):
        log(f"timing round {round_ + 1}/{settings.repeats}")
        for i in np.random.default_rng(round_).permutation(len(cells)):
            cells[i].time_once()
        loads.append(os.getloadavg())
    rows = [cell.row(settings.new_tokens) for cell in cells]
    contenders = {cell.contender.label: cell.contender for cell in cells}
    return {
        "headline": HEADLINE,
        "rows": rows,
        "mixers": {
            label: mixer_summary(c, [r for r in rows if r["mixer"] == label])
            for label, c in contenders.items()
        },
        "load_average": {
            "samples": [list(load) for load in loads],
            "note": "os.getloadavg() (1, 5, 15 min) at the start, after compiling, after each "
            "round",
        },
    }


def mixer_summary(contender: Contender, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A mixer's parameters, state bytes per context, and per clock its time per token at the
    longest context over the shortest, per batch (1.0 is flat; `growth_contexts` says which two
    contexts, since a batch may skip the longest)."""
    state = {r["context"]: r["state_bytes_per_sequence"] for r in rows}
    growth: dict[str, dict[int, float]] = {clock: {} for clock in CLOCKS}
    spans = {}
    for batch in sorted({r["batch"] for r in rows}):
        mine = {r["context"]: r["seconds_per_token"] for r in rows if r["batch"] == batch}
        if len(mine) > 1:
            spans[batch] = [min(mine), max(mine)]
            for clock in CLOCKS:
                longest, shortest = mine[max(mine)], mine[min(mine)]
                growth[clock][batch] = headline(longest, clock) / headline(shortest, clock)
    return {
        "overrides": contender.overrides,
        "num_params": contender.num_params,
        "state_bytes_per_sequence": state,
        "fixed_size_state": len(set(state.values())) == 1 and len(state) > 1,
        "time_per_token_growth": growth,
        "growth_contexts": spans,
    }


def _verdicts(figures: dict[str, dict], test: Callable[[float], bool]) -> dict[str, Any]:
    return {c: all(map(test, xs.values())) if xs else None for c, xs in figures.items()}


def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets against the figures, on each clock: each {"target", "holds":
    {clock: bool, or None where not measured}, "figures": {clock: {batch: the ratio}}}."""
    out = []
    speedups = {
        clock: {
            r["batch"]: r["speedup"][clock]
            for r in result["rows"]
            if r["mixer"] == "attention" and r["context"] == SPEEDUP_CONTEXT and r["speedup"]
        }
        for clock in CLOCKS
    }
    out.append(
        {
            "target": f"attention: cached decoding >= {CACHE_SPEEDUP:g}x the recompute at "
            f"context {SPEEDUP_CONTEXT}",
            "holds": _verdicts(speedups, lambda s: s >= CACHE_SPEEDUP),
            "figures": speedups,
        }
    )
    for label, summary in result["mixers"].items():
        growth = summary["time_per_token_growth"]
        span = "from each batch's shortest context to its longest"
        if summary["fixed_size_state"]:
            holds = _verdicts(growth, lambda g: abs(g - 1) <= FLAT_WITHIN)
            target = f"{label} (fixed-size state): time per token flat within {FLAT_WITHIN:.0%} "
        elif label == "attention":
            holds = _verdicts(growth, lambda g: g > 1 + FLAT_WITHIN)
            target = f"attention: time per token grows by more than {FLAT_WITHIN:.0%} "
        else:
            continue
        out.append(
            {
                "target": target + span,
                "holds": holds,
                "figures": growth,
                "contexts": summary["growth_contexts"],
            }
        )
    return out
