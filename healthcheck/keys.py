"""Which API key the sidecar uses, defined once for the server (healthcheck.config) and for Docker's
HEALTHCHECK probe (healthcheck.check, which must stay standard-library only to start fast). The same key
is vLLM's (sent by the probes and the reads of vLLM's /metrics) and the sidecar's own (required on its
endpoints that carry information: healthcheck.access)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

VLLM_ENV = "VLLM_API_KEY"


def resolve_key(explicit: str | None, key_file: Path | None, environ: Mapping[str, str]) -> str | None:
    """The explicit value (``--api-key`` / ``HEALTHCHECK_API_KEY``), else ``VLLM_API_KEY`` (compose often
    shares vLLM's environment), else the file's content (``--api-key-file``; an empty file: no key).
    OSError when the file cannot be read."""
    if explicit:
        return explicit
    if environ.get(VLLM_ENV):
        return environ[VLLM_ENV]
    if key_file is not None:
        return key_file.read_text(encoding="utf-8").strip() or None
    return None
