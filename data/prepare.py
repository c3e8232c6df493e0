"""Preparing a dataset into the data dir exactly once, even with many processes starting at once.

Protocol (per dataset variant = builder/config/version):
1. Fast path, no lock: if the fingerprint file exists, the data is complete (the fingerprint is
   written last, atomically) and nothing else is read but it and TFDS's dataset_info.json.
2. Otherwise take an exclusive `fcntl.flock` on `<data_dir>/.<builder>-<config>.lock` and check
   again: a process that waited on the lock finds the other's fingerprint and only reads.
3. Under the lock: remove `incomplete.*` folders left by a killed preparer (TFDS generates into
   such a temporary folder and renames it to the version folder only on success, so a
   half-written preparation is never at the real path), prepare if TFDS says the variant is not
   prepared, hash the content, write the fingerprint to a temporary file and rename it.
4. A fingerprint written before the current train/eval overlap check (`data.overlap`) is not
   current: under the same lock its `overlap` entry is computed and the file rewritten, once;
   the rest of it (content hash included) is kept as it was.
flock locks are released by the kernel when a process dies, so a killed preparer never leaves
the lock held.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import tensorflow_datasets as tfds
from absl import logging as absl_logging

from atomic_write import write_atomically
from data import fingerprint
from data.builder import ArchlabBuilder
from data.config import ParamsConfig

DATA_DIR_ENV = "ARCHLAB_DATA_DIR"
DEFAULT_DATA_DIR = "~/.cache/archlab/datasets"
_INCOMPLETE_PREFIX = "incomplete."  # tensorflow_datasets.core.constants.INCOMPLETE_PREFIX


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path:
    """data_dir if given, else $ARCHLAB_DATA_DIR if set, else ~/.cache/archlab/datasets."""
    chosen = data_dir or os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR
    return Path(chosen).expanduser().resolve()


@contextlib.contextmanager
def exclusive_lock(path: Path) -> Iterator[None]:
    """Blocks until this process holds an exclusive flock on `path`."""
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_fingerprint(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def unprepared_builder(
    builder_cls: type[ArchlabBuilder], config: ParamsConfig, data_dir: Path
) -> ArchlabBuilder:
    """A builder over one parameter variant. TFDS warns that every such variant is a 'custom
    data configuration'; for us that is the normal case, so the warning is silenced."""
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        return builder_cls(config=config, data_dir=os.fspath(data_dir))
    finally:
        absl_logging.set_verbosity(verbosity)


def prepare(
    builder_cls: type[ArchlabBuilder], config: ParamsConfig, data_dir: Path
) -> tuple[ArchlabBuilder, dict[str, Any]]:
    """Returns a builder over the prepared variant and its fingerprint, preparing if needed."""
    builder = unprepared_builder(builder_cls, config, data_dir)
    fingerprint_path = Path(builder.data_path) / fingerprint.FINGERPRINT_FILE
    cached = _read_fingerprint(fingerprint_path)
    if cached is not None and fingerprint.is_current(cached):
        return builder, cached

    data_dir.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(data_dir / f".{builder.name}-{config.name}.lock"):
        # Rebuild: the builder above may predate another process's preparation, and TFDS reads
        # dataset_info (splits, sizes) from disk only at construction.
        builder = unprepared_builder(builder_cls, config, data_dir)
        cached = _read_fingerprint(fingerprint_path)
        if cached is not None and fingerprint.is_current(cached):
            return builder, cached
        if cached is not None:  # prepared before the overlap check: add it, keep the rest
            result = fingerprint.with_current_overlap(builder, cached)
            write_atomically(fingerprint_path, _to_json(result))
            return builder, result
        if not builder.is_prepared():
            _remove_incomplete(Path(builder.data_path).parent)
            builder.download_and_prepare(
                file_format="array_record",
                # Nothing is downloaded; GCS must never be tried (no network on our machines).
                download_config=tfds.download.DownloadConfig(try_download_gcs=False),
            )
            builder = unprepared_builder(builder_cls, config, data_dir)
        result = fingerprint.compute(builder)
        write_atomically(fingerprint_path, _to_json(result))
    return builder, result


def _to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, indent=2, sort_keys=True) + "\n"


def _remove_incomplete(config_dir: Path) -> None:
    # Only called under the lock, so no live process is writing into these folders.
    if config_dir.is_dir():
        for leftover in config_dir.glob(f"{_INCOMPLETE_PREFIX}*"):
            shutil.rmtree(leftover, ignore_errors=True)
