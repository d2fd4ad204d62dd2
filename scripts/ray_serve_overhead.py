#!/usr/bin/env python3
"""What the distributed layer costs, side by side in one run on the CPU: the same cpu-tiny plan served by
vLLM directly and by Ray Serve LLM (one replica, the ``--target ray-serve`` render, the two-node cluster of
tests/targets/ray_cluster.py), each measured by ``python -m serve bench`` at c=1 and c=4, then by
scripts/stream_timing.py (when each event reached the socket, by the kernel's clock, and when it was read:
a stream that came in one burst is the server's doing or the client's, and the summary says which), with
the machine's load sampled throughout (others share these 2 cores).

    .venv/bin/python scripts/ray_serve_overhead.py OUT_DIR [--repeats 5] [--replicas 1] [--ray-first]

Writes OUT_DIR/{direct,ray-serve}/{bench.json,bench.md,stream-timing.json,load.json} and
OUT_DIR/summary.md. One server at a time; each is stopped before the next starts. Needs the Ray venv
(scripts/ray-venv.sh) and a tiny model (python -m serve tiny-model run/models/tiny-qwen3 --arch qwen3).
Figures and how to read them: docs/scale-out.md; raw results: docs/scale-out-results/."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import threading
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

sys.path.insert(0, str(ROOT / "scripts"))
import stream_timing  # noqa: E402

MODEL = "tiny-qwen3"
# Seen 2026-12-02 (docs/scale-out.md, docs/scale-out-results/): the direct server's stream "came in one
# burst" because the client read it late, not because vLLM sent it so: scripts/stream_timing.py saw the
# events reach the socket evenly (kernel timestamps) and the client read them up to 1.1 s later, at nice 0
# and at nice -10 alike. The cause was the server's own session (start_new_session): with
# /proc/sys/kernel/sched_autogroup_enabled each session is one scheduler group, and the busy server's
# group against the group of everything else (the client and the other jobs on the machine) delayed the
# client's wake-ups; the same server in the caller's session: no lag. Ray's workers stay in the caller's
# session. So both servers run in this script's session, and Ray's workers at nice 0 like vLLM (Ray's
# default is 15: they would yield to every nice-0 job here, which a direct vLLM does not).
AUTOGROUP = Path("/proc/sys/kernel/sched_autogroup_enabled")
CLIENT_NICE = 0
PRIORITY: dict[str, int] = {"client_nice": 0, "ray_worker_niceness": 0}


def client(cmd: list[str]) -> subprocess.CompletedProcess[str]:
    """A measuring client at the client priority (``nice -n`` adds to this script's nice, 0)."""
    niced = ["nice", "-n", str(PRIORITY["client_nice"] - os.nice(0)), *cmd]
    return subprocess.run(niced, cwd=ROOT, capture_output=True, text=True, check=False)


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


def wait_models(base_url: str, timeout: float = 600, model: str = MODEL) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        with contextlib.suppress(OSError):
            status, body = http_get(f"{base_url}/v1/models", timeout=10)
            if status == 200 and model in body:
                return time.monotonic() - started
        time.sleep(3)
    raise TimeoutError(f"{base_url} not ready after {timeout:.0f} s")


class LoadSampler:
    """The 1-minute load average and the whole machine's busy CPU share (/proc/stat), every few seconds,
    in a thread, while one server is measured."""

    def __init__(self, period_s: float = 3.0) -> None:
        self.period_s = period_s
        self.samples: list[dict] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _cpu() -> tuple[int, int]:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        idle = fields[3] + fields[4]  # idle + iowait
        return sum(fields) - idle, sum(fields)

    def _run(self) -> None:
        t0, (busy0, total0) = time.monotonic(), self._cpu()
        while not self._stop.wait(self.period_s):
            busy, total = self._cpu()
            self.samples.append({
                "t_s": round(time.monotonic() - t0, 1),
                "loadavg_1m": os.getloadavg()[0],
                "cpu_busy": round((busy - busy0) / max(total - total0, 1), 3),
            })  # fmt: skip
            busy0, total0 = busy, total

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict:
        if not self.samples:
            return {}
        load = [s["loadavg_1m"] for s in self.samples]
        busy = [s["cpu_busy"] for s in self.samples]
        return {
            "loadavg_1m_min": min(load),
            "loadavg_1m_mean": round(statistics.mean(load), 2),
            "loadavg_1m_max": max(load),
            "cpu_busy_mean": round(statistics.mean(busy), 3),
            "samples": len(load),
        }


def measure(base_url: str, out: Path, repeats: int) -> None:
    """serve bench, then the stream timing, with the load sampled over both."""
    with LoadSampler() as load:
        bench(base_url, out, repeats)
        timed = client(
            [
                sys.executable,
                str(ROOT / "scripts/stream_timing.py"),
                base_url,
                "--model",
                MODEL,
                "--requests",
                "5",
            ]
        )
        if timed.returncode != 0:
            raise RuntimeError(f"stream_timing exited {timed.returncode}:\n{timed.stderr[-2000:]}")
        timing = json.loads(timed.stdout)
    (out / "stream-timing.json").write_text(json.dumps(timing, indent=1) + "\n")
    (out / "load.json").write_text(json.dumps({**load.summary(), "series": load.samples}, indent=1) + "\n")


def bench(base_url: str, out: Path, repeats: int) -> None:
    cmd = [sys.executable, "-m", "serve", "bench", "--base-url", base_url, "--model", MODEL, "--concurrency",
           "1,4", "--ignore-eos", "--repeats", str(repeats), "--out", str(out), "--no-progress"]  # fmt: skip
    result = client(cmd)
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
        # Its own process group (to stop it whole), NOT its own session: a new session is a new
        # scheduler autogroup, which left the client's reads up to 1.1 s behind the socket (AUTOGROUP).
        argv,
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        process_group=0,
    )
    try:
        ready = wait_models(f"http://127.0.0.1:{port}")
        measure(f"http://127.0.0.1:{port}", out, repeats)
        return ready
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def with_stream_batching(text: str, interval_ms: float) -> str:
    """The rendered app config with Ray Serve LLM's streaming batch interval set (Ray 2.60's
    ``experimental_configs.stream_batching_interval_ms``, 50 ms by default; the render leaves it)."""
    import yaml

    doc = yaml.safe_load(text)
    for llm in doc["applications"][0]["args"]["llm_configs"]:
        llm.setdefault("experimental_configs", {})["stream_batching_interval_ms"] = interval_ms
    head = "".join(line + "\n" for line in text.splitlines() if line.startswith("#"))
    return (
        head
        + f"# + experimental_configs.stream_batching_interval_ms={interval_ms:g} (ray_serve_overhead.py)\n"
        + (yaml.safe_dump(doc, sort_keys=False))
    )


def ray_serve(
    model_dir: Path, out: Path, repeats: int, replicas: int, batching_ms: float | None = None
) -> tuple[float, str]:
    cluster = RayCluster(
        Path(os.environ.get("KIT_RAY_VENV", ROOT / ".venv-ray")),
        worker_niceness=PRIORITY["ray_worker_niceness"],
    )
    port = free_port()
    host = "0.0.0.0" if cluster.hosts else "127.0.0.1"
    loaded, result = planned(model_dir, port, host, replicas)
    config = out / "app.yaml"
    text = render("ray-serve", loaded, result).text()
    if batching_ms is not None:
        text = with_stream_batching(text, batching_ms)
    config.write_text(text + ("" if cluster.hosts else "proxy_location: HeadOnly\n"))
    try:
        started = time.monotonic()
        cluster.start()
        cluster.serve_run(config)
        base_url = f"http://{cluster.client_host}:{port}"
        wait_models(base_url)
        ready = time.monotonic() - started
        measure(base_url, out, repeats)
        return ready, cluster.mode
    finally:
        cluster.stop()


def table(out: Path) -> list[str]:
    """The 256-token prompt at c=1 and c=4 for both endpoints, the stream timing and the load."""
    rows = [
        "| endpoint | c | tok/s (all streams) | TTFT p50 / p99 (ms) | TPOT p50 (ms) | e2e p50 (ms) | load avg (min-max) |",
        "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    notes = []
    for sub in ("direct", "ray-serve"):
        doc = json.loads((out / sub / "bench.json").read_text())
        load = json.loads((out / sub / "load.json").read_text())
        shown = f"{load.get('loadavg_1m_min', 0):.1f}-{load.get('loadavg_1m_max', 0):.1f}"
        for row in doc["rows"]:
            if row["spec"]["prompt"] != stream_timing.PROMPT:
                continue
            ttft, e2e = row["ttft"]["p50_ms"], row["e2e"]["p50_ms"]
            # A first token after most of the request: the events came in one burst (see the timing).
            burst = " (burst)" if ttft > 0.5 * e2e else ""
            rows.append(
                f"| {sub} | {row['spec']['concurrency']} | {row['output_tok_s']:.1f} | "
                f"{ttft:.0f} / {row['ttft']['p99_ms']:.0f}{burst} | {row['tpot']['p50_ms']:.2f} | {e2e:.0f} | {shown} |"
            )
        timing = json.loads((out / sub / "stream-timing.json").read_text())
        notes.append(f"- {sub} stream timing (c=1, 256 tokens): {stream_timing.summary(timing)}.")
        notes.append(
            f"- {sub} load while measured: 1-min load average {shown} (mean "
            f"{load.get('loadavg_1m_mean', 0)}), CPU busy {100 * load.get('cpu_busy_mean', 0):.0f}%."
        )
    return [*rows, "", *notes]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--ray-first", action="store_true", help="measure Ray Serve first (order effects)")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "run/models/tiny-qwen3")
    parser.add_argument(
        "--client-nice",
        type=int,
        default=CLIENT_NICE,
        help=f"the measuring clients' nice (default {CLIENT_NICE})",
    )
    parser.add_argument(
        "--ray-worker-niceness", type=int, default=0, help="Ray's worker niceness (default 0; Ray's own: 15)"
    )
    parser.add_argument(
        "--stream-batching-ms",
        type=float,
        help="Ray Serve LLM's experimental_configs.stream_batching_interval_ms (default: Ray's, 50)",
    )
    args = parser.parse_args()
    PRIORITY["client_nice"] = args.client_nice if args.client_nice >= 0 or os.geteuid() == 0 else 0
    PRIORITY["ray_worker_niceness"] = args.ray_worker_niceness
    for sub in ("direct", "ray-serve"):
        (args.out / sub).mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    model_dir = args.model_dir.resolve()
    if args.ray_first:
        ray_ready, mode = ray_serve(
            model_dir, args.out / "ray-serve", args.repeats, args.replicas, args.stream_batching_ms
        )
        direct_ready = direct(model_dir, args.out / "direct", args.repeats)
    else:
        direct_ready = direct(model_dir, args.out / "direct", args.repeats)
        ray_ready, mode = ray_serve(
            model_dir, args.out / "ray-serve", args.repeats, args.replicas, args.stream_batching_ms
        )
    lines = [
        f"# Ray Serve LLM vs direct vLLM, cpu-tiny, one run started {started}",
        "",
        f"Order: {'Ray Serve, then direct' if args.ray_first else 'direct, then Ray Serve'}. "
        f"Direct: vllm-cpu 0.32 (ready {direct_ready:.0f} s). Ray Serve: Ray 2.60.0, {args.replicas} replica(s), "
        f"stream batching interval {'50 ms (default)' if args.stream_batching_ms is None else f'{args.stream_batching_ms:g} ms'}, "
        f"{mode} (ready {ray_ready:.0f} s from `ray start`). `serve bench --concurrency 1,4 --ignore-eos "
        f"--repeats {args.repeats}`, max_model_len 2048 on both, then 5 requests of scripts/stream_timing.py; "
        f"{os.cpu_count()} cores shared with other jobs. Priorities: direct vLLM at nice {os.nice(0)}, Ray's "
        f"workers at nice {PRIORITY['ray_worker_niceness']} (RAY_worker_niceness), the measuring clients at "
        f"nice {PRIORITY['client_nice']}; all in this script's session (scheduler autogroup: "
        f"{AUTOGROUP.read_text().strip() if AUTOGROUP.exists() else 'n/a'}).",
        "",
        *table(args.out),
    ]
    for sub in ("direct", "ray-serve"):
        lines += ["", f"## {sub}", "", (args.out / sub / "bench.md").read_text().strip()]
    (args.out / "summary.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(json.dumps({"direct_ready_s": direct_ready, "ray_ready_s": ray_ready}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
