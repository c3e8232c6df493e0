"""DP-SGD: the accountant agrees with published values, the step clips and noises as stated,
and a private run records and resumes its guarantee."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
import objectives
from data.spec import DatasetSpec
from experiments import dp_digits
from runtime import optimizer as optimizer_lib
from runtime import privacy
from runtime.errors import UsageError
from runtime.mesh import unbox
from runtime.step import init_state, make_train_step
from tests.conftest import final_params, metrics, run_train
from tests.test_train_cli import assert_usage_error

DIGITS_TRAIN_EXAMPLES = 1497  # data/digits.py: 1797 images, 300 held out
BATCH = 16


# ------------------------------------------------------------------------------- accounting
@pytest.mark.parametrize(
    ("examples", "batch_size", "noise", "epochs", "delta", "published"),
    [
        # TF Privacy, tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py,
        # test_compute_dp_sgd_privacy 'Test0' and 'Test1': Poisson-subsampled Gaussian, RDP,
        # steps = ceil(epochs * N / batch).
        (60000, 150, 1.3, 15, 1e-5, 0.7242234026109595),
        (100000, 100, 1.0, 30, 1e-7, 1.4154988495444842),
    ],
)
def test_rdp_epsilon_matches_tf_privacy_published_values(
    examples, batch_size, noise, epochs, delta, published
):
    steps = math.ceil(epochs * examples / batch_size)
    epsilon = privacy.dp_sgd_epsilon(batch_size / examples, noise, steps, delta, "rdp")
    assert epsilon == pytest.approx(published, rel=1e-9)


@pytest.mark.parametrize(("accountant", "published"), [("rdp", 3.2392676), ("pld", 2.4612381)])
def test_epsilon_matches_tf_privacy_example_level_values(accountant, published):
    # TF Privacy, compute_dp_sgd_privacy_test.py, test_compute_dp_sgd_example_privacy
    # 'no_microbatching_with_subsampling_{rdp,pld}': 1.2 epochs at Poisson q = 0.01
    # (ceil(1.2 / 0.01) = 120 steps), noise multiplier 0.7, delta 1e-5, asserted to 7 places.
    epsilon = privacy.dp_sgd_epsilon(0.01, 0.7, 120, 1e-5, accountant)
    assert epsilon == pytest.approx(published, abs=5e-8)


def test_epsilon_is_zero_before_training_infinite_without_noise_and_grows_with_steps():
    assert privacy.dp_sgd_epsilon(0.05, 1.0, 0, 1e-5) == 0.0
    assert privacy.dp_sgd_epsilon(0.05, 0.0, 10, 1e-5) == math.inf
    spent = [privacy.dp_sgd_epsilon(0.05, 1.0, steps, 1e-5) for steps in (10, 100, 1000)]
    assert spent == sorted(spent) and spent[0] > 0
    assert privacy.dp_sgd_epsilon(0.05, 3.0, 100, 1e-5) < spent[1]


def test_clipping_without_noise_logs_no_epsilon_and_records_no_guarantee():
    clip_only = privacy.DpSgdAccounting(0.0, 1.0, 0.05, 1e-5, "rdp")
    assert clip_only.metrics(10) == {}  # infinity has no JSON spelling
    assert clip_only.guarantee(10)["epsilon"] is None
    noised = privacy.DpSgdAccounting(1.0, 1.0, 0.05, 1e-5, "rdp")
    assert noised.metrics(10) == {"privacy/epsilon": noised.guarantee(10)["epsilon"]}


def dp_config(**privacy_overrides):
    config = dp_digits.get_config("dp_eps5")
    config.update_from_flattened_dict({f"privacy.{k}": v for k, v in privacy_overrides.items()})
    return config


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"privacy.delta": 0.0}, "privacy.delta must be in (0, 1)"),
        ({"privacy.delta": 1.0}, "privacy.delta must be in (0, 1)"),
        ({"privacy.noise_multiplier": -0.5}, "privacy.noise_multiplier must be >= 0"),
        ({"privacy.l2_clip_norm": 0.0}, "privacy.l2_clip_norm must be > 0"),
        ({"privacy.accountant": "moments"}, "unknown privacy.accountant 'moments'"),
        ({"train.grad_accum_steps": 2}, "train.grad_accum_steps=1"),
        ({"optimizer.grad_clip_norm": 1.0}, "optimizer.grad_clip_norm=0"),
    ],
)
def test_unusable_privacy_settings_are_usage_errors(override, fragment):
    config = dp_config()
    config.update_from_flattened_dict(override)
    with pytest.raises(UsageError, match=re.escape(fragment)):
        privacy.check_config(config)
    config.privacy.dp_sgd = False  # settings of an unused feature are never checked
    privacy.check_config(config)


def test_batch_larger_than_the_training_split_is_a_usage_error():
    with pytest.raises(UsageError, match="exceeds the 100 training examples"):
        privacy.sampling_probability(128, 100)


# ------------------------------------------------------------------------------ the DP step
def sgd_config(dp_sgd: bool, clip: float = 1.0, noise: float = 0.0):
    """Plain SGD at a constant learning rate 1: the update is minus the (DP) gradient."""
    config = dp_config(dp_sgd=dp_sgd, l2_clip_norm=clip, noise_multiplier=noise)
    config.update_from_flattened_dict(
        {
            "optimizer.name": "sgd",
            "optimizer.momentum": 0.0,
            "optimizer.weight_decay": 0.0,
            "optimizer.schedule": "constant",
            "optimizer.warmup_steps": 0,
            "optimizer.learning_rate": 1.0,
            "model.d_model": 32,
        }
    )
    return config


def one_step(config, batch: dict[str, jax.Array]):
    """(parameter update, metrics) of one train step from a fresh state, as the loop runs it."""
    spec = DatasetSpec(
        name="digits",
        kind="image",
        splits={"train": DIGITS_TRAIN_EXAMPLES, "test": 300},
        eval_split="test",
        num_classes=10,
        image_shape=(8, 8, 1),
    )
    model = models.build_model(config.model, spec, jnp.float32)
    tx = optimizer_lib.make_optimizer(config)
    state = unbox(init_state(model, tx, config.seed, model.example_inputs(1)))
    step = make_train_step(
        model,
        tx,
        objectives.get_objective(config.objective),
        "image",
        1,
        None,
        per_example_grads=config.privacy.dp_sgd,
    )
    new_state, step_metrics = jax.jit(step)(state, batch)
    update = jax.tree.map(jnp.subtract, new_state.params, state.params)
    return update, jax.device_get(step_metrics)


def digits_like_batch(seed: int = 0) -> dict[str, jax.Array]:
    rng = np.random.default_rng(seed)
    return {
        "image": jnp.asarray(rng.uniform(0, 1, (BATCH, 8, 8, 1)), jnp.float32),
        "label": jnp.asarray(rng.integers(0, 10, BATCH), jnp.int32),
    }


def global_norm(tree) -> float:
    return float(np.sqrt(sum(np.sum(np.square(x)) for x in jax.tree.leaves(tree))))


def test_without_noise_and_with_a_clip_above_every_gradient_the_dp_step_is_the_ordinary_step():
    batch = digits_like_batch()
    ordinary_update, ordinary_metrics = one_step(sgd_config(dp_sgd=False), batch)
    dp_update, dp_metrics = one_step(sgd_config(dp_sgd=True, clip=1e6), batch)
    for a, b in zip(jax.tree.leaves(ordinary_update), jax.tree.leaves(dp_update), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    assert dp_metrics.keys() == ordinary_metrics.keys()
    for key, value in ordinary_metrics.items():  # the loop logs the same batch means
        np.testing.assert_allclose(dp_metrics[key], value, rtol=1e-5, err_msg=key)


def test_one_example_moves_the_update_by_at_most_clip_over_batch_size():
    clip = 0.5
    batch = digits_like_batch()
    batch["image"] = batch["image"].at[0].multiply(1000.0)  # an outlier with a huge gradient
    present = {**batch, "example_mask": jnp.ones(BATCH, jnp.float32)}
    removed = {**batch, "example_mask": jnp.ones(BATCH, jnp.float32).at[0].set(0.0)}

    def moved_by(dp_sgd: bool) -> float:
        config = sgd_config(dp_sgd=dp_sgd, clip=clip)
        with_it, _ = one_step(config, present)
        without_it, _ = one_step(config, removed)
        return global_norm(jax.tree.map(jnp.subtract, with_it, without_it))

    assert moved_by(dp_sgd=True) <= clip / BATCH * (1 + 1e-5)
    assert moved_by(dp_sgd=False) > 100 * clip / BATCH  # without DP it is not bounded at all


def test_noise_on_the_mean_gradient_has_std_noise_multiplier_times_clip_over_batch_size():
    # optax's convention: N(0, (noise_multiplier * clip)^2) on the sum of clipped gradients,
    # then divided by the batch size. Zero gradients leave the noise alone in the update.
    noise, clip, batch = 2.0, 0.5, 8
    tx = optimizer_lib.make_optimizer(sgd_config(dp_sgd=True, clip=clip, noise=noise))
    params = {"w": jnp.zeros((100, 100))}
    per_example_grads = {"w": jnp.zeros((batch, 100, 100))}
    state = tx.init(params)
    first, state_after = tx.update(per_example_grads, state, params)
    second, _ = tx.update(per_example_grads, state_after, params)
    replayed, _ = tx.update(per_example_grads, state, params)

    drawn = np.asarray(first["w"])
    assert drawn.std() == pytest.approx(noise * clip / batch, rel=0.03)
    assert abs(drawn.mean()) < 3 * drawn.std() / 100  # 10,000 draws
    # The key lives in the optimizer state: each step draws fresh noise, and the same state
    # (a restored checkpoint) draws the same noise again.
    assert not np.allclose(second["w"], first["w"])
    np.testing.assert_array_equal(replayed["w"], first["w"])


# ------------------------------------------------------------------------ a private run, end to end
DP_RUN = [
    "--config=experiments/dp_digits.py:dp_eps5",
    "--config.model.d_model=32",
    "--config.train.steps=12",
    "--config.train.log_every=4",
    "--config.eval.every=12",
    "--config.checkpoint.every=4",
    "--config.checkpoint.async_save=False",
]


def test_private_run_logs_epsilon_records_its_guarantee_and_resumes_bitwise(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_train(data_dir, workdir, base=DP_RUN)
    assert result.returncode == 0, result.stderr[-3000:]

    # Epsilon spent so far at every log step, from an event built here independently.
    q = 64 / DIGITS_TRAIN_EXAMPLES
    rows = metrics(workdir)
    assert [r["step"] for r in rows] == [4, 8, 12]
    for row in rows:
        assert row["privacy/epsilon"] == privacy.dp_sgd_epsilon(q, 1.0, row["step"], 1e-5)
    assert rows[0]["privacy/epsilon"] < rows[-1]["privacy/epsilon"]

    guarantee = json.loads(Path(workdir, "manifest.json").read_text())["privacy"]
    assert guarantee["epsilon"] == rows[-1]["privacy/epsilon"]
    assert guarantee["delta"] == 1e-5 and guarantee["steps"] == 12
    assert guarantee["noise_multiplier"] == 1.0 and guarantee["l2_clip_norm"] == 1.0
    assert guarantee["sampling_probability"] == q
    assert "RdpAccountant" in guarantee["accountant"]
    assert "Poisson subsampling" in guarantee["assumption"]

    # An interruption after step 8: the step-12 checkpoint was never written. The rerun must
    # restore the noise key with the optimizer state and draw the same noise.
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    shutil.rmtree(resumed / "checkpoints" / "12")
    result = run_train(data_dir, resumed, base=DP_RUN)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at step 8" in result.stderr + result.stdout
    assert metrics(resumed) == rows
    original, again = final_params(workdir, 12), final_params(resumed, 12)
    assert original.keys() == again.keys()
    for name in original:
        assert original[name].tobytes() == again[name].tobytes(), name


def test_bad_privacy_config_is_a_one_line_error_before_anything_runs(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_train(data_dir, workdir, "--config.privacy.delta=2", base=DP_RUN)
    assert_usage_error(result, "privacy.delta must be in (0, 1), got 2")
    assert not workdir.exists()
