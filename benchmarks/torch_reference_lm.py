"""A PyTorch (eager, CPU) twin of archlab's reference language model (experiments/reference_lm.py).

The same function as archlab's `lm` model with the `attention` mixer and the `swiglu` channel
mixer (models/lm.py, models/attention.py, models/channel.py, models/blocks.py), written the way a
PyTorch user would write it:

    tokens -> embedding -> N x [RMSNorm -> causal MHA with RoPE -> residual,
                                RMSNorm -> SwiGLU -> residual] -> RMSNorm -> unembedding

- RMSNorm: x * rsqrt(mean(x^2) + 1e-6) * scale (epsilon 1e-6, as `blocks.rms_norm`).
- Attention: q, k, v, out projections without biases; RoPE in the rotate-half (GPT-NeoX / HF
  Llama) layout, pair (i, i + D/2) rotated by position * base**(-2i/D), base
  `model.attention.rope_base`; scores scaled by 1/sqrt(head_dim);
  `F.scaled_dot_product_attention(is_causal=True)`.
- SwiGLU: down(silu(gate(x)) * up(x)); the `gate` projection goes through silu.
- Untied embedding and unembedding, no biases anywhere, float32.

`load_flax_params` copies archlab's parameter tree in, so the two can be checked to compute the
same logits (tests/test_torch_twin.py); `make_train_step` is one eager AdamW step with archlab's
optimizer settings (runtime/optimizer.py). torch is an optional extra (`bench`), never a
dependency of the package; thread count (`torch.set_num_threads`) is the caller's choice.

    python benchmarks/torch_reference_lm.py [--batch-size=8] [--steps=5] [--threads=2]

times a few eager training steps of the full reference config.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

RMS_NORM_EPSILON = 1e-6  # models/blocks.py rms_norm
EMBED_INIT_STDDEV = 0.02  # models/blocks.py EMBED_INIT_STDDEV
# nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal'): a normal truncated at
# +-2 standard deviations, divided by this constant so that its std is 1/sqrt(fan_in).
_TRUNCATED_NORMAL_STDDEV = 0.87962566103423978


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """[x1, x2] -> [-x2, x1] over the last axis (archlab's `blocks.rotate_half`)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def rope_tables(seq_len: int, head_dim: int, base: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [seq_len, head_dim] of archlab's `blocks.apply_rope` angles (float32)."""
    inv_freq = base ** (-torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    angles = torch.arange(seq_len, dtype=torch.float32)[:, None] * inv_freq  # [T, D/2]
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def _init_linear(linear: nn.Linear) -> None:
    """archlab's Dense init: truncated normal, variance 1/fan_in (fan_in = input width)."""
    std = 1.0 / math.sqrt(linear.in_features) / _TRUNCATED_NORMAL_STDDEV
    nn.init.trunc_normal_(linear.weight, std=std, a=-2 * std, b=2 * std)


class Attention(nn.Module):
    """Causal multi-head self-attention with RoPE on queries and keys."""

    def __init__(self, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, d_model // num_heads
        self.q_proj = nn.Linear(d_model, d_model, bias=False)
        self.k_proj = nn.Linear(d_model, d_model, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        heads = (b, t, self.num_heads, self.head_dim)
        q = self.q_proj(x).view(heads).transpose(1, 2)  # [B, H, T, hd]
        k = self.k_proj(x).view(heads).transpose(1, 2)
        v = self.v_proj(x).view(heads).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # scale 1/sqrt(hd)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, d))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), as archlab's `channel.SwiGLU`."""

    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.gate_proj = nn.Linear(d_model, d_ff, bias=False)
        self.up_proj = nn.Linear(d_model, d_ff, bias=False)
        self.down_proj = nn.Linear(d_ff, d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm residual block: attention, then SwiGLU."""

    def __init__(self, d_model: int, num_heads: int, d_ff: int):
        super().__init__()
        self.attn_norm = nn.RMSNorm(d_model, eps=RMS_NORM_EPSILON)
        self.attn = Attention(d_model, num_heads)
        self.mlp_norm = nn.RMSNorm(d_model, eps=RMS_NORM_EPSILON)
        self.mlp = SwiGLU(d_model, d_ff)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.mlp(self.mlp_norm(x))


class ReferenceLM(nn.Module):
    """int64 tokens [B, T] -> float32 next-token logits [B, T, vocab_size]; T <= seq_len."""

    def __init__(
        self,
        vocab_size: int,
        d_model: int,
        num_heads: int,
        num_layers: int,
        d_ff: int,
        seq_len: int,
        *,
        rope_base: float = 10_000.0,
    ):
        super().__init__()
        if d_model % num_heads or (d_model // num_heads) % 2:
            raise ValueError(f"d_model={d_model} / num_heads={num_heads} must be an even integer")
        self.vocab_size, self.seq_len = vocab_size, seq_len
        self.embed = nn.Embedding(vocab_size, d_model)
        self.layers = nn.ModuleList(Block(d_model, num_heads, d_ff) for _ in range(num_layers))
        self.final_norm = nn.RMSNorm(d_model, eps=RMS_NORM_EPSILON)
        self.lm_head = nn.Linear(d_model, vocab_size, bias=False)
        cos, sin = rope_tables(seq_len, d_model // num_heads, rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    @classmethod
    def from_config(cls, config: Any) -> ReferenceLM:
        """The twin of the model an archlab config builds (see `check_config`)."""
        check_config(config)
        spec = dataset_spec(config)
        m = config.model
        return cls(
            vocab_size=spec.vocab_size,
            d_model=m.d_model,
            num_heads=m.num_heads,
            num_layers=m.num_layers,
            d_ff=m.d_ff,
            seq_len=spec.seq_len,
            rope_base=m.attention.rope_base,
        )

    def reset_parameters(self) -> None:
        """archlab's initialisers (same distributions, not the same draws): embedding N(0, 0.02),
        projections truncated normal with variance 1/fan_in, norm scales 1."""
        nn.init.normal_(self.embed.weight, std=EMBED_INIT_STDDEV)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                _init_linear(module)
            elif isinstance(module, nn.RMSNorm):
                nn.init.ones_(module.weight)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        t = tokens.shape[1]
        cos, sin = self.rope_cos[:t], self.rope_sin[:t]
        x = self.embed(tokens)
        for layer in self.layers:
            x = layer(x, cos, sin)
        return self.lm_head(self.final_norm(x))


# ----------------------------------------------------------------------------------------------
# archlab side: which configs have a twin, the dataset's spec, the parameter count.


def check_config(config: Any) -> None:
    """Raises ValueError unless `config` builds the architecture this file reproduces."""
    m = config.model
    expected = {
        "model.name": "lm",
        "model.mixer": "attention",
        "model.layer_pattern": "",
        "model.channel_mixer": "swiglu",
        "model.norm": "rms",
        "model.positional": "rope",
        "model.use_bias": False,
        "model.tie_embeddings": False,
        "model.short_conv": 0,
        "model.dropout_rate": 0.0,
        "model.attention.num_kv_heads": 0,
        "model.attention.window": 0,
        "model.attention.qk_norm": False,
        "train.compute_dtype": "float32",
    }
    actual = {
        "model.name": m.name,
        "model.mixer": m.mixer,
        "model.layer_pattern": m.layer_pattern,
        "model.channel_mixer": m.channel_mixer,
        "model.norm": m.norm,
        "model.positional": m.positional,
        "model.use_bias": m.use_bias,
        "model.tie_embeddings": m.tie_embeddings,
        "model.short_conv": m.short_conv,
        "model.dropout_rate": m.dropout_rate,
        "model.attention.num_kv_heads": m.attention.num_kv_heads or 0,
        "model.attention.window": m.attention.window,
        "model.attention.qk_norm": m.attention.qk_norm,
        "train.compute_dtype": config.train.compute_dtype,
    }
    if m.attention.num_kv_heads == m.num_heads:  # MHA spelled out
        actual["model.attention.num_kv_heads"] = 0
    wrong = [f"{k}={actual[k]!r} (twin: {v!r})" for k, v in expected.items() if actual[k] != v]
    if wrong:
        raise ValueError("the torch twin does not cover this config: " + ", ".join(wrong))


def dataset_spec(config: Any) -> Any:
    """The `DatasetSpec` (vocab_size, seq_len) of the config's dataset, read from its builder
    without preparing it (pydoc_text: UTF-8 bytes, vocab 256, data/text.py)."""
    import data
    from data.prepare import resolve_data_dir

    builder_cls = data.DATASETS.get(config.data.name)
    params = builder_cls.CONFIG_CLASS.from_params(config.data[config.data.name].to_dict())
    spec = builder_cls(
        config=params, data_dir=str(resolve_data_dir(config.data.dir or None))
    ).spec()
    if spec.kind != "sequence" or spec.vocab_size is None or spec.seq_len is None:
        raise ValueError(f"dataset {config.data.name!r} is not a token-sequence dataset")
    return spec


def build_archlab_model(config: Any) -> Any:
    """archlab's own model for `config` (flax), built as runtime/assembly.py builds it."""
    import jax.numpy as jnp

    import models

    return models.build_model(config.model, dataset_spec(config), jnp.float32)


def archlab_param_count(config: Any) -> dict[str, int]:
    """archlab's parameter counts: `models.count_params` of its initialised tree (shapes only,
    via jax.eval_shape) and the model's analytic `describe()['params']`."""
    import jax

    import models

    model = build_archlab_model(config)
    init = lambda: model.init(jax.random.PRNGKey(0), model.example_inputs(1), train=False)  # noqa: E731
    shapes = jax.eval_shape(init)["params"]
    return {"count_params": models.count_params(shapes), "describe": model.describe()["params"]}


def param_count(model: nn.Module) -> int:
    """Trainable parameters of the twin (RoPE tables are buffers, not parameters)."""
    return sum(p.numel() for p in model.parameters())


def check_param_count(model: nn.Module, config: Any) -> int:
    """Raises AssertionError unless the twin has exactly archlab's parameter count."""
    counts = archlab_param_count(config)
    ours = param_count(model)
    if not ours == counts["count_params"] == counts["describe"]:
        raise AssertionError(f"parameter counts differ: torch {ours}, archlab {counts}")
    return ours


# ----------------------------------------------------------------------------------------------
# archlab's parameters into the twin.


def flax_paths(model: ReferenceLM) -> dict[tuple[str, ...], nn.Parameter]:
    """archlab's parameter path (models/lm.py, attention.py, channel.py) -> the twin's tensor.

    Flax kernels are [in..., out...] (query/key/value [D, H, hd], out [H, hd, D], the rest
    [in, out]); a torch Linear weight is [out, in]: a kernel maps to its weight flattened to
    [in, out] and transposed. Embedding [V, D] and norm scales [D] map as they are.
    """
    paths = {("embed", "embedding"): model.embed.weight}
    for i, layer in enumerate(model.layers):
        block = f"block_{i}"
        paths |= {
            (block, "mixer_norm", "scale"): layer.attn_norm.weight,
            (block, "sequence_mixer", "query", "kernel"): layer.attn.q_proj.weight,
            (block, "sequence_mixer", "key", "kernel"): layer.attn.k_proj.weight,
            (block, "sequence_mixer", "value", "kernel"): layer.attn.v_proj.weight,
            (block, "sequence_mixer", "out", "kernel"): layer.attn.o_proj.weight,
            (block, "channel_norm", "scale"): layer.mlp_norm.weight,
            (block, "channel", "gate", "kernel"): layer.mlp.gate_proj.weight,
            (block, "channel", "up", "kernel"): layer.mlp.up_proj.weight,
            (block, "channel", "down", "kernel"): layer.mlp.down_proj.weight,
        }
    paths[("final_norm", "scale")] = model.final_norm.weight
    paths[("unembed", "kernel")] = model.lm_head.weight
    return paths


def to_torch_layout(path: tuple[str, ...], value: Any) -> np.ndarray:
    """One archlab parameter (or gradient) as the twin's tensor layout, float32."""
    value = np.array(value, dtype=np.float32)  # a writable copy, for torch.from_numpy
    if path[-1] == "kernel":  # the out projection contracts two axes (heads, head_dim)
        in_out = (-1, value.shape[-1]) if path[-2] == "out" else (value.shape[0], -1)
        value = value.reshape(in_out).T
    return np.ascontiguousarray(value)


def to_flax_layout(
    path: tuple[str, ...], value: torch.Tensor, shape: tuple[int, ...]
) -> np.ndarray:
    """The inverse of `to_torch_layout`: a twin tensor as archlab's array of `shape`."""
    value = value.detach().numpy()
    return (value.T if path[-1] == "kernel" else value).reshape(shape)


def load_flax_params(model: ReferenceLM, params: Mapping[str, Any]) -> None:
    """Copies archlab's Flax parameter tree (`variables['params']`, boxed or not) into `model`.
    Raises ValueError unless the tree has exactly the twin's parameters, in the twin's shapes."""
    import flax

    flat = flax.traverse_util.flatten_dict(flax.linen.unbox(params))
    paths = flax_paths(model)
    if set(flat) != set(paths):
        missing, extra = sorted(set(paths) - set(flat)), sorted(set(flat) - set(paths))
        raise ValueError(f"parameter tree does not fit the twin: missing {missing}, extra {extra}")
    for path, dst in paths.items():
        value = to_torch_layout(path, flat[path])
        if value.shape != tuple(dst.shape):
            raise ValueError(f"{'/'.join(path)}: {value.shape} does not fit {tuple(dst.shape)}")
        with torch.no_grad():
            dst.copy_(torch.from_numpy(value))


# ----------------------------------------------------------------------------------------------
# Training: archlab's AdamW (runtime/optimizer.py) and next-token cross-entropy, eagerly.


def lr_factor(optimizer_config: Any, total_steps: int) -> Callable[[int], float]:
    """Learning rate / peak learning rate at each step: optax's schedules as runtime/optimizer.py
    builds them (linear warmup from 0, then cosine, linear or constant), for a torch LambdaLR."""
    c = optimizer_config
    warmup, end = c.warmup_steps, c.end_lr_fraction

    def after_warmup(s: int) -> float:
        if c.schedule == "cosine":  # optax.warmup_cosine_decay_schedule
            n = max(total_steps, warmup + 1) - warmup
            cosine = 0.5 * (1 + math.cos(math.pi * min(s, n) / n))
            return (1 - end) * cosine + end
        if c.schedule == "linear":
            n = max(total_steps - warmup, 1)
            return 1 + (end - 1) * min(s, n) / n
        return 1.0  # constant

    if c.schedule not in ("cosine", "linear", "constant"):
        raise ValueError(f"unknown optimizer.schedule {c.schedule!r}")
    return lambda step: step / warmup if step < warmup else after_warmup(step - warmup)


def param_groups(model: ReferenceLM, weight_decay: float, decay_embeddings: bool) -> list[dict]:
    """archlab's decay mask: matrices are decayed, vectors (norm scales) never, the token
    embedding only with `decay_embeddings` (the unembedding is a matrix like any other)."""
    decay, no_decay = [], []
    for p in model.parameters():
        embedding = p is model.embed.weight
        (decay if p.ndim >= 2 and (decay_embeddings or not embedding) else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def make_train_step(
    model: ReferenceLM, config: Any, *, schedule: bool = True, fused: bool = False
) -> Callable[..., float | None]:
    """One eager training step with the config's optimizer and objective:

        step(inputs LongTensor[B, T], targets LongTensor[B, T], return_loss=False) -> float | None

    Mean next-token cross-entropy over all positions (the `next_token_xent` objective with a
    mask of ones), gradients clipped to global norm `optimizer.grad_clip_norm` (optax's rule:
    scaled by clip / norm when norm >= clip), then torch.optim.AdamW with `learning_rate`, `b1`,
    `b2`, `eps`, `weight_decay` on archlab's decay mask (torch's decoupled decay, lr * wd * p,
    is optax.adamw's). With `schedule` (default) a LambdaLR follows archlab's warmup + decay
    schedule over `train.steps`, so the first step has learning rate 0 as in archlab; pass
    schedule=False to run at the peak rate. `fused=True` picks torch's fused AdamW kernel (the
    same update; several times faster than the default per-tensor loop on CPU) instead of the
    default implementation a plain `torch.optim.AdamW(...)` gets. The loss is returned as a float
    (a `.item()`) only with return_loss=True. `step.optimizer` and `step.scheduler` are exposed.
    """
    c = config.optimizer
    if c.name != "adamw":
        raise ValueError(f"the torch twin implements optimizer.name='adamw', not {c.name!r}")
    if config.objective.name != "next_token_xent" or config.objective.z_loss:
        raise ValueError("the torch twin implements next_token_xent without z_loss")
    if config.objective.label_smoothing or config.train.grad_accum_steps != 1:
        raise ValueError("the torch twin has no label smoothing nor gradient accumulation")
    optimizer = torch.optim.AdamW(
        param_groups(model, c.weight_decay, c.decay_embeddings),
        lr=c.learning_rate,
        betas=(c.b1, c.b2),
        eps=c.eps,
        fused=fused or None,
    )
    factor = lr_factor(c, config.train.steps) if schedule else (lambda step: 1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    params = [p for p in model.parameters() if p.requires_grad]
    clip = float(c.grad_clip_norm)

    def step(
        inputs: torch.Tensor, targets: torch.Tensor, return_loss: bool = False
    ) -> float | None:
        model.train()
        logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            grads = [p.grad for p in params if p.grad is not None]
            norm = torch.nn.utils.get_total_norm(grads)
            scale = torch.clamp(clip / norm, max=1.0)  # no host sync: a tensor multiplier
            for g in grads:
                g.mul_(scale)
        optimizer.step()
        scheduler.step()
        return loss.item() if return_loss else None

    step.optimizer, step.scheduler = optimizer, scheduler
    return step


def _demo() -> None:
    import argparse

    from experiments import reference_lm

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after 2 warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--fused", action="store_true", help="torch's fused AdamW kernel")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = reference_lm.get_config()
    model = ReferenceLM.from_config(config)
    count = check_param_count(model, config)
    print(f"parameters: {count:,} (same as archlab)")
    step = make_train_step(model, config, schedule=False, fused=args.fused)
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, model.vocab_size, (args.batch_size, model.seq_len + 1), generator=gen)
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    for _ in range(2):
        step(inputs, targets)
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step(inputs, targets, return_loss=True)
        times.append(time.perf_counter() - start)
    median = statistics.median(times)
    tokens_per_s = args.batch_size * model.seq_len / median
    print(
        f"eager step{' (fused AdamW)' if args.fused else ''}, batch {args.batch_size} x "
        f"{model.seq_len}, {args.threads} threads: "
        f"median {median * 1e3:.0f} ms over {args.steps} steps ({tokens_per_s:,.0f} tokens/s), "
        f"loss {loss:.3f}"
    )


if __name__ == "__main__":
    _demo()
