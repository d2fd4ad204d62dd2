"""Autoheal against a real Docker engine: the sidecar restarts a container made unhealthy, and its
back-off holds while restarts do not heal.

No image registry is reachable here, so the test imports a tiny image from a tarball holding Debian's
static busybox (package ``busybox-static``). The container runs a FAKE vLLM: ``busybox nc`` serving a shell
script that answers /health, /v1/models and /v1/chat/completions (non-streamed JSON), with good text
unless a flag file exists, and then with a repeating loop. The flag lives either on a tmpfs (/tmp: a
restart clears it, so the restart heals) or in the container's own filesystem (/var: it survives
restarts, so nothing heals and only the back-off stops a restart loop)."""

from __future__ import annotations

import hashlib
import io
import itertools
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.healthcheck.conftest import Sidecar, free_port, wait_for
from tests.support.require import skip_or_fail

pytestmark = [pytest.mark.docker, pytest.mark.slow]

BUSYBOX = Path("/bin/busybox")
APPLETS = ("sh", "nc", "head", "tr", "printf", "cat", "test", "[", "touch", "rm", "sleep")
HANDLER = r"""#!/bin/sh
# FAKE vLLM for the autoheal test (not vLLM): one HTTP request per connection, from busybox nc -e.
read -r method path proto
len=0
while IFS= read -r line; do
  line=$(printf '%s' "$line" | tr -d '\r')
  [ -z "$line" ] && break
  case "$line" in
    [Cc]ontent-[Ll]ength:*) len=$(printf '%s' "${line#*:}" | tr -d ' ') ;;
  esac
done
[ "$len" -gt 0 ] 2>/dev/null && head -c "$len" >/dev/null
if [ -e /tmp/broken ] || [ -e /var/broken ]; then
  text="the the the the the the the the the the the the the the"
else
  text="Red, yellow and blue are the three primary colors."
fi
case "$path" in
  /health) status="200 OK"; body="" ;;
  /v1/models) status="200 OK"; body='{"object":"list","data":[{"id":"busybox-model"}]}' ;;
  /v1/chat/completions)
    status="200 OK"
    body='{"choices":[{"index":0,"message":{"role":"assistant","content":"'"$text"'"}}]}' ;;
  *) status="404 Not Found"; body='{"error":"not found"}' ;;
esac
printf 'HTTP/1.1 %s\r\nContent-Type: application/json\r\nContent-Length: %s\r\nConnection: close\r\n\r\n%s' \
  "$status" "${#body}" "$body"
"""


def _rootfs_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("bin", "tmp", "var"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(str(BUSYBOX), arcname="bin/busybox")
        for applet in APPLETS:
            info = tarfile.TarInfo(f"bin/{applet}")
            info.type, info.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(info)
        script = HANDLER.encode()
        info = tarfile.TarInfo("handler.sh")
        info.size, info.mode = len(script), 0o755
        tar.addfile(info, io.BytesIO(script))
    return buf.getvalue()


@pytest.fixture(scope="module")
def docker_client() -> Iterator[Any]:
    try:
        import docker
    except ImportError:
        skip_or_fail("docker", "the docker package is not installed")
    try:
        client = docker.from_env(timeout=30)
        client.ping()
    except Exception as exc:
        skip_or_fail("docker", f"no Docker engine reachable ({exc}); run scripts/ci-system-deps.sh")
    if not BUSYBOX.is_file():
        skip_or_fail(
            "docker", "no /bin/busybox (apt-get install busybox-static) to build the test image from"
        )
    yield client
    client.close()


@pytest.fixture(scope="module")
def busybox_image(docker_client: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    data = _rootfs_tar()
    tag = hashlib.sha256(data).hexdigest()[:12]
    name = f"healthcheck-test-fakevllm:{tag}"
    try:
        docker_client.images.get(name)
    except Exception:
        path = tmp_path_factory.mktemp("image") / "rootfs.tar"
        path.write_bytes(data)
        docker_client.api.import_image_from_file(
            str(path), repository="healthcheck-test-fakevllm", tag=tag, changes=['CMD ["/bin/sh"]']
        )
    return name


@pytest.fixture
def fake_vllm_container(docker_client: Any, busybox_image: str) -> Iterator[tuple[Any, int]]:
    port = free_port()
    container = docker_client.containers.run(
        busybox_image,
        ["/bin/busybox", "nc", "-ll", "-p", str(port), "-e", "/handler.sh"],
        name=f"hc-autoheal-test-{port}",
        network_mode="host",  # the sidecar reaches it on loopback, as here nothing else is reachable
        tmpfs={"/tmp": ""},
        detach=True,
    )
    try:
        yield container, port
    finally:
        container.remove(force=True)


def _started_at(container: Any) -> str:
    container.reload()
    return container.attrs["State"]["StartedAt"]


def test_autoheal_restarts_unhealthy_container_and_back_off_holds(
    fake_vllm_container: tuple[Any, int], tmp_path: Path
) -> None:
    container, port = fake_vllm_container
    backoff = 6.0
    sc = Sidecar(
        f"http://127.0.0.1:{port}",
        tmp_path,
        probe_interval_s=0.5,
        probe_timeout_s=2.0,
        failure_threshold=1,
        metrics_interval_s=5.0,
        autoheal=True,
        autoheal_container=container.name,
        autoheal_failures=2,
        autoheal_backoff_s=backoff,
        autoheal_backoff_max_s=60,
        autoheal_stop_timeout_s=1,
        # Only the back-off guards here; the start-period guard (a restarted vLLM's cold start) is in
        # the unit tests.
        autoheal_start_period_s=0,
    )
    try:

        def restarts() -> float:
            return sc.metrics()['healthcheck_autoheal_restarts_total{result="ok"}']

        sc.wait_ready(True, 30)
        assert sc.metrics()["healthcheck_autoheal_enabled"] == 1
        starts = [_started_at(container)]

        # 1. Made unhealthy (flag on tmpfs): restarted once, and the restart heals it.
        container.exec_run(["/bin/busybox", "touch", "/tmp/broken"])
        body = sc.wait_ready(False, 10)
        assert body["reason"] == "degenerate_output", body
        wait_for(lambda: restarts() == 1, 30, what="first restart")
        t1 = time.monotonic()
        sc.wait_ready(True, 30)
        starts.append(_started_at(container))
        assert starts[1] != starts[0], "Docker does not show a new start"

        # 2. Made unhealthy for good (flag survives restarts). A new incident: the next restart waits
        #    for the back-off from the first; restarts that do not heal then come ever further apart
        #    (exponential back-off: base, then 2 x base).
        container.exec_run(["/bin/busybox", "touch", "/var/broken"])
        sc.wait_ready(False, 10)
        times = [t1]
        for n, gap in ((2, backoff), (3, backoff), (4, 2 * backoff)):
            while restarts() < n:
                elapsed = time.monotonic() - times[-1]
                assert elapsed < gap + 15, f"restart {n} not within {gap + 15:g} s of restart {n - 1}"
                time.sleep(0.2)
            times.append(time.monotonic())
            assert restarts() == n, "more than one restart at once"
            assert times[-1] - times[-2] >= gap - 0.5, (
                f"restart {n} {times[-1] - times[-2]:.1f} s after; gap {gap}"
            )
            starts.append(_started_at(container))
            assert starts[-1] != starts[-2], f"Docker does not show restart {n}"
        gaps = [round(b - a, 1) for a, b in itertools.pairwise(times)]
        print(f"autoheal: gaps between restarts {gaps} s (back-off {backoff} s, doubling while not healed)")
        m = sc.metrics()
        assert m['healthcheck_autoheal_held_total{guard="backoff"}'] >= 3
        assert m["healthcheck_autoheal_backoff_seconds"] == 4 * backoff  # the next gap

        log = sc.log()
        assert log.count("autoheal: restarting container " + container.name) == 4
        assert "restart held by back-off" in log
        assert m['healthcheck_autoheal_restarts_total{result="error"}'] == 0
    finally:
        sc.stop()


def test_autoheal_error_is_counted_not_fatal(docker_client: Any, tmp_path: Path) -> None:
    """A container that does not exist: each attempt is an error, counted and logged; the sidecar
    keeps probing."""
    sc = Sidecar(
        f"http://127.0.0.1:{free_port()}",
        tmp_path,
        probe_interval_s=0.3,
        probe_timeout_s=1.0,
        failure_threshold=1,
        autoheal=True,
        autoheal_container="hc-no-such-container",
        autoheal_failures=2,
        autoheal_backoff_s=60,
        autoheal_start_period_s=0,
    )
    try:
        wait_for(
            lambda: sc.metrics()['healthcheck_autoheal_restarts_total{result="error"}'] == 1,
            20,
            what="a failed restart",
        )
        assert "restart of hc-no-such-container failed" in sc.log()
        assert sc.client.get("/livez").status_code == 200
    finally:
        sc.stop()
