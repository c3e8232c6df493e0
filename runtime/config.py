"""Loading, checking and comparing run configs.

`absl` + `ml_collections.config_flags` do the parsing; this module turns everything that can go
wrong with a config into a one-line `UsageError` that names the culprit.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from types import ModuleType
from typing import Any

import ml_collections
from absl import flags
from ml_collections import config_flags

from runtime.errors import UsageError

# Sections that say how a run is watched, not what it computes (the trained numbers are the same
# whatever they hold): a run's attempts may set them differently, e.g. to trace steps of a
# resumed run, and a run recorded before one of them existed is read with its defaults.
WATCHING_SECTIONS = ("profile",)


def flatten(config: ml_collections.ConfigDict | dict[str, Any]) -> dict[str, Any]:
    """{'model.d_model': 64, ...} from a ConfigDict or its JSON form; tuples (such as sharding
    rules) and lists stay leaves."""
    out = {}
    for key, value in config.items():
        if isinstance(value, (ml_collections.ConfigDict, dict)):
            out.update({f"{key}.{k}": v for k, v in flatten(value).items()})
        else:
            out[key] = value
    return out


def load_python_file(path: str, what: str = "config file") -> ModuleType:
    """Executes an experiments/ file as a module; a file that fails to load is a UsageError."""
    if not os.path.isfile(path):
        raise UsageError(f"{what} {path!r} does not exist")
    try:
        module_spec = importlib.util.spec_from_file_location("_archlab_experiment", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
    except Exception as e:  # any failure here is the file's, not ours
        raise UsageError(f"{what} {path!r} does not load: {type(e).__name__}: {e}") from e
    return module


def load_config_file(spec: str) -> ml_collections.ConfigDict:
    """Loads `path.py[:arg]` the way config_flags does, but reports failures in one line, and
    refuses a config with a key base_config() lacks (`c.model.d_modle = 3` in get_config): a
    ConfigDict adds such a key silently and nothing reads it."""
    path, _, arg = spec.partition(":")
    module = load_python_file(path)
    try:
        config = module.get_config(arg) if arg else module.get_config()
    except UsageError as e:  # apply_overrides's: it names the entry, this the file
        raise UsageError(f"config file {spec!r}: {e}") from e
    except Exception as e:  # any other failure here is the config file's, not ours
        raise UsageError(f"config file {spec!r} does not load: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise UsageError(f"config file {spec!r}: get_config() must return a ConfigDict")
    # Here rather than at the top: it imports the models (JAX), which a config file does anyway
    # but the tools that only compare configs need not.
    from experiments.base import base_config

    _check_keys(base_config(), flatten(config), f"set by config file {spec!r}")
    return config


def apply_overrides(
    config: ml_collections.ConfigDict, overrides: Mapping[str, Any], where: str
) -> None:
    """Sets {'optimizer.learning_rate': 0.5, ...} on `config`, every key checked first:
    update_from_flattened_dict would add a misspelled key that nothing reads, so the run would
    train at the default and a study report it as an ablation. `where` names the entry in its
    file, e.g. "ARMS['mamba']"; load_config_file adds the file."""
    _check_keys(config, overrides, f"in {where}")
    try:
        config.update_from_flattened_dict(dict(overrides))
    except (TypeError, ValueError) as e:  # a value the key's type does not take
        raise UsageError(f"{where}: {e}") from e


def check_override_keys(config: ml_collections.ConfigDict, argv: list[str]) -> None:
    """Every `--config.<key>=...` must name an existing key; suggest the closest one if not."""
    keys = [a[len("--config.") :].split("=", 1)[0] for a in argv if a.startswith("--config.")]
    _check_keys(config, keys, "on the command line")


def _check_keys(config: ml_collections.ConfigDict, keys: Iterable[str], where: str) -> None:
    """The one check of every override, wherever it comes from: each dotted key names a key or
    a section of `config`, else a UsageError naming where it came from and the nearest key."""
    known = set(flatten(config))
    sections = {k.rsplit(".", i)[0] for k in known for i in range(1, k.count(".") + 1)}
    for key in keys:
        if key not in known and key not in sections:
            close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise UsageError(f"unknown config key {key!r} {where}{hint}")


def parse_flags(argv: list[str]) -> None:
    """Parses absl flags (a `--config` file flag among them) after checking that the config
    file loads and every override names a key: each failure is a one-line UsageError."""
    config_arg = next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")), None)
    if config_arg is None:
        raise UsageError("--config=<experiments/file.py[:arg]> is required")
    check_override_keys(load_config_file(config_arg), argv)
    try:
        flags.FLAGS(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from e


def config_with_overrides(config: str, overrides: Sequence[str]) -> ml_collections.ConfigDict:
    """The config `launch.train --config=<config> <overrides>` runs with, after the checks (and
    one-line errors) it makes: the config file loads, every override names a key and parses as
    its type."""
    check_override_keys(load_config_file(config), list(overrides))
    argv = ["launch.train", f"--config={config}", *overrides]
    values = flags.FlagValues()  # our own, so the process-wide absl flags stay untouched
    config_flags.DEFINE_config_file(
        "config", None, "", flag_values=values, lock_config=True, sys_argv=argv
    )
    try:
        values(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from e
    return values.config


def check_config_command(config: str, overrides: Sequence[str]) -> None:
    """`config_with_overrides`'s checks, for tools that hand a config on to a run elsewhere (a
    Slurm job, Kubernetes pods) and should fail here rather than after a queue."""
    config_with_overrides(config, overrides)


def with_flag_overrides(
    config: ml_collections.ConfigDict, overrides: Sequence[str]
) -> ml_collections.ConfigDict:
    """`config` with `--config.<key>=value` flags applied, for a command whose config is built
    rather than loaded from a file (launch.convert): each key checked as `check_override_keys`
    does, each value parsed as its key's type by absl and ml_collections, as launch.train's are."""
    check_override_keys(config, list(overrides))
    argv = ["archlab", *overrides]
    values = flags.FlagValues()  # our own, so the process-wide absl flags stay untouched
    config_flags.DEFINE_config_dict(
        "config", config, flag_values=values, lock_config=False, sys_argv=argv
    )
    try:
        values(argv)
    except flags.Error as e:
        raise UsageError(str(e)) from e
    return values.config


def parse_env_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`--env KEY=VALUE` flags of the tools that start runs elsewhere, as a dict; malformed or
    repeated keys are UsageErrors."""
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise UsageError(f"--env {pair!r} must be KEY=VALUE")
        if key in env:
            raise UsageError(f"--env {key} given twice")
        env[key] = value
    return env


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(json.loads(config.to_json_best_effort()), indent=2, sort_keys=True)


def with_keys_added(recorded: dict[str, Any], added: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON-loaded config with each dotted key of `added` that it lacks set to its value."""
    out = json.loads(json.dumps(recorded))
    for dotted, value in added.items():
        *sections, leaf = dotted.split(".")
        node = out
        for section in sections:
            node = node.setdefault(section, {})
        node.setdefault(leaf, value)
    return out


def without_watching(config: dict[str, Any]) -> dict[str, Any]:
    """A JSON-loaded config without its WATCHING_SECTIONS: what the run computes from."""
    return {k: v for k, v in config.items() if k not in WATCHING_SECTIONS}


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Flattened keys whose values differ between two JSON-loaded configs."""
    a, b = flatten(old), flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<missing>") != b.get(k, "<missing>"))
