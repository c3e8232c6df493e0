"""Gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune") as an optax
transformation, chained after the optimizer's update (runtime/optimizer.py).

Schedule: no pruning before `start_step`; at `start_step + k * every` (k = 0, 1, ...) up to and
including `end_step` the masks are recomputed for the sparsity
    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (n * dt))^3,   s_i = 0, t0 = start_step,
    n * dt = end_step - start_step,
and held after `end_step`. When `every` does not divide `end_step - start_step`, `end_step` is a
mask update too, so the run always reaches s_f. Step t is the loop's: the update that produces
step t prunes with s_t.

Which weights: a mask update prunes, in each unit, the round(s_t * size) weights of smallest
magnitude (after this step's update), ranking the already pruned ones first, so a pruned weight
never comes back and exactly that many are zero. The unit is each targeted array (`per_layer`),
all targeted arrays together (`global`: one threshold), or each group of M consecutive weights
along a kernel's last axis (`N:M`). Ties in magnitude are broken by position: the earlier
element (row-major within an array; arrays in the parameter tree's order for `global`) is pruned
first, so the count is exact even among equal weights.

How: the transformation rewrites the update of a pruned weight w to -w, so that
`optax.apply_updates` leaves it exactly 0 whatever the optimizer (Adam's moments, weight decay)
proposes; kept weights get the optimizer's update unchanged. The masks and a step counter are the
transformation's state, inside the optimizer state: checkpointed with it, so a resumed run keeps
them. Untargeted parameters are outside it entirely (`optax.masked`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from runtime.errors import UsageError

SCOPES = ("per_layer", "global")
UNSTRUCTURED = "unstructured"


# ------------------------------------------------------------------------------------ schedule
@dataclasses.dataclass(frozen=True)
class Schedule:
    """Zhu & Gupta's cubic sparsity schedule from 0 to `sparsity`."""

    sparsity: float
    start_step: int
    end_step: int
    every: int

    def sparsity_at(self, step: int) -> float:
        """s_t: 0 up to start_step, the cubic ramp, then `sparsity` from end_step on."""
        t = min(max(step, self.start_step), self.end_step)
        progress = (t - self.start_step) / (self.end_step - self.start_step)
        return self.sparsity + (0.0 - self.sparsity) * (1.0 - progress) ** 3

    @property
    def update_steps(self) -> tuple[int, ...]:
        """The steps whose update recomputes the masks."""
        return (*range(self.start_step, self.end_step, self.every), self.end_step)

    def pruned_counts(self, size: int) -> np.ndarray:
        """How many of a unit's `size` weights are zero after each mask update: round(s_t * size),
        computed here in float64 so that s_f * size lands on its integer exactly."""
        return np.array(
            [math.floor(self.sparsity_at(t) * size + 0.5) for t in self.update_steps], np.int32
        )


# ------------------------------------------------------------------------------------ mask rule
def keep_largest(magnitudes: jax.Array, pruned: jax.Array) -> jax.Array:
    """magnitudes [units, size] -> bool, False for the `pruned` smallest of each row (ties: the
    lower index first; `pruned` a scalar or one count per row)."""
    ranks = jnp.argsort(jnp.argsort(magnitudes, axis=-1, stable=True), axis=-1, stable=True)
    return ranks >= jnp.reshape(pruned, (-1, 1))


def _new_masks(
    magnitudes: list[jax.Array], schedule: Schedule, unit: str | int, index: jax.Array
) -> list[jax.Array]:
    """Masks for the arrays' `magnitudes` at mask update number `index`: `unit` is 'global',
    'per_layer' or the group size M of an N:M pattern."""

    def count(size: int) -> jax.Array:
        return jnp.asarray(schedule.pruned_counts(size))[index]

    if unit == "global":
        flat = jnp.concatenate([m.ravel() for m in magnitudes])
        keep = keep_largest(flat[None], count(flat.size))[0]
        pieces = jnp.split(keep, np.cumsum([m.size for m in magnitudes])[:-1])
        return [k.reshape(m.shape) for k, m in zip(pieces, magnitudes, strict=True)]
    group = None if unit == "per_layer" else int(unit)
    return [
        keep_largest(m.reshape(-1, group or m.size), count(group or m.size)).reshape(m.shape)
        for m in magnitudes
    ]


# ------------------------------------------------------------------------------- transformation
class MagnitudePruningState(NamedTuple):
    count: jax.Array  # int32: updates done, i.e. the loop's step after the last one
    masks: Any  # bool, shaped like the pruned parameters: True = kept


def magnitude_pruning(schedule: Schedule, unit: str | int) -> optax.GradientTransformation:
    """Prunes every array it is given (wrap it in `optax.masked` to choose them); `unit` as in
    `_new_masks`. Needs `params` in `update`."""
    update_steps = np.asarray(schedule.update_steps, np.int32)

    def init(params: Any) -> MagnitudePruningState:
        masks = jax.tree.map(lambda p: jnp.ones(p.shape, jnp.bool_), params)
        return MagnitudePruningState(count=jnp.zeros([], jnp.int32), masks=masks)

    def update(
        updates: Any, state: MagnitudePruningState, params: Any = None
    ) -> tuple[Any, MagnitudePruningState]:
        if params is None:
            raise ValueError("magnitude_pruning needs the parameters in update()")
        step = state.count + 1
        index = jnp.minimum(jnp.searchsorted(update_steps, step), len(update_steps) - 1)

        def recomputed() -> Any:
            # The weights this update would make; already pruned ones rank below every weight.
            magnitudes = jax.tree.map(
                lambda p, u, m: jnp.where(m, jnp.abs(p + u), -1.0), params, updates, state.masks
            )
            leaves, tree = jax.tree.flatten(magnitudes)
            return jax.tree.unflatten(tree, _new_masks(leaves, schedule, unit, index))

        is_update = jnp.asarray(update_steps)[index] == step
        masks = jax.lax.cond(is_update, recomputed, lambda: state.masks)
        # -w for a pruned weight: apply_updates then computes w + (-w), exactly 0.
        updates = jax.tree.map(lambda u, p, m: jnp.where(m, u, -p), updates, params, masks)
        return updates, MagnitudePruningState(count=step, masks=masks)

    return optax.GradientTransformation(init, update)


# -------------------------------------------------------------------------------------- targets
def param_path(path: Sequence[Any]) -> str:
    """'block_0/channel/up/kernel' from a jax key path."""
    return "/".join(str(getattr(k, "key", getattr(k, "name", k))) for k in path)


def named_leaves(params: Any) -> list[tuple[str, Any]]:
    """[(path, array)] of a parameter tree, in its order."""
    return [(param_path(path), p) for path, p in jax.tree_util.tree_flatten_with_path(params)[0]]


def _globs(spec: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in spec.split(",") if g.strip())


def _n_m(pattern: str) -> tuple[int, int] | None:
    """(N, M) of an 'N:M' pattern, None for unstructured; a UsageError for anything else."""
    if pattern == UNSTRUCTURED:
        return None
    n, sep, m = pattern.partition(":")
    if not (sep and n.isdigit() and m.isdigit() and 0 < int(n) < int(m)):
        raise UsageError(
            f"prune.pattern must be {UNSTRUCTURED!r} or 'N:M' with 0 < N < M (e.g. '2:4'), "
            f"got {pattern!r}"
        )
    return int(n), int(m)


@dataclasses.dataclass(frozen=True)
class Pruning:
    """A run's pruning: which parameters, on what schedule, and what it reports."""

    schedule: Schedule
    scope: str
    pattern: str
    targets: tuple[str, ...]
    exclude: tuple[str, ...]

    def is_target(self, path: str, ndim: int) -> bool:
        return (
            ndim >= 2
            and any(fnmatch.fnmatchcase(path, g) for g in self.targets)
            and not any(fnmatch.fnmatchcase(path, g) for g in self.exclude)
        )

    def target_mask(self, params: Any) -> Any:
        """True for each pruned array of `params` (any tree of arrays or shapes)."""
        return jax.tree_util.tree_map_with_path(
            lambda path, p: self.is_target(param_path(path), len(p.shape)), params
        )

    def targeted(self, params: Any) -> dict[str, Any]:
        """{path: array} of the pruned arrays, in the tree's order."""
        return {path: p for path, p in named_leaves(params) if self.is_target(path, len(p.shape))}

    @property
    def unit(self) -> str | int:
        n_m = _n_m(self.pattern)
        return self.scope if n_m is None else n_m[1]

    def transformation(self) -> optax.GradientTransformation:
        return optax.masked(magnitude_pruning(self.schedule, self.unit), self.target_mask)

    def check_params(self, params: Any) -> None:
        """UsageError when the patterns select nothing of this model, or an N:M group does not
        fit a selected array's last axis. `params`: shapes suffice (eval_shape)."""
        selected = self.targeted(params)
        if not selected:
            names = [path for path, _ in named_leaves(params)]
            raise UsageError(
                f"prune.targets {','.join(self.targets)!r} minus prune.exclude select no "
                f"parameter of this model (its parameters include: {', '.join(names[:8])})"
            )
        if isinstance(self.unit, int):
            for path, p in selected.items():
                if p.shape[-1] % self.unit:
                    raise UsageError(
                        f"prune.pattern {self.pattern!r}: the last axis of {path} {tuple(p.shape)} "
                        f"is not a multiple of {self.unit}; exclude it with prune.exclude"
                    )

    def zero_counts(self, params: Any) -> dict[str, tuple[int, int]]:
        """{path: (size, zeros)} of the targeted arrays (sharded ones too: jitted)."""
        selected = self.targeted(params)
        zeros = jax.device_get(_count_zeros(selected))
        return {path: (int(p.size), int(zeros[path])) for path, p in selected.items()}

    def metrics(self, params: Any) -> dict[str, float]:
        """What the loop logs: the fraction of all targeted weights that are zero."""
        counts = self.zero_counts(params).values()
        return {"prune/sparsity": sum(z for _, z in counts) / sum(n for n, _ in counts)}

    def report(self, params: Any, step: int) -> dict[str, Any]:
        """The manifest's `pruning` entry: settings, and the sparsity reached in each array."""
        counts = self.zero_counts(params)
        size, zeros = sum(n for n, _ in counts.values()), sum(z for _, z in counts.values())
        return {
            "method": "gradual magnitude pruning (Zhu & Gupta 2017), cubic schedule",
            "target_sparsity": self.schedule.sparsity,
            "scope": self.scope if self.pattern == UNSTRUCTURED else None,
            "pattern": self.pattern,
            "start_step": self.schedule.start_step,
            "end_step": self.schedule.end_step,
            "every": self.schedule.every,
            "step": step,
            "targeted_weights": size,
            "sparsity": zeros / size,
            "layers": [
                {"param": path, "size": n, "zeros": z, "fraction_zero": z / n}
                for path, (n, z) in counts.items()
            ],
        }


@jax.jit
def _count_zeros(arrays: dict[str, jax.Array]) -> dict[str, jax.Array]:
    return {path: jnp.sum(a == 0, dtype=jnp.int32) for path, a in arrays.items()}


# ---------------------------------------------------------------------------------------- config
def check_config(config: ml_collections.ConfigDict) -> None:
    """UsageError for prune.* values no run can use; the settings of pruning that is off are
    checked only for a sparsity outside [0, 1)."""
    p = config.prune
    if not 0 <= p.sparsity < 1:
        raise UsageError(f"prune.sparsity must be in [0, 1), got {p.sparsity}")
    if p.sparsity == 0:
        return
    if p.start_step < 0:
        raise UsageError(f"prune.start_step must be >= 0, got {p.start_step}")
    if p.end_step <= p.start_step:
        raise UsageError(
            f"prune.end_step must be > prune.start_step ({p.start_step}), got {p.end_step}"
        )
    if p.end_step > config.train.steps:
        raise UsageError(
            f"prune.end_step ({p.end_step}) is past train.steps ({config.train.steps}): the run "
            "would never reach prune.sparsity"
        )
    if p.every < 1:
        raise UsageError(f"prune.every must be >= 1, got {p.every}")
    if p.scope not in SCOPES:
        raise UsageError(f"unknown prune.scope {p.scope!r}; valid: {', '.join(SCOPES)}")
    n_m = _n_m(p.pattern)
    if n_m is not None and not math.isclose(p.sparsity, 1 - n_m[0] / n_m[1], abs_tol=1e-9):
        raise UsageError(
            f"prune.pattern {p.pattern!r} prunes {n_m[1] - n_m[0]} of every {n_m[1]} weights: "
            f"set prune.sparsity={1 - n_m[0] / n_m[1]:g}, got {p.sparsity}"
        )
    if not _globs(p.targets):
        raise UsageError("prune.targets is empty: name the parameters to prune")


def from_config(config: ml_collections.ConfigDict) -> Pruning | None:
    """The run's pruning, or None when prune.sparsity is 0 (check_config first)."""
    p = config.prune
    if p.sparsity == 0:
        return None
    return Pruning(
        schedule=Schedule(float(p.sparsity), p.start_step, p.end_step, p.every),
        scope=p.scope,
        pattern=p.pattern,
        targets=_globs(p.targets),
        exclude=_globs(p.exclude),
    )
