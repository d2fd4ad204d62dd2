"""Who may read the sidecar: its port must not answer other machines without a key (issue 16).

- At startup (:func:`exposure`): an address other machines can reach (``--published-bind`` where compose
  publishes the port, else ``--host``) with no API key is refused with the fix spelled out, unless
  ``--allow-unauthenticated`` says so (then a loud warning). Loopback without a key stays the default.
- Per request (:func:`authorized`): with a key, every endpoint wants ``Authorization: Bearer <key>``,
  except that ``/livez`` and ``/readyz`` answer a caller without it with their bare verdict (the status
  code and ``{"ready": ...}``), never the detail. Kubernetes' httpGet probes can only send literal
  headers (the key would sit in the manifest in clear) and read only the status code; Docker's
  healthcheck (healthcheck.check) reads the key file and gets the detail. A bare ready/not-ready is what
  vLLM's own /health tells anyone without a key."""

from __future__ import annotations

import hmac
from collections.abc import Iterable

from healthcheck.config import Settings, env_name, flag_name
from serve.launch.addresses import SIDECAR_LOOPBACK_FIX, is_loopback

OPEN_TO_ANYONE = ("/livez", "/readyz")
"""Paths that answer a caller without the key, with their bare verdict only."""


def exposure(settings: Settings, api_key: str | None) -> tuple[str | None, str | None]:
    """(refusal, warning) for the sidecar's listening address: at most one is set."""
    name = "published_bind" if settings.published_bind else "host"
    address = settings.published_bind or settings.host
    if api_key or is_loopback(address):
        return None, None
    shown = f"{flag_name(name)} / {env_name(name)} = {address!r}"
    if settings.published_bind:
        shown += " (compose: HEALTHCHECK_BIND)"
        loopback = SIDECAR_LOOPBACK_FIX
    else:
        loopback = f"listen on loopback ({flag_name('host')} 127.0.0.1, the default)"
    if settings.allow_unauthenticated:
        return None, (
            f"WARNING {shown} WITHOUT AN API KEY ({flag_name('allow_unauthenticated')}): anyone who can "
            "reach it reads /metrics, / and the detail of /readyz; set VLLM_API_KEY to require a key"
        )
    return (
        f"{shown} is reachable from other machines and no API key is set: set one ("
        f"{env_name('api_key_file')}, {env_name('api_key')} or VLLM_API_KEY; compose: VLLM_API_KEY=generate), "
        "which the sidecar then requires as 'Authorization: Bearer <key>', or "
        f"{loopback}, or set {env_name('allow_unauthenticated')}=true "
        f"({flag_name('allow_unauthenticated')}) to serve it open anyway"
    ), None


def authorized(headers: Iterable[tuple[bytes, bytes]], api_key: str | None) -> bool:
    """True without a key, or when an ``Authorization: Bearer <key>`` header carries it (compared in
    constant time)."""
    if not api_key:
        return True
    expected = b"bearer " + api_key.encode()
    for name, value in headers:
        if name.lower() == b"authorization":
            given = value.strip()
            return hmac.compare_digest(given[:7].lower() + given[7:], expected)
    return False
