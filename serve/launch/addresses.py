"""Who can reach an address: the one definition of "loopback" that the launcher's key rule
(serve.launch.rules, api-key-off-loopback) and the sidecar's own key check (healthcheck.access) share.
Pure, standard library only (the sidecar imports it)."""

from __future__ import annotations

import ipaddress

SIDECAR_LOOPBACK_FIX = "publish it on loopback (HEALTHCHECK_BIND=127.0.0.1, the default)"
"""The fix for an open sidecar port in compose, in the launcher's refusal and the sidecar's own."""


def is_loopback(address: str) -> bool:
    """True when only this machine can connect to ``address``: 127.0.0.0/8, ::1, ``localhost``. A host
    name other than ``localhost`` is not: it resolves to whatever the network says."""
    if address.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(address.strip().strip("[]")).is_loopback
    except ValueError:
        return False
