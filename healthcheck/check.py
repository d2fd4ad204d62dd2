"""``python -m healthcheck check``: Docker's HEALTHCHECK. Exits 0 when the sidecar's /readyz says ready,
1 otherwise (not ready, sidecar down, timeout). Standard library only (it imports no other module of
the sidecar), so it starts fast inside the container every few seconds."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence

from healthcheck import ENV_PREFIX


def _default_url() -> str:
    port = os.environ.get(ENV_PREFIX + "PORT", "8889")
    return f"http://127.0.0.1:{port}/readyz"


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
    try:
        with urllib.request.urlopen(url, timeout=args.timeout) as response:
            status, body = response.status, response.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (OSError, ValueError) as exc:
        print(f"not ready: cannot reach {url}: {exc}", file=sys.stderr)
        return 1
    try:
        doc = json.loads(body)
        summary = f"{doc.get('reason')}: {doc.get('detail', '')}".rstrip(": ")
    except (ValueError, AttributeError):
        summary = body[:200].decode("utf-8", errors="replace")
    if status == 200:
        print(f"ready ({summary})")
        return 0
    print(f"not ready: HTTP {status}: {summary}", file=sys.stderr)
    return 1
