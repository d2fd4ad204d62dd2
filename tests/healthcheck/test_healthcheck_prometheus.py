"""A real Prometheus (Debian's ``prometheus`` binary, started here on loopback) scrapes the sidecar and
vLLM; its query API returns the ready series and the derived spec-decode series.

- with the FAKE vLLM (fault_server.py), whose vLLM-format spec-decode counters grow at known rates: the
  sidecar's derived figures must equal those rates, and PromQL over the raw counters must agree;
- with a real vLLM (CPU build) serving a tiny Qwen3.5 whose MTP head agrees with the model, under MTP
  speculative decoding (marker e2e).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.healthcheck.conftest import free_port, wait_for
from tests.healthcheck.fault_server import SPEC_RATES, FaultServer
from tests.support.require import need_vllm, skip_or_fail


class Prometheus:
    def __init__(self, work: Path, targets: dict[str, str]) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            skip_or_fail(
                "prometheus", "no prometheus binary (apt-get install prometheus; scripts/ci-system-deps.sh)"
            )
        self.port = free_port()
        jobs = "".join(
            f"  - job_name: {job}\n    static_configs:\n      - targets: ['{target}']\n"
            for job, target in targets.items()
        )
        config = work / "prometheus.yml"
        config.write_text(
            f"global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{jobs}"
        )
        self.log_path = work / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={work / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=5.0, trust_env=False)
        wait_for(self._ready, 60, what="prometheus /-/ready")

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited:\n{self.log_path.read_text()}")
        try:
            return self.client.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    def query(self, promql: str) -> list[dict[str, Any]]:
        r = self.client.get("/api/v1/query", params={"query": promql})
        r.raise_for_status()
        doc = r.json()
        assert doc["status"] == "success", doc
        return doc["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if result else None

    def wait_value(self, promql: str, timeout: float = 30) -> float:
        """The first value of ``promql`` once Prometheus has one (scrapes are 1 s apart)."""
        box: list[float] = []

        def have() -> bool:
            v = self.value(promql)
            if v is not None:
                box.append(v)
            return v is not None

        wait_for(have, timeout, what=f"Prometheus series {promql}")
        return box[-1]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.client.close()


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    started: list[Prometheus] = []

    def make(targets: dict[str, str]) -> Prometheus:
        p = Prometheus(tmp_path, targets)
        started.append(p)
        return p

    yield make
    for p in started:
        p.stop()


def test_prometheus_scrapes_ready_and_derived_spec_decode_from_fake_vllm(
    sidecar_factory, fault_server: FaultServer, prometheus_factory
) -> None:
    vllm = f"127.0.0.1:{fault_server.server_port}"
    sc = sidecar_factory(f"http://{vllm}", probe_interval_s=1.0, metrics_interval_s=0.5, spec_window_s=10)
    sc.wait_ready(True, 15)
    prom = prometheus_factory({"healthcheck": f"127.0.0.1:{sc.port}", "vllm": vllm})

    assert prom.wait_value('healthcheck_ready{job="healthcheck"}') == 1.0
    assert prom.wait_value('up{job="vllm"}') == 1.0

    drafts, draft_tokens = SPEC_RATES["drafts"], SPEC_RATES["draft_tokens"]
    accepted = sum(SPEC_RATES["pos"])
    rate = prom.wait_value("healthcheck_vllm_spec_decode_acceptance_ratio")
    assert rate == pytest.approx(accepted / draft_tokens, abs=0.01)
    length = prom.wait_value("healthcheck_vllm_spec_decode_mean_acceptance_length")
    assert length == pytest.approx(1 + accepted / drafts, abs=0.02)
    per_pos = wait_for(
        lambda: (
            len(prom.query("healthcheck_vllm_spec_decode_position_acceptance_ratio")) == 3
            and prom.query("healthcheck_vllm_spec_decode_position_acceptance_ratio")
        ),
        30,
    )
    got = {int(r["metric"]["position"]): float(r["value"][1]) for r in per_pos}
    assert got == pytest.approx({p: a / drafts for p, a in enumerate(SPEC_RATES["pos"])}, abs=0.01)

    # The same figure computed by Prometheus from vLLM's raw counters agrees with the sidecar's.
    promql = (
        "sum(rate(vllm:spec_decode_num_accepted_tokens_total[10s]))"
        " / sum(rate(vllm:spec_decode_num_draft_tokens_total[10s]))"
    )
    assert prom.wait_value(promql) == pytest.approx(rate, abs=0.01)

    # And the not-ready side reaches Prometheus too, with its reason.
    fault_server.mode = "degenerate"
    wait_for(
        lambda: prom.value('healthcheck_ready{job="healthcheck"}') == 0.0, 30, what="ready 0 in Prometheus"
    )
    assert prom.value('healthcheck_last_probe_reason{reason="degenerate_output"}') == 1.0


@pytest.mark.e2e
@pytest.mark.slow
def test_prometheus_with_real_vllm_mtp(
    tiny_models, sidecar_factory, prometheus_factory, tmp_path: Path
) -> None:
    """vLLM serving a tiny Qwen3.5 with an MTP head that agrees with the model: every draft accepted.
    The model emits one constant token, so this is also the shape of the TurboQuant + MTP + CUDA graph
    bug: /health 200 and spec-decode figures that look perfect, while the answer is a loop. The sidecar
    says not ready, and why."""
    need_vllm()
    from tests.healthcheck.vllm_proc import launch_vllm

    if shutil.which("prometheus") is None:
        skip_or_fail(
            "prometheus", "no prometheus binary (apt-get install prometheus; scripts/ci-system-deps.sh)"
        )
    model = tiny_models("qwen3_5", agreeing_mtp=True)
    port = free_port()
    with launch_vllm(model, port, tmp_path, profile="cpu-tiny-mtp") as vllm:
        sc = sidecar_factory(
            vllm.url,
            plan_file=vllm.plan_file,
            probe_interval_s=1.0,
            metrics_interval_s=1.0,
            probe_timeout_s=10.0,
            spec_window_s=30,
        )
        prom = prometheus_factory({"healthcheck": f"127.0.0.1:{sc.port}", "vllm": f"127.0.0.1:{port}"})

        assert prom.wait_value('vllm:spec_decode_num_drafts_total{job="vllm"}', 60) > 0
        assert prom.wait_value("healthcheck_vllm_spec_decode_acceptance_ratio", 60) == pytest.approx(1.0)
        assert prom.wait_value("healthcheck_vllm_spec_decode_mean_acceptance_length") == pytest.approx(2.0)
        assert prom.wait_value('healthcheck_vllm_spec_decode_position_acceptance_ratio{position="0"}') == 1.0
        info = prom.query("healthcheck_plan_info")
        assert info and info[0]["metric"]["speculative_method"] == "mtp", info
        assert info[0]["metric"]["num_speculative_tokens"] == "1"

        assert prom.wait_value('healthcheck_ready{job="healthcheck"}') == 0.0
        wait_for(
            lambda: prom.value('healthcheck_last_probe_reason{reason="degenerate_output"}') == 1.0,
            30,
            what="degenerate_output in Prometheus",
        )
        assert prom.value("healthcheck_engine_reachable") == 1.0
        status, body = sc.readyz()
        assert status == 503 and body["reason"] == "degenerate_output", body
        print("readyz:", body["detail"])
