"""The objective registry: name -> `(logits, batch, aux, **options) -> (loss, metrics)`.

Options are the objective config's numeric keys (`objectives.build.OPTION_DEFAULTS`: `z_loss`,
`label_smoothing`, `temperature`, `alpha`); `get_objective` binds those an objective declares as
keyword-only parameters, so the loop sees the plain `(logits, batch, aux)` contract.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

from registry import Registry

Metrics = dict[str, jax.Array]
Objective = Callable[[jax.Array, dict[str, jax.Array], dict[str, Any]], tuple[jax.Array, Metrics]]

OBJECTIVES: Registry[Callable[..., tuple[jax.Array, Metrics]]] = Registry("objective")
