"""Plain ``vllm serve`` against the kit's flags, on one engine and one sizing, judged by vLLM's own
``vllm bench serve`` (issue 17, item 3), on the shape-exact synthetic checkpoint.

    python tests/gpu/compare.py start --work /tmp/compare     # bandwidth, checkpoint, all servers (setsid)
    python tests/gpu/compare.py bench --work /tmp/compare --out DIR   # wait, bench, parity, warm restart

``start`` returns once the servers are spawned in their own sessions, so they outlive the call (the device
machine keeps them while it stays warm) and a second call benches them; the servers compile at the same
time, the benches run one after another so that they do not share the GPU's bandwidth.

The servers:
- ``plain``: ``vllm serve MODEL`` with only the sizing flags that every server here gets (context, batch,
  an explicit KV size so that several servers share the GPU) plus what the engine needs to start at all
  on this machine (``PLAIN_NEEDS``, e.g. no FlashInfer): what a user must type.
- ``kit-nospec``: ``serve launch --profile qwen3.6-27b-h100 --gpu auto --engine auto`` without speculative
  decoding, the same sizing.
- ``kit-mtp1`` / ``kit-mtp3``: the same with MTP 1 and 3 tokens. The checkpoint's weights are random, so its
  MTP head agrees with nothing: these rows show what a draft step costs, not what it gains.
Then ``serve parity`` between kit-nospec and kit-mtp1 (greedy output must be identical: speculative decoding
is lossless), and a warm restart of kit-nospec with the compile cache kept on disk.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gpu_suite  # the suite's start/stop/health helpers, one copy

ROOT = gpu_suite.ROOT
PY = gpu_suite.PY
sys.path.insert(0, str(ROOT))

MAX_MODEL_LEN = 8192
MAX_NUM_SEQS = 4
KV_BYTES = 2 * 2**30
GPU_UTIL = 0.18
INPUT_LEN = OUTPUT_LEN = 512
LEVELS = {1: 4, 4: 16}  # concurrency -> prompts
PLAIN_NEEDS: list[str] = json.loads(os.environ.get("COMPARE_PLAIN_NEEDS", "[]"))
PLAIN_ENV: dict[str, str] = json.loads(os.environ.get("COMPARE_PLAIN_ENV", "{}"))
KIT_SIZING = [
    f"serving.max_model_len={MAX_MODEL_LEN}",
    f"serving.max_num_seqs={MAX_NUM_SEQS}",
    f"serving.gpu_memory_utilization={GPU_UTIL}",
    f"serving.kv_cache_memory_bytes={KV_BYTES}",
]
KIT = {
    "kit-nospec": ["serving.speculative=null"],
    "kit-mtp1": ["serving.speculative.num_speculative_tokens=1"],  # the profile asks for MTP 3
    "kit-mtp3": ["serving.speculative.num_speculative_tokens=3"],
}
PORTS = {"plain": 8400, "kit-nospec": 8401, "kit-mtp1": 8402, "kit-mtp3": 8403}


def vllm_cli(*args: str) -> list[str]:
    return [PY, "-m", "vllm.entrypoints.cli.main", *args]


def copy_bandwidth_gbps() -> float:
    """Device-to-device copy of 4 GiB, bytes read plus written, mean of 10 after 3 warm-ups."""
    import torch

    x = torch.empty(4 * 2**30, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    for _ in range(3):
        y.copy_(x)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(10):
        y.copy_(x)
    end.record()
    torch.cuda.synchronize()
    seconds = start.elapsed_time(end) / 1000
    del x, y
    torch.cuda.empty_cache()
    return round(2 * 4 * 2**30 * 10 / seconds / 1e9, 1)


def spawn(name: str, argv: list[str], work: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    log = (work / f"{name}.vllm.log").open("ab")
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=full_env
    )
    return {"name": name, "pid": proc.pid, "argv": argv, "port": PORTS[name], "started": time.time()}


def plain_argv(model: Path) -> list[str]:
    return vllm_cli(
        "serve",
        str(model),
        "--host",
        "127.0.0.1",
        "--port",
        str(PORTS["plain"]),
        "--max-model-len",
        str(MAX_MODEL_LEN),
        "--max-num-seqs",
        str(MAX_NUM_SEQS),
        "--gpu-memory-utilization",
        str(GPU_UTIL),
        "--kv-cache-memory-bytes",
        str(KV_BYTES),
        *PLAIN_NEEDS,
    )


def kit_argv(name: str, model: Path, work: Path) -> list[str]:
    argv = [PY, "-m", "serve", "launch", "--profile", "qwen3.6-27b-h100", "--gpu", "auto", "--engine", "auto"]
    sets = [f"model.path={model}", f"serving.port={PORTS[name]}", "serving.host=127.0.0.1", *KIT_SIZING]
    for item in sets + KIT[name]:
        argv += ["--set", item]
    return [*argv, "--plan-file", str(work / f"{name}.plan.json")]


def cmd_start(work: Path, names: list[str]) -> int:
    work.mkdir(parents=True, exist_ok=True)
    state: dict[str, Any] = {"bandwidth_gbps": copy_bandwidth_gbps(), "servers": {}}
    gpu_suite.log(f"copy bandwidth {state['bandwidth_gbps']} GB/s")
    model = work / "synth"
    if not (model / "config.json").exists():
        t0 = time.monotonic()
        subprocess.run(
            [PY, "-m", "serve", "synth-model", str(model), "--device", "cuda"], cwd=ROOT, check=True
        )
        state["synth_write_s"] = round(time.monotonic() - t0, 1)
    state["model"] = str(model)
    for name in names:
        if name == "plain":
            state["servers"][name] = spawn(name, plain_argv(model), work, PLAIN_ENV)
        else:
            state["servers"][name] = spawn(name, kit_argv(name, model, work), work)
        gpu_suite.log(f"spawned {name}")
    (work / "state.json").write_text(json.dumps(state, indent=2))
    return 0


def alive(pid: int) -> bool:
    """Running, and not a zombie (an exited child that nobody reaped still answers kill 0)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def wait_all(work: Path, state: dict[str, Any], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    pending = [s for s in state["servers"].values() if "ready_s" not in s and "failed" not in s]
    while pending and time.monotonic() < deadline:
        for server in list(pending):
            if not alive(server["pid"]):
                server["failed"] = "exited; see its log"
                pending.remove(server)
            elif gpu_suite.http(f"http://127.0.0.1:{server['port']}/health", timeout=2)[0] == 200:
                server["ready_s"] = round(time.time() - server["started"], 1)
                pending.remove(server)
                gpu_suite.log(f"{server['name']} ready after {server['ready_s']} s")
        time.sleep(2)
    for server in pending:
        server["failed"] = f"not ready after {timeout_s:.0f} s"
    (work / "state.json").write_text(json.dumps(state, indent=2))


def served_name(work: Path, name: str, model: str) -> str:
    plan_file = work / f"{name}.plan.json"
    if plan_file.exists():
        return str(json.loads(plan_file.read_text()).get("served_model_name") or model)
    return model


def bench_one(work: Path, state: dict[str, Any], name: str, concurrency: int, prompts: int) -> dict[str, Any]:
    server = state["servers"][name]
    model = state["model"]
    result_dir = work / "bench"
    result_dir.mkdir(exist_ok=True)
    filename = f"{name}-c{concurrency}.json"
    before = gpu_suite.http(f"http://127.0.0.1:{server['port']}/metrics", timeout=10)[1]
    argv = vllm_cli(
        "bench",
        "serve",
        "--backend",
        "vllm",
        "--base-url",
        f"http://127.0.0.1:{server['port']}",
        "--endpoint",
        "/v1/completions",
        "--model",
        served_name(work, name, model),
        "--tokenizer",
        model,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(INPUT_LEN),
        "--random-output-len",
        str(OUTPUT_LEN),
        "--num-prompts",
        str(prompts),
        "--max-concurrency",
        str(concurrency),
        "--ignore-eos",
        "--seed",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl",
        "--save-result",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        filename,
    )
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    (work / f"{name}-c{concurrency}.bench.txt").write_text(done.stdout + done.stderr)
    after = gpu_suite.http(f"http://127.0.0.1:{server['port']}/metrics", timeout=10)[1]
    row: dict[str, Any] = {
        "server": name,
        "concurrency": concurrency,
        "prompts": prompts,
        "rc": done.returncode,
    }
    if (result_dir / filename).exists():
        doc = json.loads((result_dir / filename).read_text())
        for key in (
            "completed",
            "output_throughput",
            "mean_tpot_ms",
            "median_tpot_ms",
            "mean_ttft_ms",
            "p99_ttft_ms",
        ):
            row[key] = doc.get(key)
    for counter in ("drafts", "draft_tokens", "accepted_tokens"):
        metric = f"vllm:spec_decode_num_{counter}_total"
        b, a = gpu_suite.metric_sum(before, metric), gpu_suite.metric_sum(after, metric)
        if a is not None:
            row[f"spec_{counter}"] = a - (b or 0)
    return row


def warm_up(work: Path, state: dict[str, Any], name: str) -> None:
    server = state["servers"][name]
    body = json.dumps(
        {"model": served_name(work, name, state["model"]), "prompt": "warm up", "max_tokens": 32}
    ).encode()
    import urllib.request

    request = urllib.request.Request(
        f"http://127.0.0.1:{server['port']}/v1/completions",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as response:
        response.read()


def server_log(work: Path, name: str) -> str:
    """One server's vLLM log as spawn() wrote it ("" before it exists)."""
    path = work / f"{name}.vllm.log"
    return path.read_text(errors="replace") if path.exists() else ""


def int4_kernels(work: Path, name: str, text: str | None = None) -> list[str]:
    text = server_log(work, name) if text is None else text
    return sorted(set(re.findall(r"Using (\w+LinearKernel)", text)))


def _sizes(found: str) -> list[int]:
    return [int(x) for x in found.split(",") if x.strip()]


STARTUP_FACTS: dict[str, tuple[str, Callable[[str], Any]]] = {
    # what a server's log says about its start (the first match of each): graph capture, compile, warm-up
    "cudagraph_capture_sizes": (r"'cudagraph_capture_sizes': \[([\d, ]*)\]", _sizes),
    "cudagraph_mode": (r"'cudagraph_mode': <CUDAGraphMode\.(\w+)", str),
    "graph_capture_s": (r"Graph capturing finished in ([\d.]+) secs", float),
    "graph_capture_gib": (r"Graph capturing finished in [\d.]+ secs, took ([\d.]+) GiB", float),
    "profiling_warmup_s": (r"\[backbone\] Initial profiling/warmup run took ([\d.]+) s", float),
    "init_engine_s": (r"init engine \(profile, create kv cache, warmup model\) took ([\d.]+) s", float),
    "compilation_s": (r"took [\d.]+ s \(compilation: ([\d.]+) s\)", float),
    "kv_cache_tokens": (r"GPU KV cache size: ([\d,]+) tokens", lambda found: int(found.replace(",", ""))),
}


def startup_facts(work: Path, name: str, text: str | None = None) -> dict[str, Any]:
    """:data:`STARTUP_FACTS` read from one server's log (absent ones left out)."""
    text = server_log(work, name) if text is None else text
    return {
        key: convert(m.group(1))
        for key, (pattern, convert) in STARTUP_FACTS.items()
        if (m := re.search(pattern, text))
    }


def ceiling(work: Path, state: dict[str, Any]) -> dict[str, Any] | None:
    from serve.bench.roofline import roofline_from_plan

    plan_file = work / "kit-nospec.plan.json"
    if not plan_file.exists():
        return None
    roofline, why = roofline_from_plan(json.loads(plan_file.read_text()), state["bandwidth_gbps"])
    if roofline is None:
        return {"why_none": why}
    context = INPUT_LEN + OUTPUT_LEN / 2
    return {
        "bandwidth_gbps_measured": state["bandwidth_gbps"],
        "bytes_per_token_c1": roofline.bytes_per_token(context, 1),
        "ceiling_tok_s": {c: round(roofline.ceiling_tok_s(context, c), 1) for c in LEVELS},
    }


def cmd_bench(work: Path, out: Path, timeout_s: float, restart: bool) -> int:
    state = json.loads((work / "state.json").read_text())
    wait_all(work, state, timeout_s)
    rows = []
    for name, server in state["servers"].items():
        if "failed" in server:
            continue
        server["int4_kernels"] = int4_kernels(work, name)
        warm_up(work, state, name)
        for concurrency, prompts in LEVELS.items():
            rows.append(bench_one(work, state, name, concurrency, prompts))
            gpu_suite.log(f"benched {name} c={concurrency}: {rows[-1].get('output_throughput')}")
    result: dict[str, Any] = {"state": state, "rows": rows, "roofline": ceiling(work, state)}
    ok = [s for s in state["servers"] if "failed" not in state["servers"][s]]
    if {"kit-nospec", "kit-mtp1"} <= set(ok):
        parity_json = work / "parity-nospec-vs-mtp1.json"
        done = subprocess.run(
            [
                PY,
                "-m",
                "serve",
                "parity",
                "--base-url-a",
                f"http://127.0.0.1:{PORTS['kit-nospec']}",
                "--base-url-b",
                f"http://127.0.0.1:{PORTS['kit-mtp1']}",
                "--max-tokens",
                "64",
                "--json",
                str(parity_json),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        (work / "parity.txt").write_text(done.stdout + done.stderr)
        result["parity_rc"] = done.returncode
        if parity_json.exists():
            result["parity"] = json.loads(parity_json.read_text())
    if restart and "kit-nospec" in ok:
        result["warm_restart"] = warm_restart(work, state)
    (work / "compare.json").write_text(json.dumps(result, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(work / "compare.json", out / "compare.json")
    gpu_suite.log("wrote compare.json")
    return 0


def warm_restart(work: Path, state: dict[str, Any]) -> dict[str, Any]:
    """Stop kit-nospec, start it again with the compile cache that its first start left on disk."""
    server = state["servers"]["kit-nospec"]
    cold = server.get("ready_s")
    os.killpg(server["pid"], 15)
    for _ in range(60):
        if not alive(server["pid"]):
            break
        time.sleep(1)
    again = spawn("kit-nospec", kit_argv("kit-nospec", Path(state["model"]), work), work)
    state["servers"]["kit-nospec"] = again
    wait_all(work, {"servers": {"kit-nospec": again}}, 400)
    return {"cold_ready_s": cold, "warm_ready_s": again.get("ready_s"), "failed": again.get("failed")}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("step", choices=["start", "bench"])
    parser.add_argument("--work", type=Path, default=Path("/tmp/compare"))
    parser.add_argument("--out", type=Path)
    parser.add_argument("--servers", default="plain,kit-nospec,kit-mtp1,kit-mtp3")
    parser.add_argument("--timeout", type=float, default=420)
    parser.add_argument("--no-restart", action="store_true")
    args = parser.parse_args()
    if args.step == "start":
        return cmd_start(args.work, args.servers.split(","))
    return cmd_bench(args.work, args.out or args.work / "out", args.timeout, not args.no_restart)


if __name__ == "__main__":
    raise SystemExit(main())
