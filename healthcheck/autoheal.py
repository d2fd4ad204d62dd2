"""Autoheal (off by default): restart the vLLM container through the Docker API after N consecutive
failed readiness probes.

Restarting is a blunt tool, so the policy guards against making things worse:
- a back-off between restarts, doubled after every restart that did not bring readiness back, so a
  server that cannot come up is not restarted in a loop;
- it only arms once vLLM has been ready since the sidecar started or since the last restart, or else
  after a start period: a cold start (minutes of torch.compile and warm-up, after a restart too) fails
  every probe and must not count as "broken". After a restart that did not heal, the next one waits
  for the longer of the start period and the back-off;
- one restart at a time, with a timeout around the Docker call.
The policy is pure (time passed in); ``DockerRestarter`` is the I/O edge.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

RESTART = "restart"
WAIT_BACKOFF = "backoff"
WAIT_START_PERIOD = "start_period"


@dataclass
class AutohealPolicy:
    failures_to_restart: int
    backoff_s: float
    backoff_max_s: float
    start_period_s: float
    started_at: float  # when the sidecar started: the start period counts from here until a restart
    failures: int = 0
    ready_since_restart: bool = False
    last_restart_at: float | None = None
    current_backoff_s: float = field(init=False)

    def __post_init__(self) -> None:
        self.current_backoff_s = self.backoff_s

    def observe(self, ok: bool, now: float) -> str | None:
        """Take one probe outcome; RESTART when the container should be restarted now, WAIT_* when it
        would be but a guard holds, else None."""
        if ok:
            self.failures = 0
            self.ready_since_restart = True
            self.current_backoff_s = self.backoff_s  # healed: the next incident starts from the base
            return None
        self.failures += 1
        if self.failures < self.failures_to_restart:
            return None
        since = self.started_at if self.last_restart_at is None else self.last_restart_at
        if not self.ready_since_restart and now - since < self.start_period_s:
            return WAIT_START_PERIOD
        if self.last_restart_at is not None and now - self.last_restart_at < self.current_backoff_s:
            return WAIT_BACKOFF
        return RESTART

    def restarted(self, now: float) -> None:
        """Record a restart attempt (successful or not: either way, wait before the next)."""
        if self.last_restart_at is not None and not self.ready_since_restart:
            self.current_backoff_s = min(self.current_backoff_s * 2, self.backoff_max_s)
        self.last_restart_at = now
        self.failures = 0
        self.ready_since_restart = False

    def seconds_until_allowed(self, now: float) -> float:
        if self.last_restart_at is None:
            return 0.0
        return max(0.0, self.last_restart_at + self.current_backoff_s - now)


class DockerRestarter:
    """Restarts one container by name or id through the Docker Engine API (the ``docker`` package).

    The client is created lazily, so a sidecar with autoheal on still starts when the socket is not
    mounted yet; each attempt reports its error instead."""

    def __init__(
        self, container: str, *, base_url: str | None, stop_timeout_s: int, api_timeout_s: float
    ) -> None:
        self.container = container
        self.base_url = base_url
        self.stop_timeout_s = stop_timeout_s
        self.api_timeout_s = api_timeout_s
        self._client: Any = None

    def _docker(self) -> Any:
        if self._client is None:
            import docker

            if self.base_url:
                self._client = docker.DockerClient(base_url=self.base_url, timeout=int(self.api_timeout_s))
            else:
                self._client = docker.from_env(timeout=int(self.api_timeout_s))
        return self._client

    def restart(self) -> None:
        """Blocking; run it in a thread. Raises on any Docker error."""
        container = self._docker().containers.get(self.container)
        container.restart(timeout=self.stop_timeout_s)

    def close(self) -> None:
        if self._client is not None:
            with contextlib.suppress(Exception):  # closing must not mask the reason we stop
                self._client.close()
