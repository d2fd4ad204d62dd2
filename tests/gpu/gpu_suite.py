"""The GPU proof (issue 8), run on a machine with an NVIDIA GPU and vLLM importable.

    python tests/gpu/gpu_suite.py plumbing --out DIR     # tiny models, configurations (a)-(d) + INT4
    python tests/gpu/gpu_suite.py perf --out DIR         # shape-exact synthetic checkpoint, bench

Every configuration is started the way users start it, ``python -m serve launch --gpu auto --engine
auto`` (the RTX 5090 run forces ``--gpu rtx5090``), all at once on the one GPU with small memory shares
(they are tiny), each watched by its own sidecar. Then the smoke suite's plumbing checks run against
each, the spec-decode counters are read through the sidecar, and the sidecar's NVML telemetry must name
the GPU. Results land in DIR as JSON and a markdown table (``report.md``), written by this script, not
by hand. No flag is typed here: workarounds come from the launcher's rules.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # run as a script: `python3 tests/gpu/gpu_suite.py`
    sys.path.insert(0, str(ROOT))

from serve.client.launched import LaunchedProcess  # noqa: E402 (after the path above)

REHEARSAL = os.environ.get("GPU_SUITE_CPU_REHEARSAL") == "1"
PY = sys.executable


@dataclass
class Config:
    name: str
    what: str
    profile: str
    model: str  # key into the models dict
    gpu: str = "auto"
    sets: list[str] = field(default_factory=list)
    expect_spec: bool = True
    expect_graphs_off: bool = False


TINY_SETS = [
    "serving.max_model_len=4096",
    "serving.max_num_seqs=4",
    "serving.gpu_memory_utilization=0.12",
    "serving.kv_cache_memory_bytes=1073741824",
]

PLUMBING = [
    Config("a-h100-fp8-mtp", "(a) H100 profile: fp8 KV, MTP, CUDA graphs on", "qwen3.6-27b-h100", "bf16"),
    Config("a-h100-fp8-mtp-int4", "(a) the same on the INT4 AutoRound copy", "qwen3.6-27b-h100", "int4"),
    Config(
        "b-turboquant-mtp",
        "(b) TurboQuant 4-bit KV + MTP: rules turn CUDA graphs off",
        "qwen3.6-27b-h100",
        "bf16",
        # set explicitly: from the profile, rule turboquant-spec-off would turn speculative decoding off
        sets=["serving.kv_cache=turboquant-4bit", "serving.speculative.num_speculative_tokens=1"],
        expect_graphs_off=True,
    ),
    Config(
        "c-no-spec",
        "(c) no speculative decoding",
        "qwen3.6-27b-h100",
        "bf16",
        sets=["serving.speculative=null"],
        expect_spec=False,
    ),
    Config(
        "d-seed-as-rtx5090",
        "(d) the seed profile with the GPU facts forced to the RTX 5090's (SM120 rules; its TurboQuant KV "
        "turns the profile's MTP off: rule turboquant-spec-off)",
        "qwen3.6-27b-rtx5090",
        "bf16",
        gpu="rtx5090",
        expect_spec=False,
    ),
]


# A rehearsal of the orchestration on the CPU build (no GPU): one configuration, the CPU profile. It
# checks this script before device minutes are spent on it; it proves nothing about GPUs.
CPU_REHEARSAL = [
    Config("rehearsal-cpu-mtp", "CPU rehearsal: cpu-tiny-mtp", "cpu-tiny-mtp", "cpu", gpu="none"),
]


def http(url: str, timeout: float = 10.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except OSError as exc:
        return 0, str(exc)


def log(msg: str) -> None:
    print(f"[gpu-suite {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def make_models(workdir: Path) -> dict[str, Path]:
    """Tiny Qwen3.5 hybrid with an agreeing MTP head in the layout vLLM 0.24 registers
    (Qwen3_5ForConditionalGeneration), and its INT4 AutoRound copy."""
    models = {"bf16": workdir / "tiny-qwen3_5-vl", "int4": workdir / "tiny-qwen3_5-vl-int4"}
    common = ["--arch", "qwen3_5", "--agreeing-mtp", "--vl"]
    if REHEARSAL:
        path = workdir / "tiny-qwen3_5-text"
        subprocess.run(
            [PY, "-m", "serve", "tiny-model", str(path), "--arch", "qwen3_5", "--agreeing-mtp"],
            cwd=ROOT,
            check=True,
        )
        return {"cpu": path}
    for key, path in models.items():
        extra = ["--int4"] if key == "int4" else []
        subprocess.run([PY, "-m", "serve", "tiny-model", str(path), *common, *extra], cwd=ROOT, check=True)
    return models


def start(
    config: Config, model: Path, port: int, out: Path, sizing: list[str], sidecar_port: int | None = None
) -> dict[str, Any]:
    """``serve launch`` for one configuration, in its own process group, logging to OUT/NAME.vllm.log."""
    plan_file = out / f"{config.name}.plan.json"
    argv = [PY, "-m", "serve", "launch", "--profile", config.profile, "--gpu", config.gpu, "--engine", "auto"]
    for item in [
        f"model.path={model}",
        f"serving.port={port}",
        "serving.host=127.0.0.1",
        *sizing,
        *config.sets,
    ]:
        argv += ["--set", item]
    argv += ["--plan-file", str(plan_file)]
    proc = LaunchedProcess(argv, out / f"{config.name}.vllm.log", cwd=ROOT).start()
    log(f"started {config.name}")
    return {
        "config": config,
        "proc": proc,
        "port": port,
        "sidecar_port": sidecar_port,
        "plan_file": plan_file,
        "started": time.monotonic(),
        "sidecar": None,
    }


def wait_ready(runs: list[dict[str, Any]], timeout_s: float, out: Path) -> None:
    """Poll /health of every run; a run that exits or outlasts the timeout gets ``failed``. Ready runs
    with a ``sidecar_port`` get their sidecar started."""
    pending = list(runs)
    deadline = time.monotonic() + timeout_s
    while pending and time.monotonic() < deadline:
        for run in list(pending):
            name = run["config"].name
            if run["proc"].returncode is not None:
                run["failed"] = f"exited with {run['proc'].returncode}"
                pending.remove(run)
                log(f"{name} FAILED: {run['failed']}")
            elif http(f"http://127.0.0.1:{run['port']}/health", timeout=2)[0] == 200:
                run["ready_s"] = round(time.monotonic() - run["started"], 1)
                pending.remove(run)
                if run["sidecar_port"] is not None:
                    start_sidecar(run, out)
                log(f"{name} ready after {run['ready_s']} s")
        time.sleep(2)
    for run in pending:
        run["failed"] = f"not ready after {timeout_s:.0f} s"


def start_sidecar(run: dict[str, Any], out: Path) -> None:
    name = run["config"].name
    argv = [
        PY,
        "-m",
        "healthcheck",
        "--vllm-url",
        f"http://127.0.0.1:{run['port']}",
        "--port",
        str(run["sidecar_port"]),
        "--host",
        "127.0.0.1",
        "--plan-file",
        str(run["plan_file"]),
        "--probe-interval-s",
        "3",
        "--spec-window-s",
        "120",
        # The suite's checkpoints have random weights: no answer to check (the plan's readiness layer
        # expects Paris from the real Qwen3.6); the degeneration check still applies.
        "--probe-expect-off",
        "random weights: synthetic checkpoint",
    ]
    run["sidecar"] = LaunchedProcess(argv, out / f"{name}.sidecar.log", cwd=ROOT).start()


def stop(proc: LaunchedProcess | None) -> None:
    """SIGTERM to the process group, SIGKILL after 30 s; returns once the group is gone."""
    if proc is not None:
        proc.stop(grace_s=30)


def metric_sum(text: str, name: str) -> float | None:
    values = [
        float(m.group(1))
        for m in re.finditer(rf"^{re.escape(name)}(?:{{[^}}]*}})? ([-+0-9.eE]+)$", text, re.M)
    ]
    return sum(values) if values else None


def check_one(run: dict[str, Any], out: Path) -> dict[str, Any]:
    config: Config = run["config"]
    result: dict[str, Any] = {"config": config.name, "what": config.what}
    base = f"http://127.0.0.1:{run['port']}"
    plan = json.loads(run["plan_file"].read_text())
    result["command"] = plan["command"]
    result["kv_cache_dtype"] = plan["settings"]["kv_cache_dtype"]
    result["cudagraph_mode"] = plan["settings"]["cudagraph_mode"] or "engine default (graphs on)"
    result["dtype"] = plan["settings"]["dtype"]
    result["env"] = plan["env"]
    result["rules"] = sorted({d["rule"] for d in plan["decisions"] if d.get("rule")})
    result["graphs_off_as_expected"] = (
        plan["settings"]["cudagraph_mode"] == "NONE"
    ) == config.expect_graphs_off
    smoke_report = out / f"{config.name}.smoke.json"
    smoke = subprocess.run(
        [
            PY,
            "-m",
            "serve",
            "smoke",
            "--base-url",
            base,
            "--plan-file",
            str(run["plan_file"]),
            "--report",
            str(smoke_report),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    (out / f"{config.name}.smoke.txt").write_text(smoke.stdout + smoke.stderr)
    result["smoke_pass"] = smoke.returncode == 0
    # a few requests so the spec counters move, then the sidecar's view
    for _ in range(3):
        body = json.dumps(
            {
                "model": plan["served_model_name"],
                "prompt": "Once upon a time",
                "max_tokens": 64,
                "temperature": 0,
                "ignore_eos": True,
            }
        ).encode()
        req = urllib.request.Request(f"{base}/v1/completions", body, {"Content-Type": "application/json"})
        try:
            urllib.request.urlopen(req, timeout=120).read()
        except OSError as exc:
            result.setdefault("errors", []).append(f"completion: {exc}")
    vllm_metrics = http(f"{base}/metrics")[1]
    drafts = metric_sum(vllm_metrics, "vllm:spec_decode_num_draft_tokens_total")
    accepted = metric_sum(vllm_metrics, "vllm:spec_decode_num_accepted_tokens_total")
    result["vllm_spec_draft_tokens"] = drafts
    result["vllm_spec_accepted_tokens"] = accepted
    time.sleep(8)  # two sidecar metric reads
    sidecar_metrics = http(f"http://127.0.0.1:{run['sidecar_port']}/metrics")[1]
    (out / f"{config.name}.sidecar.metrics.txt").write_text(sidecar_metrics)
    spec_lines = [ln for ln in sidecar_metrics.splitlines() if "spec" in ln and not ln.startswith("#")]
    result["sidecar_spec_series"] = spec_lines[:12]
    gpu_lines = [
        ln for ln in sidecar_metrics.splitlines() if ln.startswith("healthcheck_gpu") or "gpu_info" in ln
    ]
    result["sidecar_gpu_series"] = gpu_lines[:8]
    # The GPU NVML reports (the plan's detected facts) must be the one the sidecar's telemetry names; the
    # 2026-12-01 run printed "False" here on an H200 because this compared against "H100".
    gpu_name = str(((plan.get("facts") or {}).get("gpu") or {}).get("name") or "?")
    result["sidecar_sees_gpu"] = any(f'name="{gpu_name}"' in ln for ln in gpu_lines)
    result["sidecar_ready"] = http(f"http://127.0.0.1:{run['sidecar_port']}/readyz")[0] == 200
    result["spec_counters_seen"] = bool(drafts) if config.expect_spec else drafts in (None, 0.0)
    return result


def plumbing(out: Path, timeout_s: float) -> int:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path("/tmp/gpu-suite-models")
    models = make_models(workdir)
    configs = CPU_REHEARSAL if REHEARSAL else PLUMBING
    sizing = [] if REHEARSAL else TINY_SETS
    runs = [
        start(config, models[config.model], 8100 + i, out, sizing, sidecar_port=8200 + i)
        for i, config in enumerate(configs)
    ]
    wait_ready(runs, timeout_s, out)
    time.sleep(10)  # let the sidecars probe
    results = []
    for run in runs:
        name = run["config"].name
        if "failed" in run:
            tail = (out / f"{name}.vllm.log").read_text(errors="replace").splitlines()[-25:]
            results.append(
                {
                    "config": name,
                    "what": run["config"].what,
                    "came_up": False,
                    "failure": run["failed"],
                    "log_tail": tail,
                }
            )
        else:
            try:
                result = check_one(run, out)
            except Exception as exc:  # report and carry on with the others
                result = {"config": name, "what": run["config"].what, "error": repr(exc)}
            result.update(came_up=True, ready_s=run["ready_s"])
            results.append(result)
        log(f"checked {name}")
    for run in runs:
        stop(run.get("sidecar"))
        stop(run["proc"])
    write_report(out, "plumbing", results)
    return 0 if all(r.get("came_up") and r.get("smoke_pass") for r in results) else 1


def write_report(out: Path, kind: str, results: list[dict[str, Any]]) -> None:
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": sys.version.split()[0]}
    try:
        import vllm

        env["vllm"] = vllm.__version__
    except Exception as exc:
        env["vllm"] = f"not importable: {exc}"
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
        )
        env["gpu"] = smi.stdout.strip()
    except FileNotFoundError:
        env["gpu"] = "none (no nvidia-smi)"
    (out / f"{kind}.json").write_text(
        json.dumps({"environment": env, "results": results}, indent=2, default=str)
    )
    lines = [
        f"# GPU {kind} run",
        "",
        f"{env['date']}; GPU: {env['gpu']}; vLLM {env['vllm']}; Python {env['python']}",
        "",
    ]
    if kind == "plumbing":
        lines += [
            "| configuration | came up (s to ready) | KV dtype | CUDA graphs | smoke plumbing | spec counters "
            "(draft/accepted) | sidecar names the GPU |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            if not r.get("came_up"):
                lines.append(f"| {r['what']} | no: {r.get('failure')} | | | | | |")
                continue
            spec = f"{r.get('vllm_spec_draft_tokens')}/{r.get('vllm_spec_accepted_tokens')}"
            lines.append(
                f"| {r['what']} | yes ({r['ready_s']}) | {r.get('kv_cache_dtype')} | {r.get('cudagraph_mode')} | "
                f"{'pass' if r.get('smoke_pass') else 'FAIL'} | {spec} | {r.get('sidecar_sees_gpu')} |"
            )
    else:
        lines += [
            "| configuration | came up (s) | KV dtype | CUDA graphs | MTP tokens | int4 kernel | prompt | "
            "max_tokens | tok/s | % of roofline |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for r in results:
            if not r.get("came_up"):
                lines.append(f"| {r['what']} | no: {r.get('failure')} | | | | | | | | |")
                continue
            rows = [x for x in (r.get("bench") or {}).get("rows") or [] if x["spec"]["kind"] == "single"]
            for row in rows or [{"spec": {}}]:
                fraction = row.get("roofline_fraction")
                pct = f"{100 * fraction:.0f}%" if isinstance(fraction, float) else "n/a"
                lines.append(
                    f"| {r['what']} | {r['ready_s']} | {r['kv_cache_dtype']} | {r['cudagraph_mode']} | "
                    f"{r['num_speculative_tokens']} | {','.join(r.get('int4_kernels') or []) or '?'} | "
                    f"{row['spec'].get('prompt', '')[:40]} | {row['spec'].get('max_tokens', '')} | "
                    f"{_fmt(row, 'output_tok_s')} | {pct} |"
                )
    (out / f"report-{kind}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


# Performance on the shape-exact synthetic checkpoint (random weights: MTP accepts nothing, so MTP rows
# show the cost of a draft step, not its benefit). Three servers share the GPU (0.30 of its memory and an
# explicit 2 GiB KV cache each, so that vLLM's memory profiling of one is not confused by the others);
# the benches run one after another so that they do not share bandwidth.
PERF_SETS = [
    "serving.max_model_len=8192",
    "serving.gpu_memory_utilization=0.30",
    "serving.kv_cache_memory_bytes=2147483648",
]
PERF_BATCHES = {
    "perf": [
        Config(
            "p-stock-fp8-graphs",
            "stock flags as in the anchor: bf16, fp8 KV, CUDA graphs, no MTP, 1 sequence",
            "qwen3.6-27b-h100",
            "synth",
            sets=["serving.speculative=null", "serving.max_num_seqs=1"],
            expect_spec=False,
        ),
        Config(
            "p-fast-profile",
            "qwen3.6-27b-rtx5090-fast as the rules adapt it to the H100 (fp8, graphs on, MTP 3)",
            "qwen3.6-27b-rtx5090-fast",
            "synth",
            sets=["serving.max_num_seqs=1"],
        ),
        Config(
            "p-seed-profile",
            "qwen3.6-27b-rtx5090 (seed) as the rules adapt it to the H100 (TurboQuant, MTP off by rule "
            "turboquant-spec-off, graphs on)",
            "qwen3.6-27b-rtx5090",
            "synth",
            sets=["serving.max_num_seqs=1"],
            expect_spec=False,
        ),
    ],
    "levers": [
        Config(
            "l-marlin",
            "stock + int4 on Marlin instead of Machete (VLLM_DISABLED_KERNELS=MacheteLinearKernel)",
            "qwen3.6-27b-h100",
            "synth",
            sets=[
                "serving.speculative=null",
                "serving.max_num_seqs=1",
                "serving.env={VLLM_DISABLED_KERNELS: MacheteLinearKernel}",
            ],
            expect_spec=False,
        ),
        Config(
            "l-async-scheduling",
            "stock + --async-scheduling",
            "qwen3.6-27b-h100",
            "synth",
            sets=[
                "serving.speculative=null",
                "serving.max_num_seqs=1",
                "serving.extra_args=[--async-scheduling]",
            ],
            expect_spec=False,
        ),
        Config(
            "l-mtp1-graphs",
            "stock + MTP 1 token, graphs on (the draft step's cost)",
            "qwen3.6-27b-h100",
            "synth",
            sets=["serving.max_num_seqs=1", "serving.speculative.num_speculative_tokens=1"],
        ),
    ],
}


def perf(out: Path, batch: str, timeout_s: float, model_dir: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    configs = PERF_BATCHES[batch]
    if REHEARSAL:
        model_dir = Path("/tmp/gpu-suite-models/tiny-qwen3")
        subprocess.run([PY, "-m", "serve", "tiny-model", str(model_dir)], cwd=ROOT, check=True)
        configs = [
            Config(c.name, c.what, "cpu-tiny", "x", gpu="none", expect_spec=False) for c in configs[:2]
        ]
    elif not (model_dir / "config.json").exists():
        subprocess.run(
            [PY, "-m", "serve", "synth-model", str(model_dir), "--device", "cuda"], cwd=ROOT, check=True
        )
    sizing = ["serving.max_model_len=4096"] if REHEARSAL else PERF_SETS
    runs = [start(config, model_dir, 8300 + i, out, sizing) for i, config in enumerate(configs)]
    wait_ready(runs, timeout_s, out)
    results = []
    for run in runs:
        config = run["config"]
        result: dict[str, Any] = {"config": config.name, "what": config.what}
        if "failed" in run:
            tail = (out / f"{config.name}.vllm.log").read_text(errors="replace").splitlines()[-25:]
            result.update(came_up=False, failure=run["failed"], log_tail=tail)
            results.append(result)
            continue
        plan = json.loads(run["plan_file"].read_text())
        result.update(
            came_up=True,
            ready_s=run["ready_s"],
            command=plan["command"],
            env=plan["env"],
            kv_cache_dtype=plan["settings"]["kv_cache_dtype"],
            dtype=plan["settings"]["dtype"],
            cudagraph_mode=plan["settings"]["cudagraph_mode"] or "engine default (graphs on)",
            num_speculative_tokens=plan["settings"]["num_speculative_tokens"],
        )
        kernel = re.findall(
            r"Using (\w+LinearKernel)", (out / f"{config.name}.vllm.log").read_text(errors="replace")
        )
        result["int4_kernels"] = sorted(set(kernel))
        bench_dir = out / f"{config.name}.bench"
        bench = subprocess.run(
            [
                PY,
                "-m",
                "serve",
                "bench",
                "--plan-file",
                str(run["plan_file"]),
                "--concurrency",
                "1",
                "--ignore-eos",
                "--repeats",
                "1",
                "--warmup",
                "1",
                "--temperature",
                "0",
                # The roofline's bandwidth: one measured in this same session where the runner passes it
                # (GPU_SUITE_BANDWIDTH_GBPS), else plan.json's facts.gpu, the detected GPU's description.
                *(
                    ["--bandwidth-gbps", os.environ["GPU_SUITE_BANDWIDTH_GBPS"]]
                    if os.environ.get("GPU_SUITE_BANDWIDTH_GBPS")
                    else []
                ),
                "--no-progress",
                "--out",
                str(bench_dir),
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=900,
        )
        (out / f"{config.name}.bench.txt").write_text(bench.stdout + bench.stderr)
        result["bench_rc"] = bench.returncode
        if (bench_dir / "bench.json").exists():
            result["bench"] = json.loads((bench_dir / "bench.json").read_text())
        results.append(result)
        log(f"benched {config.name}")
    for run in runs:
        stop(run["proc"])
    write_report(out, batch, results)
    return 0 if all(r.get("came_up") and r.get("bench_rc") == 0 for r in results) else 1


def _fmt(row: dict[str, Any], key: str) -> str:
    value = row.get(key)
    if value is None:
        return "n/a"
    return f"{value:.1f}" if isinstance(value, float) else str(value)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("phase", choices=["plumbing", "perf", "levers"])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--timeout", type=float, default=540)
    parser.add_argument("--model-dir", type=Path, default=Path("/tmp/synth-qwen3.6-27b"))
    args = parser.parse_args()
    if args.phase == "plumbing":
        return plumbing(args.out, args.timeout)
    return perf(args.out, args.phase, args.timeout, args.model_dir)


if __name__ == "__main__":
    sys.exit(main())
