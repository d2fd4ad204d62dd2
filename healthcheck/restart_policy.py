"""When the launcher's watchdog gives up on a wedged vLLM: after ``failures_to_restart`` failed
readiness probes in a row, but never during a cold start.

A cold start (download, torch.compile, warm-up: minutes to tens of minutes) fails every probe and must
not count as "broken": until vLLM has been ready once in this process's life, failures restart nothing
before ``start_period_s`` has passed. Each restart ends the process (Docker starts a new one), so a
server that never comes up is restarted at most once per start period: that is the back-off, and it
needs no state across restarts. Pure: time is passed in."""

from __future__ import annotations

from dataclasses import dataclass

RESTART = "restart"
WAIT_START_PERIOD = "start_period"


@dataclass
class RestartPolicy:
    failures_to_restart: int
    start_period_s: float
    started_at: float
    failures: int = 0
    ready_once: bool = False

    def observe(self, ok: bool, now: float) -> str | None:
        """Take one probe outcome: RESTART when vLLM should be killed now, WAIT_START_PERIOD when it
        would be but a cold start may still be under way, else None."""
        if ok:
            self.failures = 0
            self.ready_once = True
            return None
        self.failures += 1
        if self.failures < self.failures_to_restart:
            return None
        if not self.ready_once and now - self.started_at < self.start_period_s:
            return WAIT_START_PERIOD
        return RESTART
