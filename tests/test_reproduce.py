"""Specifications for `python -m launch.reproduce`: rerun a run from its manifest, bit for bit,
on the code it ran (its commit plus its recorded patch, rebuilt in a temporary worktree).

Every run is made in, and reproduced from, a git repository under tmp_path that holds this
checkout's files (so the worktrees never touch the real checkout). Seven TINY trainings in all:
a clean run and its faithful rerun, a rerun of a copy whose metrics were tampered with, a run
from a dirty tree and its reruns on the recorded code and on today's (--here), and a run whose
changes are above the patch bound. The error cases use hand-written run directories and train
nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from launch.reproduce import (
    environment_warnings,
    rerun_command,
    resumed_code_warnings,
)
from runtime import source
from tests.conftest import REPO, TINY, git, train_command, train_env, worktrees

pytestmark = pytest.mark.long(seconds=90)


def make_repository(path: Path) -> Path:
    """A git repository at `path` whose one commit holds this checkout's files as they are now,
    uncommitted changes included: the tests run today's code (a clone would run the last
    commit's)."""
    listed = git(REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard")
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():  # not a file deleted since its last commit
            (path / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, path / name)
    git(path, "init", "-q")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "this checkout, as it is")
    return path


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Clean, shared by the tests that leave it so."""
    return make_repository(tmp_path_factory.mktemp("repository"))


@pytest.fixture
def own_repository(tmp_path: Path) -> Path:
    """For a test that dirties its tree."""
    return make_repository(tmp_path / "repository")


def run_in(
    repo: Path, data_dir: str, command: list[str], cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """`command` as a user of the checkout at `repo` runs it (from `cwd`, default its root)."""
    env = {**train_env(data_dir), "PYTHONPATH": str(repo)}
    return subprocess.run(
        command, cwd=cwd or repo, env=env, capture_output=True, text=True, timeout=600
    )


def reproduce(data_dir: str, repo: Path, *args: str) -> subprocess.CompletedProcess:
    return run_in(repo, data_dir, [sys.executable, "-m", "launch.reproduce", *args])


def file_hashes(directory: Path) -> dict[Path, str]:
    return {
        p: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.rglob("*") if p.is_file()
    }


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained_run(data_dir: str, repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    workdir = tmp_path_factory.mktemp("original") / "run"
    result = run_in(repository, data_dir, train_command(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def test_a_rerun_reproduces_bit_for_bit(data_dir, repository, trained_run, tmp_path):
    before = file_hashes(trained_run)
    into = tmp_path / "repro"
    result = reproduce(data_dir, repository, f"--workdir={trained_run}", f"--into={into}")
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    # TINY logs at steps 5, 10, 15 and 20.
    assert "reproduced: 4 rows identical" in result.stdout
    assert json.loads((into / "manifest.json").read_text())["status"] == "completed"
    assert file_hashes(trained_run) == before, "the original run is only read"


def test_a_planted_change_is_found(data_dir, repository, trained_run, tmp_path):
    tampered = tmp_path / "tampered"
    shutil.copytree(trained_run, tampered)
    rows = [json.loads(line) for line in (tampered / "metrics.jsonl").read_text().splitlines()]
    row = next(r for r in rows if r["step"] == 10)
    # The smallest change a float can take: a bitwise comparison must still see it.
    row["eval/loss"] = float(np.nextafter(row["eval/loss"], np.inf))
    (tampered / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    # Into the default <run>.repro-<time>.
    result = reproduce(data_dir, repository, f"--workdir={tampered}")
    assert result.returncode == 1, result.stdout + result.stderr[-3000:]
    assert "not reproduced" in result.stdout
    assert "step 10, key 'eval/loss'" in result.stdout
    assert f"old {row['eval/loss']!r}" in result.stdout
    assert "1 of 4 rows differ, 1 value(s) in all" in result.stdout
    reruns = list(tmp_path.glob("tampered.repro-*"))
    assert len(reruns) == 1 and (reruns[0] / "metrics.jsonl").exists()


def test_a_run_from_a_dirty_tree_is_rebuilt_from_its_commit_and_patch(
    data_dir, own_repository, tmp_path
):
    repo, experiments = own_repository, own_repository / "experiments"
    # The uncommitted change: an edited tracked config takes its learning rate from a new,
    # untracked file.
    config = experiments / "mqar_mixers.py"
    edited = config.read_text().replace(
        "import ml_collections\n",
        "import ml_collections\n\nfrom experiments.tuned import LEARNING_RATE\n",
    )
    edited = edited.replace(
        "c.optimizer.learning_rate = 3e-3", "c.optimizer.learning_rate = LEARNING_RATE"
    )
    assert edited.count("LEARNING_RATE") == 2
    config.write_text(edited)
    (experiments / "tuned.py").write_text("LEARNING_RATE = 1e-2\n")
    # Launched from a subdirectory, with a config path relative to it.
    workdir = tmp_path / "run"
    tiny = ["--config=mqar_mixers.py", *(a for a in TINY if not a.startswith("--config="))]
    result = run_in(repo, data_dir, train_command(workdir, base=tiny), cwd=experiments)
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((workdir / "manifest.json").read_text())
    assert record["git"]["dirty"] and record["attempts"][0]["git"] == record["git"]
    assert (workdir / record["git"]["patch"]).exists()

    git(repo, "checkout", "--", ".")
    git(repo, "clean", "-fd")
    assert git(repo, "status", "--porcelain") == "", "the changes are gone from the tree"
    before = worktrees(repo)

    rebuilt = reproduce(data_dir, repo, f"--workdir={workdir}", f"--into={tmp_path / 'rebuilt'}")
    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr[-3000:]
    assert "reproduced: 4 rows identical" in rebuilt.stdout
    # The rerun imported the rebuilt tree: it records the same commit and patch as the run.
    rerun_git = json.loads((tmp_path / "rebuilt" / "manifest.json").read_text())["git"]
    assert (rerun_git["commit"], rerun_git["diff_sha256"]) == (
        record["git"]["commit"],
        record["git"]["diff_sha256"],
    )
    assert worktrees(repo) == before, "the rebuilt worktree is removed"

    here = reproduce(
        data_dir, repo, f"--workdir={workdir}", f"--into={tmp_path / 'here'}", "--here"
    )
    assert here.returncode == 1, here.stdout + here.stderr[-3000:]
    assert "not reproduced" in here.stdout
    assert "which --here does not apply" in here.stderr


def test_a_run_with_changes_above_the_bound_records_their_hash_and_needs_here(
    data_dir, own_repository, tmp_path
):
    # Random bytes do not compress: their binary patch is larger than the file.
    (own_repository / "dump.bin").write_bytes(random.Random(0).randbytes(source.PATCH_LIMIT_BYTES))
    workdir = tmp_path / "run"
    result = run_in(own_repository, data_dir, train_command(workdir))
    assert result.returncode == 0, result.stderr[-3000:]
    warned = [ln for ln in result.stderr.splitlines() if "uncommitted changes" in ln]
    assert len(warned) == 1 and warned[0].startswith("warning: "), result.stderr
    assert "--here" in warned[0]
    git_record = json.loads((workdir / "manifest.json").read_text())["git"]
    assert git_record["dirty"] and git_record["patch"] is None
    assert git_record["patch_bytes"] > source.PATCH_LIMIT_BYTES
    assert len(git_record["diff_sha256"]) == 64
    assert not list(workdir.glob("*.patch"))

    refused = reproduce(data_dir, own_repository, f"--workdir={workdir}")
    assert_usage_error(refused, f"above the {source.PATCH_LIMIT_BYTES:,}-byte bound", "--here")


def write_fake_run(workdir: Path, manifest: dict | str | None) -> Path:
    workdir.mkdir(parents=True)
    (workdir / "config.json").write_text("{}")
    if manifest is not None:
        text = manifest if isinstance(manifest, str) else json.dumps(manifest)
        (workdir / "manifest.json").write_text(text)
    return workdir


COMMAND = [sys.executable, "-m", "launch.train", "--config=experiments/x.py", "--workdir=w"]


def completed(git_record: dict | None) -> dict:
    """A completed run's manifest whose first attempt ran on `git_record`'s code."""
    attempt = (
        {"command": COMMAND} if git_record is None else {"command": COMMAND, "git": git_record}
    )
    return {"status": "completed", "attempts": [attempt]}


@pytest.mark.parametrize(
    ("manifest", "fragments"),
    [
        (None, ["no manifest.json"]),
        ({"status": "running", "attempts": [{"command": COMMAND}]}, ["'running'", "not completed"]),
        ({"status": "diverged", "attempts": [{"command": COMMAND}]}, ["'diverged'"]),
        ("{not json", ["malformed", "manifest.json"]),
        ({"attempts": [{"command": COMMAND}]}, ["malformed", "no status"]),
        ({"status": "completed", "attempts": []}, ["malformed", "attempts[0].command"]),
        ({"status": "completed", "attempts": [{"command": COMMAND[:4]}]}, ["no --workdir"]),
        (completed(None), ["malformed", "records no git state", "--here"]),
        (completed({"commit": None, "dirty": None}), ["no git commit", "--here"]),
        (completed({"commit": "0" * 40, "dirty": False}), ["not in the repository", "--here"]),
        # Made before patches were recorded.
        (completed({"commit": "0" * 40, "dirty": True}), ["does not hold", "--here"]),
        (
            completed({"commit": "0" * 40, "dirty": True, "patch_bytes": 2 << 20, "patch": None}),
            ["2,097,152 bytes", "above the 1,048,576-byte bound", "--here"],
        ),
        (
            completed({"commit": "0" * 40, "dirty": True, "patch": "source-0.patch"}),
            ["cannot read the run's patch", "source-0.patch"],
        ),
    ],
)
def test_runs_that_cannot_be_reproduced_are_one_line_errors(
    data_dir, repository, tmp_path, manifest, fragments
):
    run = write_fake_run(tmp_path / "run", manifest)
    assert_usage_error(reproduce(data_dir, repository, f"--workdir={run}"), *fragments)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing is created"


def test_a_patch_that_does_not_apply_is_a_one_line_error_and_leaves_no_worktree(
    data_dir, repository, tmp_path
):
    patch = b"--- a/nowhere.py\n+++ b/nowhere.py\n@@ -1 +1 @@\n-a\n+b\n"
    git_record = {
        "commit": git(repository, "rev-parse", "HEAD").strip(),
        "dirty": True,
        "diff_sha256": hashlib.sha256(patch).hexdigest(),
        "patch_bytes": len(patch),
        "patch": "source-x.patch",
    }
    run = write_fake_run(
        tmp_path / "run",
        {"status": "completed", "attempts": [{"command": COMMAND, "git": git_record}]},
    )
    (run / "source-x.patch").write_bytes(patch)
    before = worktrees(repository)
    result = reproduce(data_dir, repository, f"--workdir={run}")
    assert_usage_error(result, "patch does not apply to commit", "--here")
    assert worktrees(repository) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"], "nothing is created"


def test_bad_workdir_and_occupied_into_are_one_line_errors(data_dir, repository, tmp_path):
    nope = reproduce(data_dir, repository, f"--workdir={tmp_path / 'nope'}")
    assert_usage_error(nope, "does not exist")
    assert_usage_error(reproduce(data_dir, repository, f"--workdir={tmp_path}"), "not a run")
    run = write_fake_run(
        tmp_path / "run", {"status": "completed", "attempts": [{"command": COMMAND}]}
    )
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    result = reproduce(data_dir, repository, f"--workdir={run}", f"--into={occupied}")
    assert_usage_error(result, "--into", "not an empty directory")
    assert (occupied / "keep.txt").read_text() == "mine"
    assert_usage_error(reproduce(data_dir, repository), "--workdir")


AVX512 = {"model": "AMD EPYC", "simd": ["avx", "avx2", "fma", "avx512f"], "threads": 2}
AVX2 = {"model": "AMD EPYC", "simd": ["avx", "avx2", "fma"], "threads": 2}


@pytest.mark.parametrize(
    "backend, cpu_then, cpu_now, warned",
    [
        ("cpu", AVX512, AVX512, False),
        ("cpu", AVX512, {**AVX512, "checked": True}, False),  # a field recorded later
        ("cpu", AVX512, {**AVX512, "threads": 8}, True),  # work split another way
        ("cpu", AVX512, AVX2, True),  # same model name, other instruction set: XLA's code differs
        ("cpu", None, AVX2, False),  # a manifest from before the CPU was recorded
        ("gpu", AVX512, AVX2, False),  # the host CPU does not compute a GPU run's numbers
    ],
)
def test_a_cpu_run_rerun_on_another_instruction_set_is_warned_about(
    backend, cpu_then, cpu_now, warned
):
    manifest = {"versions": {}, "environment": {"backend": backend, "cpu": cpu_then}}
    warnings = environment_warnings(manifest, {}, cpu_now)
    assert any("another CPU" in w for w in warnings) == warned, warnings


@pytest.mark.parametrize(
    "cwd, config, expected",
    [
        ("/old/repo", "experiments/x.py:arm", "/new/tree/experiments/x.py:arm"),  # from the root
        ("/old/repo/experiments", "x.py", "/new/tree/experiments/x.py"),  # from a subdirectory
        ("/elsewhere", "/old/repo/experiments/x.py", "/new/tree/experiments/x.py"),
        ("/old/repo", "../mine/x.py", "/old/mine/x.py"),  # outside the repository: not code
        ("/old/repo", "/old/repo2/x.py", "/old/repo2/x.py"),  # a sibling sharing a prefix
    ],
)
def test_a_config_in_the_recorded_repository_is_read_from_the_rebuilt_tree(cwd, config, expected):
    recorded = [sys.executable, "-m", "launch.train", f"--config={config}", "--workdir=w"]
    command = rerun_command(recorded, "/runs/new", cwd, moved=("/old/repo", "/new/tree"))
    config_flag, workdir_flag = command[3:]
    assert os.path.normpath(config_flag.removeprefix("--config=")) == expected
    assert workdir_flag == "--workdir=/runs/new"


def test_with_here_a_relative_config_is_read_from_where_the_run_was_launched():
    recorded = [sys.executable, "-m", "launch.train", "--config", "x.py:arm", "--workdir=w"]
    command = rerun_command(recorded, "/runs/new", "/old/repo/experiments")
    assert command[3:] == ["--config", "/old/repo/experiments/x.py:arm", "--workdir=/runs/new"]


def attempt(commit: str, diff: str | None, resumed_from_step: int | None) -> dict:
    git_record = {"commit": commit, "diff_sha256": diff}
    return {"git": git_record, "resumed_from_step": resumed_from_step}


def test_a_run_resumed_on_other_code_is_warned_about():
    same = {"attempts": [attempt("abc", "d1", None), attempt("abc", "d1", 10)]}
    assert resumed_code_warnings(same) == []
    other = {"attempts": [attempt("abc", "d1", None), attempt("abc", "d2", 10)]}
    (warning,) = resumed_code_warnings(other)
    assert "attempt 2" in warning and "step 10" in warning and "d2" in warning
