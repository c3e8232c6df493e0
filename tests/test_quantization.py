"""int8 quantization with qwix (`quant.*`, runtime/quantization.py): post-training quantization
computes the float model with rounded weights, only projections are quantized, quantization-aware
training resumes bitwise, and `launch.quantize` writes a run that evaluates and generates."""

from __future__ import annotations

import json
import logging
import re
import shutil
from pathlib import Path

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import qwix
from absl import logging as absl_logging

import launch.quantize
import models
from experiments.base import base_config
from models.lm import PROJECTIONS
from runtime import assembly, quantization
from runtime.errors import UsageError
from tests.conftest import metrics, run_module, run_train

pytestmark = pytest.mark.long(seconds=100)

# launch.quantize runs the run's suites before and after: one cheap suite keeps that covered.
QAT = ["--config.quant.mode=qat_int8", "--config.eval.suites=calibration"]


def tiny_config(mixer: str, mode: str = "none"):
    config = base_config()
    config.data.mqar.seq_len = 16
    config.model.update(mixer=mixer, num_layers=1, d_model=32, num_heads=2, d_ff=64)
    config.quant.mode = mode
    return config


def build(mixer: str, mode: str = "none"):
    config = tiny_config(mixer, mode)
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    return model


def model_and_params(mixer: str, mode: str):
    """The model `mode` makes of a tiny `mixer` LM, the float one, its parameters (random) and a
    batch of tokens."""
    model, float_model = build(mixer, mode), build(mixer)
    tokens = jax.random.randint(jax.random.PRNGKey(1), (4, 16), 0, 64)
    init = jax.jit(lambda: float_model.init(jax.random.PRNGKey(0), tokens, train=False))
    params = nn.unbox(init()["params"])
    return model, float_model, params, tokens


def logits(model, params, tokens):
    return np.asarray(jax.jit(lambda p: model.apply({"params": p}, tokens, train=False))(params))


def dequantized(quantized_params):
    """The float parameters a quantized tree stands for: int8 values times their scales."""
    return jax.tree.map(
        lambda leaf: qwix.dequantize(leaf.array) if hasattr(leaf, "how") else leaf,
        quantized_params,
        is_leaf=lambda leaf: hasattr(leaf, "how"),
    )


def relative_rms(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.sqrt(np.mean((a - b) ** 2)) / np.std(b))


def test_int8_weights_are_per_output_channel_and_the_model_is_float_with_rounded_weights():
    """ptq_int8_weights stores each projection kernel as int8 with one float32 scale per output
    channel, within half a step of the trained weight; the quantized model computes exactly the
    float model run with those rounded weights (1e-5: float32 rounding of a different order of
    multiplications), so its logits stay close to the float ones: qwix's scale is the channel's
    largest weight over 127.5, so a weight is off by at most 1/255 of that, about 1% noise per
    matrix product and five products in a row (measured 1.5% of the logits' spread), where a lost
    scale or a wrong channel axis is off by the logits' whole size."""
    model, float_model, params, tokens = model_and_params("attention", "ptq_int8_weights")
    quantized = quantization.quantize_params(model, params)
    paths = quantization.quantized_paths(quantized)
    assert paths == [
        "block_0/channel/down/kernel",
        "block_0/channel/gate/kernel",
        "block_0/channel/up/kernel",
        "block_0/sequence_mixer/key/kernel",
        "block_0/sequence_mixer/out/kernel",
        "block_0/sequence_mixer/query/kernel",
        "block_0/sequence_mixer/value/kernel",
        "unembed/kernel",
    ]
    flat, stored = (flax.traverse_util.flatten_dict(t, sep="/") for t in (params, quantized))
    for path in paths:
        weight, array = np.asarray(flat[path]), stored[path].array
        assert array.qvalue.dtype == jnp.int8 and array.qvalue.shape == weight.shape
        # out: [heads, head_dim, d_model] contracts its first two axes; the others their first.
        contracted = 2 if path.endswith("/out/kernel") else 1
        assert array.scale.shape == (1,) * contracted + weight.shape[contracted:], path
        scale = np.asarray(array.scale)
        error = np.abs(weight - np.asarray(array.qvalue, np.float32) * scale)
        assert np.all(error <= scale / 2 * (1 + 1e-4)), path  # float32 division
    for path in set(flat) - set(paths):  # embeddings and norms: untouched
        assert np.asarray(stored[path]).tobytes() == np.asarray(flat[path]).tobytes(), path

    out = logits(model, quantized, tokens)
    np.testing.assert_allclose(out, logits(float_model, dequantized(quantized), tokens), atol=1e-5)
    assert relative_rms(out, logits(float_model, params, tokens)) < 0.05


def test_qat_rounds_weights_and_activations_as_ptq_int8_does():
    """A qat_int8 model's forward pass with float parameters is the ptq_int8 model's with the
    parameters quantized, up to activations that a float32 difference rounds the other way (here
    the two are equal; the float model is 2% of the logits' spread away)."""
    qat, float_model, params, tokens = model_and_params("attention", "qat_int8")
    ptq, *_ = model_and_params("attention", "ptq_int8")
    fake = logits(qat, params, tokens)
    real = logits(ptq, quantization.quantize_params(ptq, params), tokens)
    unquantized = logits(float_model, params, tokens)
    assert relative_rms(fake, real) < relative_rms(fake, unquantized) / 2


def qwix_decisions(mixer: str, mode: str) -> dict[str, set[str]]:
    """{module path: {'quantized' or 'float'}}: what qwix decided for every matrix product it
    intercepted while building the model (its own debug record)."""
    lines: list[str] = []

    class Record(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, verbosity = Record(), absl_logging.get_verbosity()
    logging.getLogger("absl").addHandler(handler)
    absl_logging.set_verbosity(absl_logging.DEBUG)
    try:
        build(mixer, mode)
    finally:
        absl_logging.set_verbosity(verbosity)
        logging.getLogger("absl").removeHandler(handler)
    decisions: dict[str, set[str]] = {}
    for line in lines:
        if found := re.match(r"\[QWIX\] module='(.*)' op=\S+ rule=(\S+)", line):
            kind = "float" if found[2] == "None" else "quantized"
            decisions.setdefault(found[1], set()).add(kind)
    return decisions


def test_mamba_scan_step_sizes_and_decays_stay_float():
    """By default Mamba's selective scan (an einsum in the mixer's own module), its step-size
    projection dt_proj and A_log, D stay float32, weights and activations (ptq_int8): qwix sees
    them and leaves them; its in, x and out projections are int8."""
    decisions = qwix_decisions("mamba", "ptq_int8")
    assert decisions["block_0/sequence_mixer"] == {"float"}  # the scan's contraction
    assert decisions["block_0/sequence_mixer/dt_proj"] == {"float"}
    for name in ("in_proj", "x_proj", "out_proj"):
        assert decisions[f"block_0/sequence_mixer/{name}"] == {"quantized"}
    model, _, params, _ = model_and_params("mamba", "ptq_int8")
    quantized = quantization.quantize_params(model, params)
    flat, stored = (flax.traverse_util.flatten_dict(t, sep="/") for t in (params, quantized))
    for name in ("A_log", "D", "dt_proj/kernel", "dt_proj/bias", "conv/kernel"):
        path = f"block_0/sequence_mixer/{name}"
        assert np.asarray(stored[path]).tobytes() == np.asarray(flat[path]).tobytes(), path


@pytest.mark.parametrize("mixer", models.MIXERS.names())
def test_default_targets_are_every_mixers_projections_and_none_of_its_recurrence(mixer):
    """Every mixer has projections the default targets match, never its own module (where
    attention scores and the scans contract) nor what sets a recurrence's dynamics."""
    paths = quantization.kernel_modules(build(mixer))
    matched = [p for p in paths if re.fullmatch(PROJECTIONS, p)]
    assert any(p.startswith("block_0/sequence_mixer/") for p in matched), paths
    assert not re.fullmatch(PROJECTIONS, "block_0/sequence_mixer")
    for path in matched:
        assert not re.search(r"dt_proj|decay|beta|filter|conv$", path), path


def test_targets_that_match_nothing_are_a_usage_error_naming_what_they_could_match():
    """(Unknown modes and training a post-training mode: tests/test_train_cli.py.)"""
    config = tiny_config("attention", "qat_int8")
    config.quant.targets = "block_0/nothing"
    with pytest.raises(UsageError, match="matches no module .* block_0/channel/down"):
        assembly.check(config)


# ----------------------------------------------------------------------- runs, as a user runs them
@pytest.fixture(scope="module")
def qat_run(data_dir, tmp_path_factory) -> Path:
    """A quantization-aware run. TINY's unembedding is [32, 32] and 16 sequences scored at 2
    positions reach it as a [32, 32] activation: what qwix's own QtProvider takes for a weight
    (runtime/qat_provider.py)."""
    workdir = tmp_path_factory.mktemp("qat") / "run"
    result = run_train(data_dir, workdir, *QAT)
    assert result.returncode == 0, result.stderr[-3000:]
    return workdir


def final_params(workdir: Path) -> dict[str, np.ndarray]:
    """The newest checkpoint's parameters, read with Orbax directly: {path: array}."""
    manager = ocp.CheckpointManager(
        Path(workdir, "checkpoints").resolve(), item_names=("state", "data_iterator")
    )
    step = manager.latest_step()
    restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    flat = ocp.tree.to_flat_dict(restored["state"]["params"], sep="/")
    return {k: np.asarray(v) for k, v in flat.items()}


def test_qat_run_resumes_bitwise(data_dir, qat_run, tmp_path):
    """A copy of the QAT run that lost its newest checkpoint (as a run killed before writing it)
    resumes and ends bitwise identical: the same metrics, the same parameters."""
    copy = tmp_path / "run"
    shutil.copytree(qat_run, copy)
    newest = max(int(p.name) for p in (copy / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(copy / "checkpoints" / str(newest))
    result = run_train(data_dir, copy, *QAT)
    assert result.returncode == 0, result.stderr[-3000:]
    attempts = json.loads((copy / "manifest.json").read_text())["attempts"]
    assert attempts[-1]["resumed_from_step"] == newest - 5  # checkpoint.every
    assert metrics(copy) == metrics(qat_run)
    expected, resumed = final_params(qat_run), final_params(copy)
    assert expected.keys() == resumed.keys()
    for path, value in expected.items():
        assert value.tobytes() == resumed[path].tobytes(), path


def test_launch_quantize_writes_a_run_that_evaluates_and_generates(data_dir, qat_run, tmp_path):
    into = tmp_path / "int8"
    result = run_module(data_dir, "launch.quantize", f"--workdir={qat_run}", f"--into={into}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ptq_int8, 8 kernels int8" in result.stdout
    for row in ("accuracy", "calibration/ece", "checkpoint bytes", "ms per generated token"):
        assert re.search(rf"^{re.escape(row)}.*\d\s+\S*\d$", result.stdout, re.M), result.stdout

    config = json.loads((into / "config.json").read_text())
    assert config["quant"]["mode"] == "ptq_int8"  # the default after qat_int8
    assert config["quant"]["source"] == str(qat_run.resolve())
    record = json.loads((into / "manifest.json").read_text())
    assert record["quantized_from"] == {"workdir": str(qat_run.resolve()), "step": 20}
    stored = final_params(into)
    assert stored["unembed/kernel/array/qvalue"].dtype == np.int8
    assert stored["unembed/kernel/array/scale"].shape == (1, 32)
    assert stored["embed/embedding"].dtype == np.float32
    report = json.loads((into / "quantization.json").read_text())
    assert report["checkpoint_bytes"]["after"] < report["checkpoint_bytes"]["before"] / 3
    assert report["parameter_bytes"]["after"] < report["parameter_bytes"]["before"] / 2
    before = json.loads((into / "source_eval" / "summary.json").read_text())
    after = json.loads((into / "eval" / "summary.json").read_text())
    assert before["suites"] == after["suites"] == ["calibration"]
    assert (into / "eval" / "calibration.json").exists()
    card = (into / "model_card.md").read_text()
    assert "## Quantization" in card and "`block_*/channel/up/kernel`" in card

    evaluated = run_module(data_dir, "launch.evaluate", f"--workdir={into}")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads(evaluated.stdout.splitlines()[-1])["accuracy"] == after["accuracy"]
    generated = run_module(
        data_dir, "launch.generate", f"--workdir={into}", "--prompt=3 17 5", "--max_new_tokens=4"
    )
    assert generated.returncode == 0, generated.stderr[-3000:]
    assert len(generated.stdout.split()) == 4  # the continuation's tokens


def test_launch_quantize_never_writes_over_a_directory(tmp_path, capsys):
    """Refused before the run is even read: one line, exit status 2, nothing touched."""
    into = tmp_path / "int8"
    into.mkdir()
    (into / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exited:
        launch.quantize.main(["launch.quantize", f"--workdir={tmp_path}/run", f"--into={into}"])
    assert exited.value.code == 2
    assert capsys.readouterr().err == (
        f"error: --into={str(into)!r} exists: launch.quantize writes a new run, never over one\n"
    )
    assert [p.name for p in into.iterdir()] == ["notes.txt"]
