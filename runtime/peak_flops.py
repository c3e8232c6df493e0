"""What the run's devices can do at best, in FLOP/s: the denominator of MFU.

Accelerators: the vendor's datasheet peak for dense bf16 matmuls (no sparsity), by device kind.
CPU, and an accelerator the table does not know: the best rate of a few float32 matmuls timed
once at start-up. A CPU has no one datasheet figure, and on a shared machine the rate it attains
now is the one the run competes for.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

# Dense bf16 peak of ONE JAX device, searched for in `device.device_kind` in this order (the
# first match wins, so "H100 PCIe" comes before plain "H100"). NVIDIA's datasheets quote bf16
# "with sparsity"; the dense figure is half of it. Google's Cloud TPU pages quote bf16 per chip;
# a v2 or v3 chip holds two TensorCores that JAX shows as two devices, later chips one.
DATASHEET_BF16_PEAK: tuple[tuple[str, float, str], ...] = (
    (r"\bH100 PCIe\b", 756e12, "NVIDIA H100 Tensor Core GPU datasheet (H100 PCIe)"),
    (r"\bH100 NVL\b", 835e12, "NVIDIA H100 Tensor Core GPU datasheet (H100 NVL)"),
    (r"\bH100\b", 989e12, "NVIDIA H100 Tensor Core GPU datasheet (H100 SXM)"),
    (r"\bH200 NVL\b", 835e12, "NVIDIA H200 Tensor Core GPU datasheet (H200 NVL)"),
    (r"\bH200\b", 989e12, "NVIDIA H200 Tensor Core GPU datasheet (H200 SXM)"),
    (r"\bB200\b", 2250e12, "NVIDIA HGX B200 datasheet (B200)"),
    (r"\bA100\b", 312e12, "NVIDIA A100 Tensor Core GPU datasheet"),
    (r"\bL40S\b", 362e12, "NVIDIA L40S datasheet"),
    (r"\bA10\b", 125e12, "NVIDIA A10 datasheet"),  # not the A10G
    (r"\bL4\b", 121e12, "NVIDIA L4 datasheet"),
    (r"^TPU v2$", 45e12 / 2, "Cloud TPU system architecture (v2, 45 TFLOPs per 2-core chip)"),
    (r"^TPU v3$", 123e12 / 2, "Cloud TPU system architecture (v3, 123 TFLOPs per 2-core chip)"),
    (r"^TPU v4$", 275e12, "Cloud TPU v4 documentation"),
    (r"^TPU v5( lite|e)$", 197e12, "Cloud TPU v5e documentation"),
    (r"^TPU v5p?$", 459e12, "Cloud TPU v5p documentation"),
    (r"^TPU v6( lite|e)$", 918e12, "Cloud TPU v6e (Trillium) documentation"),
)
# Large enough for the BLAS kernel's best rate on a few cores, small enough that compiling it and
# the timed calls stay well under a second: the probe runs at the start of every training run.
MATMUL_SIZE = 1024
MATMUL_REPEATS = 5
CPU_MATMUL = "cpu matmul"


@dataclass(frozen=True)
class Peak:
    flops_per_second: float  # all the run's devices together
    source: str  # the datasheet, or how the rate was measured

    def record(self) -> dict[str, float | str]:
        """For the run manifest's environment and the benchmark's JSON."""
        return {"peak_flops_per_second": self.flops_per_second, "peak_flops_source": self.source}


def datasheet_peak(device_kind: str) -> tuple[float, str] | None:
    """(dense bf16 FLOP/s of one device, datasheet) for a device kind in the table, else None."""
    for pattern, flops, datasheet in DATASHEET_BF16_PEAK:
        if re.search(pattern, device_kind):
            return flops, datasheet
    return None


def matmul_flops_per_second(size: int = MATMUL_SIZE, repeats: int = MATMUL_REPEATS) -> float:
    """The best rate of `repeats` size x size float32 matmuls on the default device, after one
    untimed call that compiles it. The best, not the median: on a shared machine a sample can only
    come out slower than the machine can go."""
    a = jax.device_put(np.ones((size, size), np.float32))
    matmul = jax.jit(jnp.matmul)
    matmul(a, a).block_until_ready()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, a).block_until_ready()
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def device_peak() -> Peak:
    """The peak of all the run's devices: the datasheet's where the device kind is known, else a
    matmul timed now. Forced host devices (--xla_force_host_platform_device_count) share their
    process's cores, so on CPU one device's rate is the process's, and each process is counted as
    a machine of its own."""
    device = jax.devices()[0]
    known = datasheet_peak(device.device_kind) if device.platform != "cpu" else None
    if known is not None:
        flops, datasheet = known
        count = jax.device_count()
        return Peak(flops * count, f"{datasheet}, dense bf16 x {count} devices")
    rate = matmul_flops_per_second()
    shape = f"best of {MATMUL_REPEATS} {MATMUL_SIZE}x{MATMUL_SIZE} float32 timed at start-up"
    if device.platform == "cpu":
        return Peak(rate * jax.process_count(), f"{CPU_MATMUL} ({shape})")
    count = jax.device_count()
    return Peak(rate * count, f"{device.device_kind} matmul ({shape}) x {count} devices")
