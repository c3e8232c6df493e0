"""The PyTorch twin of the reference LM (benchmarks/torch_reference_lm.py) computes archlab's
function: same parameter count, same logits from the same parameters, same optimizer.

Skipped where torch is not installed (it is the optional `bench` extra).
"""

from __future__ import annotations

import flax
import flax.linen
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

torch = pytest.importorskip("torch")

from benchmarks import torch_reference_lm as twin  # noqa: E402
from experiments import reference_lm  # noqa: E402
from runtime import optimizer as optimizer_lib  # noqa: E402


def small_config():
    """The reference architecture, shrunk: 2 layers, d_model 64, 4 heads, d_ff 128, 32 tokens."""
    config = reference_lm.get_config()
    config.model.num_layers = 2
    config.model.d_model = 64
    config.model.num_heads = 4
    config.model.d_ff = 128
    config.data.pydoc_text.seq_len = 32
    return config


def random_params(flax_model, seed: int):
    """A parameter tree of archlab's layout (from jax.eval_shape, so no jitted initialiser to
    compile) filled with numpy draws: matrices N(0, 1/d_model), norm scales 1 + N(0, 0.1^2)
    (not ones, so the norm mapping is checked too)."""
    shapes = jax.eval_shape(
        lambda: flax_model.init(jax.random.PRNGKey(0), flax_model.example_inputs(1), train=False)[
            "params"
        ]
    )
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        if path[-1] == "scale":
            return jnp.asarray(1 + 0.1 * rng.standard_normal(leaf.shape), jnp.float32)
        std = flax_model.d_model**-0.5
        return jnp.asarray(std * rng.standard_normal(leaf.shape), jnp.float32)

    return flax.traverse_util.path_aware_map(draw, flax.linen.unbox(shapes))


@pytest.fixture(autouse=True)
def _float32_matmuls():
    """Full-precision matmuls on both sides for the duration of a test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with jax.default_matmul_precision("float32"):
        yield
    torch.set_num_threads(threads)


def test_parameter_count_matches_archlab_for_the_reference_config():
    config = reference_lm.get_config()
    model = twin.ReferenceLM.from_config(config)
    assert (model.vocab_size, model.seq_len) == (256, 256)
    counts = twin.archlab_param_count(config)
    assert twin.param_count(model) == counts["count_params"] == counts["describe"]
    twin.check_param_count(model, config)


def test_logits_match_archlab_with_the_same_parameters():
    config = small_config()
    flax_model = twin.build_archlab_model(config)
    tokens = np.random.default_rng(0).integers(0, 256, size=(2, 32), dtype=np.int32)
    params = random_params(flax_model, seed=0)
    apply = jax.jit(lambda p, x: flax_model.apply({"params": p}, x, train=False))
    expected = np.asarray(apply(params, jnp.asarray(tokens)), np.float32)

    model = twin.ReferenceLM.from_config(config)
    twin.load_flax_params(model, params)
    with torch.no_grad():
        logits = model(torch.from_numpy(tokens).long()).numpy()

    assert logits.shape == expected.shape == (2, 32, 256)
    print("max abs logits difference:", np.max(np.abs(logits - expected)))
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)
    # Causality: a prefix's logits do not depend on what follows it.
    with torch.no_grad():
        prefix = model(torch.from_numpy(tokens[:, :10]).long()).numpy()
    np.testing.assert_allclose(prefix, logits[:, :10], rtol=1e-5, atol=1e-5)


def test_learning_rate_schedule_matches_optax():
    config = reference_lm.get_config()
    for name in ("cosine", "linear", "constant"):
        config.optimizer.schedule = name
        schedule = optimizer_lib.learning_rate_schedule(config)
        factor = twin.lr_factor(config.optimizer, config.train.steps)
        lr = config.optimizer.learning_rate
        for step in (0, 1, 10, 19, 20, 21, 100, 199, 200, 250):
            assert factor(step) * lr == pytest.approx(float(schedule(step)), rel=1e-5, abs=1e-9)


def test_train_steps_match_archlab_optimizer():
    """Four steps of the twin's make_train_step (default and fused AdamW) against archlab's
    optax optimizer (runtime/optimizer.make_optimizer: clipping, AdamW, decay mask, warmup) fed
    the same gradients: the parameters agree after every step. (The gradients are the same
    function's, checked above through the logits; this keeps XLA from compiling a backward.)
    """
    config = small_config()
    config.optimizer.warmup_steps = 1  # step 0 has learning rate 0; the next ones move
    config.optimizer.grad_clip_norm = 0.5  # small enough to clip
    config.optimizer.learning_rate = 1e-2  # large enough to move parameters visibly
    flax_model = twin.build_archlab_model(config)
    initial = random_params(flax_model, seed=1)
    shapes = {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(initial).items()}
    tokens = torch.randint(0, 256, (4, 33), generator=torch.Generator().manual_seed(1))
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    tx = optimizer_lib.make_optimizer(config)

    @jax.jit
    def archlab_update(grads, opt_state, params):
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state

    for fused in (False, True):
        model = twin.ReferenceLM.from_config(config)
        twin.load_flax_params(model, initial)
        paths = twin.flax_paths(model)
        step = twin.make_train_step(model, config, fused=fused)
        params, opt_state, losses = initial, tx.init(initial), []
        for _ in range(4):
            model.zero_grad()
            logits = model(inputs).flatten(0, 1)
            torch.nn.functional.cross_entropy(logits, targets.flatten()).backward()
            grads = {
                path: twin.to_flax_layout(path, p.grad, shapes[path]) for path, p in paths.items()
            }
            params, opt_state = archlab_update(
                flax.traverse_util.unflatten_dict(grads), opt_state, params
            )
            losses.append(step(inputs, targets, return_loss=True))
            flat = flax.traverse_util.flatten_dict(params)
            for path, p in paths.items():
                np.testing.assert_allclose(
                    twin.to_flax_layout(path, p, shapes[path]),
                    flat[path],
                    rtol=1e-5,
                    atol=1e-6,
                    err_msg=f"{'/'.join(path)}, fused={fused}",
                )
        assert losses[0] == losses[1]  # learning rate 0 at step 0, as in archlab
        assert losses[3] < losses[1]
