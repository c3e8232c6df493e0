"""Which Hugging Face tensor is which archlab parameter, and how its layout differs: one table per
model, read in both directions, so that import and export cannot disagree.

archlab's parameters are a flat {"block_0/sequence_mixer/query/kernel": array} here (paths as
`flax.traverse_util.flatten_dict(..., sep="/")` writes them); Hugging Face's are
{"model.layers.0.self_attn.q_proj.weight": array}. PyTorch's Linear stores [out, in]; archlab's
kernels are [in..., out...] with heads split out, so a Linear is transposed and reshaped.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from runtime.errors import UsageError


class Layout:
    """How one archlab parameter is stored on the Hugging Face side."""

    def to_archlab(self, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        raise NotImplementedError

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def hf_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The Hugging Face shape of an archlab parameter of `shape`."""
        return self.to_hf(np.zeros(shape, np.float32)).shape


@dataclasses.dataclass(frozen=True)
class Same(Layout):
    """The same array, up to a reshape (a [heads, head_dim] bias is one flat vector there)."""

    flat: bool = False

    def to_archlab(self, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return hf.reshape(shape)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        return value.reshape(-1) if self.flat else value


@dataclasses.dataclass(frozen=True)
class Linear(Layout):
    """A torch Linear weight [out, in] for an archlab kernel whose first `in_axes` axes are the
    input (the attention output's kernel [heads, head_dim, d_model] has two)."""

    in_axes: int = 1

    def to_archlab(self, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return hf.T.reshape(shape)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        return value.reshape(math.prod(value.shape[: self.in_axes]), -1).T


@dataclasses.dataclass(frozen=True)
class DepthwiseConv(Layout):
    """A torch depthwise Conv1d weight [channels, 1, kernel] for archlab's [kernel, channels]:
    both apply tap i to the input i - (kernel - 1) steps back (torch convolves by
    cross-correlation, over a sequence left-padded by kernel - 1)."""

    def to_archlab(self, hf: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
        return hf[:, 0, :].T.reshape(shape)

    def to_hf(self, value: np.ndarray) -> np.ndarray:
        return value.T[:, None, :]


@dataclasses.dataclass(frozen=True)
class Entry:
    archlab: str  # "block_0/sequence_mixer/query/kernel"
    hf: str  # "model.layers.0.self_attn.q_proj.weight"
    layout: Layout


def to_archlab(
    table: list[Entry], tensors: Mapping[str, np.ndarray], shapes: Mapping[str, tuple[int, ...]]
) -> dict[str, np.ndarray]:
    """archlab's flat parameters from Hugging Face's tensors. Every parameter of `shapes` (the
    model's, from its config) must be in the table, and every tensor must be used: a tensor
    missing, left over or of another shape is a UsageError naming it."""
    unmapped = sorted(set(shapes) - {e.archlab for e in table})
    if unmapped:  # the table does not describe this model: archlab's bug, not the user's
        raise AssertionError(f"no Hugging Face tensor for archlab parameters {unmapped}")
    missing = [e.hf for e in table if e.hf not in tensors]
    if missing:
        raise UsageError(
            f"the checkpoint has no tensor {missing[0]!r}"
            + (f" (nor {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    unused = sorted(set(tensors) - {e.hf for e in table})
    if unused:
        raise UsageError(
            f"the checkpoint has tensors this conversion does not know, first {unused[0]!r} "
            f"({len(unused)} in all): it is not the architecture its config.json names"
        )
    params = {}
    for entry in table:
        shape = tuple(shapes[entry.archlab])
        expected = entry.layout.hf_shape(shape)
        found = tuple(tensors[entry.hf].shape)
        if found != expected:
            raise UsageError(
                f"tensor {entry.hf!r} has shape {list(found)}, its config.json implies "
                f"{list(expected)}"
            )
        params[entry.archlab] = entry.layout.to_archlab(
            np.asarray(tensors[entry.hf], np.float32), shape
        )
    return params


def to_hf(table: list[Entry], params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Hugging Face's tensors from archlab's flat parameters; every parameter must be in the
    table (a parameter this export would drop is an error, never a silent loss)."""
    left = sorted(set(params) - {e.archlab for e in table})
    if left:
        raise AssertionError(f"archlab parameters with no Hugging Face tensor: {left}")
    return {
        e.hf: np.ascontiguousarray(e.layout.to_hf(np.asarray(params[e.archlab], np.float32)))
        for e in table
    }
