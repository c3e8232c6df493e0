"""The code a run ran: its git commit plus the uncommitted changes on top, kept as a patch that
`git apply` turns back into the same tree, and that tree rebuilt in a temporary git worktree.

The patch is `git diff --binary HEAD` (tracked files: edits, deletions, modes, binary content)
followed by one `git diff --no-index --binary /dev/null <file>` per untracked, not-ignored file
(a new experiment file is the usual case). Nothing is written to the repository: no index, no
objects. A patch above PATCH_LIMIT_BYTES keeps only its sha256 and size.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

from runtime.errors import UsageError

# A typical uncommitted change (an experiment file, a few edited modules) is kilobytes; a patch
# of megabytes is data or a run directory that the ignore rules missed, and it should not go
# into every run directory.
PATCH_LIMIT_BYTES = 1 << 20
GIT_TIMEOUT_S = 120
# Whatever the user's git configuration says (colour, external diff tools, prefixes), the patch
# must be one that `git apply` at the repository's top level accepts.
DIFF_OPTIONS = (
    "--binary",
    "--no-color",
    "--no-ext-diff",
    "--no-textconv",
    "--src-prefix=a/",
    "--dst-prefix=b/",
)


@dataclasses.dataclass(frozen=True)
class Source:
    commit: str | None  # None: not a git checkout, or git is missing
    toplevel: str | None  # the repository's top level, which the patch's paths are relative to
    patch_sha256: str | None  # None when the tree is clean
    patch_bytes: int
    patch: bytes | None  # None when the tree is clean or the patch is above the bound

    @property
    def dirty(self) -> bool | None:
        return None if self.commit is None else self.patch_bytes > 0

    @property
    def too_large(self) -> bool:
        return self.patch_bytes > 0 and self.patch is None

    @property
    def patch_file(self) -> str | None:
        """The file in the run directory that holds the patch, named by its content so that the
        attempts of a resumed run that ran the same changes share one."""
        return f"source-{self.patch_sha256[:16]}.patch" if self.patch else None

    def record(self) -> dict[str, Any]:
        """The manifest's `git` entry (the run's, and each attempt's)."""
        return {
            "commit": self.commit,
            "toplevel": self.toplevel,
            "dirty": self.dirty,
            "diff_sha256": self.patch_sha256,
            "patch_bytes": self.patch_bytes,
            "patch": self.patch_file,
        }

    def warning(self) -> str | None:
        if not self.too_large:
            return None
        return (
            f"the uncommitted changes make a patch of {self.patch_bytes:,} bytes, above the "
            f"{PATCH_LIMIT_BYTES:,} that a run records: only its sha256 is kept, so reproducing "
            "this run will need `launch.reproduce --here` on a tree that holds these changes"
        )


def _run_git(repo: str, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", repo, *args], input=stdin, capture_output=True, timeout=GIT_TIMEOUT_S
    )


def _git(repo: str, *args: str, ok: tuple[int, ...] = (0,)) -> bytes | None:
    """The command's output, or None when git fails (or is missing): recording the source must
    never stop a run."""
    try:
        out = _run_git(repo, *args)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode in ok else None


def toplevel(repo_root: str) -> str | None:
    out = _git(repo_root, "rev-parse", "--show-toplevel")
    return out.decode().strip() if out is not None else None


def current(repo_root: str, limit: int = PATCH_LIMIT_BYTES) -> Source:
    """The commit checked out at `repo_root` and the patch from it to the files as they are."""
    commit, top = _git(repo_root, "rev-parse", "HEAD"), toplevel(repo_root)
    if commit is None or top is None:
        return Source(None, None, None, 0, None)
    pieces = [_git(top, "diff", *DIFF_OPTIONS, "HEAD") or b""]
    untracked = _git(top, "ls-files", "--others", "--exclude-standard", "-z") or b""
    for name in os.fsdecode(untracked).split("\0"):
        # A nested repository is listed as its directory: its files are not this tree's code.
        if name and not name.endswith("/"):
            # Exit status 1 means "the files differ", as a new file always does; a file that
            # went away since it was listed gives nothing.
            diff = _git(top, "diff", "--no-index", *DIFF_OPTIONS, "--", os.devnull, name, ok=(0, 1))
            pieces.append(diff or b"")
    patch = b"".join(pieces)
    return Source(
        commit=commit.decode().strip(),
        toplevel=top,
        patch_sha256=hashlib.sha256(patch).hexdigest() if patch else None,
        patch_bytes=len(patch),
        patch=patch if 0 < len(patch) <= limit else None,
    )


def read_patch(workdir: str, record: dict[str, Any]) -> bytes:
    """The patch a manifest's `git` entry names, checked against its recorded sha256."""
    path = os.path.join(workdir, record["patch"])
    try:
        with open(path, "rb") as f:
            patch = f.read()
    except OSError as e:
        raise UsageError(f"cannot read the run's patch {path}: {e.strerror}") from e
    if hashlib.sha256(patch).hexdigest() != record.get("diff_sha256"):
        raise UsageError(f"{path} does not match the sha256 its manifest records")
    return patch


@contextlib.contextmanager
def rebuilt(repo_root: str, commit: str, patch: bytes | None) -> Iterator[str]:
    """A temporary worktree of `repo_root`'s repository at `commit` with `patch` applied; yields
    its top level and removes it afterwards, also when the patch does not apply."""
    if _git(repo_root, "cat-file", "-e", f"{commit}^{{commit}}") is None:
        raise UsageError(
            f"commit {commit} is not in the repository at {repo_root} (fetch it first, or "
            "rerun with --here)"
        )
    parent = tempfile.mkdtemp(prefix="archlab-reproduce-")
    tree = os.path.join(parent, "tree")
    try:
        added = _run_git(repo_root, "worktree", "add", "--quiet", "--detach", tree, commit)
        if added.returncode != 0:
            raise RuntimeError(f"git worktree add failed: {added.stderr.decode(errors='replace')}")
        if patch:
            applied = _run_git(tree, "apply", "--whitespace=nowarn", "-", stdin=patch)
            if applied.returncode != 0:
                why = applied.stderr.decode(errors="replace").strip().splitlines() or ["?"]
                raise UsageError(
                    f"the run's patch does not apply to commit {commit}: {why[0]} (rerun "
                    "with --here)"
                )
        yield tree
    finally:
        _git(repo_root, "worktree", "remove", "--force", tree)
        shutil.rmtree(parent, ignore_errors=True)
        _git(repo_root, "worktree", "prune")  # in case the removal above failed half-way
