"""Which CUDA graph mode is correct for TurboQuant KV + MTP, and what each costs (issue 14 item 2), plus
MTP on/off greedy parity on the newest engine (issue 17 item 5). Runs on the GPU machine with the
bundle's vLLM, every server through ``serve launch --profile qwen3.6-27b-h100 --gpu auto --engine auto``.

    python tests/gpu/graph_modes.py tiny --work /tmp/gm --out DIR    # tiny models: start, parity, stop
    python tests/gpu/graph_modes.py synth-start --work /tmp/gm       # shape-exact checkpoint, servers (setsid)
    python tests/gpu/graph_modes.py synth-bench --work /tmp/gm --out DIR

Each MTP server is compared with the no-spec server of the same KV dtype: speculative decoding is
lossless, so greedy output must be identical token for token. Two passes per pair: the prompts one after
another, and all at once (mixed steps: one request's prefill or plain decode beside another's
speculative rows, the batch shape of vLLM PR 51812's bug). The fp8 pair is the control: it shows how much
a random-weight model's near-flat logits let two batch shapes round differently (the divergence gap in
nats tells a near tie from a real difference). TurboQuant pairs then run with cudagraph_mode NONE (the
kit's rule today), PIECEWISE and FULL_AND_PIECEWISE (a value set in the profile wins over the rules).

The shape-exact synthetic checkpoint (random weights, so its MTP head accepts nothing) gives the speed
of each graph mode at full size, judged by ``vllm bench serve`` at concurrency 1 and 4, beside fp8 + MTP
with graphs on (the kit's choice on this GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # spawn helpers, bandwidth, bench of one server (one copy)
import gpu_suite

ROOT, PY = gpu_suite.ROOT, gpu_suite.PY
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from serve.bench.client import Endpoint  # noqa: E402
from serve.parity import compare as parity  # noqa: E402
from serve.parity.client import ParityClient, resolve_model, scrape_counters, spec_decode_over  # noqa: E402
from serve.parity.prompts import load_prompts  # noqa: E402

NOSPEC = ["serving.speculative=null"]
# MTP 1 set explicitly: the H100 profile asks for MTP 3, and with TurboQuant KV a profile's speculative
# decoding is turned off by rule turboquant-spec-off unless set on the command line
MTP1 = ["serving.speculative.num_speculative_tokens=1"]
TQ = ["serving.kv_cache=turboquant-4bit"]
VARIANTS: dict[str, list[str]] = {
    "fp8-nospec": NOSPEC,
    "fp8-mtp1": MTP1,
    "tq-nospec": [*TQ, *NOSPEC],
    "tq-mtp1-none": [*TQ, *MTP1],  # the rule graphs-off-turboquant-spec decides: NONE
    "tq-mtp1-piecewise": [*TQ, *MTP1, "serving.cudagraph_mode=PIECEWISE"],
    "tq-mtp1-full-and-piecewise": [*TQ, *MTP1, "serving.cudagraph_mode=FULL_AND_PIECEWISE"],
}
PAIRS = [
    ("fp8-nospec", "fp8-mtp1"),
    ("tq-nospec", "tq-mtp1-none"),
    ("tq-nospec", "tq-mtp1-piecewise"),
    ("tq-nospec", "tq-mtp1-full-and-piecewise"),
    ("fp8-nospec", "tq-nospec"),  # KV quantization: not lossless, a quality figure only
]
TINY_MODELS = {
    "random": ["--arch", "qwen3_5", "--vl"],  # random MTP head: drafts rejected, output not constant
    "agreeing": ["--arch", "qwen3_5", "--vl", "--agreeing-mtp"],  # every draft accepted, one token
}
TINY_SIZING = [
    "serving.max_model_len=2048",
    "serving.max_num_seqs=8",
    "serving.gpu_memory_utilization=0.04",
    f"serving.kv_cache_memory_bytes={512 * 2**20}",
]
SYNTH_SIZING = [*compare.KIT_SIZING[:2], "serving.gpu_memory_utilization=0.17", compare.KIT_SIZING[3]]
SYNTH_VARIANTS = ["fp8-mtp1", "tq-mtp1-none", "tq-mtp1-piecewise", "tq-mtp1-full-and-piecewise", "tq-nospec"]
MAX_TOKENS = 64


def kit_argv(model: Path, port: int, sets: list[str], plan_file: Path) -> list[str]:
    argv = [PY, "-m", "serve", "launch", "--profile", "qwen3.6-27b-h100", "--gpu", "auto", "--engine", "auto"]
    for item in [f"model.path={model}", f"serving.port={port}", "serving.host=127.0.0.1", *sets]:
        argv += ["--set", item]
    return [*argv, "--plan-file", str(plan_file)]


def spawn_all(work: Path, servers: dict[str, tuple[Path, list[str]]], base_port: int) -> dict[str, Any]:
    state: dict[str, Any] = {"servers": {}}
    for i, (name, (model, sets)) in enumerate(servers.items()):
        port = base_port + i
        compare.PORTS[name] = port
        argv = kit_argv(model, port, sets, work / f"{name}.plan.json")
        state["servers"][name] = compare.spawn(name, argv, work)
        state["servers"][name]["model"] = str(model)
        gpu_suite.log(f"spawned {name} on {port}")
    return state


def plan_summary(work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}.plan.json"
    if not path.exists():
        return {}
    plan = json.loads(path.read_text())
    argv = plan.get("argv") or []
    picked = {}
    for flag in ("--kv-cache-dtype", "--speculative-config", "--compilation-config", "--linear-backend"):
        if flag in argv:
            picked[flag] = argv[argv.index(flag) + 1]
    picked["--enforce-eager"] = "--enforce-eager" in argv
    return picked


def generate_all(client: ParityClient, prompts: list[str], concurrent: bool) -> list[Any]:
    if not concurrent:
        return [client.generate(p, MAX_TOKENS) for p in prompts]
    with ThreadPoolExecutor(max_workers=len(prompts)) as pool:
        return list(pool.map(lambda p: client.generate(p, MAX_TOKENS), prompts))


def pair_parity(
    state: dict[str, Any], a: str, b: str, prompts: list[str], concurrent: bool
) -> dict[str, Any]:
    sides = []
    http = httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    for name in (a, b):
        url = f"http://127.0.0.1:{state['servers'][name]['port']}"
        endpoint = Endpoint(url, resolve_model(url, None, None, name))
        sides.append((name, endpoint, ParityClient(name, endpoint, http, name)))
    out: dict[str, Any] = {"a": a, "b": b, "concurrent": concurrent, "spec": {}}
    gens = {}
    for name, endpoint, client in sides:
        before = scrape_counters(http, endpoint)
        gens[name] = generate_all(client, prompts, concurrent)
        stats = spec_decode_over(http, endpoint, before, sum(len(g.token_ids) for g in gens[name]))
        out["spec"][name] = None if stats is None else dataclasses.asdict(stats)
    result = parity.compare(
        prompts,
        [g.token_ids for g in gens[a]],
        [g.token_ids for g in gens[b]],
        threshold=1.0,
        texts_a=[g.text for g in gens[a]],
        texts_b=[g.text for g in gens[b]],
        tops_a=[g.top_logprobs for g in gens[a]],
        tops_b=[g.top_logprobs for g in gens[b]],
    )
    out["result"] = result.to_json()
    out["summary"] = parity.summary(result)
    out["table"] = parity.table(result)
    return out


def parity_rows(state: dict[str, Any], pairs: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Greedy parity of each pair whose two servers are ready, the prompts one after another and then all at
    once; a failed pair is a row with its error (a dead server is a result here, not the end of the run)."""
    prompts, many = parity_prompts()
    rows = []
    for a, b in pairs:
        if not all("ready_s" in state["servers"].get(n, {}) for n in (a, b)):
            continue
        for concurrent, batch in ((False, prompts), (True, many)):
            try:
                row = pair_parity(state, a, b, batch, concurrent)
            except Exception as exc:
                row = {"a": a, "b": b, "concurrent": concurrent, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(row)
            gpu_suite.log(
                f"parity {a} vs {b} concurrent={concurrent}: {row.get('summary', row.get('error'))}"
            )
    return rows


def parity_prompts() -> tuple[list[str], list[str]]:
    """The parity prompts sent one after another, and the doubled set sent all at once (mixed steps)."""
    prompts = load_prompts(None)
    return prompts, prompts + [f"{p} Answer in one long paragraph." for p in prompts]


def stop_all(state: dict[str, Any]) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for server in state["servers"].values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server["pid"], sig)
        time.sleep(5)


def cmd_tiny(work: Path, out: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    servers: dict[str, tuple[Path, list[str]]] = {}
    for model_name, args in TINY_MODELS.items():
        path = work / f"tiny-{model_name}"
        subprocess.run([PY, "-m", "serve", "tiny-model", str(path), *args], cwd=ROOT, check=True)
        variants = (
            VARIANTS if model_name == "random" else {k: VARIANTS[k] for k in ("fp8-nospec", "fp8-mtp1")}
        )
        for variant, sets in variants.items():
            servers[f"{model_name}/{variant}"] = (path, [*TINY_SIZING, *sets])
    for name in servers:
        (work / name).parent.mkdir(parents=True, exist_ok=True)
    state = spawn_all(work, servers, 8500)
    try:
        compare.wait_all(work, state, timeout_s=420)
        report: dict[str, Any] = {"servers": {}, "pairs": []}
        for name, server in state["servers"].items():
            report["servers"][name] = {
                "ready_s": server.get("ready_s"),
                "failed": server.get("failed"),
                "flags": plan_summary(work, name),
            }
        pairs = [(f"{m}/{a}", f"{m}/{b}") for m in TINY_MODELS for a, b in PAIRS]
        report["pairs"] = parity_rows(state, pairs)
        (out / "tiny-parity.json").write_text(json.dumps(report, indent=2))
        (out / "tiny-parity.md").write_text(
            "\n\n".join(
                f"## {r['a']} vs {r['b']} ({'concurrent' if r['concurrent'] else 'sequential'})\n\n"
                f"spec: {json.dumps(r.get('spec'))}\n\n{r.get('table', r.get('error'))}"
                for r in report["pairs"]
            )
        )
    finally:
        stop_all(state)
        for name in servers:
            log = work / f"{name}.vllm.log"
            if log.exists():
                target = out / "logs" / f"{name.replace('/', '--')}.log"
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(log.read_bytes()[-200_000:])
    return 0


def cmd_synth_start(work: Path) -> int:
    work.mkdir(parents=True, exist_ok=True)
    bandwidth = compare.copy_bandwidth_gbps()
    model = work / "synth"
    t0 = time.monotonic()
    if not (model / "config.json").exists():
        subprocess.run(
            [PY, "-m", "serve", "synth-model", str(model), "--device", "cuda"], cwd=ROOT, check=True
        )
    servers = {v: (model, [*SYNTH_SIZING, *VARIANTS[v]]) for v in SYNTH_VARIANTS}
    state = spawn_all(work, servers, 8600)
    state.update(model=str(model), bandwidth_gbps=bandwidth, synth_write_s=round(time.monotonic() - t0, 1))
    (work / "synth-state.json").write_text(json.dumps(state, indent=2))
    gpu_suite.log(f"copy bandwidth {bandwidth} GB/s; synth {state['synth_write_s']} s")
    return 0


def cmd_synth_bench(work: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    state = json.loads((work / "synth-state.json").read_text())
    for name, server in state["servers"].items():
        compare.PORTS[name] = server["port"]
    compare.wait_all(work, state, timeout_s=480)
    rows = []
    for name in SYNTH_VARIANTS:
        server = state["servers"][name]
        row: dict[str, Any] = {
            "name": name,
            "ready_s": server.get("ready_s"),
            "flags": plan_summary(work, name),
        }
        if "ready_s" in server:
            compare.warm_up(work, state, name)
            for concurrency, n in compare.LEVELS.items():
                row[f"c{concurrency}"] = compare.bench_one(work, state, name, concurrency, n)
        else:
            row["failed"] = server.get("failed")
        rows.append(row)
        gpu_suite.log(f"{name}: {json.dumps({k: v for k, v in row.items() if k != 'flags'})[:400]}")
        (out / "synth-graph-modes.json").write_text(json.dumps({"state": state, "rows": rows}, indent=2))
    stop_all(state)
    for name in SYNTH_VARIANTS:
        log = work / f"{name}.vllm.log"
        if log.exists():
            (out / "logs").mkdir(exist_ok=True)
            (out / "logs" / f"synth-{name}.log").write_bytes(log.read_bytes()[-200_000:])
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["tiny", "synth-start", "synth-bench"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/gm"))
    ap.add_argument("--out", type=Path, default=Path("out/graph-modes"))
    args = ap.parse_args()
    if args.step == "tiny":
        return cmd_tiny(args.work, args.out)
    if args.step == "synth-start":
        return cmd_synth_start(args.work)
    return cmd_synth_bench(args.work, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
