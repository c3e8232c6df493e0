"""Mamba-1 (`MambaForCausalLM`) as archlab's sequence model with a Mamba mixer in every layer and
no channel mixer (`model.mixer=mamba`, `channel_mixer=none`).

Hugging Face's block is x + mixer(RMSNorm(x)), as archlab's block is without its channel half;
the mixer is models/mamba.py's computation, parameter for parameter (in_proj's first half is x,
its second the gate z; conv1d with its bias; x_proj -> dt, B, C; dt_proj with its bias; A_log;
D; out_proj). The keys: hidden_size -> model.d_model, state_size -> model.mamba.d_state,
conv_kernel -> d_conv, expand -> expand, time_step_rank -> dt_rank, layer_norm_epsilon ->
model.norm_eps, tie_word_embeddings -> model.tie_embeddings. A checkpoint without conv biases
(use_conv_bias=false) converts with zero biases, which compute the same. Biases on in_proj and
out_proj (use_bias=true) have no counterpart and are refused. `residual_in_fp32` changes nothing
in float32, which is what the conversion computes in.
"""

from __future__ import annotations

import math
from typing import Any

import ml_collections
import numpy as np

from convert.hf_config import Refusal, required
from convert.tensor_map import DepthwiseConv, Entry, Linear, Same
from models import mamba

ARCHITECTURES = {"mamba": "MambaForCausalLM"}
DEFAULT_EPS = 1e-5  # transformers' MambaConfig.layer_norm_epsilon
ARCHLAB_RMS_EPS = 1e-6  # archlab's RMSNorm at model.norm_eps=0
# The original state-spaces checkpoints name the embedding without the s; transformers renames it.
LEGACY_EMBEDDING = "backbone.embedding.weight"


def archlab_model(hf: dict[str, Any]) -> dict[str, Any]:
    """{'model.d_model': ..., ...}: the archlab model keys that compute what `hf` (a Mamba
    config.json) computes; a setting without an exact counterpart raises UsageError."""
    refuse = Refusal("mamba")
    hidden = required(hf, "hidden_size")
    if hf.get("hidden_act", "silu") != "silu":
        refuse(f"hidden_act={hf['hidden_act']!r} (archlab's Mamba uses silu)")
    if hf.get("use_bias", False):
        refuse("use_bias=true (biases on in_proj and out_proj; archlab's Mamba has none)")
    expand = hf.get("expand", 2)
    inner = hf.get("intermediate_size")
    if inner is not None and inner != int(expand * hidden):
        refuse(f"intermediate_size={inner} is not expand * hidden_size = {int(expand * hidden)}")
    rank = hf.get("time_step_rank", "auto")
    return {
        "model.name": "lm",
        "model.mixer": "mamba",
        "model.layer_pattern": "",
        "model.channel_mixer": "none",
        "model.norm": "rms",
        "model.positional": "none",
        "model.short_conv": 0,
        "model.use_bias": False,
        "model.num_layers": required(hf, "num_hidden_layers"),
        "model.d_model": hidden,
        "model.num_heads": 1,  # Mamba has no heads; 1 divides any d_model
        "model.norm_eps": float(hf.get("layer_norm_epsilon", DEFAULT_EPS)),
        "model.tie_embeddings": bool(hf.get("tie_word_embeddings", True)),
        "model.mamba.expand": expand,
        "model.mamba.d_state": hf.get("state_size", 16),
        "model.mamba.d_conv": hf.get("conv_kernel", 4),
        "model.mamba.dt_rank": math.ceil(hidden / 16) if rank == "auto" else rank,
        "model.mamba.bc_norm": "none",
    }


def hf_tensors(hf: dict[str, Any], tensors: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The checkpoint's tensors under transformers' current names, with the zero conv biases a
    checkpoint without them computes with."""
    tensors = dict(tensors)
    if LEGACY_EMBEDDING in tensors:
        tensors["backbone.embeddings.weight"] = tensors.pop(LEGACY_EMBEDDING)
    if hf.get("tie_word_embeddings", True):
        tensors.pop("lm_head.weight", None)  # transformers ties it to the embedding on load
    if not hf.get("use_conv_bias", True):
        inner = int(hf.get("expand", 2) * hf["hidden_size"])
        for i in range(hf["num_hidden_layers"]):
            tensors[f"backbone.layers.{i}.mixer.conv1d.bias"] = np.zeros(inner, np.float32)
    return tensors


def hf_config(model: ml_collections.ConfigDict, vocab_size: int, seq_len: int) -> dict[str, Any]:
    """The config.json of the MambaForCausalLM that computes what archlab's `model` (an
    all-Mamba stack) computes; a setting it lacks raises UsageError."""
    refuse = Refusal("archlab model", exporting=True)
    if model.channel_mixer != "none":
        refuse(f"model.channel_mixer={model.channel_mixer!r} (a Mamba block has none)")
    if model.norm != "rms":
        refuse(f"model.norm={model.norm!r} (Mamba has RMSNorm)")
    if model.positional == "learned":
        refuse("model.positional='learned' (Mamba has no positional embedding)")
    if model.short_conv:
        refuse(f"model.short_conv={model.short_conv} (Mamba's conv is inside its mixer)")
    options = model.mamba
    if options.bc_norm != "none":
        refuse(f"model.mamba.bc_norm={options.bc_norm!r} (Mamba-1 does not norm B and C)")
    inner, d_state, d_conv, dt_rank = mamba.dims(model.d_model, options)
    if options.expand != int(options.expand):
        refuse(f"model.mamba.expand={options.expand} (transformers' expand is an integer)")
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "vocab_size": vocab_size,
        "hidden_size": model.d_model,
        "num_hidden_layers": model.num_layers,
        "state_size": d_state,
        "conv_kernel": d_conv,
        "expand": int(options.expand),
        "intermediate_size": inner,
        "time_step_rank": dt_rank,
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "layer_norm_epsilon": float(model.norm_eps or ARCHLAB_RMS_EPS),
        "residual_in_fp32": True,
        "tie_word_embeddings": bool(model.tie_embeddings),
    }


def tensor_table(model: ml_collections.ConfigDict) -> list[Entry]:
    """The tensors of `model` (an all-Mamba archlab model config section), both names."""
    table = [Entry("embed/embedding", "backbone.embeddings.weight", Same())]
    for i in range(model.num_layers):
        ours, theirs = f"block_{i}/sequence_mixer", f"backbone.layers.{i}.mixer"
        table += [
            Entry(f"block_{i}/mixer_norm/scale", f"backbone.layers.{i}.norm.weight", Same()),
            Entry(f"{ours}/in_proj/kernel", f"{theirs}.in_proj.weight", Linear()),
            Entry(f"{ours}/conv/kernel", f"{theirs}.conv1d.weight", DepthwiseConv()),
            Entry(f"{ours}/conv/bias", f"{theirs}.conv1d.bias", Same()),
            Entry(f"{ours}/x_proj/kernel", f"{theirs}.x_proj.weight", Linear()),
            Entry(f"{ours}/dt_proj/kernel", f"{theirs}.dt_proj.weight", Linear()),
            Entry(f"{ours}/dt_proj/bias", f"{theirs}.dt_proj.bias", Same()),
            Entry(f"{ours}/A_log", f"{theirs}.A_log", Same()),
            Entry(f"{ours}/D", f"{theirs}.D", Same()),
            Entry(f"{ours}/out_proj/kernel", f"{theirs}.out_proj.weight", Linear()),
        ]
    table.append(Entry("final_norm/scale", "backbone.norm_f.weight", Same()))
    if not model.tie_embeddings:
        table.append(Entry("unembed/kernel", "lm_head.weight", Linear()))
    return table
