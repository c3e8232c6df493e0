"""The regression gate: is the candidate worse than the baseline on one metric?

    python -m launch.compare --baseline <run-or-study> --candidate <run-or-study> \
        --metric <name> (--higher-is-better | --lower-is-better) [--margin <x>] [--best] \
        [--confidence 0.95] [--json <path>]

Each side is one of
- a run directory (it has config.json): one value;
- a directory whose immediate subdirectories are runs, e.g. `<study>/runs/<arm>` holding
  `seed_0/`, `seed_1/`, ...: one value per run (subdirectories that are not runs are ignored;
  the runs used are listed in the output);
- `<study_dir>:<arm>`, short for `<study_dir>/runs/<arm>`.
Every run must have completed (manifest status), and a run's value is the last value of the
metric it logged, or with `--best` the best value over the run (by the stated direction).

The test. Let w be the true amount by which the candidate is worse than the baseline, in the
metric's units: baseline mean - candidate mean with --higher-is-better, candidate mean -
baseline mean with --lower-is-better. With at least 2 runs on each side, the gate runs a
one-sided Welch t-test (`analysis.stats.one_sided_worse_test`) of
    H0: w <= margin   ("the candidate is at most `margin` worse")   against   H1: w > margin
at alpha = 1 - confidence: t = (observed worsening - margin) / sqrt(s_b^2/n_b + s_c^2/n_c),
Welch-Satterthwaite df, p = P(T_df >= t). It flags a regression (exit 1) when p < alpha, which
is the same as: the one-sided `confidence` lower bound on w exceeds the margin. A candidate
that merely fails to be shown equal is not flagged: the gate needs evidence of harm. When
neither side has any spread (identical deterministic runs), the test is taken at its limit
(see the function's docstring): identical values pass at any margin.

With fewer than 2 runs on a side there is no estimate of the seed-to-seed spread and no test is
possible; the gate then says so and falls back to a point comparison, not a test: it flags when
the candidate's mean is worse than the baseline's by more than the margin.

Exit status: 0 no regression, 1 regression, 2 bad input (one `error: ...` line on stderr,
before anything is computed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from typing import Any

from analysis import stats
from analysis.runs import FINISHED, Run, is_run, load_run
from analysis.study import RUNS_DIR, arm_dir
from atomic_write import write_atomically
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error


def parse_args(argv: list[str]) -> argparse.Namespace:
    """Parses argv (without the program name) and checks every value that needs no files."""
    parser = ArgumentParser(
        prog="python -m launch.compare", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--baseline", required=True, help="run, directory of runs, study:arm")
    parser.add_argument("--candidate", required=True, help="run, directory of runs, study:arm")
    parser.add_argument("--metric", required=True, help="a metrics.jsonl key, e.g. eval/accuracy")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument("--higher-is-better", dest="higher_is_better", action="store_true")
    direction.add_argument("--lower-is-better", dest="higher_is_better", action="store_false")
    parser.add_argument("--margin", type=float, default=0.0, help="tolerated worsening (units)")
    parser.add_argument("--best", action="store_true", help="best value of each run, not final")
    parser.add_argument("--confidence", type=float, default=0.95, help="alpha = 1 - confidence")
    parser.add_argument("--json", help="also write the numbers to this file")
    args = parser.parse_args(argv)
    if not (math.isfinite(args.margin) and args.margin >= 0):
        raise UsageError(f"--margin must be a finite number >= 0; got {args.margin}")
    if not 0 < args.confidence < 1:
        raise UsageError(f"--confidence must lie strictly between 0 and 1; got {args.confidence}")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        raise UsageError(f"--json {args.json!r}: its directory does not exist")
    return args


# ------------------------------------------------------------------------------------- the sides
@dataclasses.dataclass(frozen=True)
class Side:
    role: str  # "baseline" or "candidate"
    spec: str  # as given on the command line
    runs: list[Run]


def _subdirectories(path: str) -> list[str]:
    return sorted(e.name for e in os.scandir(path) if e.is_dir())


def _study_arm_directory(spec: str, role: str) -> str:
    """`<study>:<arm>` -> `<study>/runs/<arm>`, checking that the arm exists."""
    study, _, arm = spec.rpartition(":")
    if not study or not os.path.isdir(study):
        raise UsageError(f"--{role} {spec!r}: no such path, and {study!r} is not a study directory")
    runs_dir = os.path.join(study, RUNS_DIR)
    arms = _subdirectories(runs_dir) if os.path.isdir(runs_dir) else []
    if not arms:
        raise UsageError(f"--{role} {spec!r}: study {study!r} has no arms (no {runs_dir}/*)")
    if arm not in arms:
        raise UsageError(f"--{role} {spec!r}: unknown arm {arm!r}; valid: {', '.join(arms)}")
    return arm_dir(study, arm)


def _run_directories(path: str, spec: str, role: str) -> list[str]:
    """The run itself, or the runs directly under `path`."""
    if is_run(path):
        return [path]
    if os.path.isdir(path):
        runs = [os.path.join(path, d) for d in _subdirectories(path)]
        runs = [r for r in runs if is_run(r)]
        if runs:
            return runs
        hint = ""
        if os.path.isdir(os.path.join(path, RUNS_DIR)):
            arms = ", ".join(_subdirectories(os.path.join(path, RUNS_DIR)))
            hint = f" (a study? name an arm: {spec}:<arm>, arms: {arms})"
        raise UsageError(
            f"--{role} {spec!r} is neither a run (no config.json) nor a directory of runs{hint}"
        )
    raise UsageError(f"--{role} {spec!r} is not a directory")


def resolve_side(spec: str, role: str) -> Side:
    """Reads every run a side names (through analysis.runs) and checks each has completed."""
    if os.path.exists(spec):
        path = spec
    elif ":" in spec:
        path = _study_arm_directory(spec, role)
    else:
        raise UsageError(f"--{role} {spec!r} does not exist")
    runs = [load_run(d) for d in _run_directories(path, spec, role)]
    for run in runs:
        if run.status not in FINISHED:
            raise UsageError(
                f"{role} run {run.workdir!r} has status {run.status!r}; the gate compares "
                f"finished runs only ({' or '.join(FINISHED)})"
            )
    return Side(role, spec, runs)


def run_values(side: Side, metric: str, best: bool, higher_is_better: bool) -> list[float]:
    """One value per run: the metric's final (or best) logged value."""
    values = []
    for run in side.runs:
        value = run.best(metric, higher_is_better) if best else run.final(metric)
        if value is None:
            logged = ", ".join(run.metric_names()) or "nothing (metrics.jsonl is empty)"
            raise UsageError(
                f"metric {metric!r} was never logged in {side.role} run {run.workdir!r}; "
                f"it logged: {logged}"
            )
        if not math.isfinite(value):
            raise UsageError(f"{side.role} run {run.workdir!r} logged {metric} = {value}")
        values.append(value)
    return values


# -------------------------------------------------------------------------------------- the gate
@dataclasses.dataclass(frozen=True)
class GateResult:
    regression: bool
    worsening: float  # how much worse the candidate's mean is (negative: better)
    test: stats.WorseTest | None  # None: too few runs for a test, a point comparison instead
    why_no_test: str | None


def gate(
    baseline: list[float],
    candidate: list[float],
    higher_is_better: bool,
    margin: float,
    confidence: float,
) -> GateResult:
    """The documented decision: the one-sided Welch test, or the point rule below 2 runs."""
    if len(baseline) >= 2 and len(candidate) >= 2:
        test = stats.one_sided_worse_test(
            baseline, candidate, higher_is_better, margin=margin, confidence=confidence
        )
        return GateResult(test.significant, test.worsening, test, None)
    difference = stats.summarize(candidate).mean - stats.summarize(baseline).mean
    worsening = -difference if higher_is_better else difference
    why = (
        f"no test is possible with fewer than 2 runs on a side (baseline {len(baseline)}, "
        f"candidate {len(candidate)}): nothing measures the seed-to-seed spread"
    )
    return GateResult(worsening > margin, worsening, None, why)


# ---------------------------------------------------------------------------------------- output
def _number(x: float) -> str:
    return f"{x:.6g}"


def _describe_side(side: Side, values: list[float], summary: stats.Summary) -> list[str]:
    runs = "run" if summary.n == 1 else "runs"
    if summary.n >= 2:
        low, high = summary.t_ci
        ci = f"{summary.confidence * 100:g}% t-CI [{_number(low)}, {_number(high)}]"
    else:
        ci = "no CI (one run)"
    lines = [
        f"{side.role:<10} {side.spec} ({summary.n} {runs}): mean {_number(summary.mean)}, {ci}"
    ]
    for run, value in zip(side.runs, values, strict=True):
        lines.append(f"{'':<12}{os.path.basename(os.path.normpath(run.workdir))}: {_number(value)}")
    return lines


def format_report(
    args: argparse.Namespace,
    sides: tuple[Side, Side],
    values: tuple[list[float], list[float]],
    summaries: tuple[stats.Summary, stats.Summary],
    result: GateResult,
) -> str:
    direction = "higher is better" if args.higher_is_better else "lower is better"
    which = "best" if args.best else "final"
    lines = [
        f"metric     {args.metric} ({direction}), {which} value of each run; "
        f"margin {_number(args.margin)}, confidence {args.confidence:g}",
    ]
    for side, vals, summary in zip(sides, values, summaries, strict=True):
        lines += _describe_side(side, vals, summary)
    difference = summaries[1].mean - summaries[0].mean
    relative = f" ({difference / abs(summaries[0].mean):+.2%})" if summaries[0].mean else ""
    how = "worse" if result.worsening > 0 else "better" if result.worsening < 0 else "no different"
    amount = f" by {_number(abs(result.worsening))}" if result.worsening else ""
    lines.append(
        f"difference candidate - baseline = {_number(difference)}{relative}: "
        f"the candidate is {how}{amount}"
    )
    alpha = 1 - args.confidence
    if result.test is not None:
        t = result.test
        lines += [
            f"test       one-sided Welch t-test of H0 'candidate is at most "
            f"{_number(args.margin)} worse' at alpha {alpha:.3g}",
            f"{'':<11}t = {t.t:.4g}, df = {t.df:.4g}, p = {t.p:.3g}",
            f"{'':<11}one-sided {args.confidence * 100:g}% lower bound on how much worse the "
            f"candidate is: {_number(t.worsening_lower_bound)} (a regression when above the "
            f"margin)",
        ]
        verdict_why = (
            "significantly worse than the baseline by more than the margin"
            if result.regression
            else "not significantly worse than the baseline by more than the margin"
        )
    else:
        lines += [
            f"test       none: {result.why_no_test}",
            f"{'':<11}point comparison, not a test: flagged when the candidate's mean is "
            f"worse than the baseline's by more than the margin",
        ]
        verdict_why = (
            "point comparison: worse by more than the margin"
            if result.regression
            else "point comparison: not worse by more than the margin"
        )
    verdict = "REGRESSION" if result.regression else "PASS"
    lines.append(f"result     {verdict}: {verdict_why} (exit {int(result.regression)})")
    return "\n".join(lines)


def _finite(x: float) -> float | None:
    # Strict JSON has no NaN or Infinity: an undefined number is written as null.
    return x if math.isfinite(x) else None


def _side_json(side: Side, values: list[float], summary: stats.Summary) -> dict[str, Any]:
    return {
        "spec": side.spec,
        "runs": [
            {"workdir": r.workdir, "value": v} for r, v in zip(side.runs, values, strict=True)
        ],
        "n": summary.n,
        "mean": summary.mean,
        "std": _finite(summary.std),
        "t_ci": [_finite(x) for x in summary.t_ci],
    }


def to_json(
    args: argparse.Namespace,
    sides: tuple[Side, Side],
    values: tuple[list[float], list[float]],
    summaries: tuple[stats.Summary, stats.Summary],
    result: GateResult,
) -> dict[str, Any]:
    if result.test is not None:
        t = result.test
        test = {
            "kind": "one_sided_welch_t",
            "null_hypothesis": "candidate is at most margin worse",
            "t": _finite(t.t),
            "df": _finite(t.df),
            "p": _finite(t.p),
            "alpha": 1 - args.confidence,
            "worsening_lower_bound": t.worsening_lower_bound,
        }
    else:
        test = {"kind": "point_comparison", "reason": result.why_no_test}
    return {
        "metric": args.metric,
        "higher_is_better": args.higher_is_better,
        "value": "best" if args.best else "final",
        "margin": args.margin,
        "confidence": args.confidence,
        "baseline": _side_json(sides[0], values[0], summaries[0]),
        "candidate": _side_json(sides[1], values[1], summaries[1]),
        "difference": summaries[1].mean - summaries[0].mean,
        "worsening": result.worsening,
        "test": test,
        "regression": result.regression,
        "exit_status": int(result.regression),
    }


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    args = parse_args(argv[1:])
    sides = (
        resolve_side(args.baseline, "baseline"),
        resolve_side(args.candidate, "candidate"),
    )
    values = (
        run_values(sides[0], args.metric, args.best, args.higher_is_better),
        run_values(sides[1], args.metric, args.best, args.higher_is_better),
    )
    # All input is checked: from here on, only computation.
    summaries = (
        stats.summarize(values[0], confidence=args.confidence),
        stats.summarize(values[1], confidence=args.confidence),
    )
    result = gate(values[0], values[1], args.higher_is_better, args.margin, args.confidence)
    print(format_report(args, sides, values, summaries, result))
    if args.json:
        report = to_json(args, sides, values, summaries, result)
        write_atomically(args.json, json.dumps(report, indent=2) + "\n")
    return int(result.regression)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
