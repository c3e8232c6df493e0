"""What exactly a dataset is: identity, parameters, split sizes and a hash of every example.

The content hash is taken over the decoded examples as read back from the prepared files (not the
serialized bytes), so it certifies what training will actually see and does not change with the
TFDS record encoding. It is computed once, at preparation, and cached beside the data, together
with the train/eval overlap check of `data.overlap`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from data import overlap
from data.builder import ArchlabBuilder, cast_example, declared_dtypes

FINGERPRINT_FILE = "archlab_fingerprint.json"
_READ_CHUNK = 1024  # examples per batched read; bounds memory, amortizes per-call overhead


def _update(digest: Any, example: dict[str, Any]) -> None:
    # Names, dtypes and shapes go in with the bytes so that a reshaped or retyped field changes
    # the hash even when its raw bytes do not.
    for key in sorted(example):
        array = np.ascontiguousarray(example[key])  # cast_example made it the declared dtype
        digest.update(f"{key}|{array.dtype.str}|{array.shape}|".encode())
        digest.update(array.tobytes())


def content_hash(builder: ArchlabBuilder) -> str:
    """sha256 over all examples of all splits, splits in name order, examples in index order."""
    digest = hashlib.sha256()
    dtypes = declared_dtypes(builder)
    for split in sorted(builder.info.splits):
        source = builder.as_data_source(split)
        digest.update(f"split|{split}|{len(source)}|".encode())
        for start in range(0, len(source), _READ_CHUNK):
            keys = list(range(start, min(start + _READ_CHUNK, len(source))))
            for example in source.__getitems__(keys):
                _update(digest, cast_example(example, dtypes))
    return "sha256:" + digest.hexdigest()


def compute(builder: ArchlabBuilder) -> dict[str, Any]:
    """The JSON-serializable fingerprint of a prepared dataset."""
    return {
        "builder": builder.name,
        "version": str(builder.version),
        "config_name": builder.builder_config.name,
        "params": builder.config.params(),
        "splits": builder.split_sizes(),
        "content_hash": content_hash(builder),
        "data_sheet": builder.data_sheet(),
        "overlap": overlap.compute(builder),
    }


def is_current(fingerprint: dict[str, Any]) -> bool:
    """False for a fingerprint written before the overlap check existed or changed method: it
    must be brought up to date (`with_current_overlap`), not used without one."""
    recorded = fingerprint.get("overlap", {}).get("method", {}).get("version")
    return recorded == overlap.VERSION


def with_current_overlap(builder: ArchlabBuilder, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint with its overlap entry (re)computed; the rest is kept as it was."""
    return {**fingerprint, "overlap": overlap.compute(builder)}
