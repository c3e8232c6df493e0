"""The peak MFU is quoted against: datasheet figures by device kind, a timed matmul otherwise."""

from __future__ import annotations

import pytest

from runtime import peak_flops


@pytest.mark.parametrize(
    ("device_kind", "dense_bf16"),
    [
        ("NVIDIA H100 80GB HBM3", 989e12),  # the SXM part
        ("NVIDIA H100 PCIe", 756e12),  # slower than the SXM part that "H100" alone means
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A10", 125e12),
        ("NVIDIA L4", 121e12),
        ("NVIDIA L40S", 362e12),
        ("TPU v5 lite", 197e12),  # v5e, as JAX names it
        ("TPU v5", 459e12),  # v5p, as JAX names it
        ("TPU v6 lite", 918e12),
        ("TPU v3", 61.5e12),  # one of a chip's two TensorCores
    ],
)
def test_known_devices_get_their_datasheet_dense_bf16_peak(device_kind, dense_bf16):
    flops, datasheet = peak_flops.datasheet_peak(device_kind)
    assert flops == dense_bf16
    assert "datasheet" in datasheet or "Cloud TPU" in datasheet


@pytest.mark.parametrize("device_kind", ["NVIDIA A10G", "NVIDIA GH200 480GB", "TPU v4 lite", "cpu"])
def test_unknown_devices_have_no_datasheet_peak(device_kind):
    # These fall back to a timed matmul rather than borrowing a neighbour's figure.
    assert peak_flops.datasheet_peak(device_kind) is None


def test_on_cpu_the_peak_is_a_timed_matmul():
    peak = peak_flops.device_peak()
    assert peak.source.startswith(peak_flops.CPU_MATMUL)
    assert peak.flops_per_second > 0
