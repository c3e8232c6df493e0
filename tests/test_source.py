"""Specifications for runtime/source.py: the code a run ran, recorded as commit + patch and
rebuilt from them. Real git, in small repositories under tmp_path; nothing trains here."""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

import pytest

from runtime import source
from runtime.errors import UsageError
from tests.conftest import git, worktrees

BINARY = bytes(range(256)) * 4  # every byte value, NUL included


def files(tree: Path) -> dict[str, bytes]:
    """Every file under `tree` outside .git, by relative path."""
    return {
        str(p.relative_to(tree)): p.read_bytes()
        for p in tree.rglob("*")
        if p.is_file() and ".git" not in p.relative_to(tree).parts
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A committed repository: a module, a binary file, a file to delete, an ignore rule."""
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "lr.py").write_text("LEARNING_RATE = 3e-3\n")
    (repo / "weights.bin").write_bytes(BINARY)
    (repo / "old.py").write_text("gone = True\n")
    (repo / ".gitignore").write_text("runs/\n")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "base")
    return repo


@pytest.fixture
def private_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where tempfile puts the rebuilt trees, so that a test can see that none is left."""
    path = tmp_path / "tmp"
    path.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(path))
    return path


def test_a_clean_tree_is_its_commit_alone(repo):
    code = source.current(str(repo))
    assert code.commit == git(repo, "rev-parse", "HEAD").strip()
    assert code.record() == {
        "commit": code.commit,
        "toplevel": str(repo.resolve()),
        "dirty": False,
        "diff_sha256": None,
        "patch_bytes": 0,
        "patch": None,
    }


def test_commit_plus_patch_rebuild_the_dirty_tree_byte_for_byte(repo, private_tmp):
    (repo / "pkg" / "lr.py").write_text("LEARNING_RATE = 1e-2\n")  # a tracked edit
    (repo / "weights.bin").write_bytes(BINARY[::-1])  # a tracked binary edit
    (repo / "old.py").unlink()  # a deletion
    (repo / "experiments" / "new").mkdir(parents=True)  # untracked files, a new directory too
    (repo / "experiments" / "new" / "arm.py").write_text("ARM = 'mine'\n")
    (repo / "experiments" / "table.npy").write_bytes(BINARY)
    (repo / "runs").mkdir()  # ignored: not code
    (repo / "runs" / "metrics.jsonl").write_text("{}\n")
    dirty = files(repo)

    code = source.current(str(repo))
    record = code.record()
    assert record["dirty"] is True
    assert record["diff_sha256"] == hashlib.sha256(code.patch).hexdigest()
    assert record["patch_bytes"] == len(code.patch)
    assert record["patch"] == f"source-{record['diff_sha256'][:16]}.patch"
    assert git(repo, "status", "--porcelain") != "", "recording changes nothing in the repo"
    assert git(repo, "diff", "--cached") == "", "nothing is staged"

    before = worktrees(repo)
    with source.rebuilt(str(repo), code.commit, code.patch) as tree:
        del dirty["runs/metrics.jsonl"]
        assert files(Path(tree)) == dirty
        # The rebuilt tree records the same source: a rerun there says where its numbers came from.
        assert source.current(tree).record() == {**record, "toplevel": tree}
    assert worktrees(repo) == before, "the worktree is gone from the repository"
    assert list(private_tmp.iterdir()) == [], "and from the disk"


def test_a_patch_above_the_bound_keeps_only_its_hash_and_size(repo):
    (repo / "experiments.py").write_text("x = 1\n" * 100)
    size = source.current(str(repo)).patch_bytes
    assert source.current(str(repo), limit=size).patch is not None  # at the bound: kept

    code = source.current(str(repo), limit=size - 1)
    assert code.patch is None and code.too_large
    assert code.record()["patch"] is None
    assert code.record()["patch_bytes"] == size
    assert code.record()["diff_sha256"] == source.current(str(repo)).patch_sha256
    warning = code.warning()
    assert "\n" not in warning and f"{size:,} bytes" in warning and "--here" in warning
    assert source.current(str(repo)).warning() is None


def test_the_bound_is_one_mebibyte(repo):
    assert source.PATCH_LIMIT_BYTES == 1 << 20
    # Random bytes do not compress: their binary patch is larger than the file.
    (repo / "dump.bin").write_bytes(random.Random(0).randbytes(source.PATCH_LIMIT_BYTES))
    code = source.current(str(repo))
    assert code.too_large and code.patch_bytes > source.PATCH_LIMIT_BYTES


def test_an_unknown_commit_is_a_usage_error(repo, private_tmp):
    unknown = source.rebuilt(str(repo), "0" * 40, None)
    with pytest.raises(UsageError, match="commit 0{40} is not in the repository"), unknown:
        pass
    assert list(private_tmp.iterdir()) == []


def test_a_patch_that_does_not_apply_is_a_usage_error_and_leaves_nothing(repo, private_tmp):
    (repo / "pkg" / "lr.py").write_text("LEARNING_RATE = 1e-2\n")
    code = source.current(str(repo))
    (repo / "pkg" / "lr.py").write_text("LEARNING_RATE = 5e-4\n")
    git(repo, "commit", "-q", "-am", "the line the patch changes, changed otherwise")
    before = worktrees(repo)
    stale = source.rebuilt(str(repo), git(repo, "rev-parse", "HEAD").strip(), code.patch)
    with pytest.raises(UsageError, match="patch does not apply to commit"), stale:
        pass
    assert worktrees(repo) == before
    assert list(private_tmp.iterdir()) == []
