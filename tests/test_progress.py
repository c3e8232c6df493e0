"""The log line a person watching a non-interactive run reads at each logging step."""

from __future__ import annotations

from runtime.progress import Progress


def test_log_line_shows_metrics_rate_and_mfu(capsys):
    progress = Progress(0, 10)
    scalars = {"train/loss": 1.5, "perf/steps_per_sec": 2.0, "perf/mfu": 0.0123}
    progress.report(5, scalars)
    line = capsys.readouterr().out
    assert line.startswith("step 5/10")
    assert "train/loss=1.5" in line and "2.00 steps/s" in line and "MFU 1.23%" in line
    progress.report(10, {"train/loss": 1.0, "perf/steps_per_sec": 2.0})  # no FLOPs stated
    assert "MFU" not in capsys.readouterr().out
