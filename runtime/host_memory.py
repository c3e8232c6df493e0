"""Host memory for XLA on CPU: keep freed buffers in the process instead of returning them.

XLA's CPU runtime allocates each step's temporaries as one large block with malloc and frees it
when the step ends. glibc serves a block that large with a fresh mmap and unmaps it on free, so
every step page-faults its whole scratch space in again. Told never to use mmap, never to trim,
and to keep a single arena (XLA's pool threads would otherwise allocate from per-thread arenas,
which hand such a block to mmap regardless), glibc reuses the same pages every step. What it
saves and costs on the reference LM is in experiments/reference_lm.md.

The costs: the process keeps its peak heap until it exits, and all threads share one malloc
arena. `ARCHLAB_KEEP_FREED_MEMORY=0` turns it off, and a user's own `MALLOC_ARENA_MAX` or
`GLIBC_TUNABLES` is left to rule. Outside glibc this does nothing.
"""

from __future__ import annotations

import ctypes
import os
import platform
from collections.abc import Mapping

OPT_OUT = "ARCHLAB_KEEP_FREED_MEMORY"
USER_SETTINGS = ("MALLOC_ARENA_MAX", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")

# mallopt parameters, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8
_TRIM_NEVER = -1  # mallopt(3): a trim threshold of -1 disables trimming


def is_glibc() -> bool:
    """Whether this process runs on glibc, the only C library the settings are for."""
    return platform.libc_ver()[0] == "glibc"


def applies(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether keep_freed_memory acts here: glibc, no opt-out, no malloc settings of the user's."""
    if environ.get(OPT_OUT) == "0" or any(name in environ for name in USER_SETTINGS):
        return False
    return is_glibc()


def keep_freed_memory() -> bool:
    """Sets glibc's malloc to reuse freed memory; True if all three settings took. Call before
    JAX touches a device: threads that have already allocated keep their own arenas."""
    if not applies():
        return False
    mallopt = ctypes.CDLL(None).mallopt  # the process's own C library
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    settings = ((_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, _TRIM_NEVER), (_M_ARENA_MAX, 1))
    results = [mallopt(parameter, value) for parameter, value in settings]  # apply all three
    return all(result == 1 for result in results)
