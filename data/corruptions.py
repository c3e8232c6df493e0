"""Input corruptions for robustness curves: pure numpy functions of a batch's model input.

Each takes the input array and a numpy generator and returns a new array; the targets are left
alone, so the same labels score the corrupted input. Seeded by the caller, so a curve is the same
on every machine.
"""

from __future__ import annotations

import numpy as np


def substitute_tokens(
    tokens: np.ndarray, rate: float, vocab_size: int, rng: np.random.Generator
) -> np.ndarray:
    """Each token independently replaced, with probability `rate`, by a uniform draw from
    [1, vocab_size) (token 0 is padding in our tasks). A draw may equal the original token, so
    the expected fraction actually changed is rate * (1 - 1 / (vocab_size - 1))."""
    if not 0.0 <= rate <= 1.0:
        raise ValueError(f"substitution rate must be in [0, 1], got {rate}")
    replace = rng.random(tokens.shape) < rate
    random_tokens = rng.integers(1, vocab_size, size=tokens.shape, dtype=tokens.dtype)
    return np.where(replace, random_tokens, tokens)


def gaussian_noise(images: np.ndarray, stddev: float, rng: np.random.Generator) -> np.ndarray:
    """Adds N(0, stddev^2) per pixel, then clips to the pixel range [0, 1] (as ImageNet-C does)."""
    if stddev < 0:
        raise ValueError(f"noise stddev must be >= 0, got {stddev}")
    noisy = images + rng.normal(0.0, stddev, size=images.shape).astype(images.dtype)
    return np.clip(noisy, 0.0, 1.0)


def shift(images: np.ndarray, pixels: int) -> np.ndarray:
    """Translates [B, H, W, C] images `pixels` right and `pixels` down, filling with 0 (the
    background of our image tasks)."""
    if pixels < 0:
        raise ValueError(f"shift must be >= 0 pixels, got {pixels}")
    out = np.zeros_like(images)
    h, w = images.shape[1:3]
    if pixels < min(h, w):
        out[:, pixels:, pixels:] = images[:, : h - pixels, : w - pixels]
    return out
