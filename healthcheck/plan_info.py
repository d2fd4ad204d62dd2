"""The launcher's plan.json (docs/plan-json.md), read for the plan info metric, the served model name
and the readiness block (the probe's question and expected answer, healthcheck.question).

The sidecar may start before the launcher has written the file, and a restarted launcher rewrites it,
so it is re-read whenever its modification time or size changes. It is parsed through the one model of
the document (serve.launch.plan_document): missing keys (older files) become empty label values, extra
keys (newer files) are ignored, and a value of the wrong type makes the file unreadable (logged; the last
good reading stays)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from healthcheck.question import resolve_question
from serve.errors import KitError
from serve.launch.plan_document import Facts, GpuRecord, PlanDocument, Settings, parse

log = logging.getLogger(__name__)

PLAN_LABELS = (
    "profile",
    "served_model_name",
    "kv_cache_dtype",
    "speculative_method",
    "num_speculative_tokens",
    "cudagraph_mode",
    "vllm_version",
    "gpu",
    "gpu_origin",  # detected | description | assumed (the profile's, not seen) | none; "" in older plans
    "answer_check",  # "on: PATTERN" or "off: REASON"; the sidecar puts in the one its probe uses
)
_MAX_PLAN_BYTES = 4 << 20


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def plan_labels(plan: PlanDocument | dict[str, Any]) -> dict[str, str]:
    """Label values of the info metric from a plan (a parsed JSON object is parsed through the model)."""
    doc = plan if isinstance(plan, PlanDocument) else parse(plan, "plan")
    settings = doc.settings or Settings()
    facts = doc.facts or Facts()
    gpu = facts.gpu or GpuRecord()
    gpu_name = _text(gpu.name)
    if gpu_name and gpu.count is not None and gpu.count > 1:
        gpu_name = f"{gpu.count}x {gpu_name}"
    return {
        "profile": _text(doc.profile),
        "served_model_name": _text(doc.served_model_name or doc.model),
        "kv_cache_dtype": _text(settings.kv_cache_dtype),
        "speculative_method": _text(settings.speculative_method),
        "num_speculative_tokens": _text(settings.num_speculative_tokens),
        "cudagraph_mode": _text(settings.cudagraph_mode),
        "vllm_version": _text(facts.engine.version if facts.engine else None),
        "gpu": gpu_name,
        "gpu_origin": _text(gpu.origin),
        "answer_check": resolve_question(
            prompt=None,
            max_tokens=None,
            extra_body=None,
            expect=None,
            expect_off=None,
            plan_block=doc.readiness,
        ).answer_check,
    }


class PlanFile:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self.labels: dict[str, str] | None = None
        self.served_model_name: str | None = None
        self.readiness: Any = None  # the plan's readiness block as read (validated where it is used)

    def refresh(self) -> None:
        """Re-read the file if it changed; keep the last good reading when it became unreadable."""
        if self.path is None:
            return
        try:
            st = os.stat(self.path)
        except OSError:
            if self._stamp is not None:
                log.warning("plan file %s disappeared; keeping its last reading", self.path)
                self._stamp = None
            return
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            if st.st_size > _MAX_PLAN_BYTES:
                raise ValueError(f"larger than {_MAX_PLAN_BYTES} bytes")
            plan = parse(json.loads(self.path.read_text(encoding="utf-8")), str(self.path))
        except (OSError, ValueError, KitError) as exc:
            log.warning("plan file %s unreadable (%s); plan info metric unchanged", self.path, exc)
            return
        self.labels = plan_labels(plan)
        self.served_model_name = self.labels["served_model_name"] or None
        self.readiness = plan.readiness
        log.info("plan file %s: %s", self.path, self.labels)
