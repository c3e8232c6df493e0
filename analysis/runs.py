"""Reading run directories: what a run says about itself, for the tools that judge it.

A run directory (see DESIGN.md) holds `manifest.json`, `config.json` and `metrics.jsonl`; this
module is the one place that reads them, for studies, the regression gate and reproduction.
Timing metrics (`perf/...`) depend on the machine, not the run: `deterministic_rows` drops them
wherever two runs are compared value for value.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from typing import Any

import numpy as np

MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TIMING_PREFIX = "perf/"
EVAL_DIR = "eval"  # launch.evaluate's output: summary.json, one <suite>.json each, plots
MODEL_CARD_FILE = "model_card.md"
# A converted Hugging Face checkpoint's tokenizer, under the name it has in the checkpoint's
# directory: launch.convert copies it both ways, launch.generate reads text with it.
TOKENIZER_FILE = "tokenizer.json"
# A post-training quantized run's (launch.quantize): what was quantized, bytes, decoding times;
# and its source model's evaluation, made beside the quantized model's own `eval/`.
QUANTIZATION_FILE = "quantization.json"
SOURCE_EVAL_DIR = "source_eval"


def eval_file(workdir: str, name: str) -> str:
    """<workdir>/eval/<name>.json: `summary` or a suite's result."""
    return os.path.join(workdir, EVAL_DIR, f"{name}.json")


def jsonable(value: Any) -> Any:
    """Dataclasses to dicts, tuples to lists, NaN and infinities to None: strict JSON."""
    if dataclasses.is_dataclass(value):
        value = dataclasses.asdict(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    return value


def read_metrics(workdir: str) -> list[dict[str, Any]]:
    """Every complete line of `metrics.jsonl`; a line torn by a kill is dropped."""
    path = os.path.join(workdir, METRICS_FILE)
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return rows


def read_json(path: str) -> dict[str, Any] | None:
    """A JSON file's contents, or None when it does not exist."""
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def deterministic_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows without timing metrics: what a rerun of the same run must reproduce exactly."""
    return [{k: v for k, v in r.items() if not k.startswith(TIMING_PREFIX)} for r in rows]


def is_run(path: str) -> bool:
    return os.path.isfile(os.path.join(path, CONFIG_FILE))


def missing_outputs(workdir: str) -> list[str]:
    """What the run's config asks for beyond training that is not there yet: each evaluation
    suite's result, the suites' summary and the model card (written in that order); for a
    quantized run (its config names a quant.source) also quantization.json, written before."""
    config = read_json(os.path.join(workdir, CONFIG_FILE)) or {}
    suites = [s.strip() for s in config.get("eval", {}).get("suites", "").split(",") if s.strip()]
    wanted = []
    if config.get("quant", {}).get("source"):
        wanted.append(os.path.join(workdir, QUANTIZATION_FILE))
    if suites:
        wanted += [*(eval_file(workdir, s) for s in suites), eval_file(workdir, "summary")]
        wanted.append(os.path.join(workdir, MODEL_CARD_FILE))
    return [os.path.relpath(path, workdir) for path in wanted if not os.path.isfile(path)]


# The statuses of a run that is done: trained to its end (launch.train), or written whole from
# a trained run by launch.quantize (shrink/quantized_run.py), which never trains.
FINISHED = ("completed", "quantized")


def is_complete(workdir: str) -> bool:
    """Trained to the end (or quantized from a run that was), and everything its config asks for
    after that is there."""
    manifest = read_json(os.path.join(workdir, MANIFEST_FILE))
    return bool(manifest) and manifest.get("status") in FINISHED and not missing_outputs(workdir)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run directory as analysis sees it."""

    workdir: str
    manifest: dict[str, Any] | None  # None until launch.train has written one
    config: dict[str, Any] | None
    rows: list[dict[str, Any]]

    @property
    def status(self) -> str:
        """completed | quantized | running | preempted | diverged | failed (the manifest's), or
        "not started" when the run never got as far as writing one."""
        return self.manifest["status"] if self.manifest else "not started"

    @property
    def last_step(self) -> int:
        return self.rows[-1]["step"] if self.rows else 0

    def curve(self, metric: str) -> tuple[list[int], list[float]]:
        """(steps, values) of every row that logged `metric`."""
        logged = [r for r in self.rows if metric in r]
        return [r["step"] for r in logged], [float(r[metric]) for r in logged]

    def final(self, metric: str) -> float | None:
        """The last logged value of `metric`, or None if it was never logged."""
        values = self.curve(metric)[1]
        return values[-1] if values else None

    def best(self, metric: str, higher_is_better: bool) -> float | None:
        values = self.curve(metric)[1]
        if not values:
            return None
        return max(values) if higher_is_better else min(values)

    def metric_names(self) -> list[str]:
        return sorted({k for r in self.rows for k in r if k != "step"})


def load_run(workdir: str) -> Run:
    """Raises FileNotFoundError when `workdir` is not a run directory (no config.json)."""
    if not is_run(workdir):
        raise FileNotFoundError(f"{workdir!r} is not a run directory (no {CONFIG_FILE})")
    return Run(
        workdir=workdir,
        manifest=read_json(os.path.join(workdir, MANIFEST_FILE)),
        config=read_json(os.path.join(workdir, CONFIG_FILE)),
        rows=read_metrics(workdir),
    )
