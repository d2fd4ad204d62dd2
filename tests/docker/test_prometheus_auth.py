"""The shipped Prometheus scrapes of vLLM and of the sidecar send the stack's API key: a real Prometheus
(Debian's binary, as in tests/healthcheck/test_healthcheck_prometheus.py) runs the ``vllm`` and
``healthcheck`` jobs exactly as config/prometheus/prometheus.yml writes them (only the targets and the
key file's path changed). The ``healthcheck`` target is the real sidecar (``python -m healthcheck``) with
a key, which it then requires on /metrics (healthcheck/access.py).

The key-guarded endpoint is a FAKE, named so: a small real HTTP server that answers /metrics in the
Prometheus text format only with ``Authorization: Bearer <key>``. vLLM itself (0.32, 0.33) guards /v1,
/v2, /inference and /cohere but not /metrics, so a real vLLM cannot show the scrape failing without the
key; the compose test (test_compose.py) shows the real vLLM scraped with the key in the running stack.

Cost: one Prometheus start, one sidecar start and a few 1-second scrapes, about 7 s. No Docker needed.
"""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import yaml

from tests.healthcheck.conftest import Sidecar
from tests.support.require import skip_or_fail
from tests.support.vllm_server import free_port

REPO = Path(__file__).resolve().parents[2]
KEY = "kit-test-key-0123456789abcdef"
METRICS = b"# TYPE kit_fake_up gauge\nkit_fake_up 1\n"


class KeyGuardedMetrics(ThreadingHTTPServer):
    """FAKE stand-in for a key-guarded /metrics: /guarded/metrics wants the Bearer key, /open/metrics
    wants none (vLLM's /metrics as it is). Records the Authorization headers it saw."""

    def __init__(self) -> None:
        self.seen: list[str | None] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                auth = self.headers.get("Authorization")
                outer.seen.append(auth)
                if self.path == "/guarded/metrics" and auth != f"Bearer {KEY}":
                    self.send_response(401)
                    self.end_headers()
                    return
                if self.path not in ("/guarded/metrics", "/open/metrics"):
                    self.send_response(404)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(METRICS)))
                self.end_headers()
                self.wfile.write(METRICS)

            def log_message(self, *args: object) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _shipped_job(name: str) -> dict:
    config = yaml.safe_load((REPO / "config/prometheus/prometheus.yml").read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == name]
    assert job["authorization"]["credentials_file"] == "/run/kit-secrets/api_key.prometheus", job
    return job


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory) -> Iterator[dict[str, dict]]:
    binary = shutil.which("prometheus")
    if binary is None:
        skip_or_fail(
            "prometheus", "no prometheus binary (apt-get install prometheus; scripts/ci-system-deps.sh)"
        )
    work = tmp_path_factory.mktemp("prom-auth")
    files = {"key": KEY + "\n", "empty": "", "wrong": "not-the-key"}
    for name, text in files.items():
        (work / name).write_text(text)
        (work / name).chmod(0o600)
    server = KeyGuardedMetrics()
    # The real sidecar with the stack's key; no vLLM behind it (its own /metrics answers regardless).
    sidecar = Sidecar("http://127.0.0.1:9", work, api_key=KEY, gpu=False, probe_interval_s=5)

    def job(name: str, path: str, key_file: str | None, shipped_as: str = "vllm") -> dict:
        shipped = _shipped_job(shipped_as)
        j = {**shipped, "job_name": name, "metrics_path": path}
        target = server.target if shipped_as == "vllm" else f"127.0.0.1:{sidecar.port}"
        j["static_configs"] = [{"targets": [target]}]
        if key_file is None:
            j.pop("authorization")
        else:
            j["authorization"] = {**shipped["authorization"], "credentials_file": str(work / key_file)}
        return j

    jobs = [
        job("with_key", "/guarded/metrics", "key"),
        job("without_key", "/guarded/metrics", None),
        job("wrong_key", "/guarded/metrics", "wrong"),
        # The stack without a key writes an empty file: the scrape of vLLM's unguarded /metrics must work.
        job("empty_key_file", "/open/metrics", "empty"),
        job("sidecar_with_key", "/metrics", "key", "healthcheck"),
        job("sidecar_without_key", "/metrics", None, "healthcheck"),
        job("sidecar_wrong_key", "/metrics", "wrong", "healthcheck"),
    ]
    config = {"global": {"scrape_interval": "1s", "scrape_timeout": "1s"}, "scrape_configs": jobs}
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = free_port()
    log = open(work / "prometheus.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={work / 'prometheus.yml'}",
            f"--storage.tsdb.path={work / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0, trust_env=False)
    try:
        deadline = time.monotonic() + 60
        targets: dict[str, dict] = {}
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{(work / 'prometheus.log').read_text()}")
            try:
                doc = client.get("/api/v1/targets").json()
                targets = {t["labels"]["job"]: t for t in doc["data"]["activeTargets"]}
            except (httpx.HTTPError, ValueError, KeyError):
                targets = {}
            if len(targets) == len(jobs) and all(t["health"] != "unknown" for t in targets.values()):
                break
            time.sleep(0.5)
        else:
            raise AssertionError(f"targets not scraped in 60 s: {targets}")
        yield {"targets": targets, "seen": server.seen}
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
        server.shutdown()
        sidecar.stop()


def test_the_scrape_with_the_key_file_succeeds(scrapes):
    target = scrapes["targets"]["with_key"]
    assert target["health"] == "up", target
    assert f"Bearer {KEY}" in scrapes["seen"], "Prometheus did not send the key from the file"


def test_the_scrape_without_the_key_fails(scrapes):
    for job in ("without_key", "wrong_key"):
        target = scrapes["targets"][job]
        assert target["health"] == "down" and "401" in target["lastError"], (job, target)


def test_an_empty_key_file_scrapes_an_unguarded_endpoint(scrapes):
    target = scrapes["targets"]["empty_key_file"]
    assert target["health"] == "up", target


def test_the_keyed_sidecar_is_scraped_with_the_key_file_only(scrapes):
    target = scrapes["targets"]["sidecar_with_key"]
    assert target["health"] == "up", target
    for job in ("sidecar_without_key", "sidecar_wrong_key"):
        target = scrapes["targets"][job]
        assert target["health"] == "down" and "401" in target["lastError"], (job, target)
