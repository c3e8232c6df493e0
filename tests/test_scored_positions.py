"""Logits only where the loss scores: a dataset that scores a fixed number of positions per
example gets `score_positions` from its loader, the sequence model unembeds only there, and the
objectives read targets and masks there, with the same loss, metrics and gradients as from the
full logits."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import data
import models
import objectives
from data.pipeline import make_loader
from experiments.base import base_config
from runtime import step as step_lib
from runtime.loop import with_example_mask

B, T, S, V = 3, 12, 4, 29


def tiny_lm(**overrides: Any) -> tuple[Any, Any]:
    config = base_config().model
    config.update(dict(name="lm", num_layers=2, d_model=32, num_heads=4, d_ff=64, **overrides))
    config.lock()
    spec = data.DatasetSpec(
        name="toy", kind="sequence", splits={}, eval_split="test", vocab_size=V, seq_len=T
    )
    model = models.build_model(config, spec, jnp.float32)
    params = model.init(jax.random.key(0), model.example_inputs(1), train=False)["params"]
    return model, params


def objective(name: str, **options: float) -> Any:
    return objectives.get_objective(ml_collections.ConfigDict(dict(name=name, **options)))


def scored_batch(seed: int = 0) -> dict[str, np.ndarray]:
    """Tokens with S scored positions per row, at different places in each row."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=(B, T + 1)).astype(np.int32)
    positions = np.sort(
        np.stack([rng.choice(T, size=S, replace=False) for _ in range(B)]), axis=1
    ).astype(np.int32)
    mask = np.zeros((B, T), np.float32)
    np.put_along_axis(mask, positions, 1.0, axis=1)
    return {
        "inputs": tokens[:, :-1],
        "targets": tokens[:, 1:],
        "loss_mask": mask,
        "score_positions": positions,
        # Teacher logits for distillation, defined at every position.
        "teacher_logits": rng.normal(size=(B, T, V)).astype(np.float32),
    }


def without_positions(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in batch.items() if k != "score_positions"}


# ----------------------------------------------------------------------------------------- model
@pytest.mark.parametrize("tie_embeddings", [False, True])
def test_lm_logits_at_positions_are_the_full_logits_there(tie_embeddings: bool) -> None:
    model, params = tiny_lm(tie_embeddings=tie_embeddings)
    batch = scored_batch()
    full = model.apply({"params": params}, batch["inputs"], train=False)
    at = model.apply(
        {"params": params}, batch["inputs"], train=False, positions=batch["score_positions"]
    )
    assert full.shape == (B, T, V) and at.shape == (B, S, V) and at.dtype == jnp.float32
    expected = np.take_along_axis(np.asarray(full), batch["score_positions"][..., None], axis=1)
    np.testing.assert_allclose(at, expected, rtol=1e-6, atol=1e-6)


# ------------------------------------------------------------------------------------ objectives
@pytest.mark.parametrize(
    "name, options",
    [
        ("next_token_xent", {}),
        ("next_token_xent", {"z_loss": 1e-2, "label_smoothing": 0.1}),
        ("distillation", {"temperature": 2.0, "alpha": 0.3}),
    ],
)
def test_objective_at_score_positions_equals_the_masked_full_objective(name, options) -> None:
    """Loss, metrics and the gradient w.r.t. the full logits agree; the padding row that
    example_mask marks scores nothing either way."""
    batch = scored_batch()
    batch["example_mask"] = np.array([1.0, 1.0, 0.0], np.float32)
    fn = objective(name, **options)
    full = jnp.asarray(np.random.default_rng(1).normal(size=(B, T, V)).astype(np.float32) * 3)

    def at_positions(x: np.ndarray | jax.Array) -> jax.Array:
        return jnp.take_along_axis(x, batch["score_positions"][..., None], axis=1)

    def scored_loss(logits: jax.Array) -> tuple:
        # The teacher's logits come as the student's do: at the scored positions only.
        teacher = {"teacher_logits": at_positions(batch["teacher_logits"])}
        return fn(at_positions(logits), {**batch, **teacher}, {})

    def masked_loss(logits: jax.Array) -> tuple:
        return fn(logits, without_positions(batch), {})

    (loss_at, metrics_at), grad_at = jax.value_and_grad(scored_loss, has_aux=True)(full)
    (loss, metrics), grad = jax.value_and_grad(masked_loss, has_aux=True)(full)
    np.testing.assert_allclose(loss_at, loss, rtol=1e-6)
    assert set(metrics_at) == set(metrics) and float(metrics["weight"]) == 2 * S
    for key in metrics:
        np.testing.assert_allclose(metrics_at[key], metrics[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(grad_at, grad, rtol=1e-6, atol=1e-8)


def test_full_logits_with_score_positions_are_refused() -> None:
    batch = scored_batch()
    full = jnp.zeros((B, T, V))
    with pytest.raises(ValueError, match=r"logits \(3, 12, 29\) do not line up with targets"):
        objective("next_token_xent")(full, batch, {})


# ---------------------------------------------------------------------------------- train step
@pytest.mark.parametrize("microbatches", [1, 3])
def test_train_and_eval_steps_with_score_positions_match_the_full_logits(microbatches) -> None:
    """Same metrics, gradient norm and updated parameters as unembedding every position."""
    model, params = tiny_lm()
    fn, tx = objective("next_token_xent"), optax.sgd(0.1)
    state = step_lib.TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        opt_state=tx.init(params),
        rng=jax.random.key_data(jax.random.key(3)),
    )
    mesh = jax.sharding.Mesh(jax.devices()[:1], ("data",))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
    train_step = jax.jit(
        step_lib.make_train_step(model, tx, fn, "inputs", microbatches, replicated)
    )
    eval_step = jax.jit(step_lib.make_eval_step(model, fn, "inputs"))
    batch = scored_batch()
    new_at, metrics_at = train_step(state, batch)
    new, metrics = train_step(state, without_positions(batch))
    for key in metrics:
        np.testing.assert_allclose(metrics_at[key], metrics[key], rtol=1e-5, err_msg=key)
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
        new_at.params,
        new.params,
    )
    eval_at = eval_step(params, batch)
    eval_full = eval_step(params, without_positions(batch))
    for key in eval_full:
        np.testing.assert_allclose(eval_at[key], eval_full[key], rtol=1e-6, err_msg=key)


# ------------------------------------------------------------------------------------------ data
def test_mqar_loader_yields_the_scored_positions(tmp_path) -> None:
    params = {"vocab_size": 32, "seq_len": 24, "num_kv_pairs": 5, "num_queries": 3}
    ds = data.load("mqar", {**params, "train_examples": 32, "eval_examples": 8}, str(tmp_path))
    assert ds.spec.scored_positions == 3
    for split in ds.spec.splits:
        for batch in ds.loader(split, batch_size=8, seed=0, shuffle=True, num_epochs=1):
            positions = batch["score_positions"]
            assert positions.dtype == np.int32 and positions.shape == (8, 3)
            for row, mask in zip(positions, batch["loss_mask"], strict=True):
                np.testing.assert_array_equal(row, np.flatnonzero(mask))


def test_a_dataset_whose_count_varies_declares_none_and_gets_no_positions(tmp_path) -> None:
    ds = data.load(
        "in_context_recall", {"seq_len": 16, "train_examples": 8, "eval_examples": 8}, tmp_path
    )
    assert ds.spec.scored_positions is None
    batch = next(iter(ds.loader("train", batch_size=4, seed=0, shuffle=False, num_epochs=1)))
    assert "score_positions" not in batch


def test_an_example_scoring_another_count_is_a_clear_error() -> None:
    def example(scored: list[int]) -> dict[str, np.ndarray]:
        mask = np.zeros(T, np.float32)
        mask[scored] = 1.0
        return {
            "inputs": np.zeros(T, np.int32),
            "targets": np.zeros(T, np.int32),
            "loss_mask": mask,
        }

    source = [example([1, 5]), example([2, 3, 7])]
    dtypes = {"inputs": np.int32, "targets": np.int32, "loss_mask": np.float32}
    loader = make_loader(
        source,
        dtypes={k: np.dtype(v) for k, v in dtypes.items()},
        batch_size=1,
        seed=0,
        shuffle=False,
        num_epochs=1,
        scored_positions=2,
        dataset_name="toy",
    )
    with pytest.raises(
        ValueError, match=r"dataset 'toy' declares 2 scored positions.*loss_mask scores 3"
    ):
        list(loader)


def test_padding_of_the_last_eval_batch_gives_valid_positions_that_score_nothing() -> None:
    model, params = tiny_lm()
    fn = objective("next_token_xent")
    eval_step = jax.jit(step_lib.make_eval_step(model, fn, "inputs"))
    batch = scored_batch()
    del batch["teacher_logits"]
    padded = with_example_mask(batch, B + 2)
    np.testing.assert_array_equal(padded["score_positions"][B:], 0)
    assert padded["score_positions"].dtype == np.int32
    real = eval_step(params, batch)
    with_padding = eval_step(params, padded)
    for key in real:
        np.testing.assert_allclose(with_padding[key], real[key], rtol=1e-6, err_msg=key)


def test_rows_a_loader_marked_as_padding_stay_padding_when_the_batch_is_padded() -> None:
    batch = {"inputs": np.ones((3, T), np.int32), "example_mask": np.array([1, 1, 0], np.float32)}
    padded = with_example_mask(batch, 5)
    assert padded["example_mask"].tolist() == [1, 1, 0, 0, 0]
    unmarked = with_example_mask({"inputs": batch["inputs"]}, 4)
    assert unmarked["example_mask"].tolist() == [1, 1, 1, 0]
