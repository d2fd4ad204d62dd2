"""GPU telemetry from NVML on a machine with an NVIDIA GPU (marker gpu); on a CPU machine the sidecar
exports no GPU series (checked here and in the end-to-end tests)."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest

from healthcheck.gpu import GpuSample, NvmlTelemetry
from healthcheck.metrics import SidecarMetrics
from tests.healthcheck.conftest import parse_metrics

GPU_SERIES = (
    "healthcheck_gpu_utilization_ratio",
    "healthcheck_gpu_memory_used_bytes",
    "healthcheck_gpu_memory_total_bytes",
    "healthcheck_gpu_temperature_celsius",
    "healthcheck_gpu_power_watts",
    "healthcheck_gpu_sm_clock_hertz",
)


def _exposed(samples: list[GpuSample]) -> dict[str, float]:
    metrics = SidecarMetrics()
    metrics.readings.gpus = samples
    return parse_metrics(generate_latest(metrics.registry).decode())


def test_gpu_series_from_samples_and_absent_fields_left_out() -> None:
    full = GpuSample(0, "NVIDIA H100 80GB HBM3", "GPU-1", 0.5, 1e9, 80e9, 40.0, 120.0, 1.98e9)
    no_power = GpuSample(1, "NVIDIA GeForce RTX 5090", "GPU-2", 0.0, 2e9, 32e9, 35.0, None, 2.4e9)
    m = _exposed([full, no_power])
    assert m['healthcheck_gpu_memory_total_bytes{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-1"}'] == 80e9
    assert m['healthcheck_gpu_power_watts{gpu="0",name="NVIDIA H100 80GB HBM3",uuid="GPU-1"}'] == 120.0
    assert not any(k.startswith("healthcheck_gpu_power_watts") and 'gpu="1"' in k for k in m)
    assert m['healthcheck_gpu_sm_clock_hertz{gpu="1",name="NVIDIA GeForce RTX 5090",uuid="GPU-2"}'] == 2.4e9


def test_no_gpu_no_series() -> None:
    assert not any(k.startswith("healthcheck_gpu_") for k in _exposed([]))


@pytest.mark.gpu
def test_nvml_reads_a_real_gpu() -> None:
    telemetry = NvmlTelemetry()
    if not telemetry.available:
        pytest.skip("NVML sees no GPU here")
    try:
        samples = telemetry.sample()
    finally:
        telemetry.close()
    assert samples, "NVML is available but sampled no GPU"
    for g in samples:
        print(g)
        assert g.name and g.uuid.startswith("GPU-")
        assert g.memory_total_bytes and g.memory_total_bytes > 1e9
        assert g.memory_used_bytes is not None and 0 <= g.memory_used_bytes <= g.memory_total_bytes
        assert g.utilization_ratio is not None and 0.0 <= g.utilization_ratio <= 1.0
        assert g.temperature_celsius is not None and 0 < g.temperature_celsius < 120
        assert g.sm_clock_hertz is not None and g.sm_clock_hertz > 1e8
    m = _exposed(samples)
    for name in GPU_SERIES:
        if name != "healthcheck_gpu_power_watts":  # some boards do not report power
            assert any(k.startswith(name + "{") for k in m), name
