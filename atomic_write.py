"""Writing a file so that a reader (or a rerun after a kill or a full disk) sees either the old
file or the whole new one, never a part: write a temporary file beside it, flush it to disk,
then rename it over the target (atomic on POSIX). Every file archlab writes whole goes through
here; only `metrics.jsonl` is appended to, and its readers drop a torn last line."""

from __future__ import annotations

import json
import os
from typing import Any


def write_atomically(path: str | os.PathLike, content: str | bytes) -> None:
    path = os.fspath(path)
    # Unique per process, so two processes writing the same file never share a temporary.
    tmp = os.path.join(os.path.dirname(path) or ".", f".{os.path.basename(path)}.{os.getpid()}.tmp")
    data = content.encode() if isinstance(content, str) else content
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)  # a full disk leaves no half-written temporary behind
        raise


def write_json_atomically(path: str | os.PathLike, value: Any, **dump_options: Any) -> None:
    write_atomically(path, json.dumps(value, **dump_options))
