"""LoRA (Hu et al. 2021): a frozen base weight W plus a trained low-rank update.

A weight W is read as a matrix (I, O): its inputs are its first axis, except for a weight of more
than two axes whose last axis is the model width `embed` (an output projection, attention's out
(heads, kv, embed)), whose inputs are all its axes but the last. Its adapters are A (I, rank),
drawn He-uniform as qwix draws them, and B (rank, O), zeros, so training starts exactly at the
base, and the model computes with

    W' = W + (alpha / rank) * (A @ B).reshape(W.shape)

which in the paper's (out, in) layout is W + (alpha / rank) B A. `merge` is that sum, and it is
both what every training and evaluation step computes with and what `launch.merge` writes.

Why adapters of our own beside the base rather than qwix's LoraProvider: a LoRA run's train
state is then its adapters alone (and their optimizer state), so its checkpoints hold them alone
and it resumes bitwise like any run; the base is not in the optimizer's tree at all, so it cannot
move; and the merged model is the very function the run trained. qwix intercepts the lax ops of
the matched modules at trace time and puts `<weight>_lora_a/_b` into the model's own parameter
tree, shaped after the op each layer happens to use (dot_general flattens, einsum keeps axes):
checkpointing its adapters alone, freezing the rest and merging would each be code of ours
around it. The price: each step materialises W' for every target, and the backward pass a
gradient of W's size for each (the optimizer state and checkpoints stay adapter-sized).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from runtime.errors import UsageError

A, B = "lora_a", "lora_b"
# Weights with this axis hold one matrix per expert; one adapter across experts is not LoRA.
_PER_EXPERT_AXIS = "expert"


@dataclass(frozen=True)
class Target:
    """A weight that gets adapters."""

    path: tuple[str, ...]  # in the parameter tree
    shape: tuple[int, ...]
    names: tuple[str | None, ...]  # its logical axes
    inputs: int  # how many of its leading axes are inputs

    @property
    def in_size(self) -> int:
        return int(np.prod(self.shape[: self.inputs]))

    @property
    def out_size(self) -> int:
        return int(np.prod(self.shape[self.inputs :]))


def enabled(config: ml_collections.ConfigDict) -> bool:
    return config.lora.rank > 0


def update_scale(config: ml_collections.ConfigDict) -> float:
    """alpha / rank: what A B is multiplied by."""
    return config.lora.alpha / config.lora.rank


def check_config(config: ml_collections.ConfigDict) -> None:
    """The LoRA keys' values, needing no model: a rank >= 0, a positive alpha, a pattern that
    compiles, and a run to adapt."""
    c = config.lora
    if c.rank < 0:
        raise UsageError(f"lora.rank must be >= 0 (0: off), got {c.rank}")
    if not enabled(config):
        return
    if not c.alpha > 0:
        raise UsageError(f"lora.alpha must be > 0, got {c.alpha}")
    _pattern(c.targets)
    if not config.finetune.from_run:
        raise UsageError(
            "lora.rank > 0 adapts a trained model: name it with finetune.from_run=<run dir>"
        )


def _pattern(targets: str) -> re.Pattern:
    try:
        return re.compile(targets)
    except re.error as e:
        raise UsageError(f"lora.targets {targets!r} is not a regular expression: {e}") from e


def _inputs(names: tuple[str | None, ...]) -> int:
    if len(names) > 2 and names[-1] == "embed":
        return len(names) - 1
    return 1


def find_targets(targets: str, boxed_params: Any) -> list[Target]:
    """The weight matrices (parameters of two axes or more, biases aside) of every module whose
    path ('block_0/sequence_mixer/query') `targets` matches whole, in the tree's sorted order.
    UsageError when it matches none (naming the modules that have one) or a per-expert weight."""
    pattern = _pattern(targets)
    flat = flax.traverse_util.flatten_dict(
        boxed_params, is_leaf=lambda _, x: isinstance(x, nn.meta.AxisMetadata)
    )
    found, modules = [], []
    for path, leaf in sorted(flat.items()):
        value = leaf.unbox() if isinstance(leaf, nn.meta.AxisMetadata) else leaf
        if len(value.shape) < 2 or path[-1].endswith("bias"):
            continue
        module = "/".join(path[:-1])
        modules.append(module)
        if not pattern.fullmatch(module):
            continue
        names = tuple(getattr(leaf, "names", None) or (None,) * len(value.shape))
        if _PER_EXPERT_AXIS in names:
            raise UsageError(
                f"lora.targets {targets!r} matches {'/'.join(path)}, which holds one matrix per "
                "expert: LoRA of MoE experts is not supported; leave them out of the pattern"
            )
        found.append(Target(path, tuple(value.shape), names, _inputs(names)))
    if not found:
        listed = ", ".join(sorted(set(modules))[:8])
        raise UsageError(
            f"lora.targets {targets!r} matches no module with a weight matrix; modules with "
            f"one: {listed}{' ...' if len(set(modules)) > 8 else ''}"
        )
    return found


def count(targets: list[Target], rank: int) -> int:
    """Trainable parameters: rank * (inputs + outputs) per target."""
    return sum(rank * (t.in_size + t.out_size) for t in targets)


def init_adapters(targets: list[Target], rank: int, rng: jax.Array) -> Any:
    """{target path: {'lora_a': A, 'lora_b': B}}, boxed with logical axes (an input or output
    that is one axis keeps its name, so A and B shard like their weight; the rank is never
    sharded)."""
    tree: dict[tuple[str, ...], Any] = {}
    for target, key in zip(targets, jax.random.split(rng, len(targets)), strict=True):
        a_in = target.names[0] if target.inputs == 1 else None
        b_out = target.names[-1] if len(target.shape) - target.inputs == 1 else None
        a = nn.initializers.he_uniform()(key, (target.in_size, rank), jnp.float32)
        b = jnp.zeros((rank, target.out_size), jnp.float32)
        tree[(*target.path, A)] = nn.Partitioned(a, names=(a_in, None))
        tree[(*target.path, B)] = nn.Partitioned(b, names=(None, b_out))
    return flax.traverse_util.unflatten_dict(tree)


def merge(base: Any, adapters: Any, scale: float) -> Any:
    """The base parameters with every adapted weight W replaced by
    W + scale * (A @ B).reshape(W.shape); the rest are the base's own arrays."""
    flat = flax.traverse_util.flatten_dict(base)
    pairs = flax.traverse_util.flatten_dict(adapters)
    for path in sorted({key[:-1] for key in pairs}):
        w = flat[path]
        delta = scale * (pairs[(*path, A)] @ pairs[(*path, B)])
        flat[path] = w + delta.reshape(w.shape).astype(w.dtype)
    return flax.traverse_util.unflatten_dict(flat)
