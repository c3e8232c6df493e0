"""Evaluation beyond accuracy: a trained run through the suites its config names.

    python -m launch.evaluate --workdir=runs/x [--suite=calibration,slices]

Restores the run's newest checkpoint and writes `<run>/eval/`: `summary.json` (the headline
numbers of every suite and what could not be done, with the reason), one `<suite>.json` each,
the plots (`reliability.png`, `robustness.png`) and `hardest.md`; then `<run>/model_card.md`.
The suites (`eval.suites` in the config, or --suite) are calibration, robustness, slices and
groups (see launch/suites.py). `launch.train` runs the same function when a run completes, in
the same process, so the suites come with the accuracy that the run reports.

Exit status: 0, or 2 for bad input (no run there, no checkpoint, an unknown suite, a run whose
config predates a key of this archlab's config).
"""

from __future__ import annotations

import inspect
import json
import os
import sys
from typing import Any

import jax
import ml_collections

from analysis import model_card, slices
from analysis.runs import CONFIG_FILE, EVAL_DIR, eval_file, jsonable, read_json
from experiments.base import base_config
from launch import checkpoint, experiment, host_memory, manifest, suites
from launch.config import flatten
from launch.errors import ArgumentParser, UsageError, exit_on_usage_error
from launch.predictions import Predictor


def suite_names(spec: str) -> list[str]:
    """'calibration,slices' -> the names, each checked (unknown: an error listing the valid)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        suites.SUITES.get(name)
    return names


def evaluate_run(
    exp: experiment.Experiment, params: Any, workdir: str, step: int, names: list[str]
) -> dict[str, Any]:
    """Runs the suites on `params` (the state after `step`), writes <workdir>/eval/ and the
    model card, and returns eval/summary.json's contents."""
    out_dir = os.path.join(workdir, EVAL_DIR)
    os.makedirs(out_dir, exist_ok=True)
    predictor = Predictor(exp)
    items = predictor.run(params, exp.dataset)
    context = suites.SuiteContext(exp, params, items, out_dir, predictor)
    results = {name: jsonable(result) for name, result in suites.run(names, context).items()}
    for name, result in results.items():
        _write_json(eval_file(workdir, name), result)

    hits = int(items.correct.sum())
    summary = jsonable(
        {
            "step": step,
            "split": exp.dataset.spec.eval_split,
            "items": len(items),
            "accuracy": hits / len(items),
            "accuracy_ci": list(slices.wilson_interval(hits, len(items))),
            "nll": suites.accuracy_and_nll(items)["nll"],
            "suites": names,
            "headline": {
                f"{name}/{key}": value
                for name, result in results.items()
                for key, value in result.get("headline", {}).items()
            },
            "not_applicable": not_applicable(results),
            # For the model card, which is rewritten later (by a study) without the builder.
            "data_sheet": inspect.getdoc(inspect.getmodule(type(exp.dataset.builder))) or "",
            "data_license": exp.dataset.builder.LICENSE,
        }
    )
    _write_json(eval_file(workdir, "summary"), summary)
    model_card.write(workdir)
    return summary


def not_applicable(results: dict[str, Any]) -> dict[str, str]:
    """{'groups': reason, 'robustness/length': reason}: what each suite could not do, and why."""
    out = {}
    for name, result in results.items():
        reason = result.get("not_applicable")
        if isinstance(reason, dict):
            out.update({f"{name}/{part}": why for part, why in reason.items()})
        elif reason:
            out[name] = reason
    return out


def _write_json(path: str, value: Any) -> None:
    with open(path + ".tmp", "w") as f:
        json.dump(value, f, indent=2, allow_nan=False)
    os.replace(path + ".tmp", path)


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config the run recorded in config.json (the whole config, every key)."""
    recorded = read_json(os.path.join(workdir, CONFIG_FILE))
    if recorded is None:
        raise UsageError(f"{workdir!r} is not a run directory (no {CONFIG_FILE})")
    config = ml_collections.ConfigDict(recorded)
    # A key added since the run was recorded would take today's default, which need not be what
    # the run trained with (mqar's `answers` default changed from shown to hidden), so the run is
    # evaluated by the code it was trained with or not at all.
    missing = sorted(set(flatten(base_config())) - set(flatten(config)))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UsageError(
            f"{workdir}/{CONFIG_FILE} predates config key {missing[0]}{more}: evaluate it at "
            "the commit its manifest records, or retrain it"
        )
    return config


def evaluate_checkpoint(
    exp: experiment.Experiment, workdir: str, names: list[str]
) -> dict[str, Any]:
    """Restores the run's newest checkpoint into `exp` and evaluates it (see evaluate_run)."""
    if jax.process_count() > 1:
        raise UsageError("the evaluation suites run in one process: use launch.evaluate")
    manager = checkpoint.make_manager(workdir, exp.config.checkpoint.max_to_keep, False)
    try:
        if manager.latest_step() is None:
            raise UsageError(f"run {workdir!r} has no checkpoint to evaluate")
        step, state, _ = experiment.initial_state(exp, manager)
    finally:
        manager.close()
    return evaluate_run(exp, state.params, workdir, step, names)


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    parser = ArgumentParser(prog="python -m launch.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a run directory (launch.train's)")
    parser.add_argument("--suite", help="comma-separated suites (default: the run's eval.suites)")
    args = parser.parse_args(argv[1:])
    config = run_config(args.workdir)
    names = suite_names(args.suite if args.suite is not None else config.eval.suites)
    experiment.check_names(config)
    summary = evaluate_checkpoint(experiment.build(config), args.workdir, names)
    step = summary["step"]
    print(json.dumps({"step": step, "accuracy": summary["accuracy"], **summary["headline"]}))
    for suite, reason in summary["not_applicable"].items():
        print(f"{suite}: not applicable: {reason}", file=sys.stderr)
    record = manifest.read(args.workdir)
    if record is not None and record.get("status") != "completed":
        print(f"note: the run's status is {record.get('status')!r}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
