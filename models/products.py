"""Matrix products laid out for XLA on CPU's backward pass.

XLA on CPU runs a product fast when it contracts the left operand's last axis and the right
operand's first or last. Autodiff of `a @ b` gives b's gradient as a^T g, which contracts a's
rows: XLA then either runs a slower general product or transposes `g` inside the fusion that
computes it, element by element. `matmul` gives the same values and gradients, and forms that
one from an explicitly transposed copy of `a`; `transposed` makes such a copy for a forward
product. Where each pays: benchmarks/mqar_step_time.md. Elsewhere than on CPU both are the plain
operations.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def _on_cpu() -> bool:
    return jax.default_backend() == "cpu"


def transposed(x: jax.Array) -> jax.Array:
    """x with its last two axes swapped, as an array of its own on CPU (the barrier keeps XLA
    from folding the transpose into the product that reads it)."""
    x_t = jnp.swapaxes(x, -1, -2)
    return jax.lax.optimization_barrier(x_t) if _on_cpu() else x_t


def _contract_last(a: jax.Array, b: jax.Array, b_axis: int) -> jax.Array:
    """a [..., M, K] with b [..., K, N] (b_axis -2) or b [..., N, K] (b_axis -1) -> [..., M, N]."""
    batch = tuple(range(a.ndim - 2))
    return jax.lax.dot_general(a, b, (((a.ndim - 1,), (b.ndim + b_axis,)), (batch, batch)))


@jax.custom_vjp
def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    return _contract_last(a, b, -2)


def _matmul_fwd(a, b):
    return _matmul(a, b), (a, b)


def _matmul_bwd(residuals, grad):
    a, b = residuals
    return _contract_last(grad, b, -1), _contract_last(transposed(a), grad, -2)


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """a [..., M, K] @ b [..., K, N] (equal batch axes), with b's gradient from a transposed
    copy of `a` on CPU."""
    return _matmul(a, b) if _on_cpu() else jnp.matmul(a, b)
