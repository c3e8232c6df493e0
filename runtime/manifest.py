"""`manifest.json`: everything needed to say where a run's numbers came from."""

from __future__ import annotations

import datetime
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from typing import Any

import jax

from analysis.runs import MANIFEST_FILE, read_json

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = (
    "jax",
    "jaxlib",
    "flax",
    "optax",
    "orbax-checkpoint",
    "grain",
    "tensorflow-datasets",
    "ml-collections",
    "numpy",
    "dp-accounting",
)


def now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", REPO_ROOT, *args], capture_output=True, text=True, timeout=30, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout


def git_state() -> dict[str, Any]:
    """Commit, dirty flag and a hash of the uncommitted diff, untracked files' contents included."""
    commit = _git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None, "diff_sha256": None}
    status = _git("status", "--porcelain") or ""
    diff = (_git("diff", "HEAD") or "") + status
    # Untracked files are code too: their contents enter the hash, not just their names.
    for name in (_git("ls-files", "--others", "--exclude-standard") or "").splitlines():
        try:
            with open(os.path.join(REPO_ROOT, name), "rb") as f:
                diff += name + hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue
    return {
        "commit": commit.strip(),
        "dirty": bool(status.strip()),
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if status.strip() else None,
    }


# Instruction-set extensions XLA's CPU code generator targets on the host it runs on: float
# results on CPU can differ between hosts with different sets. Seen: a run bitwise identical
# across two commits on one machine differed in its 4th significant figure on another.
SIMD_EXTENSIONS = (
    "sse4_2",
    "avx",
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512vl",
    "avx512_vnni",
    "avx512_bf16",
    "amx_tile",
    "asimd",  # aarch64
    "sve",
)


def cpu() -> dict[str, Any]:
    """The host CPU as far as CPU results depend on it: model name, which of SIMD_EXTENSIONS it
    reports (Linux's /proc/cpuinfo, first processor) and the threads this process may use (XLA
    splits work between them, which can change summation order)."""
    model, flags = platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = (part.strip() for part in line.partition(":"))
                if key == "model name":
                    model = value
                elif key in ("flags", "Features"):  # x86, aarch64
                    flags = set(value.split())
                elif not key:  # the first processor's block ends
                    break
    except OSError:
        pass
    threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "model": model,
        "simd": [name for name in SIMD_EXTENSIONS if name in flags],
        "threads": threads,
    }


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(mesh: jax.sharding.Mesh) -> dict[str, Any]:
    return {
        "backend": jax.default_backend(),
        "devices": [str(d.device_kind) for d in jax.devices()],
        "device_count": jax.device_count(),
        "process_count": jax.process_count(),
        "local_device_count": jax.local_device_count(),  # per process
        "mesh": dict(mesh.shape),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu(),
    }


def read(workdir: str) -> dict[str, Any] | None:
    return read_json(os.path.join(workdir, MANIFEST_FILE))


def write(workdir: str, manifest: dict[str, Any]) -> None:
    """Atomic: a kill mid-write leaves the previous manifest intact."""
    if jax.process_index() != 0:
        return
    path = os.path.join(workdir, MANIFEST_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)


def new_attempt(
    module: str, argv: list[str], resumed_from_step: int | None, git: dict[str, Any]
) -> dict[str, Any]:
    """One entry per launch of the same run: how, when, from which checkpoint, on which code."""
    return {
        "git": git,
        "command": [sys.executable, "-m", module, *argv[1:]],
        "cwd": os.getcwd(),
        "start_time": now(),
        "resumed_from_step": resumed_from_step,
        "end_time": None,
        "status": "running",
    }
