"""Llama, Mistral and Qwen2 (`LlamaForCausalLM`, `MistralForCausalLM`, `Qwen2ForCausalLM`) as
archlab's sequence model with attention in every layer (`model.name=lm`, `mixer=attention`).

The three share one computation, which archlab's defaults already are: pre-RMSNorm blocks of
grouped-query attention with rotate-half RoPE (Hugging Face's `rotate_half` is archlab's, so q
and k need no permutation) and a SwiGLU MLP, a final RMSNorm, an optionally tied unembedding.
Where they differ, each difference is a config key:

| Hugging Face                         | archlab                                                  |
| ------------------------------------ | -------------------------------------------------------- |
| num_key_value_heads                  | model.attention.num_kv_heads                             |
| rope_theta                           | model.attention.rope_base                                |
| rms_norm_eps                         | model.norm_eps                                           |
| tie_word_embeddings                  | model.tie_embeddings                                     |
| attention_bias (Llama: q, k, v, o)   | model.attention.qkv_bias and model.attention.out_bias    |
| attention_bias and mlp_bias (Llama)  | model.use_bias (every projection)                        |
| q, k, v biases (Qwen2, always)       | model.attention.qkv_bias                                 |
| sliding_window (Mistral)             | model.attention.window (a query sees its last w keys)    |

Anything else (a RoPE scaling type, a head_dim other than hidden_size / num_attention_heads,
per-layer sliding windows, another activation) has no exact counterpart and is refused.
"""

from __future__ import annotations

from typing import Any

import ml_collections
import numpy as np

from convert.hf_config import Refusal, required, rope_theta
from convert.tensor_map import Entry, Linear, Same
from models.attention import biases

ARCHITECTURES = {
    "llama": "LlamaForCausalLM",
    "mistral": "MistralForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
}
DEFAULT_RMS_EPS = 1e-6  # archlab's RMSNorm at model.norm_eps=0; also Hugging Face's default
# What transformers' config classes assume for a key config.json leaves out, where it is not the
# same for all three.
CLASS_DEFAULTS = {
    "llama": {"num_key_value_heads": None, "sliding_window": None},
    "mistral": {"num_key_value_heads": 8, "sliding_window": 4096},
    "qwen2": {"num_key_value_heads": 32, "sliding_window": None},
}


def archlab_model(hf: dict[str, Any]) -> dict[str, Any]:
    """{'model.d_model': ..., ...}: the archlab model keys that compute what `hf` (a
    config.json) computes; a setting without an exact counterpart raises UsageError."""
    refuse = Refusal(hf["model_type"])
    hf = {**CLASS_DEFAULTS[hf["model_type"]], **hf}
    hidden, heads = required(hf, "hidden_size"), required(hf, "num_attention_heads")
    if hf.get("hidden_act", "silu") != "silu":
        refuse(f"hidden_act={hf['hidden_act']!r} (archlab's SwiGLU uses silu)")
    if hidden % heads:
        refuse(f"hidden_size={hidden} is not a multiple of num_attention_heads={heads}")
    head_dim = hf.get("head_dim") or hidden // heads
    if head_dim != hidden // heads:
        refuse(
            f"head_dim={head_dim} differs from hidden_size / num_attention_heads = "
            f"{hidden // heads} (archlab's heads split d_model)"
        )
    qkv_bias, out_bias, mlp_bias = _biases(hf, refuse)
    return {
        "model.name": "lm",
        "model.mixer": "attention",
        "model.layer_pattern": "",
        "model.channel_mixer": "swiglu",
        "model.norm": "rms",
        "model.positional": "rope",
        "model.short_conv": 0,
        "model.num_layers": required(hf, "num_hidden_layers"),
        "model.d_model": hidden,
        "model.num_heads": heads,
        "model.d_ff": required(hf, "intermediate_size"),
        "model.norm_eps": float(hf.get("rms_norm_eps", DEFAULT_RMS_EPS)),
        "model.tie_embeddings": bool(hf.get("tie_word_embeddings", False)),
        # Every projection biased is archlab's use_bias; attention's alone, its own keys.
        "model.use_bias": mlp_bias,
        "model.attention.qkv_bias": qkv_bias and not mlp_bias,
        "model.attention.out_bias": out_bias and not mlp_bias,
        "model.attention.num_kv_heads": hf.get("num_key_value_heads") or heads,
        "model.attention.rope_base": rope_theta(hf, refuse),
        "model.attention.window": _window(hf, refuse),
        "model.attention.qk_norm": False,
    }


def _biases(hf: dict[str, Any], refuse: Refusal) -> tuple[bool, bool, bool]:
    """(q/k/v biases, o bias, MLP biases) of the checkpoint."""
    if hf["model_type"] == "qwen2":
        return True, False, False
    attention, mlp = bool(hf.get("attention_bias", False)), bool(hf.get("mlp_bias", False))
    if mlp and not attention:
        refuse("mlp_bias without attention_bias (archlab's use_bias biases attention too)")
    return attention, attention, mlp


def _window(hf: dict[str, Any], refuse: Refusal) -> int:
    if hf["model_type"] == "mistral":
        return hf["sliding_window"] or 0
    if hf.get("use_sliding_window"):
        refuse("use_sliding_window=true (per-layer windows; archlab has one window for all)")
    return 0


def hf_config(model: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """The config.json of the Hugging Face model that computes what archlab's `model` (its config
    section, an all-attention stack) computes. Qwen2 where only q, k, v have biases, Mistral where
    attention has a window, Llama otherwise; a setting none of them has raises UsageError."""
    refuse = Refusal("archlab model", exporting=True)
    for key, needed in (("channel_mixer", "swiglu"), ("norm", "rms"), ("positional", "rope")):
        if model[key] != needed:
            refuse(f"model.{key}={model[key]!r} (Llama, Mistral and Qwen2 have {needed})")
    if model.short_conv:
        refuse(f"model.short_conv={model.short_conv} (none of them has a short convolution)")
    attention = model.attention
    if attention.qk_norm:
        refuse("model.attention.qk_norm=True (Llama, Mistral and Qwen2 do not norm q and k)")
    qkv_bias, out_bias = biases(model.use_bias, attention)
    mlp_bias = model.use_bias
    if out_bias and not qkv_bias:
        refuse("model.attention.out_bias without biases on q, k and v")
    model_type = "qwen2" if qkv_bias and not out_bias else "llama"
    if attention.window:
        if qkv_bias or out_bias:
            refuse("a window with biases (Mistral has a window, but no biases)")
        model_type = "mistral"
    theta = float(attention.rope_base)
    config = {
        "architectures": [ARCHITECTURES[model_type]],
        "model_type": model_type,
        "vocab_size": vocab_size,
        "hidden_size": model.d_model,
        "intermediate_size": model.d_ff,
        "num_hidden_layers": model.num_layers,
        "num_attention_heads": model.num_heads,
        "num_key_value_heads": attention.num_kv_heads or model.num_heads,
        "head_dim": model.d_model // model.num_heads,
        "hidden_act": "silu",
        "max_position_embeddings": seq_len,
        "rms_norm_eps": float(model.norm_eps or DEFAULT_RMS_EPS),
        "tie_word_embeddings": bool(model.tie_embeddings),
        # transformers 5 reads rope_parameters, 4 reads rope_theta: both, the same.
        "rope_parameters": {"rope_type": "default", "rope_theta": theta},
        "rope_theta": theta,
    }
    if model_type == "llama":
        config.update(attention_bias=qkv_bias, mlp_bias=mlp_bias)
    if model_type == "mistral":
        config.update(sliding_window=attention.window)
    if model_type == "qwen2":
        config.update(use_sliding_window=False)
    return config


def tensor_table(model: ml_collections.ConfigDict) -> list[Entry]:
    """The tensors of `model` (an all-attention archlab model config section), both names."""
    qkv_bias, out_bias = biases(model.use_bias, model.attention)
    table = [Entry("embed/embedding", "model.embed_tokens.weight", Same())]
    for i in range(model.num_layers):
        ours, theirs = f"block_{i}", f"model.layers.{i}"
        table += [
            Entry(f"{ours}/mixer_norm/scale", f"{theirs}.input_layernorm.weight", Same()),
            Entry(
                f"{ours}/channel_norm/scale", f"{theirs}.post_attention_layernorm.weight", Same()
            ),
        ]
        for name, hf_name in (("query", "q_proj"), ("key", "k_proj"), ("value", "v_proj")):
            where, hf_where = f"{ours}/sequence_mixer/{name}", f"{theirs}.self_attn.{hf_name}"
            table.append(Entry(f"{where}/kernel", f"{hf_where}.weight", Linear()))
            if qkv_bias:
                table.append(Entry(f"{where}/bias", f"{hf_where}.bias", Same(flat=True)))
        where, hf_where = f"{ours}/sequence_mixer/out", f"{theirs}.self_attn.o_proj"
        table.append(Entry(f"{where}/kernel", f"{hf_where}.weight", Linear(in_axes=2)))
        if out_bias:
            table.append(Entry(f"{where}/bias", f"{hf_where}.bias", Same()))
        for name in ("gate", "up", "down"):
            where, hf_where = f"{ours}/channel/{name}", f"{theirs}.mlp.{name}_proj"
            table.append(Entry(f"{where}/kernel", f"{hf_where}.weight", Linear()))
            if model.use_bias:
                table.append(Entry(f"{where}/bias", f"{hf_where}.bias", Same()))
    table.append(Entry("final_norm/scale", "model.norm.weight", Same()))
    if not model.tie_embeddings:
        table.append(Entry("unembed/kernel", "lm_head.weight", Linear()))
    return table


def hf_tensors(hf: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's tensors that are parameters: older checkpoints also saved RoPE's inverse
    frequencies (computed, not learned), and a tied lm_head is the embedding again."""
    tensors = {k: v for k, v in tensors.items() if not k.endswith("rotary_emb.inv_freq")}
    if hf.get("tie_word_embeddings", False):
        tensors.pop("lm_head.weight", None)  # transformers ties it to the embedding on load
    return tensors
