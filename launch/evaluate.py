"""Evaluation beyond accuracy: a trained run through the suites its config names.

    python -m launch.evaluate --workdir=runs/x [--suite=calibration,slices]

Restores the run's newest checkpoint and writes `<run>/eval/`: `summary.json` (the headline
numbers of every suite and what could not be done, with the reason), one `<suite>.json` each,
the plots (`reliability.png`, `robustness.png`), `hardest.md` and with the generation suite
`generations.md`; then `<run>/model_card.md`. The suites (`eval.suites` in the config, or
--suite) are calibration, robustness, slices, groups and generation (see evaluation/suites.py).
`launch.train` runs the same function when a run completes, in the same process, so the suites
come with the accuracy that the run reports.

Exit status: 0, or 2 for bad input (no run there, no checkpoint, an unknown suite, a run whose
config predates a key of this archlab's config).
"""

from __future__ import annotations

import json
import sys

from evaluation.run import evaluate_checkpoint, suite_names
from runtime import assembly, host_memory, manifest
from runtime.errors import ArgumentParser, exit_on_usage_error
from runtime.workdir import run_config


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    parser = ArgumentParser(prog="python -m launch.evaluate", description=__doc__)
    parser.add_argument("--workdir", required=True, help="a run directory (launch.train's)")
    parser.add_argument("--suite", help="comma-separated suites (default: the run's eval.suites)")
    args = parser.parse_args(argv[1:])
    config = run_config(args.workdir)
    names = suite_names(args.suite if args.suite is not None else config.eval.suites)
    assembly.check(config, args.workdir)
    # A distilled student is scored on the hard labels: its teacher is not read.
    exp = assembly.build(config, workdir=args.workdir, with_teacher=False)
    summary = evaluate_checkpoint(exp, args.workdir, names)
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
