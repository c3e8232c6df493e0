"""`launch.benchmark` measures what it says: every figure present, consistent with the others, and
the analytic FLOPs equal to what XLA counts for the compiled step. Speed itself is never asserted:
timings on a shared machine are for the benchmark's reader, not for a test."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import types

import pytest

from experiments import decode_lm
from generation import timing
from registry import UnknownNameError
from runtime.errors import UsageError
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


# --decode at a tiny size: a full-attention cache, a ring (window 4, shorter than the contexts)
# and a fixed-size recurrent state, at two contexts, recomputed too.
DECODE = [
    "--decode",
    "--config=experiments/decode_lm.py",
    "--config.model.num_layers=1",
    "--config.model.d_model=32",
    "--config.model.d_ff=64",
    "--mixers=attention,attention:window=4,mamba",
    "--batches=2",
    "--contexts=8,16",
    "--new_tokens=5",
    "--recompute_batches=2",
    "--recompute_tokens=5",
    "--repeats=1",
]


@pytest.fixture(scope="module")
def decoded(data_dir, tmp_path_factory):
    output = tmp_path_factory.mktemp("decode") / "decode.json"
    run = run_benchmark(data_dir, *DECODE, f"--output={output}")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"written: {output}, {output.with_suffix('.png')}" in run.stdout
    return json.loads(output.read_text()), output, run.stdout


def test_decode_reports_every_mixer_at_every_batch_and_context(decoded):
    figures, output, stdout = decoded
    assert figures["mode"] == "decode" and "random" in figures["parameters"]
    cells = {(r["mixer"], r["batch"], r["context"]) for r in figures["rows"]}
    mixers = ["attention", "attention:window=4", "mamba"]
    assert cells == {(m, 2, c) for m in mixers for c in (8, 16)}
    assert list(figures["mixers"]) == mixers
    assert figures["headline"] == {"wall": "min", "cpu": "median"}
    for r in figures["rows"]:
        again = r["recompute"]
        for clock, statistic in figures["headline"].items():
            for figure in (
                r["prefill_seconds"],
                r["seconds_per_token"],
                again["seconds_per_token"],
            ):
                assert 0 < figure[clock]["min"] <= figure[clock]["median"]
            cached, recomputed = (
                f[clock][statistic] for f in (r["seconds_per_token"], again["seconds_per_token"])
            )
            assert r["tokens_per_second"][clock] == pytest.approx(2 / cached)
            assert again["tokens_per_second"][clock] == pytest.approx(2 / recomputed)
            assert r["speedup"][clock] == pytest.approx(recomputed / cached)
    assert output.with_suffix(".png").read_bytes().startswith(b"\x89PNG")
    assert len(figures["load_average"]["samples"]) == 2 + 1  # start, compiled, each round
    assert [t["target"].split()[0] for t in figures["targets"]] == [
        "attention:",  # the speedup at 512: not measured here
        "attention:",  # grows
        "attention:window=4",  # the ring: flat
        "mamba",
    ]
    assert figures["targets"][0]["holds"] == {"wall": None, "cpu": None}
    for label in ("ms/token wall", "ms/token cpu", "state KiB", "load average"):
        assert label in stdout


def test_cached_and_recomputed_decoding_choose_the_same_tokens(decoded):
    figures, _, _ = decoded
    assert all(r["recompute"]["same_tokens"] is True for r in figures["rows"])


def test_state_bytes_grow_with_the_context_only_for_a_full_cache(decoded):
    # Per sequence, 1 layer of d_model 32: attention keeps keys and values (2 x 32 float32) and a
    # position (int32) for each of context + new_tokens - 1 positions; the window a ring of 4;
    # mamba a conv window and an SSM state, whatever the context.
    state = {label: m["state_bytes_per_sequence"] for label, m in decoded[0]["mixers"].items()}
    per_position = 2 * 32 * 4 + 4
    assert state["attention"] == {"8": (8 + 4) * per_position, "16": (16 + 4) * per_position}
    assert state["attention:window=4"] == {"8": 4 * per_position, "16": 4 * per_position}
    assert len(set(state["mamba"].values())) == 1
    fixed = {label: m["fixed_size_state"] for label, m in decoded[0]["mixers"].items()}
    assert fixed == {"attention": False, "attention:window=4": True, "mamba": True}


@pytest.mark.parametrize(
    "entries, message",
    [
        (["attention", "mambo"], "unknown sequence mixer 'mambo'"),
        (["attention:windw=4"], "an option of model.attention (num_kv_heads, "),
        (["attention:window"], "expected <option>=<value>"),
        (["attention:window=four"], "'four' cannot be read as int"),
        (["mamba", "mamba"], "names 'mamba' twice"),
    ],
)
def test_a_bad_mixer_entry_is_a_usage_error(entries, message):
    with pytest.raises((UsageError, UnknownNameError), match=re.escape(message)):
        timing.mixer_variants(decode_lm.get_config(), entries)


def test_mixer_entries_become_checked_config_overrides():
    variants = timing.mixer_variants(decode_lm.get_config(), ["mamba", "attention:window=128"])
    assert variants == {
        "mamba": {"model.mixer": "mamba", "model.layer_pattern": ""},
        "attention:window=128": {
            "model.mixer": "attention",
            "model.layer_pattern": "",
            "model.attention.window": 128,
        },
    }


SETTINGS = timing.Settings(
    batches=(1, 8, 32),
    contexts=(128, 512, 2048),
    new_tokens=16,
    repeats=3,
    recompute_batches=(1,),
    recompute_tokens=4,
    max_batch_tokens=16384,
)


def test_cells_over_the_token_budget_are_skipped():
    assert (32, 2048) not in SETTINGS.cells() and (8, 2048) in SETTINGS.cells()
    assert SETTINGS.skipped() == [{"batch": 32, "context": 2048}]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"contexts": ()}, "--contexts must be positive integers"),
        ({"batches": (0, 1)}, "--batches must be positive integers"),
        ({"new_tokens": 1}, "--new_tokens must be >= 2"),
        ({"repeats": 0}, "--repeats must be >= 1"),
        ({"recompute_batches": (4,)}, "--recompute_batches [4] are not among --batches"),
        ({"recompute_tokens": 17}, "--recompute_tokens must be in [1, --new_tokens=16]"),
        ({"max_batch_tokens": 64}, "no batch x context cell fits --max_batch_tokens=64"),
    ],
)
def test_bad_decode_settings_are_usage_errors(change, message):
    with pytest.raises(UsageError, match=re.escape(message)):
        dataclasses.replace(SETTINGS, **change).check()


@pytest.mark.parametrize(
    "args, message",
    [
        ([*DECODE, "--mixers=attention,mambo"], "unknown sequence mixer 'mambo'"),
        ([*DECODE, "--batches=1,x"], "--batches must be integers"),
        ([*DECODE, "--steps=3"], "--steps: only without --decode"),
        ([*TINY, "--contexts=8"], "--contexts: only with --decode"),
    ],
)
def test_decode_bad_input_is_one_line_before_compute(data_dir, tmp_path, args, message):
    run = run_benchmark(data_dir, *args, f"--output={tmp_path / 'x.json'}")
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().count("\n") == 0 and message in run.stderr
    assert not list(tmp_path.iterdir())


def test_decode_never_overwrites_a_plot(data_dir, tmp_path):
    (tmp_path / "mine.png").write_bytes(b"my plot")
    run = run_benchmark(data_dir, *DECODE, f"--output={tmp_path / 'mine.json'}")
    assert run.returncode == 2 and "mine.png' exists" in run.stderr
    assert (tmp_path / "mine.png").read_bytes() == b"my plot"
    assert not (tmp_path / "mine.json").exists()


def test_targets_read_the_headline_figures_of_each_clock():
    def per_token(wall_min: float, cpu_median: float) -> dict:
        return {
            "wall": {"median": 9.0, "min": wall_min},
            "cpu": {"median": cpu_median, "min": 0.001},
        }

    def row(mixer: str, context: int, state: int, wall: float, cpu: float, speedup=None) -> dict:
        return {
            "mixer": mixer,
            "batch": 1,
            "context": context,
            "state_bytes_per_sequence": state,
            "seconds_per_token": per_token(wall, cpu),
            "speedup": speedup,
        }

    rows = [
        row("attention", 128, 1, 1.0, 1.0),
        row("attention", 512, 4, 2.0, 1.1, speedup={"wall": 10.0, "cpu": 9.9}),
        row("attention", 2048, 16, 4.0, 1.2),  # x4 on the wall clock, x1.2 in CPU: not > 1.2
        row("gla", 128, 8, 1.0, 1.0),
        row("gla", 2048, 8, 1.2, 0.79),  # x1.2 holds; x0.79 is more than 20% off flat
    ]
    contender = types.SimpleNamespace(overrides={}, num_params=0)
    mixers = {
        label: timing.mixer_summary(contender, [r for r in rows if r["mixer"] == label])
        for label in ("attention", "gla")
    }
    assert [m["fixed_size_state"] for m in mixers.values()] == [False, True]
    found = timing.targets({"rows": rows, "mixers": mixers})
    assert [t["holds"] for t in found] == [{"wall": True, "cpu": False}] * 3
    assert found[2]["target"] == (
        "gla (fixed-size state): time per token flat within 20% from each batch's shortest "
        "context to its longest"
    )
    assert found[2]["figures"]["cpu"] == {1: pytest.approx(0.79)}
    assert found[2]["contexts"] == {1: [128, 2048]}
