"""Decoder-only causal Transformer (Llama-style): pre-norm RMSNorm, RoPE, SwiGLU, no biases."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from models import blocks
from models.registry import MODELS, check_choice, require

POSITIONAL = ("rope", "learned", "none")


class DecoderBlock(nn.Module):
    """One pre-norm residual block: attention then SwiGLU."""

    num_heads: int
    head_dim: int
    d_ff: int
    dropout_rate: float
    use_rope: bool
    dtype: Any

    # `train` is positional because nn.remat can only mark positional arguments static.
    @nn.compact
    def __call__(self, x: jax.Array, train: bool) -> jax.Array:
        drop = nn.Dropout(self.dropout_rate, deterministic=not train or self.dropout_rate == 0)
        h = blocks.rms_norm(self.dtype, name="attn_norm")(x)
        h = blocks.CausalSelfAttention(
            self.num_heads, self.head_dim, self.dtype, self.use_rope, name="attn"
        )(h)
        x = blocks.constrain(x + drop(h))
        h = blocks.rms_norm(self.dtype, name="mlp_norm")(x)
        h = blocks.SwiGLU(self.d_ff, self.dtype, name="mlp")(h)
        return blocks.constrain(x + drop(h))


class Transformer(nn.Module):
    """int32 tokens [B, T] -> float32 next-token logits [B, T, vocab_size]."""

    vocab_size: int
    seq_len: int
    num_layers: int
    d_model: int
    num_heads: int
    d_ff: int
    dropout_rate: float = 0.0
    positional: str = "rope"
    remat: bool = False
    tie_embeddings: bool = False
    dtype: Any = jnp.float32

    def example_inputs(self, batch_size: int) -> jax.Array:
        return jnp.zeros((batch_size, self.seq_len), jnp.int32)

    @nn.compact
    def __call__(self, inputs: jax.Array, *, train: bool) -> jax.Array:
        check_choice("positional", self.positional, POSITIONAL)
        embed = blocks.embedding(self.vocab_size, self.d_model, self.dtype, name="embed")
        x = embed(inputs)
        if self.positional == "learned":
            table = self.param(
                "pos_embedding",
                nn.with_logical_partitioning(
                    nn.initializers.normal(blocks.EMBED_INIT_STDDEV), ("length", "embed")
                ),
                (self.seq_len, self.d_model),
                jnp.float32,
            )
            x = x + table[: inputs.shape[-1]].astype(self.dtype)
        deterministic = not train or self.dropout_rate == 0
        x = nn.Dropout(self.dropout_rate, deterministic=deterministic)(x)
        x = blocks.constrain(x)

        block_cls = nn.remat(DecoderBlock, static_argnums=(2,)) if self.remat else DecoderBlock
        for i in range(self.num_layers):
            x = block_cls(
                num_heads=self.num_heads,
                head_dim=self.d_model // self.num_heads,
                d_ff=self.d_ff,
                dropout_rate=self.dropout_rate,
                use_rope=self.positional == "rope",
                dtype=self.dtype,
                name=f"block_{i}",
            )(x, train)

        x = blocks.rms_norm(self.dtype, name="final_norm")(x)
        if self.tie_embeddings:
            logits = embed.attend(x)
        else:
            unembed = blocks.dense(self.vocab_size, ("embed", "vocab"), self.dtype, name="unembed")
            logits = unembed(x)
        return logits.astype(jnp.float32)


@MODELS.register("transformer")
def build_transformer(config: Any, spec: Any, dtype: Any) -> Transformer:
    positional = check_choice("positional", config.positional, POSITIONAL)
    if config.d_model % config.num_heads:
        raise ValueError(
            f"model.d_model={config.d_model} is not divisible by num_heads={config.num_heads}"
        )
    if positional == "rope" and (config.d_model // config.num_heads) % 2:
        raise ValueError("positional='rope' needs an even head dimension (d_model / num_heads)")
    return Transformer(
        vocab_size=require(spec, "vocab_size", "transformer"),
        seq_len=require(spec, "seq_len", "transformer"),
        num_layers=config.num_layers,
        d_model=config.d_model,
        num_heads=config.num_heads,
        d_ff=config.d_ff,
        dropout_rate=config.dropout_rate,
        positional=positional,
        remat=config.remat,
        tie_embeddings=config.tie_embeddings,
        dtype=dtype,
    )
