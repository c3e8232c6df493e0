"""The sequence-mixer interface every architecture family implements, and the short convolution
that can sit in front of any mixer.

A mixer maps [B, T, D] -> [B, T, D] causally, in forms that must agree:
- `__call__(x, *, train)`: the parallel (or chunked) form used for training;
- `step(x_t, state, positions)`: the recurrent form, one token [B, D] at a time over a state
  (a KV cache for attention, a fixed-size matrix for SSMs and linear attention), starting from
  `init_state(batch_size, max_len)`; row b's token sits at `positions[b]` (int32 [B]).
- `prefill(x, state, positions, lengths)`: the parallel form continued from a state. Row b's
  tokens sit at positions[b] + 0..T-1 and only its first `lengths[b]` enter the state: the rest
  are padding, their outputs unspecified. From an empty state it is a prompt's prefill (prompts
  of different lengths right-padded into one batch); from a decoding state it scores several
  tokens in one pass (a speculative decoder's verification); and re-advancing a state kept
  aside by only the accepted tokens is the rollback, which a state that `rewinds` (full
  attention's KV cache) does not need. The default steps through x (a scan of
  `step`, the state held at padding positions); families override it with their parallel form.

Every leaf of a state has the batch as its leading axis, and positions must stay below the
`max_len` the state was made for.

Mixers are set up with `setup()` (not `@nn.compact`) so that every method sees the same
parameters. Class methods give the analytic cost: `state_size` (numbers carried per sequence
while decoding), `flops_per_token` (multiply-adds x 2 of one forward pass, per token) and
`param_count`; tests hold them to the real module.

The class attributes the sequence model reads (`ClassVar`s below) and the methods without a
default are the contract: `MIXERS.register` refuses a class that breaks it (`check_contract`).
"""

from __future__ import annotations

import typing
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp

State = Any


def hold_padding(valid: jax.Array, new: State, old: State) -> State:
    """`new` in the rows where `valid` [B] is true, `old` in the others, leaf by leaf."""

    def pick(n: jax.Array, o: jax.Array) -> jax.Array:
        return jnp.where(valid.reshape((-1,) + (1,) * (n.ndim - 1)), n, o)

    return jax.tree.map(pick, new, old)


def valid_mask(lengths: jax.Array, length: int) -> jax.Array:
    """[B, length] bool: which positions of a right-padded chunk are real tokens."""
    return jnp.arange(length)[None, :] < lengths[:, None]


class SequenceMixer(nn.Module):
    d_model: int
    num_heads: int
    options: Any  # its `model.<SECTION>` config section, as a FrozenDict
    seq_len: int  # the training length: caps caches and sizes filters
    rope: bool = False
    use_bias: bool = False
    dtype: Any = jnp.float32

    # Its code in a hybrid's `model.layer_pattern` ("AMAM"): one capital letter, unique.
    LETTER: ClassVar[str]
    # The config section `model.<SECTION>` its `options` come from (a CONFIG_SECTIONS name).
    SECTION: ClassVar[str]
    # True when the trained function is defined only up to `seq_len` (e.g. filters laid out over
    # the training length): evaluation at longer lengths is then not applicable.
    FIXED_LENGTH: ClassVar[bool] = False

    def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
        raise NotImplementedError

    def init_state(self, batch_size: int, max_len: int) -> State:
        raise NotImplementedError

    def step(self, x: jax.Array, state: State, positions: jax.Array) -> tuple[jax.Array, State]:
        raise NotImplementedError

    def prefill(
        self, x: jax.Array, state: State, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, State]:
        """The default: a scan of `step` through the chunk, the state held at padding."""

        def advance(state: State, inputs: tuple[jax.Array, jax.Array]) -> tuple[State, jax.Array]:
            x_t, offset = inputs
            y, stepped = self.step(x_t, state, positions + offset)
            return hold_padding(offset < lengths, stepped, state), y

        offsets = jnp.arange(x.shape[1], dtype=jnp.int32)
        state, ys = jax.lax.scan(advance, state, (jnp.moveaxis(x, 1, 0), offsets))
        return jnp.moveaxis(ys, 0, 1), state

    @classmethod
    def rewinds(cls, options: Any) -> bool:
        """Whether a state advanced past a position, then continued by a chunk starting at that
        position, computes as if the later tokens had never entered it: a speculative decoder's
        rejected tokens then need no undoing. A recurrent state folds every token in: False."""
        return False

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        raise NotImplementedError

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        raise NotImplementedError

    @classmethod
    def param_count(
        cls, d_model: int, num_heads: int, options: Any, seq_len: int, use_bias: bool
    ) -> int:
        raise NotImplementedError


# The methods a mixer must implement: SequenceMixer's raise NotImplementedError.
ABSTRACT_METHODS = (
    "__call__",
    "init_state",
    "step",
    "state_size",
    "flops_per_token",
    "param_count",
)


def class_attributes() -> dict[str, type]:
    """SequenceMixer's declared class attributes (its ClassVars) -> their types."""
    hints = typing.get_type_hints(SequenceMixer)
    return {
        name: typing.get_args(hint)[0]
        for name, hint in hints.items()
        if typing.get_origin(hint) is ClassVar
    }


def check_contract(name: str, cls: type) -> None:
    """Raise TypeError unless `cls`, to be registered as mixer `name`, is a SequenceMixer that sets
    every declared class attribute without a default (with its type) and implements every
    abstract method."""
    where = f"sequence mixer {name!r} ({cls.__name__})"
    if not (isinstance(cls, type) and issubclass(cls, SequenceMixer)):
        raise TypeError(f"{where} must subclass models.mixer.SequenceMixer")
    for attribute, kind in class_attributes().items():
        if not hasattr(cls, attribute):
            raise TypeError(
                f"{where} does not set {attribute}; every mixer declares it "
                f"(see SequenceMixer in models/mixer.py)"
            )
        value = getattr(cls, attribute)
        if not isinstance(value, kind):
            raise TypeError(f"{where}: {attribute} must be a {kind.__name__}, got {value!r}")
    if not (len(cls.LETTER) == 1 and "A" <= cls.LETTER <= "Z"):
        raise TypeError(f"{where}: LETTER must be one capital letter, got {cls.LETTER!r}")
    for method in ABSTRACT_METHODS:
        owner = next(k for k in cls.__mro__ if method in vars(k))
        if owner is SequenceMixer:
            raise TypeError(f"{where} does not implement {method}")


class CausalConv1D(nn.Module):
    """Depthwise causal convolution over time, per channel with a bias:
    y_t = sum_i w_i * x_{t-K+1+i} + b. Its decoding state is the last K-1 inputs.

    With a short kernel (3-4) in front of a mixer (`model.short_conv`) it hands each position its
    few predecessors, which recall mixers otherwise have to learn (H3, Based, Mamba)."""

    features: int
    kernel_size: int
    dtype: Any = jnp.float32
    names: tuple[str, str] = ("conv", "embed")

    def setup(self) -> None:
        self.kernel = self.param(
            "kernel",
            nn.with_logical_partitioning(nn.initializers.lecun_normal(), self.names),
            (self.kernel_size, self.features),
            jnp.float32,
        )
        self.bias = self.param(
            "bias",
            nn.with_logical_partitioning(nn.initializers.zeros_init(), self.names[1:]),
            (self.features,),
            jnp.float32,
        )

    def _convolve(self, padded: jax.Array, length: int) -> jax.Array:
        """The outputs of the last `length` positions of `padded` [B, K-1+length, F]."""
        k = self.kernel_size
        y = sum(padded[:, i : i + length] * self.kernel[i].astype(self.dtype) for i in range(k))
        return y + self.bias.astype(self.dtype)

    def __call__(self, x: jax.Array) -> jax.Array:
        padded = jnp.pad(x.astype(self.dtype), ((0, 0), (self.kernel_size - 1, 0), (0, 0)))
        return self._convolve(padded, x.shape[1])

    def init_state(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.kernel_size - 1, self.features), self.dtype)

    def step(self, x: jax.Array, state: jax.Array) -> tuple[jax.Array, jax.Array]:
        window = jnp.concatenate([state, x[:, None].astype(self.dtype)], axis=1)  # [B, K, F]
        y = jnp.einsum("bkf,kf->bf", window, self.kernel.astype(self.dtype))
        return y + self.bias.astype(self.dtype), window[:, 1:]

    def prefill(
        self, x: jax.Array, state: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, jax.Array]:
        """Outputs over x [B, T, F] continued from `state`, and the state after each row's first
        `lengths[b]` inputs (the K-1 inputs ending there)."""
        padded = jnp.concatenate([state, x.astype(self.dtype)], axis=1)
        window = lengths[:, None] + jnp.arange(self.kernel_size - 1)[None, :]
        return self._convolve(padded, x.shape[1]), jnp.take_along_axis(
            padded, window[..., None], axis=1
        )
