"""Dataset parameters as TFDS BuilderConfigs whose name encodes every value.

TFDS keys a prepared dataset's folder by builder config *name*, so two different parameter sets
must never share a name; the name is therefore derived from all fields (e.g. `v256_t64_k4_q4_...`)
instead of being chosen by hand. A dataset that reads files outside its parameters (a text corpus)
adds a digest of their contents to the name (`ParamsConfig.content_digest`), so that changed files
make a new variant instead of reusing what was prepared from the old ones.
"""

from __future__ import annotations

import dataclasses
import hashlib
import numbers
import re
from collections.abc import Mapping
from typing import Any, Self

import tensorflow_datasets as tfds


class DataConfigError(ValueError):
    """A dataset was asked for with parameters it does not have or cannot honour."""


def param(default: int | float | str, abbr: str, choices: tuple[str, ...] = ()) -> Any:
    """Declares a dataset parameter; `abbr` is its prefix in the config name.

    A string parameter must list its `choices` (plain lowercase words, so that they can stand in
    a config name as they are).
    """
    if isinstance(default, str) != bool(choices) or (choices and default not in choices):
        raise TypeError(f"param {abbr!r}: a str parameter needs choices that hold its default")
    if not all(re.fullmatch(r"[a-z][a-z0-9]*", c) for c in choices):
        raise TypeError(f"param {abbr!r}: choices must be lowercase words, got {choices}")
    return dataclasses.field(default=default, metadata={"abbr": abbr, "choices": choices})


def text_param(default: str, abbr: str) -> Any:
    """Declares a free-form string parameter (a glob, a path, a field name). In the config name a
    value that is not a plain lowercase word stands as a short digest of itself."""
    return dataclasses.field(
        default=default, metadata={"abbr": abbr, "choices": (), "free_text": True}
    )


@dataclasses.dataclass(eq=False)
class ParamsConfig(tfds.core.BuilderConfig):
    """Base for a builder's parameters: subclasses add fields declared with `param`."""

    @classmethod
    def param_fields(cls) -> list[dataclasses.Field]:
        fields = [f for f in dataclasses.fields(cls) if "abbr" in f.metadata]
        abbrs = [f.metadata["abbr"] for f in fields]
        # A repeated prefix would let two parameter sets share a folder; fail at first use.
        if len(set(abbrs)) != len(abbrs):
            raise TypeError(f"{cls.__name__}: parameter abbreviations are not unique: {abbrs}")
        return fields

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in cls.param_fields()}

    @classmethod
    def from_params(cls, params: Mapping[str, Any] | None) -> Self:
        """Validates `params` (unknown keys, types, ranges) and builds the named config."""
        params = dict(params or {})
        valid = cls.defaults()
        unknown = sorted(set(params) - set(valid))
        if unknown:
            raise DataConfigError(
                f"unknown dataset parameter(s) {unknown} for {cls.__name__}; "
                f"valid keys: {', '.join(sorted(valid))}"
            )
        values = {f.name: _coerce(f, params.get(f.name, f.default)) for f in cls.param_fields()}
        name = "_".join(
            f"{f.metadata['abbr']}{_encode(values[f.name])}" for f in cls.param_fields()
        )
        config = cls(name=name, **values)
        config.validate()
        digest = config.content_digest()
        if digest is not None:
            config.name = f"{name}_c{digest[:16]}"
        return config

    def params(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in self.param_fields()}

    def validate(self) -> None:
        """Raises DataConfigError when the values are inconsistent; override per dataset."""

    def content_digest(self) -> str | None:
        """A hex digest of what the parameters point at beyond themselves (the files a text corpus
        reads), or None when the parameters say it all. Called once, after `validate`."""
        return None


def _coerce(field: dataclasses.Field, value: Any) -> int | float | str:
    # Types follow the default so that `seq_len=64.0` or `True` cannot silently make a new config.
    key, default, choices = field.name, field.default, field.metadata["choices"]
    if field.metadata.get("free_text"):
        if not isinstance(value, str):
            raise DataConfigError(f"dataset parameter {key!r} must be a string, got {value!r}")
        return value
    if isinstance(default, str):
        if value not in choices:
            raise DataConfigError(
                f"dataset parameter {key!r} must be one of {', '.join(choices)}; got {value!r}"
            )
        return value
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise DataConfigError(f"dataset parameter {key!r} must be a number, got {value!r}")
    if isinstance(default, int):
        if not float(value).is_integer():
            raise DataConfigError(f"dataset parameter {key!r} must be an integer, got {value!r}")
        return int(value)
    return float(value)


def _encode(value: int | float | str) -> str:
    # TFDS config names allow [A-Za-z0-9_+-.]; '.' is avoided so names stay plain identifiers.
    if isinstance(value, str):
        if re.fullmatch(r"[a-z][a-z0-9]*", value):
            return value  # one of the declared choices, or free text that is a plain word
        return "h" + hashlib.sha256(value.encode()).hexdigest()[:12]
    return repr(value).replace(".", "p").replace("-", "m")
