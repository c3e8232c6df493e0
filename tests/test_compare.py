"""Specifications for `python -m launch.compare`, the regression gate.

Run directories are written by hand (config.json, metrics.jsonl, a completed manifest): the gate
reads run directories, so no training is needed. The gate runs as a user runs it, in its own
process, and its exit status is the verdict: 0 pass, 1 regression, 2 bad input.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fabricated_runs import write_run, write_seeds

# Final eval/accuracy of four seeds, and a candidate that is clearly worse on every seed.
BASE_ACC = [0.80, 0.82, 0.79, 0.81]
WORSE_ACC = [0.72, 0.74, 0.71, 0.73]
# Seeds that agree closely, and a candidate 0.005 below them on every seed.
TIGHT_ACC = [0.800, 0.802, 0.799, 0.801]
SLIGHTLY_WORSE_ACC = [0.795, 0.797, 0.794, 0.796]


def gate(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "launch.compare", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def accuracy_gate(baseline: Path | str, candidate: Path | str, *more: str):
    return gate(
        f"--baseline={baseline}",
        f"--candidate={candidate}",
        "--metric=eval/accuracy",
        "--higher-is-better",
        *more,
    )


def assert_exit(result: subprocess.CompletedProcess, code: int) -> None:
    assert result.returncode == code, result.stdout + result.stderr


def assert_usage_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert_exit(result, 2)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stderr
    assert result.stdout == "", "nothing is computed or printed before the input is known good"
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture
def study(tmp_path: Path) -> Path:
    """A study directory: arms `base`, `same` (equal), `worse` (regressed), and `tight` with
    `slight` (0.005 below it, with little seed-to-seed spread)."""
    root = tmp_path / "study"
    write_seeds(root / "runs" / "base", "eval/accuracy", BASE_ACC)
    write_seeds(root / "runs" / "same", "eval/accuracy", BASE_ACC)
    write_seeds(root / "runs" / "worse", "eval/accuracy", WORSE_ACC)
    write_seeds(root / "runs" / "tight", "eval/accuracy", TIGHT_ACC)
    write_seeds(root / "runs" / "slight", "eval/accuracy", SLIGHTLY_WORSE_ACC)
    return root


def test_equal_candidate_passes(study, tmp_path):
    result = accuracy_gate(study / "runs/base", study / "runs/same", "--json", tmp_path / "g.json")
    assert_exit(result, 0)
    assert "PASS" in result.stdout
    assert "one-sided Welch t-test" in result.stdout
    numbers = json.loads((tmp_path / "g.json").read_text())
    assert numbers["regression"] is False and numbers["exit_status"] == 0
    assert numbers["baseline"]["n"] == numbers["candidate"]["n"] == 4
    assert numbers["baseline"]["mean"] == pytest.approx(sum(BASE_ACC) / 4)
    assert numbers["difference"] == pytest.approx(0.0, abs=1e-12)


def test_planted_regression_exits_1(study, tmp_path):
    result = accuracy_gate(study / "runs/base", study / "runs/worse", "--json", tmp_path / "g.json")
    assert_exit(result, 1)
    assert "REGRESSION" in result.stdout
    for seed in ("seed_0", "seed_3"):  # every run that went into each side is listed
        assert seed in result.stdout
    numbers = json.loads((tmp_path / "g.json").read_text())
    assert numbers["regression"] is True and numbers["exit_status"] == 1
    assert numbers["test"]["kind"] == "one_sided_welch_t"
    assert numbers["test"]["p"] < 0.05
    assert numbers["worsening"] == pytest.approx(0.08)
    assert numbers["candidate"]["t_ci"][1] < numbers["baseline"]["t_ci"][0]


def test_small_drop_within_the_margin_passes(study):
    tight, slight = study / "runs/tight", study / "runs/slight"
    # Without a margin the 0.005 drop is resolved and flagged; a 0.01 margin tolerates it.
    assert_exit(accuracy_gate(tight, slight), 1)
    result = accuracy_gate(tight, slight, "--margin=0.01")
    assert_exit(result, 0)
    assert "at most 0.01 worse" in result.stdout
    # A margin does not hide a drop far larger than itself.
    assert_exit(accuracy_gate(study / "runs/base", study / "runs/worse", "--margin=0.01"), 1)


def test_lower_is_better_flags_a_loss_going_up(tmp_path):
    base = write_seeds(tmp_path / "base", "eval/loss", [1.00, 1.02, 0.99, 1.01])
    higher = write_seeds(tmp_path / "higher", "eval/loss", [1.20, 1.22, 1.19, 1.21])
    loss = ("--metric=eval/loss", "--lower-is-better")
    went_up = gate(f"--baseline={base}", f"--candidate={higher}", *loss)
    assert_exit(went_up, 1)
    assert "REGRESSION" in went_up.stdout
    # The same change the other way round is an improvement, and as higher-is-better a gain.
    assert_exit(gate(f"--baseline={higher}", f"--candidate={base}", *loss), 0)
    assert_exit(
        gate(
            f"--baseline={base}",
            f"--candidate={higher}",
            "--metric=eval/loss",
            "--higher-is-better",
        ),
        0,
    )


def test_best_uses_the_best_value_of_each_run(tmp_path):
    # Both arms end at the same loss, but the candidate was better earlier (the first row is
    # half the final one): --best compares that.
    base = write_seeds(tmp_path / "base", "eval/loss", [1.0, 1.02, 0.98])
    candidate = tmp_path / "candidate"
    for i, final in enumerate([1.0, 1.02, 0.98]):
        run = write_run(candidate / f"seed_{i}", {"eval/loss": final})
        rows = [{"step": 10, "eval/loss": 5.0}, {"step": 20, "eval/loss": final}]
        (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    args = (f"--baseline={base}", f"--candidate={candidate}", "--metric=eval/loss")
    assert_exit(gate(*args, "--lower-is-better"), 0)
    # The baseline's best (its first row, 0.5 x final) beats the candidate's best (its final).
    best = gate(*args, "--lower-is-better", "--best")
    assert_exit(best, 1)
    assert "best value of each run" in best.stdout


def test_study_arm_form(study):
    result = accuracy_gate(f"{study}:base", f"{study}:worse")
    assert_exit(result, 1)
    assert f"{study}:worse (4 runs)" in result.stdout
    assert_exit(accuracy_gate(f"{study}:base", f"{study}:same"), 0)


def test_single_runs_give_a_point_comparison(study, tmp_path):
    one_base = study / "runs/base/seed_0"  # 0.80
    one_worse = study / "runs/worse/seed_0"  # 0.72
    result = accuracy_gate(one_base, one_worse, "--json", tmp_path / "g.json")
    assert_exit(result, 1)
    assert "point comparison, not a test" in result.stdout
    assert "no test is possible with fewer than 2 runs" in result.stdout
    assert json.loads((tmp_path / "g.json").read_text())["test"]["kind"] == "point_comparison"
    # The point rule honours the margin, and one run against several seeds is still no test.
    assert_exit(accuracy_gate(one_base, one_worse, "--margin=0.1"), 0)
    mixed = accuracy_gate(study / "runs/base", one_worse)
    assert_exit(mixed, 1)
    assert "point comparison, not a test" in mixed.stdout
    assert_exit(accuracy_gate(one_base, study / "runs/base/seed_1"), 0)  # 0.82: better


def test_bad_inputs_are_one_line_errors(study, tmp_path):
    base, worse = study / "runs/base", study / "runs/worse"
    assert_usage_error(accuracy_gate(tmp_path / "nope", worse), "does not exist")
    (tmp_path / "empty").mkdir()
    assert_usage_error(
        accuracy_gate(base, tmp_path / "empty"), "neither a run", "directory of runs"
    )
    assert_usage_error(accuracy_gate(study, worse), "neither a run", f"{study}:<arm>", "base")
    assert_usage_error(
        accuracy_gate(f"{study}:bsae", worse),
        "unknown arm 'bsae'",
        "base, same, slight, tight, worse",
    )
    missing_metric = gate(
        f"--baseline={base}", f"--candidate={worse}", "--metric=eval/acc", "--higher-is-better"
    )
    assert_usage_error(missing_metric, "'eval/acc' was never logged", "eval/accuracy")
    both = accuracy_gate(base, worse, "--lower-is-better")
    assert_usage_error(both, "not allowed with")
    neither = gate(f"--baseline={base}", f"--candidate={worse}", "--metric=eval/accuracy")
    assert_usage_error(neither, "--higher-is-better", "--lower-is-better")
    assert_usage_error(accuracy_gate(base, worse, "--margin=-0.01"), "--margin", ">= 0")
    assert_usage_error(accuracy_gate(base, worse, "--confidence=1.5"), "--confidence")
    assert_usage_error(accuracy_gate(base, worse, "--json", tmp_path / "no/dir/g.json"), "--json")


def test_unfinished_runs_are_refused(study):
    running = write_run(study / "runs/base/seed_9", {"eval/accuracy": 0.8}, status="running")
    assert_usage_error(
        accuracy_gate(study / "runs/base", study / "runs/worse"), str(running), "'running'"
    )


def test_a_quantized_run_is_a_finished_run_to_the_gate(study):
    """launch.quantize's runs (status 'quantized') are compared like trained ones."""
    for i, value in enumerate(BASE_ACC):
        write_run(study / "runs/int8" / f"seed_{i}", {"eval/accuracy": value}, status="quantized")
    assert_exit(accuracy_gate(study / "runs/base", study / "runs/int8"), 0)
