"""LoRA (`lora.rank`, `lora.alpha`, `lora.targets`; runtime/lora.py, launch.merge): only low-rank
adapters of the matched weights train, over a frozen base read from another run; a LoRA run's
checkpoints hold the adapters alone and resume bitwise; `launch.merge` writes base +
(alpha / rank) A B as an ordinary run that evaluates and generates.
"""

from __future__ import annotations

import json
import shutil

import flax
import jax
import ml_collections
import numpy as np
import pytest

from evaluation.run import evaluate_checkpoint
from experiments import mqar_mixers
from launch import merge as merge_cli
from runtime import assembly, lora
from runtime import mesh as mesh_lib
from runtime.checkpoint_seal import check_seal
from runtime.errors import UsageError
from tests.conftest import checkpoint_params, metrics, run_module, run_train, tiny_overrides

pytestmark = pytest.mark.long(seconds=60)

RANK, ALPHA = 4, 8.0
# TINY's model: d_model 32, 2 heads of 16, d_ff 64.
D_MODEL, HEADS, HEAD_DIM, D_FF = 32, 2, 16, 64
LORA = [f"--config.lora.rank={RANK}", f"--config.lora.alpha={ALPHA}"]


def lora_config(data_dir: str, source, targets: str | None = None) -> ml_collections.ConfigDict:
    config = mqar_mixers.get_config()
    config.update_from_flattened_dict(tiny_overrides())
    config.data.dir = data_dir
    config.finetune.from_run = str(source)
    config.lora.rank, config.lora.alpha = RANK, ALPHA
    if targets is not None:
        config.lora.targets = targets
    return config


def flat(tree) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in flax.traverse_util.flatten_dict(tree, sep="/").items()}


# ------------------------------------------------------------------------ which parameters train


@pytest.mark.parametrize(
    "targets, matrices",
    [
        # attention's projections: query, key and value read d_model and write heads x head_dim;
        # out reads heads x head_dim (two axes) and writes d_model.
        (
            ".*/(query|key|value|out)",
            {
                name: (D_MODEL, HEADS * HEAD_DIM) if name != "out" else (HEADS * HEAD_DIM, D_MODEL)
                for name in ("query", "key", "value", "out")
            },
        ),
        (".*/channel/(up|down)", {"up": (D_MODEL, D_FF), "down": (D_FF, D_MODEL)}),
    ],
)
def test_trainable_parameters_are_rank_times_inputs_plus_outputs(
    data_dir, tiny_run, targets, matrices
):
    exp = assembly.build(lora_config(data_dir, tiny_run, targets), jax.devices()[:1])
    expected = sum(RANK * (fan_in + fan_out) for fan_in, fan_out in matrices.values())
    assert exp.trainable_params == expected
    abstract = flax.traverse_util.flatten_dict(exp.abstract_state.params, sep="/")
    adapters = {path: leaf.shape for path, leaf in abstract.items()}
    assert sum(np.prod(shape) for shape in adapters.values()) == expected
    # The state holds the adapters alone: A (inputs, rank) and B (rank, outputs) per weight.
    for name, (fan_in, fan_out) in matrices.items():
        module = "sequence_mixer" if name in ("query", "key", "value", "out") else "channel"
        prefix = f"block_0/{module}/{name}/kernel"
        assert adapters.pop(f"{prefix}/lora_a") == (fan_in, RANK)
        assert adapters.pop(f"{prefix}/lora_b") == (RANK, fan_out)
    assert adapters == {}
    # The model's own parameters are all there, frozen: as many as the source run's.
    assert sum(a.size for a in checkpoint_params(tiny_run, 20).values()) == (
        sum(a.size for a in jax.tree.leaves(exp.frozen))
    )


def test_targets_that_match_no_weight_are_refused_naming_the_modules(data_dir, tiny_run):
    with pytest.raises(UsageError, match=r"matches no module.*block_0/sequence_mixer/query"):
        assembly.build(lora_config(data_dir, tiny_run, ".*/nothing"), jax.devices()[:1])


# ------------------------------------------------------------------------------------- the merge


def test_merged_weights_are_base_plus_alpha_over_rank_a_times_b():
    rng = np.random.default_rng(0)
    base = {
        "query": {"kernel": rng.normal(size=(D_MODEL, HEADS, HEAD_DIM)).astype(np.float32)},
        "out": {"kernel": rng.normal(size=(HEADS, HEAD_DIM, D_MODEL)).astype(np.float32)},
        "norm": {"scale": rng.normal(size=(D_MODEL,)).astype(np.float32)},
    }
    fan_in = {"query": D_MODEL, "out": HEADS * HEAD_DIM}
    adapters = {
        name: {
            "kernel": {
                "lora_a": rng.normal(size=(fan_in[name], RANK)).astype(np.float32),
                "lora_b": rng.normal(size=(RANK, D_MODEL)).astype(np.float32),
            }
        }
        for name in ("query", "out")
    }
    merged = jax.jit(lambda b, a: lora.merge(b, a, ALPHA / RANK))(base, adapters)
    for name in ("query", "out"):
        a, b = (adapters[name]["kernel"][k].astype(np.float64) for k in ("lora_a", "lora_b"))
        w = base[name]["kernel"]
        expected = w + (ALPHA / RANK) * (a @ b).reshape(w.shape)
        np.testing.assert_allclose(merged[name]["kernel"], expected, rtol=1e-5, atol=1e-5)
        # The update is of rank `rank` as a map from the layer's inputs to its outputs.
        update = np.asarray(merged[name]["kernel"], np.float64) - w
        assert np.linalg.matrix_rank(update.reshape(fan_in[name], -1), tol=1e-3) == RANK
    np.testing.assert_array_equal(merged["norm"]["scale"], base["norm"]["scale"])


def test_training_moves_the_adapters_and_never_the_base(data_dir, tiny_run):
    exp = assembly.build(lora_config(data_dir, tiny_run), jax.devices()[:1])
    source = checkpoint_params(tiny_run, 20)  # the newest checkpoint that verifies
    base = flat(jax.device_get(exp.frozen))
    assert base.keys() == source.keys()
    for path, value in source.items():
        assert base[path].tobytes() == value.tobytes(), path
    state = assembly.starting_state(exp)
    # B starts at zero: before any step the model is the base, bit for bit.
    for path, value in flat(jax.device_get(exp.model_params(state.params))).items():
        assert value.tobytes() == base[path].tobytes(), path

    with exp.context():
        for _ in range(3):
            batch = mesh_lib.put_batch(next(exp.train_iter), exp.batch_sharding)
            state, _ = exp.train_step(state, batch, *exp.step_extras)
    for path, value in flat(jax.device_get(exp.frozen)).items():
        assert value.tobytes() == base[path].tobytes(), path
    assert all(np.any(v != 0) for k, v in flat(state.params).items() if k.endswith("lora_b"))
    merged = flat(jax.device_get(exp.model_params(state.params)))
    targets = {k for k in base if k.split("/")[-2] in ("query", "key", "value", "out")}
    assert len(targets) == 4
    for path in base:
        changed = merged[path].tobytes() != base[path].tobytes()
        assert changed == (path in targets), path


# ----------------------------------------------------- a LoRA run: checkpoints, resume, merge


def test_lora_run_checkpoints_adapters_alone_resumes_bitwise_and_merges(
    data_dir, tiny_run, tmp_path
):
    run = tmp_path / "lora"
    seal_before = (tiny_run / "checkpoints/20/archlab_sha256.json").read_text()
    trained = run_train(data_dir, run, f"--config.finetune.from_run={tiny_run}", *LORA)
    assert trained.returncode == 0, trained.stderr[-3000:]
    record = json.loads((run / "manifest.json").read_text())
    assert record["finetuned_from"]["run"] == str(tiny_run)
    assert record["finetuned_from"]["step"] == 20
    assert record["trainable_params"] == 4 * RANK * (D_MODEL + HEADS * HEAD_DIM)
    assert record["num_params"] == sum(a.size for a in checkpoint_params(tiny_run, 20).values())
    adapters = checkpoint_params(run, 20)
    assert adapters and all(k.endswith(("/lora_a", "/lora_b")) for k in adapters)
    # The source was only read.
    assert (tiny_run / "checkpoints/20/archlab_sha256.json").read_text() == seal_before
    assert check_seal(str(tiny_run / "checkpoints/20")) is None

    # Stopped after step 15 (its newest checkpoint), then resumed: the same bits as never stopped.
    resumed = tmp_path / "resumed"
    shutil.copytree(run, resumed)
    shutil.rmtree(resumed / "checkpoints/20")
    again = run_train(data_dir, resumed, f"--config.finetune.from_run={tiny_run}", *LORA)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resumed at step 15" in again.stderr + again.stdout
    assert metrics(resumed) == metrics(run)
    for path, value in checkpoint_params(resumed, 20).items():
        assert value.tobytes() == adapters[path].tobytes(), path

    # Merged: an ordinary run of base + (alpha / rank) A B.
    merged = tmp_path / "merged"
    result = run_module(data_dir, "launch.merge", f"--workdir={run}", f"--into={merged}")
    assert result.returncode == 0, result.stderr[-3000:]
    config = json.loads((merged / "config.json").read_text())
    assert config["lora"]["rank"] == 0 and config["finetune"]["from_run"] == ""
    provenance = json.loads((merged / "manifest.json").read_text())["merged_from"]
    assert provenance["lora_run"]["run"] == str(run) and provenance["lora_run"]["step"] == 20
    assert provenance["base"] == record["finetuned_from"]
    base, weights = checkpoint_params(tiny_run, 20), checkpoint_params(merged, 0)
    for path, w in base.items():
        if f"{path}/lora_a" in adapters:
            a, b = adapters[f"{path}/lora_a"], adapters[f"{path}/lora_b"]
            expected = w + (ALPHA / RANK) * (a.astype(np.float64) @ b).reshape(w.shape)
            np.testing.assert_allclose(weights[path], expected, rtol=1e-5, atol=1e-6)
        else:
            assert weights[path].tobytes() == w.tobytes(), path

    # The merged run evaluates as the LoRA run does (its adapters merged in when it is built).
    evaluated = run_module(
        data_dir, "launch.evaluate", f"--workdir={merged}", "--suite=calibration"
    )
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    lora_summary = evaluate_checkpoint(
        assembly.build(lora_config(data_dir, tiny_run), workdir=str(run)), str(run), ["calibration"]
    )
    assert lora_summary["step"] == 20
    assert json.loads(evaluated.stdout.splitlines()[-1]) == pytest.approx(
        {"step": 0, "accuracy": lora_summary["accuracy"], **lora_summary["headline"]}, rel=1e-6
    )
    generated = run_module(
        data_dir, "launch.generate", f"--workdir={merged}", "--prompt=1 2 3", "--temperature=0"
    )
    assert generated.returncode == 0, generated.stderr[-3000:]

    # A LoRA run is a source like any other: its parameters are its base's with its adapters.
    config = lora_config(data_dir, run)
    config.lora.rank = 0
    tuned = assembly.starting_state(assembly.build(config, jax.devices()[:1]))
    for path, value in flat(jax.device_get(tuned.params)).items():
        assert value.tobytes() == weights[path].tobytes(), path


def test_merge_refuses_a_run_that_is_not_a_lora_run(tiny_run, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ARCHLAB_KEEP_FREED_MEMORY", "0")  # leave this process's malloc alone
    with pytest.raises(SystemExit) as exit:
        merge_cli.main(["launch.merge", f"--workdir={tiny_run}", f"--into={tmp_path / 'x'}"])
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        f"error: run {str(tiny_run)!r} is not a LoRA run (lora.rank is 0): its parameters are "
        "already whole"
    ]
    assert not (tmp_path / "x").exists()
