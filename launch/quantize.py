"""Post-training int8 quantization of a trained run, into a new run directory.

    python -m launch.quantize --workdir=<run> --into=<new dir> [--mode=ptq_int8_weights]
        [--targets=<module-path regex>]

Quantizes the run's newest checkpoint that verifies with qwix: --mode ptq_int8_weights (int8
weights, float activations; the default for a float run) or ptq_int8 (int8 weights and
activations; the default for a run trained with quant.mode=qat_int8), on the module paths
--targets fully matches (default: the run's quant.targets, i.e. its projections; never a
recurrence's gates or state contractions). Weights get a float32 scale per output channel.
Writes --into as a run that launch.evaluate and launch.generate read: config.json (quant.mode,
quant.source), a checkpoint with the int8 kernels and their scales, manifest.json naming the
source; then runs the source's evaluation suites on both models (`eval/`, `source_eval/`),
writes quantization.json (what was quantized, checkpoint and parameter bytes, generation time per
token) and a model card, and prints the comparison.

Exit status: 0, or 2 for bad input (an existing --into, no run or checkpoint at --workdir, a run
already quantized, an unknown mode, a --targets that matches no projection).
"""

from __future__ import annotations

import sys
from typing import Any

from runtime import host_memory
from runtime.errors import ArgumentParser, exit_on_usage_error
from shrink.quantized_run import quantize_run


def parse_args(argv: list[str]):
    parser = ArgumentParser(prog="python -m launch.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", required=True, help="the trained run (read only)")
    parser.add_argument("--into", required=True, help="the new run directory (must not exist)")
    parser.add_argument("--mode", help="ptq_int8_weights | ptq_int8 (default: see above)")
    parser.add_argument("--targets", help="module-path regex (default: the run's quant.targets)")
    return parser.parse_args(argv[1:])


def comparison(report: dict[str, Any]) -> str:
    """The before/after table launch.quantize prints."""
    before, after = report["before"], report["after"]
    rows = [
        ("accuracy", before["accuracy"], after["accuracy"]),
        ("nll", before["nll"], after["nll"]),
    ]
    rows += [(k, v, after["headline"].get(k)) for k, v in before["headline"].items()]
    rows += [
        (f"{k.replace('_', ' ')}", v["before"], v["after"])
        for k, v in report.items()
        if k.endswith("_bytes")
    ]
    decode = report["decode"]
    if "seconds_per_token" in decode:
        times = decode["seconds_per_token"]
        label = f"ms per generated token (batch {decode['batch']}, {decode['backend']})"
        rows.append((label, 1e3 * times["before"], 1e3 * times["after"]))
    width = max(len(name) for name, _, _ in rows)
    lines = [f"{'':{width}}  {'before':>12}  {'after':>12}"]
    lines += [f"{name:{width}}  {_shown(b):>12}  {_shown(a):>12}" for name, b, a in rows]
    return "\n".join(lines)


def _shown(value: Any) -> str:
    if value is None:
        return "—"
    return f"{value:,}" if isinstance(value, int) else f"{value:.4g}"


@exit_on_usage_error
def main(argv: list[str]) -> int:
    host_memory.keep_freed_memory()  # before JAX starts its threads
    args = parse_args(argv)
    report = quantize_run(args.workdir, args.into, args.mode, args.targets, argv)
    print(
        f"quantized run {args.workdir} at step {report['source']['step']} into {args.into}: "
        f"{report['mode']}, {len(report['quantized'])} kernels int8 with per-channel scales"
    )
    print(comparison(report))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
