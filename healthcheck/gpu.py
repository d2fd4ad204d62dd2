"""GPU telemetry from NVML (nvidia-ml-py's ``pynvml``). On a machine without the package, the driver or
a GPU, the sidecar exports no GPU series at all: absent, not zero, so a dashboard never shows a CPU
box as an idle GPU."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GpuSample:
    index: int
    name: str
    uuid: str
    utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    sm_clock_hertz: float | None = None


class NvmlTelemetry:
    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[Any] = []
        try:
            import pynvml

            pynvml.nvmlInit()
            count = pynvml.nvmlDeviceGetCount()
            self._handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
            self._nvml = pynvml
            log.info("NVML: %d GPU(s); exporting GPU telemetry", count)
        except ImportError:
            log.info("nvidia-ml-py is not installed: no GPU telemetry")
        except Exception as exc:  # NVMLError_LibraryNotFound / DriverNotLoaded on CPU machines
            log.info("NVML unavailable (%s): no GPU telemetry", exc)

    @property
    def available(self) -> bool:
        return self._nvml is not None and bool(self._handles)

    def sample(self) -> list[GpuSample]:
        """One reading per GPU. A query a GPU does not support (power on some boards) leaves that one
        field out rather than dropping the GPU."""
        if not self.available:
            return []
        nv = self._nvml
        out = []
        for i, h in enumerate(self._handles):

            def get(fn: Any, *args: Any, _h: Any = h) -> Any:
                try:
                    return fn(_h, *args)
                except nv.NVMLError:
                    return None

            name = get(nv.nvmlDeviceGetName)
            uuid = get(nv.nvmlDeviceGetUUID)
            util = get(nv.nvmlDeviceGetUtilizationRates)
            mem = get(nv.nvmlDeviceGetMemoryInfo)
            temp = get(nv.nvmlDeviceGetTemperature, nv.NVML_TEMPERATURE_GPU)
            power_mw = get(nv.nvmlDeviceGetPowerUsage)
            sm_mhz = get(nv.nvmlDeviceGetClockInfo, nv.NVML_CLOCK_SM)
            out.append(
                GpuSample(
                    index=i,
                    name=name.decode() if isinstance(name, bytes) else str(name or ""),
                    uuid=uuid.decode() if isinstance(uuid, bytes) else str(uuid or ""),
                    utilization_ratio=None if util is None else util.gpu / 100.0,
                    memory_used_bytes=None if mem is None else float(mem.used),
                    memory_total_bytes=None if mem is None else float(mem.total),
                    temperature_celsius=None if temp is None else float(temp),
                    power_watts=None if power_mw is None else power_mw / 1000.0,
                    sm_clock_hertz=None if sm_mhz is None else sm_mhz * 1e6,
                )
            )
        return out

    def close(self) -> None:
        if self._nvml is not None:
            with contextlib.suppress(Exception):  # closing must not mask the reason we stop
                self._nvml.nvmlShutdown()
            self._nvml = None
