"""A trained run through the evaluation suites its config names: `<run>/eval/` and the model card,
both also sent to the run's trackers that keep files (MLflow).

`launch.train` calls `evaluate_checkpoint` when a run completes, in the same process;
`launch.evaluate` does the same for a finished run. The suites are in `evaluation.suites`.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import jax

from analysis import model_card, slices
from analysis.runs import EVAL_DIR, jsonable
from atomic_write import write_json_atomically
from evaluation import suites
from evaluation.predictions import Predictors
from runtime import assembly, metric_writers
from runtime.errors import UsageError


def suite_names(spec: str) -> list[str]:
    """'calibration,slices' -> the names, each checked (unknown: an error listing the valid)."""
    names = [name.strip() for name in spec.split(",") if name.strip()]
    for name in names:
        suites.SUITES.get(name)
    return names


def evaluate_run(
    exp: assembly.Experiment,
    params: Any,
    workdir: str,
    step: int,
    names: list[str],
    predictors: Predictors | None = None,
) -> dict[str, Any]:
    """Runs the suites on `params` (the state after `step`), writes <workdir>/eval/ and the
    model card, and returns eval/summary.json's contents. `predictors`: see evaluate_into."""
    summary = evaluate_into(exp, params, os.path.join(workdir, EVAL_DIR), step, names, predictors)
    model_card.write(workdir)
    metric_writers.publish_outputs(workdir)
    return summary


def evaluate_into(
    exp: assembly.Experiment,
    params: Any,
    out_dir: str,
    step: int,
    names: list[str],
    predictors: Predictors | None = None,
) -> dict[str, Any]:
    """Runs the suites on `params` and writes what an eval directory holds into `out_dir`:
    summary.json (returned), one <suite>.json each and the plots. `predictors`: the compiled
    forward passes of `exp`'s model, shared by the runs of a group (default: this call's own)."""
    os.makedirs(out_dir, exist_ok=True)
    predictors = predictors or Predictors(exp)
    items = predictors.at_length().run(params, exp.dataset)
    context = suites.SuiteContext(exp, params, items, out_dir, predictors)
    results = {name: jsonable(result) for name, result in suites.run(names, context).items()}
    for name, result in results.items():
        _write_json(os.path.join(out_dir, f"{name}.json"), result)

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
    _write_json(os.path.join(out_dir, "summary.json"), summary)
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
    write_json_atomically(path, value, indent=2, allow_nan=False)


def evaluate_checkpoint(
    exp: assembly.Experiment,
    workdir: str,
    names: list[str],
    predictors: Predictors | None = None,
) -> dict[str, Any]:
    """Restores the run's newest checkpoint into `exp` and evaluates it (see evaluate_run)."""
    if jax.process_count() > 1:
        raise UsageError("the evaluation suites run in one process: use launch.evaluate")
    step, state = assembly.restored_state(exp, workdir, "evaluate")
    return evaluate_run(exp, exp.model_params(state.params), workdir, step, names, predictors)
