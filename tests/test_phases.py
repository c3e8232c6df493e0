"""Where a training process's time goes (runtime/phases.py): phases add up to the wall time they
cover, and the compilations JAX reports land in the phase that caused them."""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import pytest

from analysis.runs import MANIFEST_FILE, read_json
from runtime.phases import PhaseClock, seconds_since_process_start
from tests.conftest import run_train


@pytest.fixture
def clock():
    clock = PhaseClock()
    yield clock
    clock.close()


def by_phase(record: list[dict]) -> dict[str, dict]:
    return {entry["phase"]: entry for entry in record}


def test_a_phase_entered_twice_adds_up(clock):
    for _ in range(2):
        with clock.phase("evaluation"):
            time.sleep(0.02)
    assert by_phase(clock.record())["evaluation"]["seconds"] >= 0.04


def test_an_inner_phase_is_taken_out_of_the_outer_one(clock):
    start = time.perf_counter()
    with clock.phase("training loop"):
        time.sleep(0.03)
        with clock.phase("checkpoints"):
            time.sleep(0.05)
    wall = time.perf_counter() - start
    record = by_phase(clock.record())
    assert [entry["phase"] for entry in clock.record()] == ["training loop", "checkpoints"]
    assert record["checkpoints"]["seconds"] >= 0.05
    assert 0.03 <= record["training loop"]["seconds"] < 0.05
    assert sum(entry["seconds"] for entry in record.values()) == pytest.approx(wall, abs=0.005)


def test_compilations_count_in_the_phase_that_caused_them(clock):
    double = jax.jit(lambda x: 2 * x + 1)
    x = jnp.arange(7.0)  # made outside the phases: its own small compilations do not count
    with clock.phase("first step"):
        double(x).block_until_ready()
    with clock.phase("steps"):
        double(x).block_until_ready()  # already compiled
    record = by_phase(clock.record())
    assert record["first step"]["compilations"] == 1
    assert record["first step"]["compiling_seconds"] > 0
    assert record["steps"]["compilations"] == 0
    assert record["steps"]["compiling_seconds"] == 0


def test_a_closed_clock_stops_listening():
    clock = PhaseClock()
    clock.close()
    with clock.phase("after"):
        jax.jit(lambda x: x - 3)(jnp.ones(5)).block_until_ready()
    assert by_phase(clock.record())["after"]["compilations"] == 0


def test_a_clock_as_a_block_stops_listening_even_when_the_block_raises():
    """launch.train times its work inside `with PhaseClock()`: a run that fails part-way leaves
    no listener behind in the process (and closing twice is harmless)."""
    with pytest.raises(RuntimeError), PhaseClock() as clock:
        raise RuntimeError("a run failed")
    with clock.phase("after"):
        jax.jit(lambda x: x - 4)(jnp.ones(6)).block_until_ready()
    assert by_phase(clock.record())["after"]["compilations"] == 0
    clock.close()


def test_the_time_before_our_code_ran_is_known_on_linux(clock):
    elapsed = seconds_since_process_start()
    assert elapsed is not None and 0 < elapsed < 24 * 3600
    clock.record_since_start("imports")
    assert clock.seconds["imports"] >= elapsed


def test_the_log_line_names_every_phase_and_the_total(clock):
    with clock.phase("build"):
        jax.jit(lambda x: x * x)(jnp.ones(3)).block_until_ready()
    with clock.phase("steps"):
        pass
    line = clock.line()
    assert line.startswith("time: build ")
    assert "compiling" in line and "steps 0.0 s" in line and line.endswith("s in all")


def test_a_run_says_where_its_time_went_and_keeps_it_in_its_manifest(data_dir, tmp_path):
    result = run_train(data_dir, tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "time: imports " in result.stdout + result.stderr
    recorded = read_json(str(tmp_path / "run" / MANIFEST_FILE))["attempts"][-1]["phases"]
    assert [entry["phase"] for entry in recorded][:2] == ["imports", "checks"]
    phases = by_phase(recorded)
    assert phases["first step"]["compilations"] == 1  # the train step, once
    # Every later step runs the program the first one compiled.
    assert phases["steps"]["compilations"] == 0
    assert all(entry["seconds"] >= 0 for entry in recorded)
