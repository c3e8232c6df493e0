"""Products laid out for XLA on CPU's backward pass (models/products.py) compute what the plain
operations do, values and gradients; a projection that uses them (`transpose_input_for_grad`)
is the same function, and a quantized model keeps qwix's own gradient."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from models import blocks, products
from runtime import assembly
from tests.test_quantization import tiny_config


def random(shape, seed):
    return jax.random.normal(jax.random.key(seed), shape)


def gradients(product, a, b, weights):
    return jax.jit(jax.grad(lambda a, b: jnp.sum(product(a, b) * weights), (0, 1)))(a, b)


@pytest.mark.parametrize(
    "a_shape, b_shape", [((6, 5), (5, 7)), ((2, 3, 6, 5), (2, 3, 5, 7))], ids=["2d", "batched"]
)
def test_matmul_is_the_plain_product_with_its_gradients(a_shape, b_shape):
    a, b = random(a_shape, 0), random(b_shape, 1)
    weights = random(a_shape[:-1] + b_shape[-1:], 2)
    np.testing.assert_array_equal(products.matmul(a, b), jnp.matmul(a, b))
    for ours, plain in zip(
        gradients(products.matmul, a, b, weights),
        gradients(jnp.matmul, a, b, weights),
        strict=True,
    ):
        np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-6)


def test_transposed_swaps_the_last_two_axes_and_passes_gradients_through():
    x = random((2, 3, 4), 0)
    np.testing.assert_array_equal(products.transposed(x), jnp.swapaxes(x, -1, -2))
    weights = random((2, 4, 3), 1)
    grad = jax.grad(lambda x: jnp.sum(products.transposed(x) * weights))(x)
    np.testing.assert_array_equal(grad, jnp.swapaxes(weights, -1, -2))


def dense_gradients(transpose_input_for_grad: bool):
    layer = blocks.dense(
        (2, 3),
        ("embed", "heads", "kv"),
        jnp.float32,
        transpose_input_for_grad=transpose_input_for_grad,
    )
    x = random((4, 5, 6), 0)
    params = layer.init(jax.random.key(1), x)
    weights = random((4, 5, 2, 3), 2)

    def loss(params, x):
        return jnp.sum(layer.apply(params, x) * weights)

    return jax.jit(jax.value_and_grad(loss, (0, 1)))(params, x)


def test_a_projection_transposing_its_input_for_the_gradient_is_the_same_function():
    (value, (grad_params, grad_x)), (plain_value, (plain_params, plain_x)) = (
        dense_gradients(True),
        dense_gradients(False),
    )
    assert value == plain_value
    np.testing.assert_allclose(grad_x, plain_x, rtol=1e-6, atol=1e-6)
    for ours, plain in zip(
        jax.tree.leaves(grad_params), jax.tree.leaves(plain_params), strict=True
    ):
        np.testing.assert_allclose(ours, plain, rtol=1e-6, atol=1e-6)


def qat_gradients(mixer: str):
    config = tiny_config(mixer, "qat_int8")
    model, _ = assembly.model_and_objective(config, assembly.data_shapes(config))
    tokens = jax.random.randint(jax.random.key(1), (2, 16), 0, 64)
    params = jax.jit(lambda: model.init(jax.random.key(0), tokens, train=False))()["params"]

    def loss(params):
        return jnp.sum(model.apply({"params": params}, tokens, train=True) ** 2)

    return jax.jit(jax.grad(loss))(params)


def test_under_qwix_a_projection_keeps_the_quantized_products_gradient(monkeypatch):
    """qwix's quantization-aware product passes gradients straight through its rounding; a
    projection that formed its own weight gradient would lose that, so under qwix none does."""
    ours = qat_gradients("gla")
    monkeypatch.setattr(blocks.Dense, "_transposes_input", lambda self: False)
    plain = qat_gradients("gla")
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain), strict=True):
        np.testing.assert_array_equal(a, b)
