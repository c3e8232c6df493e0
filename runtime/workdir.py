"""A run directory: one that can be written, and that belongs to one config, which it records.

Checked before any device or data is touched, so a wrong --workdir costs nothing; claimed (its
config.json written) only once the config has been built, so a config that fails leaves nothing.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections

from analysis.runs import read_json
from atomic_write import write_atomically
from experiments.base import KEYS_ADDED_LATER, base_config
from runtime.config import (
    differing_keys,
    flatten,
    with_keys_added,
    without_watching,
)
from runtime.errors import UsageError

CONFIG_FILE = "config.json"


def check_writable_directory(path: str, flag: str = "--workdir") -> None:
    """`path` is a directory this process can write into, or can be created as one."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(f"{flag}={path!r} is a file, not a directory")
    existing = os.path.abspath(path)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise UsageError(f"{flag}={path!r} cannot be created: {existing!r} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{flag}={path!r} cannot be written (no write permission on {existing!r})")


def check_workdir(workdir: str, config_json: str) -> None:
    """A workdir belongs to one config: resuming is fine, overwriting another run never is. The
    sections that only watch the run (WATCHING_SECTIONS: a profile) may differ."""
    check_writable_directory(workdir)
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    keys = differing_keys(
        without_watching(recorded_config(workdir)), without_watching(json.loads(config_json))
    )
    if keys:
        shown = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise UsageError(
            f"workdir {workdir!r} holds a run with a different config "
            f"(differs in {shown}); use a new --workdir"
        )


def claim_workdir(workdir: str, config_json: str) -> None:
    """Creates the workdir with its config.json (checked by `check_workdir` beforehand)."""
    path = os.path.join(workdir, CONFIG_FILE)
    if os.path.exists(path) or jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    write_atomically(path, config_json)


def recorded_config(workdir: str) -> dict | None:
    """The run's config.json (None if it has none), with the keys added since it was recorded
    that have a value meaning "as before the key existed" (experiments.base.KEYS_ADDED_LATER)."""
    recorded = read_json(os.path.join(workdir, CONFIG_FILE))
    return None if recorded is None else with_keys_added(recorded, KEYS_ADDED_LATER)


def run_config(workdir: str) -> ml_collections.ConfigDict:
    """The config the run recorded in config.json (the whole config, every key), for the
    commands that read a finished run (evaluate, convert, generate)."""
    recorded = recorded_config(workdir)
    if recorded is None:
        raise UsageError(f"{workdir!r} is not a run directory (no {CONFIG_FILE})")
    config = ml_collections.ConfigDict(recorded)
    # A key added since the run was recorded would take today's default, which need not be what
    # the run trained with (mqar's `answers` default changed from shown to hidden), so the run is
    # read by the code it was trained with or not at all.
    missing = sorted(set(flatten(base_config())) - set(flatten(config)))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise UsageError(
            f"{workdir}/{CONFIG_FILE} predates config key {missing[0]}{more}: use it at the "
            "commit its manifest records, or retrain it"
        )
    return config
