"""``python -m healthcheck check``: Docker's HEALTHCHECK. Exits 0 when the sidecar's /readyz says ready,
1 otherwise (not ready, sidecar down, timeout). Standard library only (of the sidecar it imports only
healthcheck.keys, itself standard library), so it starts fast inside the container every few seconds.
It sends the sidecar's API key when it finds one (the same settings as the sidecar: HEALTHCHECK_API_KEY,
VLLM_API_KEY, HEALTHCHECK_API_KEY_FILE), so that its line in ``docker inspect`` carries the reason;
without one a keyed sidecar still gives the verdict (healthcheck.access)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from healthcheck import ENV_PREFIX
from healthcheck.keys import resolve_key


def _default_url() -> str:
    port = os.environ.get(ENV_PREFIX + "PORT", "8889")
    return f"http://127.0.0.1:{port}/readyz"


def _key(environ: Mapping[str, str]) -> str | None:
    key_file = environ.get(ENV_PREFIX + "API_KEY_FILE")
    try:
        return resolve_key(environ.get(ENV_PREFIX + "API_KEY"), Path(key_file) if key_file else None, environ)
    except OSError:
        return None  # the verdict needs no key


def _with_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return url if parts.path not in ("", "/") else urllib.parse.urlunsplit(parts._replace(path="/readyz"))


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m healthcheck check", description=__doc__)
    parser.add_argument(
        "--url",
        default=None,
        help="Sidecar URL; without a path, /readyz is used (default http://127.0.0.1:$HEALTHCHECK_PORT/readyz).",
    )
    parser.add_argument("--timeout", type=float, default=5.0, help="Seconds to wait for an answer.")
    args = parser.parse_args(list(argv))
    url = _with_path(args.url) if args.url else _default_url()
    key = _key(os.environ)
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {key}"} if key else {})
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:
            status, body = response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (OSError, ValueError) as exc:
        print(f"not ready: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = json.loads(body)
        summary = (
            f"{doc['reason']}: {doc.get('detail', '')}".rstrip(": ")
            if "reason" in doc
            else "no detail without the API key"
        )
    except (ValueError, AttributeError):
        summary = body[:200].decode("utf-8", errors="replace")
    if status == 200:
        print(f"ready ({summary})")
        return 0
    print(f"not ready: HTTP {status}: {summary}", file=sys.stderr)
    return 1
