"""`launch.benchmark` measures what it says: every figure present, consistent with the others, and
the analytic FLOPs equal to what XLA counts for the compiled step. Speed itself is never asserted:
timings on a shared machine are for the benchmark's reader, not for a test."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.conftest import TINY, run_module

# TINY's model at a size where matmuls dominate and the loop logs after the warm-up.
BENCH = [
    *[a for a in TINY if not a.startswith("--config.train.log_every")],
    "--config.train.log_every=2",
]


def run_benchmark(data_dir: str, *args: str) -> subprocess.CompletedProcess:
    return run_module(data_dir, "launch.benchmark", *args)


@pytest.fixture(scope="module")
def result(data_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("bench") / "result.json"
    run = run_benchmark(data_dir, *BENCH, "--steps=6", "--warmup=2", f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"written: {output}" in run.stdout
    return json.loads(output.read_text()), run.stdout


def test_every_figure_is_reported(result):
    figures, stdout = result
    for key in (
        "compile_seconds",
        "step_seconds_median",
        "tokens_per_second",
        "model_flops_per_step",
        "achieved_flops_per_second",
        "peak_flops_per_second",
        "mfu",
    ):
        assert figures[key] > 0, key
    assert figures["memory"]["process_peak_rss_bytes"] > 0
    assert figures["memory"]["compiled_step"]["arguments_bytes"] > 0
    assert figures["loop"]["end_to_end_steps_per_second"] > 0
    for label in ("compile", "tokens/s", "MFU", "loop overhead", "peak RSS"):
        assert label in stdout


def test_figures_agree_with_each_other(result):
    figures, _ = result
    step = figures["step_seconds_median"]
    assert figures["step_seconds_min"] <= step <= figures["step_seconds_max"]
    assert figures["tokens_per_step"] == 16 * 16  # batch x sequence length
    assert figures["tokens_per_second"] == pytest.approx(figures["tokens_per_step"] / step)
    assert figures["achieved_flops_per_second"] == pytest.approx(
        figures["model_flops_per_step"] / step
    )
    assert figures["mfu"] == pytest.approx(
        figures["achieved_flops_per_second"] / figures["peak_flops_per_second"]
    )
    assert figures["loop"]["ratio"] == pytest.approx(
        figures["loop"]["end_to_end_steps_per_second"] / figures["loop"]["bare_steps_per_second"]
    )


def test_analytic_flops_are_of_the_order_xla_counts(result):
    # XLA counts every multiply-add of the compiled step (optimizer, norms, the full attention map
    # where the analytic count takes its causal half), so it is above the model FLOPs, but not by
    # an order of magnitude: a wrong formula (a missing factor of 2 or 3, a missing layer) shows.
    figures, _ = result
    ratio = figures["xla_flops_per_step"] / figures["model_flops_per_step"]
    assert 1.0 <= ratio < 2.0, ratio


@pytest.mark.parametrize(
    "args, message",
    [
        (["--steps=0"], "--steps"),
        (["--config.train.stepz=3"], "unknown config key"),
        # TINY logs every 5 steps: no interval after 2 warm-up steps ends by step 4
        (["--steps=2", "--warmup=2"], "no logging interval of train.log_every=5"),
        (["--config.train.log_every=0"], "train.log_every must be >= 1"),
    ],
)
def test_bad_input_is_one_line_before_compute(data_dir, tmp_path, args, message):
    run = run_benchmark(data_dir, *TINY, *args, f"--output={tmp_path / 'x.json'}")
    assert run.returncode == 2
    assert run.stderr.strip().count("\n") == 0 and message in run.stderr
    assert not (tmp_path / "x.json").exists()


def test_an_existing_output_is_never_overwritten(data_dir, tmp_path):
    output = tmp_path / "mine.json"
    output.write_text("my results")
    run = run_benchmark(data_dir, *TINY, f"--output={output}")
    assert run.returncode == 2 and "exists" in run.stderr
    assert output.read_text() == "my results"
