"""An arm's seeds trained together (`launch.train --seeds`, `launch.study`'s default): one
process, one compilation, and each run whole in its own directory, bitwise the run trained alone.

Two tiny studies of one arm x two seeds, with dropout (drawn from each seed's own key): one
trains the seeds together, the other (--no-group-seeds) each alone; everything is compared with
the latter's runs.
"""

from __future__ import annotations

import functools
import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from analysis.runs import load_run
from analysis.study import run_dir
from launch import study
from runtime import assembly, checkpoint, group, loop, peak_flops
from runtime.config import config_with_overrides
from runtime.metric_writers import MetricWriter
from runtime.progress import Progress
from runtime.study_spec import load_study
from tests.conftest import REPO, TINY, metrics, run_command, train_env
from tests.test_resume import checkpoint_write_in_progress, wait_for
from tests.test_study import run_study

pytestmark = pytest.mark.long(seconds=300)

SEEDS = (0, 1)
STEPS = 20  # tiny_study's, checkpointing every 5 (conftest's TINY)
STUDY = ("--arms=attention", f"--seeds={len(SEEDS)}", "--config.model.dropout_rate=0.1")


def final_state(workdir: Path | str) -> dict[str, np.ndarray]:
    """Every array of the run's last checkpoint: parameters, optimizer state, step, RNG."""
    manager = ocp.CheckpointManager(
        Path(workdir, "checkpoints").resolve(), item_names=("state", "data_iterator")
    )
    assert manager.latest_step() == STEPS
    restored = manager.restore(STEPS, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return {k: np.asarray(v) for k, v in ocp.tree.to_flat_dict(restored["state"], sep="/").items()}


def assert_same_run(alone: Path | str, grouped: Path | str) -> None:
    assert metrics(grouped) == metrics(alone)
    a, b = final_state(alone), final_state(grouped)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key
    assert Path(grouped, "config.json").read_text() == Path(alone, "config.json").read_text()


@pytest.fixture(scope="module")
def studies(data_dir, tmp_path_factory) -> dict[str, Path]:
    """The same tiny study run twice: 'together' (one process) and 'alone' (one per run)."""
    root = tmp_path_factory.mktemp("seed_groups")
    out = {}
    for name, extra in (("together", ()), ("alone", ("--no-group-seeds",))):
        result = run_study(data_dir, root / name, *STUDY, *extra)
        assert result.returncode == 0, result.stdout + result.stderr
        out[name] = root / name
    return out


def runs(study: Path) -> list[Path]:
    return [Path(run_dir(str(study), "attention", seed)) for seed in SEEDS]


def group_command(run: Path, pattern: Path) -> list[str]:
    """The command that trained `run`'s group, into the run directories `pattern`."""
    recorded = load_run(str(run)).manifest["attempts"][0]["group"]["command"]
    return [*(a for a in recorded if not a.startswith("--workdir=")), f"--workdir={pattern}"]


def without_times_and_places(tree: Any) -> Any:
    """A summary's contents but for what differs between any two studies: wall times, the runs'
    directories, and checkpoint bytes (the same arrays saved twice are packed into Orbax's OCDBT
    files differently, and the seal names the run's paths)."""
    if isinstance(tree, dict):
        return {
            k: without_times_and_places(v)
            for k, v in tree.items()
            if k not in ("wall_seconds", "workdir", "checkpoint_bytes")
        }
    if isinstance(tree, list):
        return [without_times_and_places(v) for v in tree]
    return tree


def test_a_study_trains_an_arms_seeds_in_one_process_with_the_same_summary(studies):
    summaries = {
        name: json.loads((study / "summary.json").read_text()) for name, study in studies.items()
    }
    together, alone = summaries["together"]["arms"], summaries["alone"]["arms"]
    assert without_times_and_places(together) == without_times_and_places(alone)
    assert together["attention"]["seeds_completed"] == len(SEEDS)
    # One process for the arm's seeds: its log is the first seed's, and the other says so.
    first, second = runs(studies["together"])
    assert "seed 1: step 20/20" in (first / "train.log").read_text()
    assert str(first / "train.log") in (second / "train.log").read_text()


def test_each_run_of_a_group_is_bitwise_the_run_trained_alone(studies):
    for grouped, alone in zip(runs(studies["together"]), runs(studies["alone"]), strict=True):
        assert_same_run(alone, grouped)
        names = {p.name for p in grouped.iterdir() if not p.name.startswith("source-")}
        assert names == {p.name for p in alone.iterdir() if not p.name.startswith("source-")}
        # Its evaluation suites and model card are those of the run alone.
        for name in ("eval/calibration.json", "eval/summary.json"):
            assert (grouped / name).read_text() == (alone / name).read_text(), name
        assert model_card(grouped) == model_card(alone)


def model_card(run: Path) -> list[str]:
    """The run's model card but for the lines naming its directory and its wall time."""
    lines = (run / "model_card.md").read_text().splitlines()
    return [line for line in lines if str(run) not in line and " s in launch.train" not in line]


def test_a_run_of_a_group_records_the_command_that_trains_it_alone(studies):
    for seed, run in zip(SEEDS, runs(studies["together"]), strict=True):
        (attempt,) = load_run(str(run)).manifest["attempts"]
        assert attempt["command"][1:3] == ["-m", "launch.train"]
        assert f"--workdir={run}" in attempt["command"]
        assert f"--config.seed={seed}" in attempt["command"]
        assert not any(a.startswith("--seeds") for a in attempt["command"])
        assert attempt["group"]["seeds"] == list(SEEDS)
        assert "--seeds=0,1" in attempt["group"]["command"]


def test_a_group_killed_at_any_moment_then_rerun_matches_the_runs_trained_alone(
    data_dir, studies, tmp_path
):
    pattern = tmp_path / "seed_{seed}"
    workdirs = [tmp_path / f"seed_{seed}" for seed in SEEDS]
    command = group_command(runs(studies["together"])[0], pattern)

    def start() -> subprocess.Popen:
        return subprocess.Popen(
            command,
            cwd=REPO,
            env=train_env(data_dir),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    # First kill: while Orbax writes some run's checkpoint; second: between checkpoints.
    proc = start()
    wait_for(lambda: any(map(checkpoint_write_in_progress, workdirs)), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc = start()
    wait_for(lambda: len(metrics(workdirs[1])) >= 3, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_command(command, data_dir)
    assert result.returncode == 0, result.stderr[-3000:]
    for workdir, alone in zip(workdirs, runs(studies["alone"]), strict=True):
        assert_same_run(alone, workdir)
        assert load_run(str(workdir)).manifest["attempts"][-1]["status"] == "completed"


def test_runs_of_a_group_a_checkpoint_apart_resume_from_the_step_they_share(
    data_dir, studies, tmp_path
):
    """Killed while the runs' checkpoints of one step were being written, one run can be a
    checkpoint ahead: the group resumes from the newest step all share, the newer checkpoint
    moved aside (not deleted), and still ends bitwise as the runs alone."""
    ahead, behind = (tmp_path / f"seed_{seed}" for seed in SEEDS)
    for source, target in zip(runs(studies["together"]), (ahead, behind), strict=True):
        shutil.copytree(source, target)
    shutil.rmtree(behind / "checkpoints" / str(STEPS))

    result = run_command(group_command(ahead, tmp_path / "seed_{seed}"), data_dir)

    assert result.returncode == 0, result.stderr[-3000:]
    assert f"checkpoint step {STEPS} is newer than step 15" in result.stderr
    assert (ahead / "checkpoints_rejected" / str(STEPS)).is_dir()
    for workdir in (ahead, behind):
        assert load_run(str(workdir)).manifest["attempts"][-1]["resumed_from_step"] == 15
    for workdir, alone in zip((ahead, behind), runs(studies["alone"]), strict=True):
        assert_same_run(alone, workdir)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--seeds=0,1", "--workdir=runs/x"], "--seeds needs a --workdir holding {seed}"),
        (["--seeds=0,1", "--workdir=r/{seed}", "--config.seed=3"], "drop --config.seed"),
        (["--seeds=0,0", "--workdir=r/{seed}"], "names a seed twice"),
        (["--seeds=0,b", "--workdir=r/{seed}"], "expected seeds like 0,1,2"),
        (
            ["--seeds=0,1", "--workdir=r/{seed}", "--config.profile.start_step=2"],
            "--seeds: profile.* traces the steps of one run",
        ),
    ],
)
def test_bad_seeds_are_one_line_and_exit_2_before_anything_runs(data_dir, tmp_path, args, message):
    args = [a.replace("r/", f"{tmp_path}/r/") for a in args]
    result = run_command([sys.executable, "-m", "launch.train", *TINY, *args], data_dir)
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: ") and message in line
    assert not (tmp_path / "r").exists()


def train_in_process(
    config, workdirs: list[Path], seeds: list[int] | None, poison: int | None = None
) -> tuple[list[str], list[dict[str, np.ndarray]]]:
    """The loop as launch.train runs it, here: `seeds` together (None: `config` alone), the
    parameters of run `poison` made NaN before the first step. Returns the runs' statuses and
    each run's last state (flat: path -> array)."""
    exp = assembly.build(config, jax.devices()[:1])
    runs = group.alone(exp) if seeds is None else group.of_seeds(exp, seeds)
    states = [assembly.starting_state(run) for run in runs.runs]
    if poison is not None:
        nan = jax.tree.map(lambda x: x * np.nan, states[poison].params)
        states[poison] = states[poison].replace(params=nan)
    checkpoints = [checkpoint.Checkpoints(str(w), 2, async_save=False) for w in workdirs]
    writers = [MetricWriter(str(w), 0) for w in workdirs]
    try:
        statuses, state = loop.train_loop(
            runs,
            states,
            0,
            checkpoints,
            writers,
            Progress(0, config.train.steps, quiet=True),
            [],
            peak_flops.Peak(1.0, "test"),
        )
    finally:
        checkpoint.close_together(checkpoints)
        for writer in writers:
            writer.close("done")
    flat = [
        {
            "/".join(map(str, path)): np.asarray(jax.random.key_data(x) if is_key(x) else x)
            for path, x in jax.tree_util.tree_leaves_with_path(run_state)
        }
        for run_state in jax.device_get(state)
    ]
    return statuses, flat


def is_key(x: Any) -> bool:
    return jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)


def test_a_run_that_diverges_stops_and_leaves_the_others_of_its_group_as_they_are_alone(
    data_dir, tmp_path
):
    config = config_with_overrides("experiments/mqar_mixers.py", TINY[1:])
    config.data.dir = data_dir
    alone, first, poisoned = tmp_path / "alone", tmp_path / "seed_0", tmp_path / "seed_1"

    assert train_in_process(config, [alone], None)[0] == ["completed"]
    statuses, _ = train_in_process(config, [first, poisoned], [0, 1], poison=1)

    assert statuses == ["completed", "diverged"]
    assert metrics(first) == metrics(alone)
    assert final_state(first).keys() == final_state(alone).keys()
    for key, value in final_state(alone).items():
        assert final_state(first)[key].tobytes() == value.tobytes(), key
    assert metrics(poisoned) == []  # diverged at step 1, before its first log
    assert not list((poisoned / "checkpoints").glob("[0-9]*"))


# What a group shares with its runs besides the model and data (`assembly.for_seed`): each of
# these trains every run of the group as it trains alone. (A profile is refused: see above.)
SHARED_FEATURES = {
    "pruning": {
        "prune.sparsity": 0.5,
        "prune.start_step": 2,
        "prune.end_step": 8,
        "prune.every": 2,
    },
    "dp_sgd": {"privacy.dp_sgd": True, "optimizer.grad_clip_norm": 0.0},
    "finetune": {"finetune.from_run": "{tiny_run}"},
    "lora": {"finetune.from_run": "{tiny_run}", "lora.rank": 2, "lora.alpha": 4.0},
    "distillation": {
        "objective.name": "distillation",
        "objective.distillation.teacher": "{tiny_run}",
    },
}


@pytest.mark.parametrize("feature", SHARED_FEATURES)
def test_a_group_trains_each_run_as_alone_with_pruning_dp_finetuning_lora_and_a_teacher(
    data_dir, tiny_run, tmp_path, feature
):
    config = config_with_overrides("experiments/mqar_mixers.py", TINY[1:])
    config.data.dir = data_dir
    config.train.steps = 10
    config.model.dropout_rate = 0.1  # each seed's own dropout keys
    for key, value in SHARED_FEATURES[feature].items():
        *parents, leaf = key.split(".")
        section = functools.reduce(getattr, parents, config)
        setattr(section, leaf, value.format(tiny_run=tiny_run) if isinstance(value, str) else value)
    config.seed = 1
    (status,), (alone,) = train_in_process(config, [tmp_path / "alone"], None)
    statuses, grouped = train_in_process(config, [tmp_path / "seed_0", tmp_path / "seed_1"], [0, 1])

    assert status == "completed" and statuses == ["completed", "completed"]
    assert metrics(tmp_path / "seed_1") == metrics(tmp_path / "alone")
    assert grouped[1].keys() == alone.keys()
    for key, value in alone.items():
        assert grouped[1][key].tobytes() == value.tobytes(), key
    # The other seed trained its own way (its initialisation, dropout, data order, DP noise).
    assert metrics(tmp_path / "seed_0") != metrics(tmp_path / "alone")


def test_a_study_trains_seeds_apart_where_a_group_cannot_and_together_elsewhere(tmp_path, capsys):
    """launch.study's choice of processes, before anything runs: an arm's seeds in one process;
    a profiled arm's (a group refuses a profile) and those of seeds that pinned different
    teachers, one process per run, saying why."""
    spec = load_study("tests/tiny_study.py")
    arms, profiled = ["attention", "deltanet"], ["--config.profile.start_step=2"]
    config = config_with_overrides(spec.config_arg("deltanet", None), profiled)
    apart = {"deltanet": group.why_alone(config)}
    assert group.why_alone(config_with_overrides(spec.config_arg("attention", None), [])) is None

    tasks, done = study.make_tasks(spec, str(tmp_path), arms, list(SEEDS), None, [], apart)

    assert done == 0
    assert sorted((t.arm, t.seeds) for t in tasks) == [
        ("attention", [0, 1]),
        ("deltanet", [0]),
        ("deltanet", [1]),
    ]
    assert "deltanet: its seeds train in separate processes (profile.*" in capsys.readouterr().out

    for seed in SEEDS:  # started apart, each pinned its own teacher checkpoint
        run = Path(run_dir(str(tmp_path), "attention", seed))
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"teacher": {"step": 10 + seed}}))
    tasks, _ = study.make_tasks(spec, str(tmp_path), ["attention"], list(SEEDS), None, [])
    assert [t.seeds for t in tasks] == [[0], [1]]
    assert "read different teacher or fine-tuning checkpoints" in capsys.readouterr().out
