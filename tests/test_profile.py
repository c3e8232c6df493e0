"""`--config.profile.*` traces chosen global steps of a run under its directory, whole, for
TensorBoard (xprof) and Perfetto, and changes no number the run computes."""

from __future__ import annotations

import collections
import json
import shutil
from pathlib import Path

import jax
import pytest

from experiments.base import base_config
from runtime import profiling
from runtime.config import to_json
from runtime.errors import UsageError
from runtime.workdir import run_config
from tests.conftest import final_params, metrics, run_train
from tests.test_train_cli import assert_usage_error

STEPS = 6
SHORT = [
    f"--config.train.steps={STEPS}",
    "--config.train.log_every=3",
    "--config.eval.every=6",
    "--config.checkpoint.every=3",
    "--config.checkpoint.max_to_keep=2",
]


def trace_folder(workdir: Path, name: str) -> Path:
    return workdir / "profile" / "plugins" / "profile" / name


def traced(folder: Path) -> tuple[list[int], dict[int, int]]:
    """(the step numbers marked in the trace, {execution of the jitted train step: XLA op events
    it ran}), read from the xplane file TensorBoard's profile plugin reads."""
    (xplane,) = folder.glob("*.xplane.pb")
    steps, ops = [], collections.Counter()
    for plane in jax.profiler.ProfileData.from_file(str(xplane)).planes:
        for line in plane.lines:
            for event in line.events:
                stats = dict(event.stats)
                if event.name == "train":
                    steps.append(stats["step_num"])
                if stats.get("hlo_module") == "jit_step":
                    ops[stats["run_id"]] += 1
    return sorted(steps), dict(ops)


@pytest.fixture(scope="module")
def plain(data_dir, tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("plain") / "run"
    result = run_train(data_dir, workdir, *SHORT)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


@pytest.fixture(scope="module")
def profiled(data_dir, tmp_path_factory) -> tuple[Path, str]:
    workdir = tmp_path_factory.mktemp("profiled") / "run"
    result = run_train(
        data_dir,
        workdir,
        *SHORT,
        "--config.profile.start_step=3",
        "--config.profile.num_steps=2",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir, result.stdout


def test_a_profiled_run_traces_its_steps_whole_under_the_run_directory(profiled):
    workdir, stdout = profiled
    folder = trace_folder(workdir, "steps_3-4")
    assert [p.name for p in (workdir / "profile" / "plugins" / "profile").iterdir()] == [
        "steps_3-4"
    ]
    assert list(folder.glob("*.trace.json.gz")) and (folder / "perfetto_trace.json.gz").exists()
    steps, ops = traced(folder)
    assert steps == [3, 4]  # no step before or after the window
    # Both steps' XLA programs ran to the end inside the trace: each execution, the same ops.
    assert len(ops) == 2 and len(set(ops.values())) == 1, ops
    assert f"profile: steps 3-4 traced to {folder}" in stdout
    assert f"tensorboard --logdir {workdir / 'profile'}" in stdout
    assert "ui.perfetto.dev" in stdout


def test_a_run_without_a_profile_writes_none(plain):
    assert not (plain / "profile").exists()


def test_profiling_changes_no_number_the_run_computes(plain, profiled):
    workdir, _ = profiled
    assert metrics(workdir) == metrics(plain)
    with_trace, without = final_params(workdir, STEPS), final_params(plain, STEPS)
    assert with_trace.keys() == without.keys()
    for name in without:
        assert with_trace[name].tobytes() == without[name].tobytes(), name


def test_a_resumed_run_traces_the_global_steps_it_runs(data_dir, plain, tmp_path):
    """A run resumed from its step-3 checkpoint with a profile it did not have before: the
    workdir accepts it (a profile only watches), steps 5-6 are traced, the numbers are those of
    the run that never stopped."""
    workdir = tmp_path / "run"
    shutil.copytree(plain, workdir)
    shutil.rmtree(workdir / "checkpoints" / str(STEPS))
    result = run_train(
        data_dir, workdir, *SHORT, "--config.profile.start_step=5", "--config.profile.num_steps=2"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at step 3" in result.stdout
    assert "profile: tracing steps 5-6\n" in result.stdout  # step 4 compiled, not step 5
    steps, ops = traced(trace_folder(workdir, "steps_5-6"))
    assert steps == [5, 6] and len(ops) == 2
    assert metrics(workdir) == metrics(plain)
    resumed, straight = final_params(workdir, STEPS), final_params(plain, STEPS)
    for name in straight:
        assert resumed[name].tobytes() == straight[name].tobytes(), name


def test_an_attempt_traces_the_part_of_the_window_it_runs():
    settings = base_config().profile
    settings.start_step, settings.num_steps = 10, 3
    assert profiling.traced_steps(settings, 1) == range(10, 13)
    assert profiling.traced_steps(settings, 12) == range(12, 13)  # resumed inside the window
    assert not profiling.traced_steps(settings, 13)  # resumed past it
    settings.start_step = 0
    assert not profiling.traced_steps(settings, 1)


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (
            ["--config.profile.start_step=7"],
            "profile.start_step=7 with profile.num_steps=3 traces up to step 9, past train.steps=6",
        ),
        (
            ["--config.profile.start_step=2", "--config.profile.num_steps=0"],
            "profile.num_steps must be >= 1, got 0",
        ),
    ],
)
def test_a_profile_past_the_run_or_of_no_steps_is_a_one_line_error(
    data_dir, tmp_path, overrides, fragment
):
    workdir = tmp_path / "run"
    assert_usage_error(run_train(data_dir, workdir, *SHORT, *overrides), fragment)
    assert not workdir.exists()


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("start_step", -1, "profile.start_step must be >= 1 (0: no trace), got -1"),
        ("num_steps", 998, "traces up to step 1000, past train.steps=999"),
        ("host_tracer_level", 4, "profile.host_tracer_level must be one of 0, 1, 2, 3, got 4"),
        ("python_tracer_level", 2, "profile.python_tracer_level must be one of 0, 1, got 2"),
    ],
)
def test_other_profiles_no_run_can_take_are_refused(key, value, fragment):
    config = base_config()
    config.train.steps = 999
    config.profile.start_step = 3
    config.profile[key] = value
    with pytest.raises(UsageError) as error:
        profiling.check(config)
    assert fragment in str(error.value)


def test_a_run_recorded_before_profiles_existed_is_read_with_the_defaults(tmp_path):
    recorded = json.loads(to_json(base_config()))
    del recorded["profile"]
    (tmp_path / "config.json").write_text(json.dumps(recorded))
    assert run_config(str(tmp_path)).profile == base_config().profile
