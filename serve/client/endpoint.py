"""Where the OpenAI server is and how to authenticate to it: one base-URL normalisation and one API key
lookup for bench, smoke, parity and the sidecar.

The base URL is the server root (``http://host:port``), without ``/v1``: vLLM serves ``/health``,
``/metrics`` and ``/tokenize`` beside ``/v1``. ``http://host:port``, ``.../``, ``.../v1`` and
``.../v1/`` all name the same server; a path before ``/v1`` (a proxy prefix) is kept.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

from serve.errors import KitError

# The server's own key variable first (vLLM reads VLLM_API_KEY for --api-key), then the OpenAI client's.
API_KEY_ENV: tuple[str, ...] = ("VLLM_API_KEY", "OPENAI_API_KEY")


def normalize_base_url(url: str, *, where: str = "--base-url") -> str:
    """The server root of ``url``: surrounding white space, trailing slashes and one trailing ``/v1``
    dropped. Anything but ``http(s)://HOST[:PORT][/prefix]`` is a KitError naming ``where``."""
    root = url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")].rstrip("/")
    parts = urlsplit(root)
    problem = None
    if parts.scheme not in ("http", "https"):
        problem = "expected http://HOST:PORT (optionally ending in /v1)"
    elif not parts.hostname:
        problem = "no host in it; expected http://HOST:PORT"
    elif parts.query or parts.fragment:
        problem = "a query or fragment has no place in a base URL; give http://HOST:PORT"
    else:
        try:
            parts.port  # noqa: B018 (urlsplit checks the port only when asked)
        except ValueError:
            problem = "the port is not a number from 0 to 65535"
    if problem:
        raise KitError(f"{where} {url!r}: {problem}")
    return root


def api_key_from(explicit: str | None, environ: Mapping[str, str] | None = None) -> str | None:
    """``explicit`` (a flag), else the first of $VLLM_API_KEY and $OPENAI_API_KEY that is set and not
    empty; None means: send no Authorization header."""
    if explicit:
        return explicit
    env = os.environ if environ is None else environ
    for name in API_KEY_ENV:
        if env.get(name):
            return env[name]
    return None


def auth_headers(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


@dataclass(frozen=True)
class Endpoint:
    """One server: its root URL (see :func:`normalize_base_url`), the model to ask, the optional key."""

    base_url: str
    model: str
    api_key: str | None = None

    @property
    def headers(self) -> dict[str, str]:
        return auth_headers(self.api_key)

    def url(self, path: str) -> str:
        """``path`` (``/v1/chat/completions``, ``/metrics``) on this server."""
        return self.base_url + path
