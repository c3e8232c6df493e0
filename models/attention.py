"""Softmax attention: MHA, GQA and MQA (`num_kv_heads`), RoPE, sliding window, QK-norm.

With `model.norm='rms'`, `channel_mixer='swiglu'`, `use_bias=False` and untied embeddings the
sequence model is a Llama-style decoder; with `norm='layer'`, `channel_mixer='gelu_mlp'`,
`use_bias=True`, `positional='learned'` and `tie_embeddings=True`, a GPT-2-style one.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from models import blocks
from models.mixer import SequenceMixer, valid_mask
from models.registry import CONFIG_SECTIONS, MIXERS

DEFAULTS = {
    "num_kv_heads": 0,  # 0: as many as query heads (MHA); 1: MQA; between: GQA
    "window": 0,  # 0: full causal attention; w: each query sees its last w positions
    "qk_norm": False,  # RMSNorm on queries and keys per head (stabilises large learning rates)
    "rope_base": 10_000.0,
    # Biases on the query, key and value projections, and on the output projection, whatever
    # model.use_bias (which puts them on both, and on the channel mixer): Qwen2 has the first only.
    "qkv_bias": False,
    "out_bias": False,
}
CONFIG_SECTIONS.register("attention")(DEFAULTS)


def kv_heads(num_heads: int, options: Any) -> int:
    kv = options["num_kv_heads"] or num_heads
    if num_heads % kv:
        raise ValueError(f"attention.num_kv_heads={kv} must divide num_heads={num_heads}")
    return kv


def biases(use_bias: bool, options: Any) -> tuple[bool, bool]:
    """(query/key/value projections have biases, the output projection has one)."""
    return use_bias or options["qkv_bias"], use_bias or options["out_bias"]


def attend(
    q: jax.Array,
    k: jax.Array,
    v: jax.Array,
    q_positions: jax.Array,
    k_positions: jax.Array,
    window: int,
) -> jax.Array:
    """Grouped causal softmax attention. q [B,Tq,H,D]; k, v [B,Tk,KVH,D] -> [B,Tq,H,D].

    Positions are [Tq] and [Tk], shared by the batch, or [B, Tq] and [B, Tk], per row (a cache
    whose rows are at different lengths). A key is visible when its position is >= 0 and <= the
    query's (and within `window` if set): a negative position marks an empty cache slot.
    Scores and softmax are float32 whatever the compute dtype.

    The softmax is normalised after mixing the values (divide the [Tq, D] output, not the
    [Tq, Tk] probabilities), as flash attention does: on CPU the passes over the score map cost
    as much as the products, and this form makes fewer of them, forward and backward (what it
    saved: experiments/reference_lm.md). The query groups of a key head are stacked along the
    query axis, so GQA shares one product.
    """
    b, t_q, h, d = q.shape
    kv = k.shape[2]
    groups = h // kv
    # [B, KVH, G*Tq, D] queries against [B, KVH, D, Tk] keys: plain batched matrix products.
    q = jnp.transpose(q.reshape(b, t_q, kv, groups, d), (0, 2, 3, 1, 4))
    q = q.reshape(b, kv, groups * t_q, d)
    scores = jnp.matmul(q, jnp.transpose(k, (0, 2, 3, 1)), preferred_element_type=jnp.float32)
    keys, queries = k_positions[..., None, :], q_positions[..., :, None]
    visible = (keys >= 0) & (keys <= queries)
    if window:
        visible &= keys > queries - window
    mask = jnp.where(visible, 0.0, jnp.finfo(jnp.float32).min)  # [Tq, Tk] or [B, Tq, Tk]
    if mask.ndim == 2:
        scores += jnp.tile(mask, (groups, 1))
    else:
        scores += jnp.tile(mask, (1, groups, 1))[:, None]
    # Softmax is shift-invariant, so the row maximum needs no gradient. The 1/sqrt(D) scale goes
    # in the exponent (float32) rather than on q, where bf16 would round the scaled queries.
    # The mask is additive: a query seeing no key at all (never, while each sees its own
    # position) would average every value, as a masked softmax does.
    shifted = scores - jax.lax.stop_gradient(scores.max(axis=-1, keepdims=True))
    unnormalised = jnp.exp(shifted * d**-0.5)
    out = jnp.matmul(
        unnormalised.astype(v.dtype),
        jnp.transpose(v, (0, 2, 1, 3)),
        preferred_element_type=jnp.float32,
    ) / unnormalised.sum(axis=-1, keepdims=True)
    out = jnp.transpose(out.reshape(b, kv, groups, t_q, d), (0, 3, 1, 2, 4))
    return out.reshape(b, t_q, h, d).astype(v.dtype)


@MIXERS.register("attention")
class Attention(SequenceMixer):
    LETTER = "A"
    SECTION = "attention"

    def setup(self) -> None:
        self.head_dim = self.d_model // self.num_heads  # the model factory checks divisibility
        kv = kv_heads(self.num_heads, self.options)
        q_names, kv_names = ("embed", "heads", "kv"), ("embed", "kv_heads", "kv")
        qkv_bias, out_bias = biases(self.use_bias, self.options)
        self.query = blocks.dense(
            (self.num_heads, self.head_dim), q_names, self.dtype, use_bias=qkv_bias
        )
        self.key = blocks.dense((kv, self.head_dim), kv_names, self.dtype, use_bias=qkv_bias)
        self.value = blocks.dense((kv, self.head_dim), kv_names, self.dtype, use_bias=qkv_bias)
        self.out = blocks.dense(
            self.d_model,
            ("heads", "kv", "embed"),
            self.dtype,
            axis=(-2, -1),
            use_bias=out_bias,
        )
        if self.options["qk_norm"]:
            self.q_norm = blocks.rms_norm(self.dtype, axis_name="kv")
            self.k_norm = blocks.rms_norm(self.dtype, axis_name="kv")

    def _project(self, x: jax.Array, positions: jax.Array) -> tuple[jax.Array, ...]:
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.options["qk_norm"]:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope:
            base = self.options["rope_base"]
            q, k = blocks.apply_rope(q, positions, base), blocks.apply_rope(k, positions, base)
        return q, k, v

    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        positions = jnp.arange(x.shape[1])
        q, k, v = self._project(x, positions)
        out = attend(q, k, v, positions, positions, self.options["window"])
        return self.out(out)

    def cache_length(self, max_len: int) -> int:
        """Slots of the KV cache: every position, or with a sliding window a ring of `window`."""
        window = self.options["window"]
        return min(window, max_len) if window else max_len

    def init_state(self, batch_size: int, max_len: int) -> dict[str, jax.Array]:
        """The KV cache: keys and values, and the position each slot holds (-1: empty). Position
        p goes to slot p mod the cache's length, so a sliding window's cache is a ring."""
        shape = (
            batch_size,
            self.cache_length(max_len),
            kv_heads(self.num_heads, self.options),
            self.d_model // self.num_heads,
        )
        return {
            "key": jnp.zeros(shape, self.dtype),
            "value": jnp.zeros(shape, self.dtype),
            "position": jnp.full(shape[:2], -1, jnp.int32),
        }

    def step(self, x: jax.Array, state: dict, positions: jax.Array) -> tuple[jax.Array, dict]:
        y, state = self.prefill(x[:, None], state, positions, jnp.ones_like(positions))
        return y[:, 0], state

    def prefill(
        self, x: jax.Array, state: dict, positions: jax.Array, lengths: jax.Array
    ) -> tuple[jax.Array, dict]:
        """The chunk's queries attend to the cache and to the chunk's own keys; then the chunk's
        real keys are written into the cache."""
        t = x.shape[1]
        chunk_positions = positions[:, None] + jnp.arange(t)[None, :]  # [B, T]
        q, k, v = self._project(x, chunk_positions)
        k, v = k.astype(self.dtype), v.astype(self.dtype)
        real = valid_mask(lengths, t)
        # A slot at or past a row's position holds a token since rolled back: never seen again.
        cached = state["position"]
        cached = jnp.where(cached < positions[:, None], cached, -1)
        out = attend(
            q,
            jnp.concatenate([state["key"], k], axis=1),
            jnp.concatenate([state["value"], v], axis=1),
            chunk_positions,
            jnp.concatenate([cached, jnp.where(real, chunk_positions, -1)], axis=1),
            self.options["window"],
        )
        return self.out(out), self._write(state, k, v, chunk_positions, lengths)

    def _write(
        self, state: dict, k: jax.Array, v: jax.Array, positions: jax.Array, lengths: jax.Array
    ) -> dict:
        """The cache with each row's real keys and values written at their slots. A ring takes
        only a row's last `size` of them: earlier ones would share slots with later ones."""
        size = state["position"].shape[1]
        offsets = jnp.arange(positions.shape[1])[None, :]
        kept = (offsets < lengths[:, None]) & (offsets >= lengths[:, None] - size)
        slots = jnp.where(kept, positions % size, size)  # slot `size` is out of range: dropped
        rows = jnp.arange(positions.shape[0])[:, None]
        return {
            "key": state["key"].at[rows, slots].set(k, mode="drop"),
            "value": state["value"].at[rows, slots].set(v, mode="drop"),
            "position": state["position"].at[rows, slots].set(positions, mode="drop"),
        }

    @classmethod
    def rewinds(cls, options: Any) -> bool:
        """A full cache rewinds: `prefill` never reads a slot at or past a chunk's start, and
        writes each slot before the start passes it. A sliding window's ring does not: a rejected
        token's key overwrites one still in the window."""
        return not options["window"]

    @classmethod
    def state_size(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Keys and values for every cached position: 2 * T * kv_heads * head_dim (= 2·d·T for
        MHA); a sliding window caps T at the window."""
        length = min(seq_len, options["window"]) if options["window"] else seq_len
        return 2 * length * kv_heads(num_heads, options) * (d_model // num_heads)

    @classmethod
    def flops_per_token(cls, d_model: int, num_heads: int, options: Any, seq_len: int) -> int:
        """Projections 2·d·(2·d + 2·kv·hd), plus scores and mixing 2·2·T·d over the causal half
        of the map (T/2 keys on average; the window when one is set)."""
        kv_width = kv_heads(num_heads, options) * (d_model // num_heads)
        projections = 2 * d_model * (2 * d_model + 2 * kv_width)
        keys = min(options["window"], seq_len) if options["window"] else seq_len / 2
        return int(projections + 2 * 2 * keys * d_model)

    @classmethod
    def param_count(
        cls, d_model: int, num_heads: int, options: Any, seq_len: int, use_bias: bool
    ) -> int:
        head_dim = d_model // num_heads
        kv_width = kv_heads(num_heads, options) * head_dim
        count = 2 * d_model * d_model + 2 * d_model * kv_width
        qkv_bias, out_bias = biases(use_bias, options)
        count += (d_model + 2 * kv_width) * qkv_bias + d_model * out_bias
        if options["qk_norm"]:
            count += 2 * head_dim
        return count
