"""A study's summary in the shape the aggregator writes (`summary.json`), for the report's tests.

It is built by hand, with its statistics computed by analysis.stats from fixed seed values so that
every number in it is consistent, and then passed through JSON as the aggregator's file would be.
A test file takes it as module-scoped fixtures:

    summary = pytest.fixture(build_summary, scope="module", name="summary")
    rendered = pytest.fixture(rendered_reports, scope="module", name="rendered")
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
import struct
from pathlib import Path

import pytest

from analysis import stats
from analysis.report import write_reports

METRIC = "eval/accuracy"
SEEDS = [0, 1, 2]
# Final eval/accuracy and eval/loss per seed; `linear` completed one seed, `hyena` none.
FINAL_ACCURACY = {
    "attention": [0.912, 0.951, 0.925],
    "deltanet": [0.981, 0.975, 0.988],
    "mamba": [0.701, 0.783, 0.742],
    "linear": [0.552],
    "hyena": [],
}
FINAL_LOSS = {
    "attention": [0.41, 0.33, 0.38],
    "deltanet": [0.09, 0.11, 0.08],
    "mamba": [1.02, 0.87, 0.95],
    "linear": [1.71],
    "hyena": [],
}
CLAIMS = [("deltanet", "beats", "mamba"), ("mamba", "beats", "attention")]
PLANTED = '<script>alert("pwned")</script>'
STEPS = [100, 200, 300, 400, 500, 600]


def _summary_dict(values: list[float]) -> dict:
    return dataclasses.asdict(stats.summarize(values, n_bootstrap=1000))


def _metric_entry(values: list[float], higher_is_better: bool) -> dict:
    best = [v + (0.004 if higher_is_better else -0.004) for v in values]
    return {
        "final": _summary_dict(values),
        "best": _summary_dict(best),
        "final_values": values,
        "best_values": best,
    }


def _curve(finals: list[float]) -> dict:
    # Curves rise towards each seed's final value; the band spans the lowest to highest seed.
    per_seed = [[f * (1 - math.exp(-s / 150)) for s in STEPS] for f in finals]
    columns = list(zip(*per_seed, strict=True))
    return {
        "steps": STEPS,
        "mean": [sum(c) / len(c) for c in columns],
        "lo": [min(c) for c in columns],
        "hi": [max(c) for c in columns],
        "n": [len(c) for c in columns],
        "band": "min-max over seeds",
    }


def _arm(name: str) -> dict:
    accuracy, loss = FINAL_ACCURACY[name], FINAL_LOSS[name]
    done, failed = len(accuracy), len(SEEDS) - len(accuracy)
    runs = [
        {
            "seed": s,
            "workdir": f"runs/{name}/seed_{s}",
            "status": "completed" if s < done else "failed",
            "last_step": 600 if s < done else 150,
            "wall_seconds": 123.4 if s < done else 31.0,
        }
        for s in SEEDS
    ]
    return {
        "overrides": {"model.mixer": name},
        "config_hash": hashlib.sha256(name.encode()).hexdigest(),
        "config_hashes": [hashlib.sha256(name.encode()).hexdigest()],
        "seeds_planned": len(SEEDS),
        "seeds_completed": done,
        "runs": runs,
        "metrics": (
            {METRIC: _metric_entry(accuracy, True), "eval/loss": _metric_entry(loss, False)}
            if done
            else {}
        ),
        "curves": {METRIC: _curve(accuracy)} if done else {},
        "compute": {
            "steps": 600 * done + 150 * failed,
            "tokens": 4096 * (600 * done + 150 * failed),
            "wall_seconds": 123.4 * done + 31.0 * failed,
            "flops": 2.1e11 * done,
        },
    }


def build_summary() -> dict:
    """A study of five arms: three complete, one with a single seed, one with none."""
    arms = {name: _arm(name) for name in FINAL_ACCURACY}

    comparisons, p_values = {}, []
    for name in arms:
        if name == "attention":
            continue
        if len(FINAL_ACCURACY[name]) < 2:
            n = len(FINAL_ACCURACY[name])
            comparisons[name] = {
                "comparison": None,
                "holm_p": None,
                "note": f"not compared: {n} completed seed(s), a comparison needs 2",
            }
            p_values.append(math.nan)
            continue
        c = stats.compare(FINAL_ACCURACY["attention"], FINAL_ACCURACY[name], True)
        comparisons[name] = {"comparison": dataclasses.asdict(c), "holm_p": None, "note": None}
        p_values.append(c.welch_p)
    for name, p in zip(comparisons, stats.holm(p_values), strict=True):
        comparisons[name]["holm_p"] = None if math.isnan(p) else float(p)

    claim_comparisons = [
        stats.compare(FINAL_ACCURACY[other], FINAL_ACCURACY[cand], True)
        for cand, _, other in CLAIMS
    ]
    adjusted = stats.holm([c.welch_p for c in claim_comparisons])
    claims = []
    for (cand, relation, other), c, p in zip(CLAIMS, claim_comparisons, adjusted, strict=True):
        v = stats.verdict(c, float(p), "better")
        claims.append(
            {
                "candidate": cand,
                "relation": relation,
                "other": other,
                "metric": METRIC,
                "text": f"arm `{cand}` {relation} arm `{other}` on {METRIC}",
                "comparison": dataclasses.asdict(c),
                "adjusted_p": float(p),
                "verdict": dataclasses.asdict(v),
            }
        )

    summary = {
        "study": "mqar_mixers",
        "study_file": "experiments/mqar_mixers.py",
        "setting": "small",
        "created": "2026-11-28T22:50:00+00:00",
        "hypothesis": "Delta-rule recurrence recalls associations that selective SSMs lose: "
        "DeltaNet reaches a higher MQAR accuracy than Mamba at the same width.",
        "metric": METRIC,
        "higher_is_better": True,
        "baseline": "attention",
        "confidence": 0.95,
        "alpha": 0.05,
        "seeds": SEEDS,
        "overrides": ["--config.train.steps=600"],
        # The aggregator's rule: supported if every claim is, refuted if any is.
        "verdict": "refuted",
        "claims": claims,
        "arms": arms,
        "comparisons": comparisons,
        "compute": {
            key: sum(a["compute"][key] for a in arms.values())
            for key in ("steps", "tokens", "wall_seconds", "flops")
        },
        "provenance": {
            "commits": ["952cd44e0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"],
            "dirty": False,
            "datasets": {"mqar": "mqar-1.0.0-3f9a0c1d2e4b"},
            "config_hashes": {name: a["config_hash"] for name, a in arms.items()},
            "versions": {"jax": "0.10.2", "flax": "0.12.8"},
        },
        "failed_runs": [
            {
                "arm": "hyena",
                "seed": s,
                "workdir": f"runs/hyena/seed_{s}",
                "status": "failed",
                "log_tail": f"step 150 loss 2.31\n{PLANTED}\nFloatingPointError: non-finite loss",
            }
            for s in SEEDS
        ]
        + [
            {
                "arm": "linear",
                "seed": s,
                "workdir": f"runs/linear/seed_{s}",
                "status": "diverged",
                "log_tail": "non-finite loss at step 150",
            }
            for s in (1, 2)
        ],
    }
    # As the aggregator's summary.json would give it back: tuples become lists, NaN stays NaN.
    return json.loads(json.dumps(summary))


def nan_to_none(value):
    """The summary as strict JSON would carry it: every NaN a null."""
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def rendered_reports(summary: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both reports of `summary` as text ("md", "html") and the paths written ("paths")."""
    study_dir = tmp_path_factory.mktemp("study")
    paths = write_reports(str(study_dir), summary)
    texts = {kind: Path(paths[kind]).read_text(encoding="utf-8") for kind in ("md", "html")}
    return {**texts, "paths": paths}


def render(directory: Path, summary: dict) -> tuple[str, str]:
    """(HTML page, Markdown) of `summary` rendered into `directory`."""
    paths = write_reports(str(directory), summary)
    return tuple(Path(paths[kind]).read_text(encoding="utf-8") for kind in ("html", "md"))


def without_data_uris(page: str) -> str:
    return re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "data:", page)


def html_section(page: str, table_id: str) -> str:
    match = re.search(rf'<table id="{table_id}">.*?</table>', page, re.S)
    assert match, f"no table {table_id!r} in the page"
    return match.group(0)


def md_section(text: str, heading: str) -> str:
    match = re.search(rf"^## {heading}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"no section {heading!r} in the markdown"
    return match.group(1)


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    return struct.unpack(">II", data[16:24])
