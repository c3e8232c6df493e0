"""The evaluation suites: calibration, robustness, slices and group gaps of a trained model, and
(asked for by name: it is not among the default `eval.suites`) generation: what a sequence model
says and what decoding costs.

Each suite is a function of a `SuiteContext` (the experiment, its trained parameters and the
predictions on the evaluation split) that returns its results as JSON-ready dicts and writes its
plots into the eval directory. Results always carry `headline` (a few numbers a study report
shows per arm) and, for what a suite could not do, `not_applicable` with the reason, never a
silent gap.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

import data
from analysis import calibration, figures, slices
from atomic_write import write_atomically
from data import corruptions
from data.tokenizer import TextTokenizer
from evaluation.predictions import Items, Predictor, Predictors
from generation.decode import Generator, generates
from generation.sampling import Sampling
from registry import Registry
from runtime.assembly import Experiment

Result = dict[str, Any]
SUITES: Registry[Callable[[SuiteContext], Result]] = Registry("evaluation suite")
CORRUPTION_SEED = 0  # the corruption draws are part of the benchmark, not of the run's seed
# Evaluation variants of a dataset only need its evaluation split: the smallest train split.
_VARIANT_TRAIN_EXAMPLES = 1


@dataclasses.dataclass
class SuiteContext:
    exp: Experiment
    params: Any
    items: Items  # predictions on the evaluation split, uncorrupted
    out_dir: str  # <run>/eval
    predictors: Predictors  # the model's compiled forward passes, shared by the suites

    @property
    def predictor(self) -> Predictor:
        """The forward pass at the model's own length."""
        return self.predictors.at_length()

    def write_png(self, name: str, png: bytes) -> str:
        write_atomically(os.path.join(self.out_dir, name), png)
        return name

    def variant(self, **overrides: Any) -> data.Dataset:
        """The run's dataset with some parameters changed (prepared on first use); its train
        split is cut to the minimum, since only its evaluation split is read."""
        config = self.exp.config
        params = config.data[config.data.name].to_dict()
        if "train_examples" in params:
            params["train_examples"] = _VARIANT_TRAIN_EXAMPLES
        return data.load(config.data.name, {**params, **overrides}, config.data.dir or None)


def accuracy_and_nll(items: Items) -> dict[str, float]:
    nll = slices.item_nll(items.logits, items.labels)
    return {"accuracy": float(np.mean(items.correct)), "nll": float(np.mean(nll))}


# ---------------------------------------------------------------------------------- calibration
@SUITES.register("calibration")
def calibration_suite(ctx: SuiteContext) -> Result:
    """Temperature fitted on the first half of the evaluation examples (our tasks have no
    separate validation split), every metric reported on the second half, before and after."""
    items = ctx.items
    examples = np.unique(items.example)
    fit_half = np.isin(items.example, examples[: len(examples) // 2])
    if fit_half.all() or not fit_half.any():
        return {"headline": {}, "not_applicable": "fewer than 2 evaluation examples"}
    fit, test = items.subset(fit_half), items.subset(~fit_half)
    temperature = calibration.fit_temperature(fit.logits, fit.labels)
    report = calibration.calibration_report(
        test.logits,
        test.labels,
        num_bins=ctx.exp.config.eval.calibration_bins,
        temperature=temperature,
    )
    after = report["after_temperature"]
    png = calibration.reliability_diagram_png(
        report["bins"]["equal_width"],
        after["bins"]["equal_width"],
        f"reliability (T = {temperature:.3g} fitted on the other half)",
    )
    return {
        "headline": {
            "ece": report["ece_equal_width"],
            "ece_after_temperature": after["ece_equal_width"],
            "brier": report["brier"],
            "temperature": temperature,
        },
        "fitted_on": f"evaluation examples [0, {len(examples) // 2}) ({len(fit)} items)",
        "reported_on": f"evaluation examples [{len(examples) // 2}, {len(examples)}) "
        f"({len(test)} items)",
        "metrics": report,
        "plots": [ctx.write_png("reliability.png", png)],
    }


# ----------------------------------------------------------------------------------- robustness
@SUITES.register("robustness")
def robustness_suite(ctx: SuiteContext) -> Result:
    if ctx.exp.dataset.spec.kind == "image":
        return _image_robustness(ctx)
    return _sequence_robustness(ctx)


def _curve_point(x: float, items: Items) -> dict[str, float]:
    return {"x": x, "items": len(items), **accuracy_and_nll(items)}


def _sequence_robustness(ctx: SuiteContext) -> Result:
    config, spec = ctx.exp.config, ctx.exp.dataset.spec
    clean = _curve_point(0.0, ctx.items)

    def substitute(rate: float) -> Callable[[np.ndarray, int], np.ndarray]:
        def transform(tokens: np.ndarray, batch_index: int) -> np.ndarray:
            rng = np.random.default_rng([CORRUPTION_SEED, batch_index, int(rate * 1e6)])
            return corruptions.substitute_tokens(tokens, rate, spec.vocab_size, rng)

        return transform

    corruption = [clean] + [
        _curve_point(rate, ctx.predictor.run(ctx.params, ctx.exp.dataset, substitute(rate)))
        for rate in config.eval.corruption_rates
    ]
    curves = {"token_substitution": corruption}
    result: Result = {"curves": curves, "not_applicable": {}}
    headline = {f"accuracy@substitute_{r['x']:g}": r["accuracy"] for r in corruption[1:]}

    length, reason = _length_curve(ctx, clean)
    curves["length"] = length
    if reason:
        result["not_applicable"]["length"] = reason
    headline.update({f"accuracy@length_{r['x']:g}x": r["accuracy"] for r in length[1:]})
    result["headline"] = headline
    result["plots"] = [
        ctx.write_png(
            "robustness.png",
            figures.curves_png(
                {
                    "token substitution rate": corruption,
                    f"length (x {spec.seq_len} trained)": length,
                }
            ),
        )
    ]
    return result


def _length_curve(ctx: SuiteContext, clean: dict[str, float]) -> tuple[list, str | None]:
    """Accuracy at multiples of the training length, or why that is not applicable."""
    config, spec, model = ctx.exp.config, ctx.exp.dataset.spec, ctx.exp.model
    start = [{**clean, "x": 1.0}]
    if "seq_len" not in config.data[config.data.name]:
        return start, f"dataset {spec.name!r} has no seq_len parameter"
    reason = model.fixed_length_reason() if hasattr(model, "fixed_length_reason") else None
    if reason:
        return start, f"the model is defined only up to its training length: {reason}"
    points, failures = start, []
    for factor in config.eval.length_factors:
        try:
            dataset = ctx.variant(seq_len=spec.seq_len * factor)
        except data.DataConfigError as e:
            failures.append(f"{factor}x: {e}")
            continue
        longer = ctx.predictors.at_length(spec.seq_len * factor)
        points.append(_curve_point(float(factor), longer.run(ctx.params, dataset)))
    return points, "; ".join(failures) or None


def _image_robustness(ctx: SuiteContext) -> Result:
    config = ctx.exp.config
    clean = _curve_point(0.0, ctx.items)

    def noisy(stddev: float) -> Callable[[np.ndarray, int], np.ndarray]:
        def transform(images: np.ndarray, batch_index: int) -> np.ndarray:
            rng = np.random.default_rng([CORRUPTION_SEED, batch_index, int(stddev * 1e6)])
            return corruptions.gaussian_noise(images, stddev, rng)

        return transform

    def shifted(pixels: int) -> Callable[[np.ndarray, int], np.ndarray]:
        return lambda images, _: corruptions.shift(images, pixels)

    run = functools.partial(ctx.predictor.run, ctx.params, ctx.exp.dataset)
    noise = [clean] + [_curve_point(s, run(noisy(s))) for s in config.eval.noise_stddevs]
    shift = [clean] + [_curve_point(float(p), run(shifted(p))) for p in config.eval.shifts]
    curves = {"gaussian_noise": noise, "shift": shift}
    headline = {f"accuracy@noise_{r['x']:g}": r["accuracy"] for r in noise[1:]}
    headline.update({f"accuracy@shift_{r['x']:g}px": r["accuracy"] for r in shift[1:]})
    png = figures.curves_png(
        {"Gaussian noise stddev": noise, "shift (pixels right and down)": shift}
    )
    return {
        "headline": headline,
        "curves": curves,
        "not_applicable": {"length": "images have no sequence length"},
        "plots": [ctx.write_png("robustness.png", png)],
    }


# --------------------------------------------------------------------------------------- slices
@SUITES.register("slices")
def slices_suite(ctx: SuiteContext) -> Result:
    """Accuracy per value of each item attribute (groups have their own suite), per evaluation
    variant the task defines (e.g. MQAR's number of pairs), the worst slice of each, and the
    hardest items written out readably to hardest.md."""
    items = ctx.items
    nll = slices.item_nll(items.logits, items.labels)
    tables = {
        name: slices.slice_table(values, items.correct, nll)
        for name, values in items.attributes.items()
        if name != "group"
    }
    for name, variants in ctx.exp.dataset.builder.slice_variants().items():
        rows = []
        for label, overrides in variants.items():
            variant = ctx.predictor.run(ctx.params, ctx.variant(**overrides))
            rows.append(
                slices.slice_row(
                    label, variant.correct, slices.item_nll(variant.logits, variant.labels)
                )
            )
        tables[name] = rows
    worst = {name: slices.worst_slice(rows) for name, rows in tables.items()}
    hardest = _hardest_examples(ctx, nll)
    write_atomically(os.path.join(ctx.out_dir, "hardest.md"), hardest)
    headline = {
        f"worst_accuracy/{name}": row["accuracy"] for name, row in worst.items() if row is not None
    }
    return {
        "headline": headline,
        "tables": tables,
        "worst": worst,
        "min_slice_items": slices.MIN_SLICE_ITEMS,
        "hardest": "hardest.md",
        **({} if tables else {"not_applicable": "the task defines no slice attributes"}),
    }


def _hardest_examples(ctx: SuiteContext, nll: np.ndarray) -> str:
    items, spec = ctx.items, ctx.exp.dataset.spec
    chosen = slices.hardest(nll, ctx.exp.config.eval.hardest_examples)
    source = ctx.exp.dataset.source(spec.eval_split)
    predicted = np.argmax(items.logits, axis=1)
    lines = [f"# The {len(chosen)} hardest evaluation items (highest NLL)", ""]
    for rank, i in enumerate(chosen, start=1):
        example = source[int(items.example[i])]
        if spec.kind == "image":
            text = slices.render_image(
                np.asarray(example["image"]), int(items.labels[i]), int(predicted[i])
            )
        else:
            text = slices.render_sequence(
                np.asarray(example["inputs"]),
                int(items.position[i]),
                int(items.labels[i]),
                int(predicted[i]),
            )
        attributes = ", ".join(f"{k} {v[i]}" for k, v in items.attributes.items())
        lines += [
            f"## {rank}. example {items.example[i]}: NLL {nll[i]:.3f}"
            + (f" ({attributes})" if attributes else ""),
            "",
            "```",
            text,
            "```",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------- group gaps
@SUITES.register("groups")
def groups_suite(ctx: SuiteContext) -> Result:
    """Accuracy and calibration per group of the `group` attribute, and the gaps between the
    best and the worst group."""
    items = ctx.items
    if "group" not in items.attributes:
        return {
            "headline": {},
            "not_applicable": f"dataset {ctx.exp.dataset.spec.name!r} carries no group attribute",
        }
    groups = items.attributes["group"]
    rows = []
    for group in sorted(set(groups)):
        chosen = items.subset(groups == group)
        metrics = calibration.calibration_report(
            chosen.logits, chosen.labels, num_bins=ctx.exp.config.eval.calibration_bins
        )
        rows.append(
            {
                "group": group,
                "items": len(chosen),
                "accuracy": metrics["accuracy"],
                "accuracy_ci": list(slices.wilson_interval(int(chosen.correct.sum()), len(chosen))),
                "ece": metrics["ece_equal_width"],
                "nll": metrics["nll"],
                "brier": metrics["brier"],
            }
        )
    accuracies = [r["accuracy"] for r in rows]
    eces = [r["ece"] for r in rows]
    worst = min(rows, key=lambda r: r["accuracy"])
    return {
        "headline": {
            "accuracy_gap": max(accuracies) - min(accuracies),
            "ece_gap": max(eces) - min(eces),
        },
        "groups": rows,
        "worst_group": worst["group"],
    }


# ----------------------------------------------------------------------------------- generation
GENERATIONS_FILE = "generations.md"
TIMED_CALLS = 3  # after one that compiles; the least is reported, the least disturbed by load


@SUITES.register("generation")
def generation_suite(ctx: SuiteContext) -> Result:
    """Greedy continuations of the first `eval.generation.prompts` evaluation examples, each
    cut to its first `prompt_tokens` tokens, written to generations.md (as text where the
    dataset's tokens read as text, else ids) beside the tokens that followed in the data; and
    what decoding costs: the bytes of state a sequence carries, and the time per token."""
    config, spec, model = ctx.exp.config, ctx.exp.dataset.spec, ctx.exp.model
    settings = config.eval.generation
    if not generates(model):
        return {
            "headline": {},
            "not_applicable": f"a {config.model.name!r} model does not generate: only sequence "
            "models (model.name=lm) do",
        }
    source = ctx.exp.dataset.source(spec.eval_split)
    examples = [np.asarray(source[i]["inputs"]) for i in range(min(settings.prompts, len(source)))]
    prompt_tokens = min(settings.prompt_tokens, spec.seq_len)
    new_tokens = settings.new_tokens
    if model.fixed_length_reason():  # it cannot continue past its training length
        new_tokens = min(new_tokens, spec.seq_len - prompt_tokens + 1)
    prompts = np.stack([e[:prompt_tokens] for e in examples]).astype(np.int32)
    lengths = np.full(len(prompts), prompt_tokens, np.int32)
    keys = jax.random.split(jax.random.key(0), len(prompts))  # greedy decoding draws nothing
    generator = Generator(model, new_tokens, Sampling(temperature=0.0))
    params = jax.device_get(ctx.params)  # generation runs on one device, as launch.generate
    calls = [generator(params, prompts, lengths, keys) for _ in range(1 + TIMED_CALLS)][1:]
    steps = new_tokens - 1  # the first new token comes from the prefill's logits
    step_seconds = [c.decode_seconds / steps for c in calls] if steps else []
    continuations = [calls[0].row(b) for b in range(len(prompts))]
    codec = ctx.exp.dataset.builder.text_tokenizer()
    state_bytes = generator.state_bytes(params, prompt_tokens)
    cost = {
        "state_bytes_per_sequence": state_bytes,
        "seconds_per_token": min(step_seconds) if step_seconds else None,
    }
    write_atomically(
        os.path.join(ctx.out_dir, GENERATIONS_FILE),
        _generations_md(examples, prompt_tokens, continuations, codec, cost),
    )
    return {
        "headline": cost,
        "prompts": len(prompts),
        "prompt_tokens": prompt_tokens,
        "new_tokens": new_tokens,
        "cache_positions": generator.cache_length(prompt_tokens),
        "seconds_per_token_timed": step_seconds,
        "prefill_seconds": min(c.prefill_seconds for c in calls),
        "continuations": [
            {"example": i, "prompt": p.tolist(), "tokens": c}
            for i, (p, c) in enumerate(zip(prompts, continuations, strict=True))
        ],
        "file": GENERATIONS_FILE,
        **(
            {}
            if steps
            else {"not_applicable": "one new token: no decoding step to time (new_tokens=1)"}
        ),
    }


def _generations_md(
    examples: list[np.ndarray],
    prompt_tokens: int,
    continuations: list[list[int]],
    codec: TextTokenizer | None,
    cost: dict[str, Any],
) -> str:
    """generations.md: each prompt, its continuation and what followed it in the data."""

    def shown(tokens: Any) -> str:
        tokens = [int(t) for t in tokens]
        return codec.decode(tokens) if codec is not None else " ".join(map(str, tokens))

    new_tokens = len(continuations[0])
    per_token = cost["seconds_per_token"]
    lines = [
        f"# Greedy continuations of {len(examples)} evaluation examples",
        "",
        f"Each prompt is an example's first {prompt_tokens} tokens; {new_tokens} new tokens, "
        f"greedy, shown {'as text' if codec is not None else 'as token ids'}. Decoding state: "
        f"{cost['state_bytes_per_sequence']:,} bytes per sequence; "
        + (
            f"{per_token * 1e3:.3g} ms per token (one decoding step of the {len(examples)} "
            f"sequences together; the least of {TIMED_CALLS} timed calls after one that compiled)."
            if per_token is not None
            else "no decoding step to time."
        ),
        "",
    ]
    for i, (example, continuation) in enumerate(zip(examples, continuations, strict=True)):
        held_out = example[prompt_tokens : prompt_tokens + new_tokens]
        lines += [f"## Example {i}", ""]
        for title, tokens in (
            ("Prompt", example[:prompt_tokens]),
            ("Continuation", continuation),
            ("What followed in the data", held_out),
        ):
            lines += [f"{title}:", "", *_fenced(shown(tokens)), ""]
    return "\n".join(lines)


def _fenced(text: str) -> list[str]:
    """A Markdown code block around `text`, its fence longer than any run of backticks in it."""
    longest = max((len(run) for run in re.findall("`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def run(names: list[str], ctx: SuiteContext) -> dict[str, Result]:
    """Each named suite's result (names checked against SUITES before anything runs)."""
    for name in names:
        SUITES.get(name)
    return {name: SUITES.get(name)(ctx) for name in names}
