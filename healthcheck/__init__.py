"""The health and metrics sidecar: readiness that means "answers correctly", Prometheus metrics of its
own and derived from vLLM's, and GPU telemetry.

``python -m healthcheck --vllm-url URL --port N`` serves it; ``python -m healthcheck check`` is the
probe for Docker's HEALTHCHECK. See ``healthcheck.config`` for every option and its environment
variable.
"""

from __future__ import annotations

__all__ = ["ENV_PREFIX"]

ENV_PREFIX = "HEALTHCHECK_"
