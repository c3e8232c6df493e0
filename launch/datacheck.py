"""Does a dataset's evaluation split overlap its training split?

    python -m launch.datacheck --data=<name> [--data.<name>.<param>=<value> ...] [--data_dir=<dir>]

Prepares the dataset if needed (as a run would: same data dir, same parameters, spelled as in
`--config.data.<name>.<param>`) and prints the overlap check recorded in its fingerprint
(`data.overlap`): exact duplicates within train, and for each evaluation split its exact copies
and near-duplicates (MinHash Jaccard >= 0.8) of train examples, with a few index pairs to look at.

Exit status: 0 clean, 1 an evaluation split leaks (any exact or near duplicate of a train
example), 2 bad input (one `error: ...` line on stderr: an unknown dataset or parameter).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import data
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error

LEAK_EXIT_CODE = 1
_PARAM_PREFIX = "--data."


def parse_value(text: str) -> int | float | str:
    """A parameter value as the dataset will check it: an int, else a float, else the word."""
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, Any], str | None]:
    """(dataset name, its parameters, data dir) from argv without the program name."""
    parser = ArgumentParser(
        prog="python -m launch.datacheck", description=__doc__.split("\n\n")[0], allow_abbrev=False
    )
    parser.add_argument("--data", required=True, help="dataset name, e.g. mqar")
    parser.add_argument(
        "--data_dir", default=None, help="default: $ARCHLAB_DATA_DIR, then ~/.cache"
    )
    args, rest = parser.parse_known_args(list(argv))
    params = {}
    for arg in rest:
        key, sep, value = arg.removeprefix(_PARAM_PREFIX).partition("=")
        name, _, param = key.partition(".")
        if not arg.startswith(_PARAM_PREFIX) or not sep or not param:
            raise UsageError(f"unrecognized argument {arg!r} (expected --data.<name>.<param>=...)")
        if name != args.data:
            raise UsageError(f"{arg!r} sets a parameter of {name!r}, but --data={args.data}")
        params[param] = parse_value(value)
    return args.data, params, args.data_dir


# ------------------------------------------------------------------------------------- printing
def _percent(fraction: float) -> str:
    return f"{100 * fraction:.3g}%"


def _pairs(examples: list[dict[str, Any]], left: str, sign: str) -> str:
    shown = []
    for e in examples:
        similarity = f" ({e['jaccard']:.2f})" if "jaccard" in e else ""
        shown.append(f"{left} {e['eval']} {sign} train {e['train']}{similarity}")
    return ", e.g. " + ", ".join(shown) if shown else ""


def describe(name: str, fingerprint: dict[str, Any]) -> list[str]:
    """The overlap check of a fingerprint as lines a person reads."""
    overlap = fingerprint["overlap"]
    threshold = overlap["method"]["jaccard_threshold"]
    dups = overlap["train_duplicates"]
    repeats = ", ".join(f"train {d['train']} = train {d['repeats']}" for d in dups["examples"])
    lines = [
        f"dataset {name} ({fingerprint['config_name']}, {fingerprint['content_hash'][:19]})",
        f"{overlap['train_split']}: {overlap['train_examples']} examples; "
        f"{dups['count']} exact duplicates of earlier ones ({_percent(dups['fraction'])})"
        + (f", e.g. {repeats}" if repeats else ""),
    ]
    leaks = []
    for split, e in overlap["eval"].items():
        exact, near = e["exact"], e["near"]
        lines += [
            f"{split}: {e['examples']} examples",
            f"  exact copies of train examples: {exact['count']} ({_percent(exact['fraction'])})"
            + _pairs(exact["examples"], split, "="),
            f"  near-duplicates (Jaccard >= {threshold}): {near['count']} "
            f"({_percent(near['fraction'])})" + _pairs(near["examples"], split, "~"),
        ]
        leaked = exact["count"] + near["count"]
        if leaked:
            leaks.append(
                f"LEAK: {leaked} of {e['examples']} {split} examples "
                f"({_percent(leaked / e['examples'])}) occur in {overlap['train_split']}, "
                "exactly or nearly: evaluating on them measures memorization."
            )
    if not leaks:
        leaks.append(
            "clean: no evaluation example occurs in the train split, "
            f"exactly or nearly (Jaccard >= {threshold})."
        )
    return lines + leaks


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    name, params, data_dir = parse_args(argv[1:])
    try:
        dataset = data.load(name, params, data_dir)
    except data.DataConfigError as e:
        raise UsageError(str(e)) from e
    print("\n".join(describe(name, dataset.fingerprint)), flush=True)
    return LEAK_EXIT_CODE if dataset.fingerprint["overlap"]["leak"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
