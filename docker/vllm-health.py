#!/usr/bin/env python3
"""Docker HEALTHCHECK of the vLLM container: GET /health on the API port inside the container.

Standard library only, so that it works on any base image and costs no import of vLLM or the kit."""

import os
import sys
import urllib.error
import urllib.request

port = os.environ.get("SERVE_CONTAINER_PORT", "8000")
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=8) as resp:
        sys.exit(0 if resp.status == 200 else 1)
except (urllib.error.URLError, OSError) as exc:
    print(f"vLLM /health on port {port}: {exc}", file=sys.stderr)
    sys.exit(1)
