"""Files archlab writes whole are never seen half-written: a write that fails (here a file-size
limit standing in for a full disk) leaves the previous file as it was and no temporary behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from atomic_write import write_atomically, write_json_atomically
from tests.conftest import REPO

WRITE_UNDER_A_SIZE_LIMIT = """
import resource, signal, sys
from atomic_write import write_atomically
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # exceed the limit: an OSError, not a kill
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
try:
    write_atomically(sys.argv[1], "new " * 10_000)
except OSError as e:
    print(type(e).__name__, e.errno)
    sys.exit(3)
"""


def test_a_write_the_disk_cannot_hold_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "manifest.json"
    target.write_text('{"status": "completed"}')
    result = subprocess.run(
        [sys.executable, "-c", WRITE_UNDER_A_SIZE_LIMIT, str(target)],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3, result.stderr
    assert result.stdout.startswith("OSError")
    assert target.read_text() == '{"status": "completed"}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_write_replaces_the_whole_file(tmp_path: Path):
    target = tmp_path / "summary.json"
    write_atomically(target, "a much longer first version\n")
    write_json_atomically(target, {"b": 1})
    assert target.read_text() == '{"b": 1}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["summary.json"]
