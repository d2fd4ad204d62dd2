"""Sticky readiness: one slow or failed probe must not flap a ready server to not ready (Docker and load
balancers would pull it for nothing), so it takes ``failure_threshold`` failures in a row to turn not
ready, and ``success_threshold`` good probes in a row to turn ready again. Pure state, no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from healthcheck.probe import ProbeResult


@dataclass
class Readiness:
    failure_threshold: int
    success_threshold: int = 1
    ready: bool = False
    consecutive_failures: int = 0
    consecutive_successes: int = 0
    probes: int = 0
    last: ProbeResult | None = None
    last_failure: ProbeResult | None = None

    def record(self, result: ProbeResult) -> bool:
        """Take one probe outcome; True when the ready state changed."""
        was = self.ready
        self.probes += 1
        self.last = result
        if result.ok:
            self.consecutive_failures = 0
            self.consecutive_successes += 1
            if self.consecutive_successes >= self.success_threshold:
                self.ready = True
        else:
            self.last_failure = result
            self.consecutive_successes = 0
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.failure_threshold:
                self.ready = False
        return self.ready != was

    @property
    def reason(self) -> str:
        """Why the sidecar is (not) ready, as one of the probe REASONS or "not_probed_yet"."""
        if self.last is None:
            return "not_probed_yet"
        if self.ready or self.last_failure is None:
            return self.last.reason
        return self.last_failure.reason

    def body(self, answer_check: str | None = None) -> dict[str, Any]:
        """The /readyz JSON: the verdict first, then enough to act on it. ``answer_check`` says what
        "ready" means (``on: PATTERN``, ``off: REASON``: healthcheck.question)."""
        out: dict[str, Any] = {
            "ready": self.ready,
            "reason": self.reason,
            **({} if answer_check is None else {"answer_check": answer_check}),
            "consecutive_failures": self.consecutive_failures,
            "failure_threshold": self.failure_threshold,
            "probes": self.probes,
        }
        if self.last is None:
            out["detail"] = "no probe has finished yet"
        elif not self.ready and self.last_failure is not None:
            out["detail"] = self.last_failure.detail
            out["failed_stage"] = self.last_failure.stage
        elif self.ready and not self.last.ok:
            # Still ready by stickiness: say so, so nobody is surprised by the next flip.
            out["detail"] = (
                f"last probe failed ({self.last.reason}: {self.last.detail}); ready until "
                f"{self.failure_threshold} failures in a row"
            )
        if self.last is not None:
            out["last_probe"] = {
                "reason": self.last.reason,
                "finished_at": round(self.last.finished_at, 3),
                "total_s": round(self.last.total_s, 4),
                "ttft_s": None if self.last.ttft_s is None else round(self.last.ttft_s, 4),
                "model": self.last.model,
                "sample": self.last.sample,
                "answer_check": self.last.answer_check,
                "engine_reachable": self.last.engine_reachable,
                "health": self.last.health,
            }
        return out
