"""The sidecar's Prometheus metrics, on its own CollectorRegistry (so nothing a library registers on the
global one leaks into /metrics).

Fixed metrics are prometheus-client objects updated by the loops. Series that exist only sometimes
(spec-decode figures when vLLM speculates and had traffic in the window, GPU telemetry when NVML sees a
GPU, the plan info when a plan file was read) come from a custom collector over the latest readings:
absent when unknown, never a made-up zero."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from healthcheck.gpu import GpuSample
from healthcheck.plan_info import PLAN_LABELS
from healthcheck.probe import REASONS
from healthcheck.vllm_metrics import SpecDerived, VllmSnapshot

# Chat probes with a tiny max_tokens: sub-second when healthy, seconds when loaded, up to the deadline.
_LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)


@dataclass
class Readings:
    """The latest values the custom collector exposes; the loops assign whole fields, so a scrape sees
    each field either before or after an update, never half of one."""

    vllm: VllmSnapshot | None = None
    spec: SpecDerived | None = None
    gpus: list[GpuSample] = field(default_factory=list)
    plan: dict[str, str] | None = None


class _ReadingsCollector(Collector):
    def __init__(self, readings: Readings) -> None:
        self.readings = readings

    def collect(self) -> Iterator[Metric]:
        r = self.readings
        if r.plan is not None:
            info = InfoMetricFamily(
                "healthcheck_plan", "The launcher's plan that vLLM runs (from plan.json)."
            )
            info.add_metric([], {k: r.plan.get(k, "") for k in PLAN_LABELS})
            yield info
        v = r.vllm
        if v is not None:
            for name, doc, value in (
                ("healthcheck_vllm_kv_cache_usage_ratio", "vLLM KV-cache usage, 0..1.", v.kv_cache_usage),
                (
                    "healthcheck_vllm_requests_waiting",
                    "Requests waiting in vLLM's queue.",
                    v.requests_waiting,
                ),
                ("healthcheck_vllm_requests_running", "Requests vLLM is running.", v.requests_running),
            ):
                if value is not None:
                    yield GaugeMetricFamily(name, doc, value=value)
        s = r.spec
        if s is not None:
            yield GaugeMetricFamily(
                "healthcheck_vllm_spec_decode_window_seconds",
                "Span of vLLM counter samples the spec-decode figures cover.",
                value=s.window_s,
            )
            yield GaugeMetricFamily(
                "healthcheck_vllm_spec_decode_drafts",
                "Speculative drafts vLLM made within the window.",
                value=s.drafts,
            )
            if s.acceptance_rate is not None:
                yield GaugeMetricFamily(
                    "healthcheck_vllm_spec_decode_acceptance_ratio",
                    "Accepted / proposed draft tokens over the window.",
                    value=s.acceptance_rate,
                )
            yield GaugeMetricFamily(
                "healthcheck_vllm_spec_decode_mean_acceptance_length",
                "1 + accepted tokens per draft over the window (tokens emitted per target step).",
                value=s.mean_acceptance_length,
            )
            per_pos = GaugeMetricFamily(
                "healthcheck_vllm_spec_decode_position_acceptance_ratio",
                "Share of drafts whose token at this position was accepted, over the window.",
                labels=["position"],
            )
            for pos, ratio in s.per_position.items():
                per_pos.add_metric([str(pos)], ratio)
            yield per_pos
        if r.gpus:
            labels = ["gpu", "name", "uuid"]
            families = {
                "utilization_ratio": GaugeMetricFamily(
                    "healthcheck_gpu_utilization_ratio", "GPU busy share (NVML), 0..1.", labels=labels
                ),
                "memory_used_bytes": GaugeMetricFamily(
                    "healthcheck_gpu_memory_used_bytes", "GPU memory in use (NVML).", labels=labels
                ),
                "memory_total_bytes": GaugeMetricFamily(
                    "healthcheck_gpu_memory_total_bytes", "GPU memory in total (NVML).", labels=labels
                ),
                "temperature_celsius": GaugeMetricFamily(
                    "healthcheck_gpu_temperature_celsius", "GPU core temperature (NVML).", labels=labels
                ),
                "power_watts": GaugeMetricFamily(
                    "healthcheck_gpu_power_watts", "GPU board power draw (NVML).", labels=labels
                ),
                "sm_clock_hertz": GaugeMetricFamily(
                    "healthcheck_gpu_sm_clock_hertz", "GPU SM clock (NVML).", labels=labels
                ),
            }
            for g in r.gpus:
                for attr, fam in families.items():
                    value = getattr(g, attr)
                    if value is not None:
                        fam.add_metric([str(g.index), g.name, g.uuid], value)
            yield from (fam for fam in families.values() if fam.samples)


class SidecarMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # The *_created series double the exposition for no dashboard use (and Prometheus ignores
        # them in the text format); the switch is process-wide, and this process is the sidecar.
        disable_created_metrics()
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        reg = self.registry
        self.probes = Counter(
            "healthcheck_probes", "Finished readiness probes by outcome.", ["reason"], registry=reg
        )
        for reason in REASONS:
            self.probes.labels(reason)  # every outcome has a series from the start: rate() works at once
        self.last_reason = Gauge(
            "healthcheck_last_probe_reason",
            "1 for the outcome of the latest probe, 0 for the others.",
            ["reason"],
            registry=reg,
        )
        self.probe_ttft = Histogram(
            "healthcheck_probe_ttft_seconds",
            "Time to the first generated text of the probe's chat completion.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.probe_duration = Histogram(
            "healthcheck_probe_duration_seconds",
            "Duration of a whole probe (health + models + chat completion), failed ones included.",
            buckets=_LATENCY_BUCKETS,
            registry=reg,
        )
        self.probes_in_flight = Gauge(
            "healthcheck_probes_in_flight", "Readiness probes running now (never more than 1).", registry=reg
        )
        self.last_probe_time = Gauge(
            "healthcheck_last_probe_timestamp_seconds", "Unix time the latest probe finished.", registry=reg
        )
        self.ready = Gauge(
            "healthcheck_ready", "1 when vLLM answers correctly (what /readyz says).", registry=reg
        )
        self.answer_check_enabled = Gauge(
            "healthcheck_answer_check_enabled",
            "1 when the probe requires the known answer (wrong_answer otherwise); 0 when only the "
            "degeneration check applies (random weights, or no readiness block).",
            registry=reg,
        )
        self.engine_reachable = Gauge(
            "healthcheck_engine_reachable",
            "1 when vLLM's /health answered in the latest probe.",
            registry=reg,
        )
        self.consecutive_failures = Gauge(
            "healthcheck_consecutive_failures", "Failed readiness probes in a row.", registry=reg
        )
        self.vllm_metrics_up = Gauge(
            "healthcheck_vllm_metrics_up",
            "1 when the latest read of vLLM's /metrics succeeded.",
            registry=reg,
        )
        self.readings = Readings()
        reg.register(_ReadingsCollector(self.readings))
