"""Magnitude pruning: Zhu & Gupta's schedule, the sparsity it reaches (per array, globally and
N:M), weights it leaves alone, pruned weights that stay zero, masks a resumed run keeps, and
settings no run can use."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from jax.sharding import PartitionSpec as P

from analysis import model_card
from experiments import mqar_mixers
from experiments.base import base_config
from runtime import assembly, mesh, pruning
from runtime import optimizer as optimizer_lib
from runtime.errors import UsageError
from tests.conftest import metrics, run_train
from tests.test_train_cli import assert_usage_error


# ------------------------------------------------------------------------------------ schedule
def test_the_cubic_schedule_has_zhu_and_gupta_values_at_known_steps():
    schedule = pruning.Schedule(sparsity=0.8, start_step=100, end_step=500, every=50)
    assert schedule.update_steps == (100, 150, 200, 250, 300, 350, 400, 450, 500)
    # s_t = s_f + (s_i - s_f)(1 - (t - t0) / (n dt))^3 with s_i = 0, t0 = 100, n dt = 400.
    for t in schedule.update_steps:
        assert schedule.sparsity_at(t) == pytest.approx(0.8 - 0.8 * (1 - (t - 100) / 400) ** 3)
    assert schedule.sparsity_at(0) == schedule.sparsity_at(100) == 0.0
    assert schedule.sparsity_at(300) == pytest.approx(0.7)  # halfway: s_f (1 - 1/8)
    assert schedule.sparsity_at(500) == schedule.sparsity_at(10_000) == 0.8


def test_end_step_is_a_mask_update_even_when_every_does_not_divide_the_ramp():
    schedule = pruning.Schedule(sparsity=0.5, start_step=0, end_step=10, every=3)
    assert schedule.update_steps == (0, 3, 6, 9, 10)
    # 0.5 * 1000 * (1 - (1 - t/10)^3): 0, 328.5, 468, 499.5, 500, halves rounded up.
    assert schedule.pruned_counts(1000).tolist() == [0, 329, 468, 500, 500]
    # Rounded in float64: 0.7 * 10 is 6.99999988 in float32 and would floor to 6.
    assert pruning.Schedule(0.7, 0, 1, 1).pruned_counts(10).tolist() == [0, 7]


# ------------------------------------------------------------------------------------ mask rule
def test_ties_in_magnitude_prune_the_earlier_element_first_so_the_count_is_exact():
    equal = jnp.ones((2, 5))
    keep = pruning.keep_largest(equal, jnp.asarray([2, 4]))
    np.testing.assert_array_equal(keep, [[0, 0, 1, 1, 1], [0, 0, 0, 0, 1]])
    # Already pruned weights carry magnitude -1 and go first, whatever the other weights are.
    keep = pruning.keep_largest(jnp.asarray([[0.5, -1.0, 0.0, 2.0]]), jnp.asarray(2))
    np.testing.assert_array_equal(keep, [[1, 0, 0, 1]])


def test_an_n_m_mask_keeps_what_qwix_keeps():
    sparsity = pytest.importorskip("qwix._src.core.sparsity")
    weights = jax.random.normal(jax.random.key(0), (16, 32))
    schedule = pruning.Schedule(sparsity=0.5, start_step=0, end_step=1, every=1)
    (ours,) = pruning._new_masks([jnp.abs(weights)], schedule, 4, jnp.asarray(1))
    theirs = sparsity.get_sparsity_mask(weights, n_sparsity=2, m_sparsity=4, order="R")
    np.testing.assert_array_equal(ours, theirs)


# ------------------------------------------------------------------ the optimizer, on a real model
def tiny_config(**prune: object):
    config = mqar_mixers.get_config("attention")
    config.update_from_flattened_dict(
        {
            "model.num_layers": 1,
            "model.d_model": 32,
            "model.d_ff": 64,
            "train.steps": 30,
            "optimizer.warmup_steps": 2,
            **{f"prune.{k}": v for k, v in prune.items()},
        }
    )
    return config


def model_params(config):
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    init = jax.jit(lambda: model.init(jax.random.key(0), model.example_inputs(1), train=False))
    return mesh.unbox(init()["params"])


def train_on_random_gradients(config, params, steps: int):
    """The config's whole optimizer (AdamW, weight decay, clipping, pruning) on gradients drawn
    from one fixed stream: the parameters after each step, and the last optimizer state."""
    tx = optimizer_lib.make_optimizer(config)

    def step(carry, key):
        params, state = carry
        keys = iter(jax.random.split(key, len(jax.tree.leaves(params))))
        grads = jax.tree.map(lambda p: jax.random.normal(next(keys), p.shape), params)
        updates, state = tx.update(grads, state, params)
        params = jax.tree.map(jnp.add, params, updates)
        return (params, state), params

    keys = jax.random.split(jax.random.key(0), steps)
    (_, state), stacked = jax.jit(lambda: jax.lax.scan(step, (params, tx.init(params)), keys))()
    stacked = jax.device_get(stacked)
    history = [jax.tree.map(lambda x, i=i: x[i], stacked) for i in range(steps)]
    return history, state


def flat(params) -> dict[str, np.ndarray]:
    return {path: np.asarray(x) for path, x in pruning.named_leaves(params)}


def flat_specs(specs) -> dict[str, P]:
    leaves = jax.tree_util.tree_flatten_with_path(specs, is_leaf=lambda x: isinstance(x, P))[0]
    return {pruning.param_path(path): spec for path, spec in leaves}


PRUNE = {"sparsity": 0.6, "start_step": 2, "end_step": 12, "every": 3}


@pytest.fixture(scope="module")
def dense_run():
    config = tiny_config()
    return train_on_random_gradients(config, model_params(config), 20)[0]


@pytest.mark.parametrize("scope", ["per_layer", "global"])
def test_targeted_weights_reach_the_sparsity_and_pruned_ones_stay_zero(scope, dense_run):
    config = tiny_config(**PRUNE, scope=scope)
    history, state = train_on_random_gradients(config, model_params(config), 20)
    rule = pruning.from_config(config)
    targeted = rule.targeted(flat(history[-1]))
    counts = {path: int(np.sum(w == 0)) for path, w in targeted.items()}
    if scope == "per_layer":  # round(0.6 * size) in each array: within one element
        assert all(counts[p] == round(0.6 * w.size) for p, w in targeted.items()), counts
    else:  # exactly round(0.6 * N) of all N, with arrays pruned unevenly
        total = sum(w.size for w in targeted.values())
        assert sum(counts.values()) == round(0.6 * total)
        assert len({round(counts[p] / w.size, 2) for p, w in targeted.items()}) > 1

    # The pruned set only grows: a weight set to zero at a mask update is zero at every later
    # step, and after end_step (12) no weight joins it while the kept ones still train.
    zeros = [{p: w == 0 for p, w in rule.targeted(flat(params)).items()} for params in history]
    for before, after in zip(zeros, zeros[1:], strict=False):
        assert all(np.all(after[p][before[p]]) for p in before)
    for step in range(12, 20):
        assert all(np.array_equal(zeros[step][p], zeros[11][p]) for p in zeros[11])
    kept = {p: ~z for p, z in zeros[-1].items()}
    moved = [np.any(flat(history[-1])[p][m] != flat(history[-2])[p][m]) for p, m in kept.items()]
    assert all(moved)
    masks = flat(state[-1].inner_state.masks)
    assert masks.keys() == targeted.keys()
    assert all(np.array_equal(masks[p], targeted[p] != 0) for p in masks)

    # Untargeted parameters (embeddings, norms, convolutions, the output layer) follow exactly
    # the trajectory they have without pruning.
    dense = flat(dense_run[-1])
    untouched = {p: w for p, w in flat(history[-1]).items() if p not in targeted}
    assert untouched and all(w.tobytes() == dense[p].tobytes() for p, w in untouched.items())


def test_an_n_m_pattern_prunes_m_minus_n_of_every_m_along_the_last_axis():
    config = tiny_config(**{**PRUNE, "sparsity": 0.5}, pattern="2:4")
    history, _ = train_on_random_gradients(config, model_params(config), 14)
    for path, w in pruning.from_config(config).targeted(flat(history[-1])).items():
        per_group = np.sum(w.reshape(-1, 4) == 0, axis=1)
        assert np.all(per_group == 2), path


# --------------------------------------------------------------------------------------- targets
def targeted_paths(arm: str) -> set[str]:
    config = mqar_mixers.get_config(arm)
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.key(0), model.example_inputs(1), train=False)["params"]
    )
    rule = pruning.from_config(tiny_config(**PRUNE))  # the default targets and exclusions
    return set(rule.targeted(mesh.unbox(shapes)))


NEVER_PRUNED = re.compile(
    r"embed|norm|bias|conv|A_log|/D$|dt|decay|beta|filter|router|scale|head", re.IGNORECASE
)


@pytest.mark.parametrize("arm", list(mqar_mixers.ARMS))
def test_default_targets_are_dense_projections_never_embeddings_norms_or_ssm_state(arm):
    paths = targeted_paths(arm)
    assert paths
    assert not [p for p in paths if NEVER_PRUNED.search(p)]
    expected = {
        "attention": ["sequence_mixer/query", "sequence_mixer/key", "sequence_mixer/value",
                      "sequence_mixer/out", "channel/up", "channel/gate", "channel/down"],
        "mamba": ["sequence_mixer/in_proj", "sequence_mixer/x_proj", "sequence_mixer/out_proj"],
        "moe": ["sequence_mixer/query", "sequence_mixer/key", "sequence_mixer/value",
                "sequence_mixer/out", "channel/experts/up", "channel/experts/gate",
                "channel/experts/down"],
    }  # fmt: skip
    if arm in expected:
        blocks = mqar_mixers.get_config(arm).model.num_layers
        names = {
            f"block_{b}/{name}" + ("" if "experts" in name else "/kernel")
            for b in range(blocks)
            for name in expected[arm]
        }
        assert paths == names


def test_pruning_masks_are_sharded_like_their_parameters():
    config = tiny_config(**PRUNE)
    exp_model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    tx = optimizer_lib.make_optimizer(config)
    boxed = jax.eval_shape(
        lambda: exp_model.init(jax.random.key(0), exp_model.example_inputs(1), train=False)
    )["params"]
    specs = mesh.param_specs(boxed)
    abstract = mesh.unbox(boxed)
    opt_specs = mesh.optimizer_state_specs(tx, jax.eval_shape(tx.init, abstract), specs, abstract)
    mask_specs = flat_specs(opt_specs[-1].inner_state.masks)
    param_specs = flat_specs(specs)
    assert mask_specs and all(mask_specs[p] == param_specs[p] for p in mask_specs)


# ---------------------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ({"prune.sparsity": 1.0}, "prune.sparsity must be in [0, 1), got 1.0"),
        ({"prune.sparsity": -0.1}, "prune.sparsity must be in [0, 1), got -0.1"),
        ({"prune.end_step": 2}, "prune.end_step must be > prune.start_step (2), got 2"),
        ({"prune.end_step": 31}, "prune.end_step (31) is past train.steps (30)"),
        ({"prune.every": 0}, "prune.every must be >= 1, got 0"),
        ({"prune.scope": "layer"}, "unknown prune.scope 'layer'; valid: per_layer, global"),
        ({"prune.pattern": "4:2"}, "prune.pattern must be 'unstructured' or 'N:M'"),
        ({"prune.pattern": "2:4"}, "set prune.sparsity=0.5, got 0.6"),
        ({"prune.targets": " , "}, "prune.targets is empty"),
    ],
)
def test_unusable_pruning_settings_are_usage_errors(override, fragment):
    config = tiny_config(**PRUNE)
    config.update_from_flattened_dict(override)
    with pytest.raises(UsageError, match=re.escape(fragment)):
        pruning.check_config(config)


def test_targets_that_select_nothing_or_groups_that_do_not_fit_are_usage_errors():
    params = {"embed": {"embedding": jnp.zeros((8, 6))}, "w": {"kernel": jnp.zeros((6, 6))}}
    with pytest.raises(UsageError, match=r"select no parameter of this model .*embed/embedding"):
        pruning.from_config(tiny_config(**PRUNE, targets="*/query/*")).check_params(params)
    n_m = pruning.from_config(tiny_config(**{**PRUNE, "sparsity": 0.5}, pattern="2:4"))
    with pytest.raises(UsageError, match=r"last axis of w/kernel \(6, 6\) is not a multiple of 4"):
        n_m.check_params(params)


# -------------------------------------------------------------------------------- a run, end to end
PRUNED = [
    "--config.prune.sparsity=0.5",
    "--config.prune.start_step=4",
    "--config.prune.end_step=14",
    "--config.prune.every=2",
    "--config.checkpoint.max_to_keep=4",
    "--config.checkpoint.async_save=False",
]


def final_state(workdir: Path) -> dict[str, np.ndarray]:
    manager = ocp.CheckpointManager(
        Path(workdir, "checkpoints").resolve(), item_names=("state", "data_iterator")
    )
    restored = manager.restore(
        manager.latest_step(), args=ocp.args.Composite(state=ocp.args.StandardRestore())
    )
    leaves = ocp.tree.to_flat_dict(restored["state"], sep="/")
    return {k: np.asarray(v) for k, v in leaves.items()}


def test_a_pruned_run_logs_and_records_its_sparsity_and_resumes_with_its_masks(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_train(data_dir, workdir, *PRUNED)
    assert result.returncode == 0, result.stderr[-3000:]

    rows = metrics(workdir)  # logged at 5, 10, 15, 20; masks updated at 4, 6, ..., 14
    schedule = pruning.Schedule(0.5, 4, 14, 2)
    logged = [r["prune/sparsity"] for r in rows]
    assert logged[0] == 0.0 and logged[1] == pytest.approx(schedule.sparsity_at(10), abs=1e-3)
    assert logged[2:] == [0.5, 0.5]

    record = json.loads((workdir / "manifest.json").read_text())["pruning"]
    assert record["sparsity"] == 0.5 and record["step"] == 20
    layers = {layer["param"]: layer for layer in record["layers"]}
    assert set(layers) == {
        f"block_0/{name}/kernel"
        for name in ("channel/up", "channel/gate", "channel/down")
        + tuple(f"sequence_mixer/{p}" for p in ("query", "key", "value", "out"))
    }
    state = final_state(workdir)
    for path, layer in layers.items():
        weights = state[f"params/{path}"]
        assert layer["size"] == weights.size and layer["zeros"] == np.sum(weights == 0)
        assert layer["fraction_zero"] == 0.5
    card = model_card.render(str(workdir))
    assert "| block_0/channel/up/kernel | 2,048 | 0.5000 |" in card

    # Interrupted after step 10, mid-schedule: the rerun restores the masks with the optimizer
    # state and ends bitwise where the uninterrupted run did.
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    for step in (15, 20):
        shutil.rmtree(resumed / "checkpoints" / str(step))
    result = run_train(data_dir, resumed, *PRUNED)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "resumed at step 10" in result.stderr + result.stdout
    assert metrics(resumed) == rows
    again = final_state(resumed)
    assert state.keys() == again.keys()
    assert any("masks" in name for name in state)
    for name in state:
        assert state[name].tobytes() == again[name].tobytes(), name


def test_bad_pruning_config_is_a_one_line_error_before_anything_runs(data_dir, tmp_path):
    workdir = tmp_path / "run"
    result = run_train(data_dir, workdir, "--config.prune.sparsity=0.5")
    assert_usage_error(result, "prune.end_step must be > prune.start_step (0), got 0")
    assert not workdir.exists()


def test_pruning_is_off_by_default_and_leaves_the_optimizer_as_it_was():
    config = base_config()
    assert config.prune.sparsity == 0 and pruning.from_config(config) is None
    params = {"w": {"kernel": jnp.ones((4, 4))}}
    state = optimizer_lib.make_optimizer(config).init(params)
    assert "MagnitudePruningState" not in repr(state)
