"""Reading a Hugging Face config.json as the families need it: required keys, RoPE's parameters
in either transformers' layout, and the one-line refusal of a setting archlab has no exact
counterpart for."""

from __future__ import annotations

from typing import Any, NoReturn

from runtime.errors import UsageError

DEFAULT_ROPE_THETA = 10_000.0  # transformers' default where config.json names none


class Refusal:
    """Raises the UsageError that names what cannot be converted, one line:
    'cannot convert this llama checkpoint: <reason>'."""

    def __init__(self, what: str, exporting: bool = False):
        self.prefix = (
            f"cannot export this {what} to Hugging Face"
            if exporting
            else f"cannot convert this {what} checkpoint"
        )

    def __call__(self, reason: str) -> NoReturn:
        raise UsageError(f"{self.prefix}: {reason}")


def required(hf: dict[str, Any], key: str) -> Any:
    if hf.get(key) is None:
        raise UsageError(f"the checkpoint's config.json has no {key!r}")
    return hf[key]


def rope_theta(hf: dict[str, Any], refuse: Refusal) -> float:
    """RoPE's base, from transformers 5's `rope_parameters` or 4's `rope_theta` and
    `rope_scaling`; any RoPE other than the plain one (scaled, partial) is refused."""
    params = hf.get("rope_parameters") or hf.get("rope_scaling") or {}
    if any(isinstance(value, dict) for value in params.values()):
        refuse(f"per-layer RoPE parameters {sorted(params)} (archlab has one RoPE for all)")
    rope_type = params.get("rope_type", params.get("type", "default"))
    if rope_type != "default":
        refuse(f"RoPE type {rope_type!r} (rope_scaling; archlab has plain RoPE only)")
    partial = params.get("partial_rotary_factor", hf.get("partial_rotary_factor")) or 1.0
    if partial != 1.0:
        refuse(f"partial_rotary_factor={partial} (archlab rotates the whole head)")
    return float(params.get("rope_theta", hf.get("rope_theta", DEFAULT_ROPE_THETA)))
