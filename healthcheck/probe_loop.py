"""The readiness probe loop: one probe at a time, at a fixed rate, each outcome handed to the caller.

The sidecar feeds the outcomes to its readiness state and metrics; the launcher's watchdog
(healthcheck.watchdog) feeds them to its restart policy. Each round awaits its probe before the next
starts, which is what makes "at most one probe in flight" true by construction."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from healthcheck.probe import ProbeResult

log = logging.getLogger(__name__)


class ProbeLoop:
    def __init__(
        self,
        probe: Callable[[], Awaitable[ProbeResult]],
        on_result: Callable[[ProbeResult], None],
        *,
        interval_s: float,
    ) -> None:
        self.probe = probe
        self.on_result = on_result
        self.interval_s = interval_s

    async def once(self) -> ProbeResult:
        result = await self.probe()
        self.on_result(result)
        return result

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_start = loop.time()
        while True:
            await asyncio.sleep(max(0.0, next_start - loop.time()))
            started = loop.time()
            try:
                await self.once()
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in bookkeeping must not end readiness probing for good
                log.exception("probe bookkeeping failed")
            # Fixed rate while probes are fast; after one that overran the interval (a hung server held
            # it until the deadline), the next starts at once: never a burst of catch-up probes.
            next_start = max(started + self.interval_s, loop.time())
