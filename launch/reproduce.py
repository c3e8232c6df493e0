"""Reruns a completed run from its manifest and checks that it comes out bitwise identical.

    python -m launch.reproduce --workdir <run> [--into <new_dir>] [--here]

The run's first attempt command (`manifest["attempts"][0]["command"]`, a `launch.train`
command line) is run again with the current Python interpreter and environment into a fresh
directory: `--into`, or `<run>.repro-<UTC timestamp>` next to the run. An existing non-empty
directory is refused; nothing is ever overwritten. The rerun's output streams to stderr.

By default it runs the code that attempt ran: the recorded commit, checked out in a temporary
git worktree of this repository, with the recorded patch of uncommitted changes applied
(runtime/source.py), run from that worktree with PYTHONPATH pointing at it; the worktree is
removed afterwards, also when the rerun fails. Data are shared: the dataset cache is outside the
tree. `--here` reruns with the code as it is now instead, from the repository root. A relative
`--config` path is taken relative to the directory the run was launched from (in the worktree:
the same place in the rebuilt tree).

Then three things must be identical:
- `metrics.jsonl` without timing (`analysis.runs.deterministic_rows`), row by row and key by
  key, floats compared bit for bit as parsed from JSON;
- `config.json`, but for the sections that only watch a run (a profile);
- the dataset fingerprints recorded in the two manifests.
Prints "reproduced: N rows identical" and exits 0, or prints the first difference (step, key,
old and new value) with how many rows and values differ, and exits 1. A rerun that fails exits
1 with the tail of its output.

Before running it warns (stderr) when the rerun may not compute what the run computed: other
package versions; a CPU run made on a CPU with another model, SIMD extensions or thread count
(XLA compiles for the host); a run resumed on other code than its first attempt's; and with
`--here`, another commit or a dirty tree now or then. The environment still matters: a run that
used 8 forced CPU devices needs the same XLA_FLAGS, and a run on another backend may differ.

Exit status 2 with one `error: ...` line: the workdir is missing or not a run, has no manifest,
its manifest is malformed, or the run did not complete (its status is named); and without
`--here`: the run recorded no commit, its commit is not in this repository, its uncommitted
changes were not recorded (above the size bound, or before patches were) or its patch does not
apply.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import os
import struct
import subprocess
import sys
from typing import Any

from analysis.runs import (
    CONFIG_FILE,
    MANIFEST_FILE,
    METRICS_FILE,
    Run,
    deterministic_rows,
    is_run,
    load_run,
    read_json,
)
from runtime import manifest as manifest_lib
from runtime import source
from runtime.config import differing_keys, without_watching
from runtime.errors import ArgumentParser, UsageError, exit_on_usage_error

TRAIN_MODULE = "launch.train"
TAIL_LINES = 30  # of a failed rerun's output


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = ArgumentParser(
        prog="python -m launch.reproduce",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,
    )
    parser.add_argument("--workdir", required=True, help="the completed run to reproduce")
    parser.add_argument("--into", help="new run directory (default: <run>.repro-<UTC time>)")
    parser.add_argument(
        "--here",
        action="store_true",
        help="rerun with the code as it is now, not the run's recorded commit and patch",
    )
    return parser.parse_args(argv)


# ------------------------------------------------------------------------------ the original run
def load_completed_run(workdir: str) -> Run:
    """The run, checked: a directory with config.json and a well-formed completed manifest."""
    if not os.path.isdir(workdir):
        raise UsageError(f"workdir {workdir!r} does not exist")
    if not is_run(workdir):
        raise UsageError(f"{workdir!r} is not a run directory (no {CONFIG_FILE})")
    manifest_path = os.path.join(workdir, MANIFEST_FILE)
    if not os.path.exists(manifest_path):
        raise UsageError(f"run {workdir!r} has no {MANIFEST_FILE}: nothing says how it was run")
    try:
        read_json(manifest_path)
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise UsageError(f"malformed {manifest_path}: {e}") from e
    try:
        run = load_run(workdir)
    except ValueError as e:
        raise UsageError(f"malformed {os.path.join(workdir, CONFIG_FILE)}: {e}") from e
    if not isinstance(run.manifest, dict) or not isinstance(run.manifest.get("status"), str):
        raise UsageError(f"malformed {manifest_path}: no status")
    if run.status != "completed":
        raise UsageError(
            f"run {workdir!r} is {run.status!r}, not completed: only a completed run can be "
            "reproduced (rerun its command to resume it first)"
        )
    return run


def first_command(manifest: dict[str, Any], where: str = MANIFEST_FILE) -> list[str]:
    """The first attempt's `[python, -m, launch.train, ...]`, checked."""
    attempts = manifest.get("attempts")
    first = attempts[0] if isinstance(attempts, list) and attempts else None
    command = first.get("command") if isinstance(first, dict) else None
    if (
        not isinstance(command, list)
        or not all(isinstance(a, str) for a in command)
        or command[1:3] != ["-m", TRAIN_MODULE]
    ):
        raise UsageError(
            f"malformed {where}: attempts[0].command is not a "
            f"[python, -m, {TRAIN_MODULE}, ...] list: {repr(command)[:100]}"
        )
    if _flag_position(command, "workdir") is None:
        raise UsageError(f"malformed {where}: attempts[0].command has no --workdir")
    return command


def _flag_position(command: list[str], name: str) -> tuple[int, bool] | None:
    """(index, value is in the next argument) of absl flag `name`, in any of its spellings."""
    for i, arg in enumerate(command):
        for dashes in ("--", "-"):
            if arg.startswith(f"{dashes}{name}="):
                return i, False
            if arg == f"{dashes}{name}" and i + 1 < len(command):
                return i, True
    return None


def _set_flag(command: list[str], name: str, value: str) -> list[str]:
    out = list(command)
    i, separate = _flag_position(out, name)
    if separate:
        out[i + 1] = value
    else:
        out[i] = f"--{name}={value}"
    return out


def _flag_value(command: list[str], name: str) -> str | None:
    position = _flag_position(command, name)
    if position is None:
        return None
    i, separate = position
    return command[i + 1] if separate else command[i].split("=", 1)[1]


def rerun_command(
    recorded: list[str],
    new_workdir: str,
    recorded_cwd: str | None,
    moved: tuple[str, str] | None = None,
) -> list[str]:
    """The recorded command with this interpreter, the new workdir and a config path that still
    points at the same file: made absolute from the directory the run was launched from, and,
    with `moved` = (the recorded repository's top level, the rebuilt tree's), moved into the
    rebuilt tree when it lies in the recorded repository."""
    command = [sys.executable, *recorded[1:]]
    command = _set_flag(command, "workdir", os.path.abspath(new_workdir))
    config = _flag_value(command, "config")
    if config is not None:
        path, colon, arg = config.partition(":")
        if recorded_cwd and not os.path.isabs(path):
            path = os.path.join(recorded_cwd, path)
        if moved is not None and os.path.isabs(path):
            inside = os.path.relpath(os.path.normpath(path), os.path.normpath(moved[0]))
            if inside != ".." and not inside.startswith(".." + os.sep):
                path = os.path.join(moved[1], inside)
        command = _set_flag(command, "config", path + colon + arg)
    return command


def recorded_source(manifest: dict[str, Any], workdir: str) -> tuple[str, bytes | None]:
    """The commit and patch of the first attempt (whose command is rerun), checked."""
    git = manifest["attempts"][0].get("git")
    if not isinstance(git, dict):
        raise UsageError(
            f"malformed {os.path.join(workdir, MANIFEST_FILE)}: attempts[0] records no git "
            "state; rerun with --here"
        )
    if not git.get("commit"):
        raise UsageError(
            f"run {workdir!r} records no git commit (it was not run from a git checkout): "
            "rerun with --here"
        )
    if not git.get("dirty"):
        return git["commit"], None
    if git.get("patch"):
        return git["commit"], source.read_patch(workdir, git)
    if git.get("patch_bytes"):
        raise UsageError(
            f"run {workdir!r} was made with uncommitted changes whose patch "
            f"({git['patch_bytes']:,} bytes) is above the {source.PATCH_LIMIT_BYTES:,}-byte "
            "bound, so only its sha256 was recorded: rerun with --here from a tree that holds "
            "those changes"
        )
    raise UsageError(
        f"run {workdir!r} was made with uncommitted changes that its manifest does not hold "
        "(it predates recorded patches): rerun with --here from a tree that holds those changes"
    )


def target_directory(workdir: str, into: str | None) -> str:
    """Where the rerun goes: never an existing non-empty directory."""
    if into is None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
        into = f"{os.path.normpath(workdir)}.repro-{stamp}"
    if os.path.exists(into) and (not os.path.isdir(into) or os.listdir(into)):
        raise UsageError(f"--into {into!r} exists and is not an empty directory; choose a new one")
    return into


def code_warnings(manifest: dict[str, Any], git_now: dict[str, Any]) -> list[str]:
    """With --here: why the code now may not be the code the run ran."""
    then = manifest.get("git") or {}
    warnings = []
    if then.get("commit") != git_now.get("commit"):
        warnings.append(
            f"the run was made at commit {then.get('commit')}; the code is now at "
            f"{git_now.get('commit')}"
        )
    if then.get("dirty"):
        warnings.append(
            f"the run was made with uncommitted changes (diff sha256 {then.get('diff_sha256')}), "
            "which --here does not apply"
        )
    if git_now.get("dirty"):
        same = then.get("dirty") and then.get("diff_sha256") == git_now.get("diff_sha256")
        warnings.append(
            "the working tree has uncommitted changes now"
            + (" (the same diff as then)" if same else "")
        )
    return warnings


def resumed_code_warnings(manifest: dict[str, Any]) -> list[str]:
    """Attempts that resumed the run on other code than the first attempt's, which the default
    mode rebuilds: the run's later steps came from that other code."""
    attempts = manifest["attempts"]
    first = attempts[0].get("git") or {}
    warnings = []
    for number, attempt in enumerate(attempts[1:], start=2):
        # A malformed entry says nothing about its code.
        git = (attempt.get("git") or {}) if isinstance(attempt, dict) else first
        if (git.get("commit"), git.get("diff_sha256")) != (
            first.get("commit"),
            first.get("diff_sha256"),
        ):
            warnings.append(
                f"attempt {number} resumed the run at step {attempt.get('resumed_from_step')} "
                f"on other code (commit {git.get('commit')}, diff {git.get('diff_sha256')}) "
                "than the first attempt's, which the rerun runs throughout"
            )
    return warnings


def environment_warnings(
    manifest: dict[str, Any], versions_now: dict[str, Any], cpu_now: dict[str, Any]
) -> list[str]:
    """Why the same code might not compute the same numbers here."""
    warnings = []
    recorded = manifest.get("versions") or {}
    changed = [
        f"{name} {recorded[name]} -> {versions_now.get(name)}"
        for name in sorted(recorded)
        if recorded[name] != versions_now.get(name)
    ]
    if changed:
        warnings.append(f"package versions differ: {', '.join(changed)}")
    environment = manifest.get("environment") or {}
    cpu_then = environment.get("cpu")
    if environment.get("backend") == "cpu" and cpu_then and _cpu_key(cpu_then) != _cpu_key(cpu_now):
        warnings.append(
            f"the run was made on another CPU ({_describe_cpu(cpu_then)}; this one: "
            f"{_describe_cpu(cpu_now)}): XLA compiles for the host's instruction set, so float "
            "results may differ"
        )
    return warnings


def _cpu_key(cpu: dict[str, Any]) -> tuple:
    # Named fields, so that a field added to the record later does not flag every older run.
    return cpu.get("model"), tuple(cpu.get("simd") or ()), cpu.get("threads")


def _describe_cpu(cpu: dict[str, Any]) -> str:
    simd = " ".join(cpu.get("simd") or []) or "no SIMD extensions listed"
    return f"{cpu.get('model')}, {simd}, {cpu.get('threads')} threads"


# ------------------------------------------------------------------------------------- the rerun
def rebuilt_tree_env(root: str) -> dict[str, str]:
    """This environment with imports resolving to the rebuilt tree at `root`: it leads
    PYTHONPATH, and this checkout leaves it, so that no module comes from today's code."""
    today = os.path.realpath(manifest_lib.REPO_ROOT)
    kept = [
        p
        for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
        if p and os.path.realpath(p) != today
    ]
    return {**os.environ, "PYTHONPATH": os.pathsep.join([root, *kept])}


def run_streaming(
    command: list[str], cwd: str, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Runs `command`, streaming its output to stderr; returns (exit status, output tail)."""
    tail: collections.deque[bytes] = collections.deque(maxlen=64)  # chunks, enough for the tail
    with subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    ) as p:
        while chunk := p.stdout.read1(65536):
            sys.stderr.buffer.write(chunk)
            sys.stderr.buffer.flush()
            tail.append(chunk)
        status = p.wait()
    lines = b"".join(tail).decode(errors="replace").splitlines()
    return status, "\n".join(lines[-TAIL_LINES:])


# ------------------------------------------------------------------------------- the comparison
@dataclasses.dataclass(frozen=True)
class Difference:
    what: str  # metrics.jsonl, config.json or datasets
    step: int | None  # metrics rows only
    key: str
    old: Any
    new: Any


MISSING = "<missing>"


def identical(a: Any, b: Any) -> bool:
    """Bitwise for floats (so -0.0 differs from 0.0 and NaN equals NaN); types must match."""
    if isinstance(a, float) and isinstance(b, float):
        return struct.pack("<d", a) == struct.pack("<d", b)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def metric_differences(old: list[dict], new: list[dict]) -> list[Difference]:
    """Every (step, key) whose value differs, is missing on one side, or whose row is."""
    old_by_step = {r["step"]: r for r in deterministic_rows(old)}
    new_by_step = {r["step"]: r for r in deterministic_rows(new)}
    out = []
    for step in sorted(old_by_step.keys() | new_by_step.keys()):
        a, b = old_by_step.get(step), new_by_step.get(step)
        if a is None or b is None:
            out.append(
                Difference(METRICS_FILE, step, "(the whole row)", a or MISSING, b or MISSING)
            )
            continue
        for key in sorted(a.keys() | b.keys()):
            old_value, new_value = a.get(key, MISSING), b.get(key, MISSING)
            if not identical(old_value, new_value):
                out.append(Difference(METRICS_FILE, step, key, old_value, new_value))
    return out


def _lookup(tree: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return MISSING
        tree = tree[part]
    return tree


def content_fingerprints(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest's dataset fingerprints without `overlap`: a leakage check derived from the
    content (which content_hash already certifies) that runs recorded before it lack."""
    return {
        name: {k: v for k, v in fingerprint.items() if k != "overlap"}
        for name, fingerprint in (manifest.get("datasets") or {}).items()
    }


def tree_differences(what: str, old: dict[str, Any], new: dict[str, Any]) -> list[Difference]:
    """Flattened keys of two JSON documents whose values differ (config.json, fingerprints)."""
    return [
        Difference(what, None, key, _lookup(old, key), _lookup(new, key))
        for key in differing_keys(old, new)
    ]


def describe(differences: list[Difference], old_rows: int) -> str:
    first = differences[0]
    where = f"step {first.step}, key {first.key!r}" if first.step is not None else f"{first.key!r}"
    lines = [
        f"not reproduced: {first.what} differs first at {where}: "
        f"old {first.old!r}, new {first.new!r}"
    ]
    metrics = [d for d in differences if d.what == METRICS_FILE]
    if metrics:
        steps = len({d.step for d in metrics})
        lines.append(
            f"{METRICS_FILE}: {steps} of {old_rows} rows differ, {len(metrics)} value(s) in all"
        )
    for what in (CONFIG_FILE, "datasets"):
        keys = [d.key for d in differences if d.what == what]
        if keys:
            lines.append(f"{what}: differs in {', '.join(keys)}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ main
@exit_on_usage_error
def main(argv: list[str]) -> int:
    args = parse_args(argv[1:])
    original = load_completed_run(args.workdir)
    recorded = first_command(original.manifest, os.path.join(args.workdir, MANIFEST_FILE))
    into = target_directory(args.workdir, args.into)
    recorded_cwd = original.manifest["attempts"][0].get("cwd")
    warnings = environment_warnings(original.manifest, manifest_lib.versions(), manifest_lib.cpu())

    if args.here:
        here = source.current(manifest_lib.REPO_ROOT).record()
        for warning in code_warnings(original.manifest, here) + warnings:
            print(f"warning: {warning}", file=sys.stderr)
        command = rerun_command(recorded, into, recorded_cwd)
        return rerun_and_compare(original, command, into, manifest_lib.REPO_ROOT)

    commit, patch = recorded_source(original.manifest, args.workdir)
    for warning in resumed_code_warnings(original.manifest) + warnings:
        print(f"warning: {warning}", file=sys.stderr)
    with source.rebuilt(manifest_lib.REPO_ROOT, commit, patch) as tree:
        applied = f" + its patch ({len(patch):,} bytes)" if patch else ""
        print(f"rebuilt commit {commit}{applied} in {tree}", file=sys.stderr)
        toplevel_now = source.toplevel(manifest_lib.REPO_ROOT)
        # Runs recorded before the top level was lack it: most were made in this checkout.
        toplevel_then = original.manifest["attempts"][0]["git"].get("toplevel") or toplevel_now
        command = rerun_command(recorded, into, recorded_cwd, moved=(toplevel_then, tree))
        # This checkout's place in its repository: "." unless archlab is part of a larger one.
        inside = os.path.relpath(os.path.realpath(manifest_lib.REPO_ROOT), toplevel_now)
        root = os.path.normpath(os.path.join(tree, inside))
        return rerun_and_compare(original, command, into, root, rebuilt_tree_env(root))


def rerun_and_compare(
    original: Run, command: list[str], into: str, cwd: str, env: dict[str, str] | None = None
) -> int:
    print(f"rerunning into {into}: {' '.join(command)}", file=sys.stderr, flush=True)
    status, tail = run_streaming(command, cwd, env)
    rerun = load_run(into) if is_run(into) else None
    if status != 0 or rerun is None or rerun.status != "completed":
        state = rerun.status if rerun else "no run directory"
        print(f"the rerun failed (exit {status}, {state}); the last lines of its output:\n{tail}")
        return 1

    differences = (
        metric_differences(original.rows, rerun.rows)
        + tree_differences(
            CONFIG_FILE,
            without_watching(original.config or {}),
            without_watching(rerun.config or {}),
        )
        + tree_differences(
            "datasets",
            content_fingerprints(original.manifest),
            content_fingerprints(rerun.manifest),
        )
    )
    if differences:
        print(describe(differences, len(original.rows)))
        print(f"the rerun is kept in {into}")
        return 1
    print(
        f"reproduced: {len(original.rows)} rows identical ({METRICS_FILE} without perf/*); "
        f"{CONFIG_FILE} and dataset fingerprints identical too\nthe rerun is in {into}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
