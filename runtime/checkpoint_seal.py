"""A checkpoint's seal: the sha256 of every file in its step directory, written last.

The seal is one JSON file inside the step directory, written through a temporary name and renamed,
so a checkpoint either has a complete seal or none. Checking it re-reads every file (its cost
beside a restore is in experiments/reference_lm.md).
"""

from __future__ import annotations

import hashlib
import json
import os

from atomic_write import write_json_atomically

SEAL_FILE = "archlab_sha256.json"


def file_digests(step_dir: str) -> dict[str, str]:
    """{path relative to step_dir: sha256 hex} of every file under it but the seal itself."""
    digests = {}
    for root, _, files in os.walk(step_dir):
        for name in files:
            path = os.path.join(root, name)
            relative = os.path.relpath(path, step_dir)
            if relative == SEAL_FILE or relative.startswith(f".{SEAL_FILE}."):
                continue
            with open(path, "rb") as f:
                digests[relative] = hashlib.file_digest(f, "sha256").hexdigest()
    return dict(sorted(digests.items()))


def write_seal(step_dir: str) -> None:
    write_json_atomically(
        os.path.join(step_dir, SEAL_FILE), {"sha256": file_digests(step_dir)}, indent=1
    )


def has_seal(step_dir: str) -> bool:
    return os.path.isfile(os.path.join(step_dir, SEAL_FILE))


def seal_sha256(step_dir: str) -> str | None:
    """One digest of the whole sealed checkpoint (the sha256 of its seal's file digests, in
    order), or None when it has no readable seal: what names a checkpoint in provenance."""
    try:
        with open(os.path.join(step_dir, SEAL_FILE)) as f:
            sealed = json.load(f)["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return hashlib.sha256(json.dumps(sealed, sort_keys=True).encode()).hexdigest()


def check_seal(step_dir: str) -> str | None:
    """None when every sealed file is there with its bytes unchanged; else what is wrong, in
    words fit for a one-line warning."""
    try:
        with open(os.path.join(step_dir, SEAL_FILE)) as f:
            sealed = json.load(f)["sha256"]
    except FileNotFoundError:
        return "has no seal (written but never sealed)"
    except (OSError, ValueError, KeyError, TypeError) as e:
        return f"has an unreadable seal ({type(e).__name__})"
    found = file_digests(step_dir)
    missing = sorted(set(sealed) - set(found))
    if missing:
        return f"lost {len(missing)} file(s), first {missing[0]}"
    changed = [path for path, digest in sealed.items() if found[path] != digest]
    if changed:
        return f"has {len(changed)} file(s) whose bytes changed, first {changed[0]}"
    return None
