"""Tensor parallelism on two GPUs of one host (issue 15), for the device kind ``nvidia-h200-x2``. Not run yet:
written on a CPU machine, its pure parts tested in tests/unit/test_tp_gpu_script.py and its orchestration
dry-run there (``dry-run`` below).

    python3 tests/gpu/tp2.py start --work /tmp/tp2          # GPU count, copy bandwidth per GPU, synth checkpoint,
                                                           # the TP 2 budget server (setsid), returns
    python3 tests/gpu/tp2.py start-rest --work /tmp/tp2     # waits for it, then the other servers (setsid)
    python3 tests/gpu/tp2.py check --work /tmp/tp2 --out DIR   # KV predicted vs logged, smoke, sidecar per GPU
    python3 tests/gpu/tp2.py bench --work /tmp/tp2 --out DIR   # vllm bench serve, TP 1 vs TP 2, c=1 and c=4
    python3 tests/gpu/tp2.py stop --work /tmp/tp2
    python3 tests/gpu/tp2.py dry-run --work /tmp/tp2-dry --out DIR  # CPU: every argv planned and parsed

Run it from an unpacked copy of the kit taken at one commit (``git archive HEAD | gzip > kit.tgz``, carried
and unpacked on the device), after ``source /tmp/site/kit-env.sh`` (docs/gpu-bundle.md), so that the servers
run the code the report names. Every server starts the way users start it, ``python -m serve launch --gpu
auto --engine auto``, on the shape-exact synthetic checkpoint (``python -m serve synth-model``):

- ``tp2-fp8-mtp``: the TP 2 profile with fp8 KV (TurboQuant needs the FA2 bundle; CUDA graphs stay on with
  fp8 on Hopper) and MTP 1, **sized by the planner**: gpu_memory_utilization 0.40, no explicit KV size, and
  started alone, so vLLM's memory profiling sees no neighbour: its "GPU KV cache size" line against the
  plan's prediction tests the planner's per-GPU budget (weights / 2, the TP 2 activations, the overhead).
- ``tp2-fp8-nospec``: the same without speculative decoding, explicit KV size (started after the first is
  ready: an explicit size skips profiling, so several servers can share the GPUs).
- ``tp1-fp8-nospec``: the same at TP 1 on GPU 0 (``CUDA_VISIBLE_DEVICES=0``), for the scaling table.
Then the smoke suite's plumbing checks and a sidecar on each TP 2 server (its NVML telemetry must report both
GPUs), and ``vllm bench serve`` one server at a time: TP 1 vs TP 2 without MTP at c=1 and c=4.

NVLink multicast stays off in every process this script starts, and in itself (the device notes,
KINDS.md): :data:`MULTICAST_OFF` is put into ``os.environ`` before anything else, and every environment built
here is checked to hold it; the launcher's rule multi-gpu-no-nvlink-multicast sets it for vLLM too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MULTICAST_OFF = {
    "NCCL_NVLS_ENABLE": "0",
    "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1",
    "NVSHMEM_DISABLE_NVLS": "1",
}
os.environ.update(MULTICAST_OFF)  # before torch, NCCL or any child can read the environment

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # noqa: E402  (spawn, bench of one server, warm-up: one copy)
import gpu_suite  # noqa: E402

ROOT, PY = gpu_suite.ROOT, gpu_suite.PY
TP2_PROFILE = "qwen3.6-27b-2x-rtx5090-tp2"
SIZING = ["serving.max_model_len=32768", "serving.max_num_seqs=4"]
EXPLICIT_KV = [f"serving.kv_cache_memory_bytes={8 * 2**30}", "serving.gpu_memory_utilization=0.20"]
FP8 = ["serving.kv_cache=fp8"]
NOSPEC = ["serving.speculative=null"]


def servers(model: Path) -> dict[str, dict[str, Any]]:
    """name -> port, the ``--set`` items and the extra environment of each server."""
    return {
        "tp2-fp8-mtp": {
            "port": 8700,
            "sets": [*SIZING, *FP8, "serving.gpu_memory_utilization=0.40"],
            "env": {},
            "sidecar_port": 8710,
            "budget": True,
        },
        "tp2-fp8-nospec": {
            "port": 8701,
            "sets": [*SIZING, *FP8, *NOSPEC, *EXPLICIT_KV],
            "env": {},
            "sidecar_port": 8711,
        },
        "tp1-fp8-nospec": {
            "port": 8702,
            "sets": [*SIZING, *FP8, *NOSPEC, *EXPLICIT_KV, "hardware.tensor_parallel_size=1"],
            "env": {"CUDA_VISIBLE_DEVICES": "0"},
        },
    }


BENCH_PAIRS = [("tp1-fp8-nospec", "tp2-fp8-nospec")]


# ------------------------------------------------------------------ pure parts (tests/unit/test_tp_gpu_script.py)


def kit_argv(
    model: Path, port: int, sets: list[str], plan_file: Path, *, gpu: str = "auto", engine: str = "auto"
) -> list[str]:
    argv = [PY, "-m", "serve", "launch", "--profile", TP2_PROFILE, "--gpu", gpu, "--engine", engine]
    for item in [f"model.path={model}", f"serving.port={port}", "serving.host=127.0.0.1", *sets]:
        argv += ["--set", item]
    return [*argv, "--plan-file", str(plan_file)]


def server_env(extra: dict[str, str], base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child: the base (this process's), the server's own, multicast off on top, so
    that nothing in ``extra`` or the base can turn it back on."""
    return {**(dict(os.environ) if base is None else base), **extra, **MULTICAST_OFF}


_TOKENS = re.compile(
    r"(GPU|CPU) KV cache size: ([\d,]+) tokens, Maximum concurrency for ([\d,]+) tokens per request: ([\d.]+)x"
)
_AVAILABLE = re.compile(r"Available KV cache memory: ([\d.]+) GiB")
_LOADING = re.compile(r"Model loading took ([\d.]+) GiB memory")
_BLOCK = re.compile(r"Setting attention block size to (\d+) tokens")
_TP = re.compile(r"tensor_parallel_size=(\d+)")


def parse_vllm_log(text: str) -> dict[str, Any]:
    """What vLLM's start-up log says about memory. Per-worker lines (one per TP rank) come as lists."""
    out: dict[str, Any] = {
        "available_kv_gib": [float(x) for x in _AVAILABLE.findall(text)],
        "model_loading_gib": [float(x) for x in _LOADING.findall(text)],
    }
    tokens = _TOKENS.findall(text)
    if tokens:
        _, n, length, concurrency = tokens[-1]
        out.update(
            kv_cache_tokens=int(n.replace(",", "")),
            max_model_len=int(length.replace(",", "")),
            max_concurrency=float(concurrency),
        )
    blocks = _BLOCK.findall(text)
    if blocks:
        out["block_size"] = int(blocks[-1])
    tp = _TP.findall(text)
    if tp:
        out["tensor_parallel_size"] = int(tp[-1])
    return out


def kv_comparison(memory: dict[str, Any] | None, logged: dict[str, Any]) -> dict[str, Any]:
    """The plan's prediction (plan.json ``memory``) against the log: tokens, block size and KV bytes."""
    if not memory or "kv_cache_tokens" not in logged:
        return {"comparable": False, "why": "no plan memory" if not memory else "no KV size line in the log"}
    predicted, reported = int(memory["vllm_reported_tokens"]), int(logged["kv_cache_tokens"])
    out: dict[str, Any] = {
        "comparable": True,
        "predicted_tokens": predicted,
        "reported_tokens": reported,
        "tokens_off": predicted - reported,
        "tokens_off_ratio": round((predicted - reported) / reported, 5) if reported else None,
        "predicted_block_size": memory.get("block_size"),
        "reported_block_size": logged.get("block_size"),
    }
    available = logged.get("available_kv_gib") or []
    if available:
        # vLLM sizes the cache to the smallest rank's figure; the planner predicts one GPU's.
        out["predicted_kv_gib"] = round(int(memory["kv_cache_bytes"]) / 2**30, 2)
        out["reported_kv_gib_per_rank"] = available
        out["kv_gib_off"] = round(out["predicted_kv_gib"] - min(available), 2)
    loading = logged.get("model_loading_gib") or []
    if loading and memory.get("weight_bytes"):
        out["predicted_weights_gib_per_gpu"] = round(int(memory["weight_bytes"]) / 2**30, 2)
        out["reported_weights_gib_per_rank"] = loading
    return out


_GPU_SERIES = re.compile(r'^healthcheck_gpu_(\w+)\{[^}]*gpu="(\d+)"[^}]*\} ([-+0-9.eE]+)$', re.M)


def sidecar_gpus(metrics_text: str) -> dict[str, dict[str, float]]:
    """GPU index -> {metric: value} from the sidecar's /metrics (NVML telemetry, one series per GPU)."""
    out: dict[str, dict[str, float]] = {}
    for metric, gpu, value in _GPU_SERIES.findall(metrics_text):
        out.setdefault(gpu, {})[metric] = float(value)
    return out


def scaling_table(rows: list[dict[str, Any]]) -> str:
    """Markdown: one line per server and concurrency, from compare.bench_one's rows."""
    lines = [
        "| server | concurrency | prompts | output tok/s | mean TPOT ms | median TPOT ms | mean TTFT ms |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r.get(k) for k in ("output_throughput", "mean_tpot_ms", "median_tpot_ms", "mean_ttft_ms")]
        shown = [f"{c:.1f}" if isinstance(c, int | float) else "n/a" for c in cells]
        lines.append(f"| {r['server']} | {r['concurrency']} | {r['prompts']} | " + " | ".join(shown) + " |")
    return "\n".join(lines)


def speedups(rows: list[dict[str, Any]], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """TP 2 over TP 1 throughput at each concurrency both were benched at."""
    by = {(r["server"], r["concurrency"]): r for r in rows}
    out = []
    for one, two in pairs:
        for (server, c), row in sorted(by.items()):
            if server != one or (two, c) not in by:
                continue
            a, b = row.get("output_throughput"), by[(two, c)].get("output_throughput")
            if isinstance(a, int | float) and isinstance(b, int | float) and a > 0:
                out.append({"tp1": one, "tp2": two, "concurrency": c, "speedup": round(b / a, 3)})
    return out


# ------------------------------------------------------------------ I/O: the device machine


def _copy_bandwidth_gbps(device: int) -> float:
    """compare.copy_bandwidth_gbps on one GPU (4 GiB, read + written, 10 copies after 3)."""
    import torch

    with torch.cuda.device(device):
        return compare.copy_bandwidth_gbps()


def _spawn(
    work: Path, name: str, spec: dict[str, Any], model: Path, *, gpu: str, engine: str
) -> dict[str, Any]:
    compare.PORTS[name] = spec["port"]
    argv = kit_argv(model, spec["port"], spec["sets"], work / f"{name}.plan.json", gpu=gpu, engine=engine)
    env = server_env(spec["env"])
    assert all(env[k] == v for k, v in MULTICAST_OFF.items())
    server = compare.spawn(name, argv, work, env)
    server["env_extra"] = spec["env"]
    gpu_suite.log(f"spawned {name} on {spec['port']}")
    return server


def _state(work: Path) -> dict[str, Any]:
    return json.loads((work / "tp2-state.json").read_text())


def _save(work: Path, state: dict[str, Any]) -> None:
    (work / "tp2-state.json").write_text(json.dumps(state, indent=2))


def cmd_start(work: Path) -> int:
    import torch

    work.mkdir(parents=True, exist_ok=True)
    count = torch.cuda.device_count()
    state: dict[str, Any] = {"gpus": count, "servers": {}}
    if count < 2:
        gpu_suite.log(f"only {count} GPU(s): this script needs two")
        _save(work, state)
        return 2
    state["bandwidth_gbps"] = [_copy_bandwidth_gbps(i) for i in range(count)]
    gpu_suite.log(f"copy bandwidth per GPU {state['bandwidth_gbps']} GB/s")
    model = work / "synth"
    t0 = time.monotonic()
    if not (model / "config.json").exists():
        subprocess.run(
            [PY, "-m", "serve", "synth-model", str(model), "--device", "cuda"],
            cwd=ROOT,
            check=True,
            env=server_env({}),
        )
    state.update(model=str(model), synth_write_s=round(time.monotonic() - t0, 1))
    for name, spec in servers(model).items():
        if spec.get("budget"):
            state["servers"][name] = _spawn(work, name, spec, model, gpu="auto", engine="auto")
    _save(work, state)
    return 0


def cmd_start_rest(work: Path, timeout_s: float) -> int:
    state = _state(work)
    model = Path(state["model"])
    compare.wait_all(work, state, timeout_s)  # the budget server alone, through its profiling
    _save(work, state)
    for name, spec in servers(model).items():
        if name not in state["servers"]:
            state["servers"][name] = _spawn(work, name, spec, model, gpu="auto", engine="auto")
    _save(work, state)
    return 0


def _start_sidecar(work: Path, name: str, server: dict[str, Any], port: int) -> subprocess.Popen[bytes]:
    argv = [
        PY, "-m", "healthcheck", "--vllm-url", f"http://127.0.0.1:{server['port']}", "--port", str(port),
        "--host", "127.0.0.1", "--plan-file", str(work / f"{name}.plan.json"), "--probe-interval-s", "3",
        "--probe-expect-off", "random weights: synthetic checkpoint",
    ]  # fmt: skip
    log = (work / f"{name}.sidecar.log").open("ab")
    return subprocess.Popen(
        argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=server_env({})
    )


def check_server(
    work: Path, out: Path, name: str, server: dict[str, Any], sidecar_port: int | None
) -> dict[str, Any]:
    plan = json.loads((work / f"{name}.plan.json").read_text())
    logged = parse_vllm_log((work / f"{name}.vllm.log").read_text(errors="replace"))
    row: dict[str, Any] = {
        "server": name,
        "ready_s": server.get("ready_s"),
        "command": plan.get("command"),
        "env": plan.get("env"),
        "multicast_off_in_plan": all((plan.get("env") or {}).get(k) == v for k, v in MULTICAST_OFF.items()),
        "logged": logged,
        "kv": kv_comparison(plan.get("memory"), logged),
    }
    smoke = subprocess.run(
        [PY, "-m", "serve", "smoke", "--base-url", f"http://127.0.0.1:{server['port']}",
         "--plan-file", str(work / f"{name}.plan.json"), "--report", str(out / f"{name}.smoke.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=server_env({}),
    )  # fmt: skip
    (out / f"{name}.smoke.txt").write_text(smoke.stdout + smoke.stderr)
    row["smoke_pass"] = smoke.returncode == 0
    if sidecar_port is not None:
        sidecar = _start_sidecar(work, name, server, sidecar_port)
        try:
            for _ in range(60):
                if gpu_suite.http(f"http://127.0.0.1:{sidecar_port}/livez", timeout=2)[0] == 200:
                    break
                time.sleep(1)
            time.sleep(8)  # two telemetry reads
            text = gpu_suite.http(f"http://127.0.0.1:{sidecar_port}/metrics")[1]
            (out / f"{name}.sidecar.metrics.txt").write_text(text)
            gpus = sidecar_gpus(text)
            row["sidecar_gpus"] = gpus
            expected = int(plan.get("settings", {}).get("tensor_parallel_size") or 1)
            used = [g for g, m in gpus.items() if m.get("memory_used_bytes", 0) > 2**30]
            row["sidecar_reports_every_gpu"] = len(gpus) >= 2 and len(used) >= expected
            row["sidecar_ready"] = gpu_suite.http(f"http://127.0.0.1:{sidecar_port}/readyz")[0] == 200
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(sidecar.pid, signal.SIGTERM)
    return row


def cmd_check(work: Path, out: Path, timeout_s: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = _state(work)
    for name, server in state["servers"].items():
        compare.PORTS[name] = server["port"]
    compare.wait_all(work, state, timeout_s)
    _save(work, state)
    specs = servers(Path(state["model"]))
    rows = []
    for name, server in state["servers"].items():
        if "ready_s" not in server:
            rows.append({"server": name, "failed": server.get("failed")})
            continue
        try:
            rows.append(check_server(work, out, name, server, specs[name].get("sidecar_port")))
        except Exception as exc:  # a failing check is a result, not the end of the run
            rows.append({"server": name, "error": repr(exc)})
        gpu_suite.log(f"checked {name}: {json.dumps(rows[-1].get('kv'))}")
    (out / "tp2-check.json").write_text(json.dumps({"state": state, "rows": rows}, indent=2, default=str))
    _copy_logs(work, out, state)
    return 0


def cmd_bench(work: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = _state(work)
    for name, server in state["servers"].items():
        compare.PORTS[name] = server["port"]
    rows = []
    for name in dict.fromkeys(n for pair in BENCH_PAIRS for n in pair):
        server = state["servers"].get(name, {})
        if "ready_s" not in server:
            continue
        compare.warm_up(work, state, name)
        for concurrency, prompts in compare.LEVELS.items():
            rows.append(compare.bench_one(work, state, name, concurrency, prompts))
            gpu_suite.log(f"benched {name} c={concurrency}: {rows[-1].get('output_throughput')}")
    result = {
        "bandwidth_gbps_per_gpu": state.get("bandwidth_gbps"),
        "rows": rows,
        "speedups": speedups(rows, BENCH_PAIRS),
    }
    (out / "tp2-bench.json").write_text(json.dumps(result, indent=2))
    (out / "tp2-bench.md").write_text(scaling_table(rows) + "\n")
    return 0


def cmd_stop(work: Path) -> int:
    state = _state(work)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for server in state["servers"].values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server["pid"], sig)
        time.sleep(5)
    return 0


def _copy_logs(work: Path, out: Path, state: dict[str, Any]) -> None:
    (out / "logs").mkdir(exist_ok=True)
    for name in state["servers"]:
        for suffix in ("vllm.log", "plan.json", "sidecar.log"):
            path = work / f"{name}.{suffix}"
            if path.exists():
                (out / "logs" / path.name).write_bytes(path.read_bytes()[-300_000:])


def cmd_dry_run(work: Path, out: Path) -> int:
    """On a CPU machine: the mini-scale synthetic checkpoint, then every server's ``serve launch --dry-run``
    with the environment it would get, for the described two RTX 5090s and vLLM 0.33 (NVML and the
    device's vLLM are what it cannot have): plans, the installed vLLM's parser on every argv, plan.json."""
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    model = work / "synth-mini"
    if not (model / "config.json").exists():
        subprocess.run(
            [PY, "-m", "serve", "synth-model", str(model), "--scale", "mini"],
            cwd=ROOT,
            check=True,
            env=server_env({}),
        )
    rows = []
    for name, spec in servers(model).items():
        plan_file = work / f"{name}.plan.json"
        # The mini checkpoint holds 8192 positions.
        sets = [x for x in spec["sets"] if not x.startswith("serving.max_model_len=")] + [
            "serving.max_model_len=4096"
        ]
        argv = kit_argv(model, spec["port"], sets, plan_file, gpu="rtx5090-x2", engine="vllm-0.33")
        done = subprocess.run(
            [*argv, "--dry-run"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
            env=server_env(spec["env"]),
        )
        (out / f"{name}.dry-run.txt").write_text(done.stdout + done.stderr)
        row: dict[str, Any] = {"server": name, "rc": done.returncode}
        if done.returncode == 0:
            plan = json.loads(plan_file.read_text())
            row.update(
                command=plan["command"],
                env=plan["env"],
                multicast_off_in_plan=all(plan["env"].get(k) == v for k, v in MULTICAST_OFF.items()),
                tensor_parallel_size=plan["settings"]["tensor_parallel_size"],
                predicted_tokens=(plan.get("memory") or {}).get("vllm_reported_tokens"),
            )
        rows.append(row)
        gpu_suite.log(f"dry-run {name}: rc {done.returncode}")
    (out / "tp2-dry-run.json").write_text(json.dumps(rows, indent=2))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["start", "start-rest", "check", "bench", "stop", "dry-run"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/tp2"))
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")) / "tp2")
    ap.add_argument("--timeout", type=float, default=540)
    args = ap.parse_args()
    if args.step == "start":
        return cmd_start(args.work)
    if args.step == "start-rest":
        return cmd_start_rest(args.work, args.timeout)
    if args.step == "check":
        return cmd_check(args.work, args.out, args.timeout)
    if args.step == "bench":
        return cmd_bench(args.work, args.out)
    if args.step == "stop":
        return cmd_stop(args.work)
    return cmd_dry_run(args.work, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
