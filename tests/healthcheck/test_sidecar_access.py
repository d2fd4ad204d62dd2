"""No sidecar port answers other machines without a key (issue 16): the startup check of the listening
address (healthcheck.access.exposure), the per-request key (healthcheck.access.authorized), and the real
sidecar, configured as the KServe render runs it, against the FAKE vLLM of fault_server.py (a real HTTP
server, not vLLM: what is under test is what the sidecar answers, and to whom).

Cost: the pure checks ~0 s; two refused starts ~2 s; one keyed sidecar ~4 s."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from healthcheck.access import authorized, exposure
from healthcheck.config import parse_settings
from tests.healthcheck.conftest import REPO, Sidecar, wait_for
from tests.healthcheck.fault_server import MODEL, FaultServer
from tests.targets.support import rendered

KEY = "kit-sidecar-key-0123456789abcdef"


# --- the startup check --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "environ, key, outcome",
    [
        ({}, None, "ok"),  # loopback, the default
        ({"HEALTHCHECK_HOST": "::1"}, None, "ok"),
        ({"HEALTHCHECK_HOST": "0.0.0.0"}, None, "refused"),
        ({"HEALTHCHECK_HOST": "10.1.2.3"}, None, "refused"),
        ({"HEALTHCHECK_HOST": "sidecar.lan"}, None, "refused"),
        ({"HEALTHCHECK_HOST": "0.0.0.0"}, KEY, "ok"),
        ({"HEALTHCHECK_HOST": "0.0.0.0", "HEALTHCHECK_ALLOW_UNAUTHENTICATED": "true"}, None, "warned"),
        # compose: 0.0.0.0 in the container, the published address decides
        ({"HEALTHCHECK_HOST": "0.0.0.0", "HEALTHCHECK_PUBLISHED_BIND": "127.0.0.1"}, None, "ok"),
        ({"HEALTHCHECK_HOST": "0.0.0.0", "HEALTHCHECK_PUBLISHED_BIND": "0.0.0.0"}, None, "refused"),
        ({"HEALTHCHECK_HOST": "0.0.0.0", "HEALTHCHECK_PUBLISHED_BIND": "0.0.0.0"}, KEY, "ok"),
    ],
)
def test_exposure(environ: dict[str, str], key: str | None, outcome: str) -> None:
    refusal, warning = exposure(parse_settings([], environ=environ), key)
    got = "refused" if refusal else "warned" if warning else "ok"
    assert got == outcome, (refusal, warning)
    if refusal:
        assert "no API key is set" in refusal and "HEALTHCHECK_ALLOW_UNAUTHENTICATED=true" in refusal
        assert "127.0.0.1" in refusal  # the loopback fix
        published = "HEALTHCHECK_PUBLISHED_BIND" in environ
        assert ("HEALTHCHECK_BIND=127.0.0.1" in refusal) == published, refusal


@pytest.mark.parametrize(
    "header, ok",
    [
        (f"Bearer {KEY}", True),
        (f"bearer {KEY}", True),
        (f"  Bearer {KEY} ", True),
        (None, False),
        ("Bearer ", False),
        (f"Bearer {KEY}x", False),
        (f"Bearer {KEY[:-1]}", False),
        (f"Basic {KEY}", False),
        (KEY, False),
    ],
)
def test_authorized(header: str | None, ok: bool) -> None:
    headers = [(b"host", b"x")] + ([(b"authorization", header.encode())] if header is not None else [])
    assert authorized(headers, KEY) is ok
    assert authorized(headers, None), "without a key everyone is authorized"


def _start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHCHECK_") and k != "VLLM_API_KEY"}
    full.update({"PYTHONPATH": str(REPO), "HEALTHCHECK_PLAN_FILE": "", **env})
    return subprocess.run(
        [sys.executable, "-m", "healthcheck"], cwd=REPO, env=full, capture_output=True, text=True, timeout=30
    )


@pytest.mark.parametrize(
    "env, names",
    [
        ({"HEALTHCHECK_HOST": "0.0.0.0"}, "--host / HEALTHCHECK_HOST = '0.0.0.0'"),
        (
            {"HEALTHCHECK_HOST": "0.0.0.0", "HEALTHCHECK_PUBLISHED_BIND": "0.0.0.0"},
            "--published-bind / HEALTHCHECK_PUBLISHED_BIND = '0.0.0.0' (compose: HEALTHCHECK_BIND)",
        ),
    ],
)
def test_an_open_address_without_a_key_is_refused_in_one_line(env: dict[str, str], names: str) -> None:
    out = _start({**env, "HEALTHCHECK_PORT": "1"})  # refused before it binds anything
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"healthcheck: {names} is reachable from other machines"), lines[0]


# --- the keyed sidecar as the KServe render runs it ---------------------------------------------
def _kserve_sidecar_container(secret: str | None) -> dict:
    sets = (f"scale.api_key_secret={secret}",) if secret else ()
    _, (_, service), _ = rendered("cpu-tiny", "kserve", sets)
    (sidecar,) = [c for c in service["spec"]["template"]["containers"] if c["name"] == "readiness"]
    return sidecar


def test_kserve_probes_need_no_header_and_the_sidecar_listens_for_them() -> None:
    for secret in ("vllm-api-key", None):
        c = _kserve_sidecar_container(secret)
        env = {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}
        # The kubelet probes the pod's IP: loopback would refuse them.
        assert env["HEALTHCHECK_HOST"] == "0.0.0.0", env
        if secret:
            assert env["VLLM_API_KEY"] == {"secretKeyRef": {"name": secret, "key": "api-key"}}, env
            assert "HEALTHCHECK_ALLOW_UNAUTHENTICATED" not in env, env
        else:  # said in the manifest and in a note, never silent
            assert env["HEALTHCHECK_ALLOW_UNAUTHENTICATED"] == "true", env
        for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/livez")):
            assert c[probe]["httpGet"] == {"path": path, "port": 8889}, c[probe]  # no httpHeaders


def test_a_keyed_sidecar_answers_without_the_key_only_the_bare_verdict(
    sidecar_factory: Callable[..., Sidecar], fault_server: FaultServer, tmp_path: Path
) -> None:
    rendered = {
        e["name"]: e["value"] for e in _kserve_sidecar_container("vllm-api-key")["env"] if "value" in e
    }
    assert rendered["HEALTHCHECK_HOST"] == "0.0.0.0"
    # As the pod runs it (0.0.0.0, the Secret's key in VLLM_API_KEY), but on a free port, pointed at the fake.
    key_file = tmp_path / "api_key"
    key_file.write_text(KEY + "\n")
    sc = sidecar_factory(
        f"http://127.0.0.1:{fault_server.server_port}",
        host="0.0.0.0",
        api_key=KEY,
        probe_interval_s=0.5,
        metrics_interval_s=0.5,
    )
    keyed = sc.wait_ready(True, 20)
    assert keyed["reason"] == "ok" and keyed["last_probe"]["model"] == MODEL, keyed
    wait_for(lambda: sc.metrics().get("healthcheck_vllm_metrics_up") == 1, 10, what="a vLLM /metrics read")

    bare = httpx.Client(base_url=sc.url, timeout=5.0, trust_env=False)
    wrong = httpx.Client(
        base_url=sc.url, timeout=5.0, trust_env=False, headers={"Authorization": "Bearer not-the-key"}
    )
    try:
        for client in (bare, wrong):
            # What a Kubernetes probe sends: no header. The verdict, nothing else.
            r = client.get("/readyz")
            assert (r.status_code, r.json()) == (200, {"ready": True}), r.text
            assert client.get("/livez").json() == {"alive": True}
            assert client.head("/readyz").status_code == 200
            for path in ("/metrics", "/", "/no-such-endpoint"):
                for method in ("GET", "HEAD", "POST"):
                    r = client.request(method, path)
                    assert r.status_code == 401, (method, path, r.status_code, r.text)
                    assert r.headers["www-authenticate"].startswith("Bearer"), r.headers
                    for leak in (KEY, "healthcheck_", MODEL, str(fault_server.server_port), "endpoints"):
                        assert leak not in r.text, (method, path, leak, r.text)
        # With the key: everything (the fixture's client sends it).
        assert sc.client.get("/metrics").status_code == 200
        assert sc.metrics()["healthcheck_ready"] == 1
        root = sc.client.get("/").json()
        assert root["endpoints"] == ["/livez", "/readyz", "/metrics"], root
    finally:
        bare.close()
        wrong.close()

    # Docker's healthcheck in compose: the same key file as the sidecar, so its line has the reason.
    check = [sys.executable, "-m", "healthcheck", "check", "--url", sc.url]
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHCHECK_") and k != "VLLM_API_KEY"}
    base["PYTHONPATH"] = str(REPO)
    with_key = subprocess.run(
        check,
        cwd=REPO,
        env={**base, "HEALTHCHECK_API_KEY_FILE": str(key_file)},
        capture_output=True,
        text=True,
    )
    assert with_key.returncode == 0 and with_key.stdout.startswith("ready (ok"), with_key
    without = subprocess.run(check, cwd=REPO, env=base, capture_output=True, text=True)
    assert without.returncode == 0 and "no detail without the API key" in without.stdout, without
    assert KEY not in sc.log()
