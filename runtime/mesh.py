"""The device mesh and the shardings of parameters, optimizer state and batches.

Parallelism is declared, not coded: parameters name logical axes, `config.sharding.rules` maps
them to the mesh axes ('data', 'fsdp', 'tensor', 'expert'), and this module turns that into
shardings.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import ml_collections
import numpy as np
import optax
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from runtime.errors import UsageError

MESH_AXES = ("data", "fsdp", "tensor", "expert")
# The batch is split over every axis but 'tensor': experts are spread over the 'expert' axis and
# tokens travel to them (all-to-all), so outside the MoE layers that axis is data parallelism.
BATCH_AXES = ("data", "fsdp", "expert")


def mesh_shape(config: ml_collections.ConfigDict, num_devices: int) -> tuple[int, ...]:
    """Resolves the one -1 entry (if any) and checks the product against the device count."""
    sizes = [int(config.mesh[axis]) for axis in MESH_AXES]
    spec = ",".join(f"{a}={s}" for a, s in zip(MESH_AXES, sizes, strict=True))
    if any(s == 0 or s < -1 for s in sizes) or sizes.count(-1) > 1:
        raise UsageError(f"mesh {spec}: sizes must be positive, with at most one -1")
    fixed = int(np.prod([s for s in sizes if s != -1]))
    if -1 in sizes:
        if num_devices % fixed:
            raise UsageError(f"mesh {spec} does not divide the {num_devices} available devices")
        sizes[sizes.index(-1)] = num_devices // fixed
    if int(np.prod(sizes)) != num_devices:
        raise UsageError(
            f"mesh {spec} needs {int(np.prod(sizes))} devices but {num_devices} are available"
        )
    return tuple(sizes)


def make_mesh(config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """The config's mesh over `devices` (default: every device of every process)."""
    devices = jax.devices() if devices is None else devices
    shape = mesh_shape(config, len(devices))
    # Auto axes: explicit sharding types would turn ordinary gathers into ShardingTypeErrors.
    return Mesh(mesh_utils.create_device_mesh(shape, devices), MESH_AXES)


def data_parallel_size(mesh: Mesh) -> int:
    return int(np.prod([mesh.shape[a] for a in BATCH_AXES]))


def check_batch_size(name: str, batch_size: int, mesh: Mesh, microbatches: int = 1) -> None:
    dp = data_parallel_size(mesh)
    if batch_size % (dp * microbatches):
        micro = f" x {microbatches} gradient-accumulation steps" if microbatches > 1 else ""
        raise UsageError(
            f"{name}={batch_size} is not divisible by the data-parallel size "
            f"{dp} (mesh data x fsdp x expert){micro}"
        )
    if batch_size % jax.process_count():
        raise UsageError(f"{name}={batch_size} is not divisible by {jax.process_count()} processes")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(BATCH_AXES))


def logical_rules(config: ml_collections.ConfigDict) -> tuple[tuple[str, Any], ...]:
    # A config read back from JSON holds lists where the file had tuples; rules must be hashable.
    rules = tuple(
        (name, tuple(axes) if isinstance(axes, list) else axes)
        for name, axes in config.sharding.rules
    )
    for name, axes in rules:
        for axis in (axes,) if isinstance(axes, str) else axes or ():
            if axis not in MESH_AXES:
                raise UsageError(
                    f"sharding.rules maps {name!r} to unknown mesh axis {axis!r}; "
                    f"valid: {', '.join(MESH_AXES)}"
                )
    return rules


def unbox(tree: Any) -> Any:
    """Plain arrays from `with_logical_partitioning` boxes (the shardings are applied by jit)."""
    return jax.tree.map(
        lambda x: x.unbox(apply_constraint=False) if isinstance(x, nn.meta.AxisMetadata) else x,
        tree,
        is_leaf=lambda x: isinstance(x, nn.meta.AxisMetadata),
    )


def param_specs(boxed_abstract_params: Any) -> Any:
    """Logical PartitionSpecs of every parameter, read from its `with_logical_partitioning` box."""
    return nn.get_partition_spec(boxed_abstract_params)


def optimizer_state_specs(
    tx: optax.GradientTransformation, abstract_opt_state: Any, specs: Any, abstract_params: Any
) -> Any:
    """Optimizer-state leaves shaped like their parameter get its spec; the rest are replicated
    (Adafactor's factored moments are per-parameter leaves of another shape: a row, a column,
    or a (1,) placeholder). A transformation under `optax.masked` (pruning's masks) keeps
    state for some parameters only: the others are MaskedNodes, left as they are."""

    def spec_of(leaf: Any, spec: P, param: Any) -> Any:
        if isinstance(leaf, optax.MaskedNode):
            return leaf
        return spec if leaf.shape == param.shape else P()

    return optax.tree_map_params(
        tx,
        spec_of,
        abstract_opt_state,
        specs,
        abstract_params,
        transform_non_params=lambda _: P(),
        is_leaf=lambda x: isinstance(x, (P, optax.MaskedNode)),
    )


# The config key that usually sets a logical axis's size, for the hint in the error below ('mlp'
# is d_ff in the channel mixers but the inner width in Mamba and Hyena, hence "usually").
AXIS_SIZE_KEYS = {
    "heads": "model.num_heads",
    "kv_heads": "model.attention.num_kv_heads",
    "mlp": "model.d_ff",
    "embed": "model.d_model",
    "vocab": "the data's vocab_size or num_classes",
    "expert": "model.moe.num_experts",
}


def check_divisible(
    logical_specs: Any, abstract_tree: Any, mesh_sizes: Mapping[str, int], rules: tuple
) -> None:
    """Every sharded dimension of every array in `abstract_tree` (shapes only: `eval_shape`'s
    output), with its logical spec in `logical_specs`, divides evenly over its mesh axes; else
    one UsageError naming the first that does not.

    An error rather than replicating that dimension with a warning: the user asked for the mesh
    axis, and a silently replicated weight (with its gradients and optimizer state) costs every
    device the memory and compute the mesh was chosen to split. Replicating is one explicit rule
    away (`(axis, None)` in sharding.rules), and the message says so.
    """

    def check(path: jax.tree_util.KeyPath, logical: P, array: jax.ShapeDtypeStruct) -> None:
        mesh_axes = nn.logical_to_mesh_axes(logical, rules)
        # A spec shorter than the array (P() on the rng key) leaves the rest replicated.
        dims = zip(array.shape, logical, mesh_axes, strict=False)
        for dim, (size, name, axes) in enumerate(dims):
            axes = (axes,) if isinstance(axes, str) else tuple(axes or ())
            ways = int(np.prod([mesh_sizes[a] for a in axes]))
            if size % ways == 0:
                continue
            over = (
                f"mesh axis {axes[0]!r} of size {ways}"
                if len(axes) == 1
                else f"mesh axes {axes} of total size {ways}"
            )
            size_key = AXIS_SIZE_KEYS.get(name, f"the size of {name!r}")
            mesh_keys = " or ".join(f"mesh.{a}" for a in axes)
            raise UsageError(
                f"{jax.tree_util.keystr(path, simple=True, separator='/')} of shape "
                f"{tuple(array.shape)} cannot be sharded: its dimension {dim} (logical axis "
                f"{name!r}, size {size}) does not divide over {over}; change {size_key} or "
                f"{mesh_keys}, or map {name!r} to None in sharding.rules to replicate it"
            )

    jax.tree.map_with_path(check, logical_specs, abstract_tree, is_leaf=lambda x: isinstance(x, P))


def to_shardings(logical_specs: Any, mesh: Mesh, rules: tuple) -> Any:
    return nn.logical_to_mesh_sharding(logical_specs, mesh, rules)


def put_batch(batch: dict[str, np.ndarray], sharding: NamedSharding) -> dict[str, jax.Array]:
    """Assembles each process's slice of the global batch into one sharded global array."""
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
    }
