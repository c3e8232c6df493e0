"""Fine-tuning from another run (`finetune.from_run=<run dir>[@step]`, runtime/finetune.py): a new
run starts from the source's parameters with a fresh optimizer; the checkpoint it starts from is
pinned, and a source that does not fit or does not verify is refused in one line before anything
is computed.
"""

from __future__ import annotations

import json
import shutil

import flax
import jax
import ml_collections
import numpy as np
import pytest

from experiments import mqar_mixers
from runtime import assembly, checkpoint, finetune, manifest
from runtime.checkpoint_seal import fingerprint
from runtime.errors import UsageError
from tests.conftest import checkpoint_params, run_train, tiny_overrides

pytestmark = pytest.mark.long(seconds=40)


def tiny_config(data_dir: str, **overrides) -> ml_collections.ConfigDict:
    config = mqar_mixers.get_config()
    config.update_from_flattened_dict({**tiny_overrides(), **overrides})
    config.data.dir = data_dir
    return config


@pytest.mark.parametrize("at, step", [("@15", 15), ("", 20)])
def test_a_new_run_starts_from_the_source_parameters_with_a_fresh_optimizer(
    data_dir, tiny_run, tmp_path, at, step
):
    """@15: that checkpoint; no step: the newest that verifies (TINY keeps 15 and 20)."""
    config = tiny_config(data_dir, **{"finetune.from_run": f"{tiny_run}{at}"})
    assembly.check(config)
    exp = assembly.build(config, jax.devices()[:1], workdir=str(tmp_path / "new"))
    assert exp.finetune_source == finetune.Source(
        str(tiny_run), step, fingerprint(str(tiny_run / "checkpoints" / str(step)))
    )
    checkpoints = checkpoint.Checkpoints(str(tmp_path / "new"), 2, False)
    try:
        start, state, restored = assembly.initial_state(exp, checkpoints)
    finally:
        checkpoints.close()
    assert (start, restored, int(state.step)) == (0, False, 0)
    params = jax.device_get(state.params)
    flat = flax.traverse_util.flatten_dict(params, sep="/")
    source = checkpoint_params(tiny_run, step)
    assert flat.keys() == source.keys()
    for path, value in source.items():
        assert flat[path].tobytes() == value.tobytes(), path
    # A fresh optimizer: its state is the one AdamW starts any parameters with.
    fresh = jax.device_get(exp.tx.init(params))
    for ours, new in zip(jax.tree.leaves(state.opt_state), jax.tree.leaves(fresh), strict=True):
        np.testing.assert_array_equal(ours, new)


def test_the_checkpoint_a_run_starts_from_is_pinned(data_dir, tiny_run, tmp_path):
    source_dir = tmp_path / "source"
    shutil.copytree(tiny_run, source_dir)
    config = tiny_config(data_dir, **{"finetune.from_run": str(source_dir)})
    pinned = finetune.resolve(config, None)
    assert pinned.step == 20
    workdir = tmp_path / "tuned"
    workdir.mkdir()
    manifest.write(str(workdir), {manifest.FINETUNED_FROM: pinned.record()})

    # The source trains on (a newer checkpoint that verifies): the run still reads step 20.
    shutil.copytree(source_dir / "checkpoints/20", source_dir / "checkpoints/25")
    assert finetune.resolve(config, None).step == 25
    assert finetune.resolve(config, str(workdir)) == pinned
    finetune.verify(pinned)

    data_file = next(p for p in (source_dir / "checkpoints/20/state").rglob("*") if p.is_file())
    data_file.write_bytes(data_file.read_bytes() + b"\0")
    unusable = "the checkpoint this run started from is unusable: "
    with pytest.raises(UsageError, match=unusable + "no .*checkpoint step 20 of .* bytes changed"):
        finetune.verify(pinned)
    shutil.rmtree(source_dir / "checkpoints/20")
    with pytest.raises(UsageError, match=unusable + "run .* has no checkpoint at step 20"):
        finetune.verify(pinned)

    # A run that pinned its source was checked against it then: without LoRA it needs it no more.
    shutil.rmtree(source_dir)
    assembly.check(config, str(workdir))
    with pytest.raises(UsageError, match="is not a run directory"):
        assembly.check(config)  # a new run does


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"finetune.from_run": "{run}@7"},
            r"run '.*' has no checkpoint at step 7 \(steps: 15, 20\)",
        ),
        ({"finetune.from_run": "{tmp}"}, r"finetune.from_run: '.*' is not a run directory"),
        (
            {"finetune.from_run": "{run}", "model.mixer": "mamba"},
            r"run '.*' has no parameter block_0/sequence_mixer/A_log \(shape \(64, 16\) in this "
            "model\\): it is another architecture",
        ),
        ({"lora.rank": 4}, "lora.rank > 0 adapts a trained model: name it with finetune"),
        ({"lora.rank": 4, "finetune.from_run": "{run}", "lora.targets": "("}, "not a regular"),
    ],
)
def test_bad_sources_are_refused_before_anything_is_computed(
    data_dir, tiny_run, tmp_path, overrides, message
):
    filled = {
        k: v.format(run=tiny_run, tmp=tmp_path) if isinstance(v, str) else v
        for k, v in overrides.items()
    }
    config = tiny_config(data_dir, **filled)
    with pytest.raises(UsageError, match=message):
        assembly.check(config)
        finetune.resolve(config, None)


def test_a_source_of_other_shapes_is_refused_in_one_line(data_dir, tiny_run, tmp_path):
    """TINY's d_ff is 64: a model with 48 cannot start from it."""
    workdir = tmp_path / "tuned"
    result = run_train(
        data_dir, workdir, f"--config.finetune.from_run={tiny_run}", "--config.model.d_ff=48"
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "error: finetune.from_run: parameter block_0/channel/down/kernel has shape (64, 32) in "
        f"run {str(tiny_run)!r} but (48, 32) in this model"
    ]
    assert not workdir.exists()


def test_the_manifest_names_the_source_checkpoint(data_dir, tiny_run, tmp_path):
    workdir = tmp_path / "tuned"
    result = run_train(
        data_dir,
        workdir,
        f"--config.finetune.from_run={tiny_run}@15",
        "--config.train.steps=5",
        "--config.eval.every=5",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads((workdir / "manifest.json").read_text())
    assert record[manifest.FINETUNED_FROM] == {
        "run": str(tiny_run),
        "step": 15,
        "checkpoint_sha256": fingerprint(str(tiny_run / "checkpoints/15")),
    }
    assert record["trainable_params"] == record["num_params"]
