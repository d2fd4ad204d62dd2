"""The ceiling of MTP and the levers of issue 14, on the GPU machine with the bundle's vLLM, side by side in
one run. One background orchestrator (``run``) does everything in order and writes its results as it goes;
short ``poll`` calls bring them back while it runs (the device machine stays warm between back-to-back calls).

    setsid python tests/gpu/levers.py run --work /tmp/lv > /tmp/lv/run.log 2>&1 &
    python tests/gpu/levers.py poll --work /tmp/lv --out $OUT --wait 500

Phase 1, the ceiling (item 1): two shape-exact synthetic checkpoints (``serve synth-model``), random weights
(its MTP head accepts nothing: the 0% bracket) and ``--agreeing-mtp`` (every draft accepted: the 100%
bracket). Servers, all ``serve launch --profile qwen3.6-27b-h100 --gpu auto --engine auto`` at one sizing:
agreeing no-spec, MTP 1, 2, 3; random MTP 3. Each benched with vLLM's own benchmark (``vllm bench serve``'s
code, driven in one process so that its import is paid once) at c=1 and c=4, greedy (temperature 0: the
bench no longer defaults to it), 512 in / 512 out, spec counters read from /metrics around each run; then
greedy parity agreeing no-spec vs MTP 3 (sequential and concurrent).

Phase ``levers`` (items 3 and 5), five servers on the agreeing checkpoint (without speculative decoding the
weights' values do not change the speed; one checkpoint for both phases saves a 30 s write):
- ``kit``: the kit without speculative decoding at max_num_seqs 4 (Marlin by rule), the baseline;
- ``kit-mnbt2048``: the same with ``--max-num-batched-tokens 2048`` (vLLM's default on this GPU: 8192);
- ``kit-noasync``: the same with ``--no-async-scheduling`` (on by default in 0.33);
- ``kit16``: the kit at max_num_seqs 16 (the Marlin rule does not fire: the engine's pick, Machete);
- ``kit16-marlin``: the same command plus ``--linear-backend marlin`` (the rule's bound, at 8 and 16 streams).
``kit``, ``kit-mnbt2048`` and ``kit-noasync`` at c=1 and c=4; ``kit`` and ``kit-mnbt2048`` under a long-prompt
load (4096 in / 128 out, c=4); ``kit16*`` at c=1, 8, 16. With ``--multi-turn``, also on ``kit`` the
multi-turn workload (4 turns, each adding up to ~1800 tokens): TTFT of turns 2-4 with the prefix cache usable
(one ``cache_salt`` per conversation) vs defeated (a fresh salt per request), prefix-cache counters read from
/metrics (measured on 2026-12-02 by engines.py, so off by default).

Phase ``spec-graphs``: FULL CUDA graphs for speculative decoding (the engine's default, which the kit keeps)
vs PIECEWISE only, and the capture sizes (the engine's list plus 12, MTP 3's verify batch at 3 streams), MTP 3
on the agreeing checkpoint, c=1 and c=4 (and c=3 for the capture sizes), each judged by greedy parity against
the no-spec server. Phase ``plain``: plain ``vllm serve`` vs the kit (measured three times already; for a
rerun). Phase ``int4``: the int4 kernels vLLM offers this layer on SM90 (Marlin, the kit's; Machete; Humming;
Triton) at max_num_seqs 4, c=1 and c=4, each judged by greedy parity against Marlin; phase
``int4-spec``: Marlin, Machete and Humming under MTP 3 (16 tokens per step at 4 streams). Every server's start
(graph capture sizes, time and memory, compile and warm-up) is read from its log into results.json. Memory
allows five 27B servers per phase.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # spawn, bandwidth, readiness, served name (one copy)
import gpu_suite
import graph_modes  # kit_argv, pair parity, plan summary, stop

ROOT, PY = gpu_suite.ROOT, gpu_suite.PY
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

PLAIN_NEEDS = ["--gdn-prefill-backend", "triton"]
PLAIN_ENV = {"VLLM_USE_FLASHINFER_SAMPLER": "0"}
GIB = 2**30


def sizing(max_num_seqs: int, kv_gib: float, util: float) -> list[str]:
    return [
        "serving.max_model_len=8192",
        f"serving.max_num_seqs={max_num_seqs}",
        f"serving.gpu_memory_utilization={util}",
        f"serving.kv_cache_memory_bytes={int(kv_gib * GIB)}",
    ]


CEILING_SIZING = sizing(4, 4, 0.185)
NOSPEC = ["serving.speculative=null"]


def mtp(n: int) -> list[str]:
    return [f"serving.speculative.num_speculative_tokens={n}"]


MTP3 = [*CEILING_SIZING, *mtp(3)]


# name -> (checkpoint, --set items)
CEILING: dict[str, tuple[str, list[str]]] = {
    "agree-nospec": ("agree", [*CEILING_SIZING, *NOSPEC]),
    "agree-mtp1": ("agree", [*CEILING_SIZING, *mtp(1)]),
    "agree-mtp2": ("agree", [*CEILING_SIZING, *mtp(2)]),
    "agree-mtp3": ("agree", [*CEILING_SIZING, *mtp(3)]),
    "random-mtp3": ("random", [*CEILING_SIZING, *mtp(3)]),
}
LEVER_SIZING = sizing(4, 2.5, 0.17)
WIDE_SIZING = sizing(16, 7, 0.205)
# name -> (kind, --set items, flags set on the kit's rendered command (with_flags), checkpoint); without speculative
# decoding the values of the weights do not change the speed, so these use the checkpoint spec-graphs needs
LEVERS: dict[str, tuple[str, list[str], list[str], str]] = {
    "kit": ("kit", [*LEVER_SIZING, *NOSPEC], [], "agree"),
    "kit-mnbt2048": ("kit", [*LEVER_SIZING, *NOSPEC], ["--max-num-batched-tokens", "2048"], "agree"),
    "kit-noasync": ("kit", [*LEVER_SIZING, *NOSPEC], ["--no-async-scheduling"], "agree"),
    "kit16": ("kit", [*WIDE_SIZING, *NOSPEC], [], "agree"),
    "kit16-marlin": ("kit", [*WIDE_SIZING, *NOSPEC], ["--linear-backend", "marlin"], "agree"),
    # Humming against Machete at 1-16 streams (2026-12-02, after the int4 phase; run with --only kit16,kit16-humming)
    "kit16-humming": ("kit", [*WIDE_SIZING, *NOSPEC], ["--linear-backend", "humming"], "agree"),
}
CAPTURE12 = json.dumps({"cudagraph_capture_sizes": [1, 2, 4, 8, 12, 16, 24, 32]})
# FULL CUDA graphs for speculative decoding (0.29+: padded FULL graphs for uniform decode; the engine's
# default FULL_AND_PIECEWISE, which the kit leaves) against PIECEWISE only, MTP 3 at full acceptance,
# beside the no-spec server for greedy parity
SPEC_GRAPHS: dict[str, tuple[str, list[str], list[str], str]] = {
    "agree-nospec": ("kit", [*CEILING_SIZING, *NOSPEC], [], "agree"),
    "agree-mtp3": ("kit", MTP3, [], "agree"),
    "agree-mtp3-piecewise": (
        "kit",
        [*MTP3, "serving.cudagraph_mode=PIECEWISE"],
        [],
        "agree",
    ),
    # capture sizes: the engine's list [1, 2, 4, 8, 16, 24, 32] gives MTP 3's FULL decode graphs 4, 8 and 16
    # tokens (multiples of 1 + k), so 3 streams (12 tokens) run padded to 16; this adds 12, nothing else
    "agree-mtp3-capture12": ("kit", MTP3, ["--compilation-config", CAPTURE12], "agree"),
}
# The int4 kernels vLLM 0.33 offers an AutoRound (AutoGPTQ) W4A16 bfloat16 layer on SM90, each forced with
# --linear-backend (which replaces the kit's own "marlin": with_flags): Machete (vLLM's pick), Humming (ranked
# above Marlin on SM90 by vLLM's humming/priority.py; the bundle carries humming-kernels since 2026-12-02),
# Triton; the kit's Marlin is the baseline. Not run: ExLlama takes float16 activations only and CUTLASS W4A8
# fp8 ones (their can_implement), so either would fall back to vLLM's choice (Machete) on this bfloat16 model;
# Conch needs the conch package. A kernel that cannot take the layer falls back with a warning, so the kernel
# each server used is read from its log (int4_kernels). Greedy parity against the baseline: a wrong kernel
# shows as different tokens.
INT4_BACKENDS = ("machete", "humming", "triton")
INT4_SIZING = [*LEVER_SIZING, *NOSPEC]
INT4: dict[str, tuple[str, list[str], list[str], str]] = {
    "int4-marlin": ("kit", INT4_SIZING, [], "agree"),
    **{
        f"int4-{backend}": ("kit", INT4_SIZING, ["--linear-backend", backend], "agree")
        for backend in INT4_BACKENDS
    },
}
# The same with MTP 3 (every draft accepted): a decode step carries 1 + 3 tokens per stream, so 4 streams are
# 16 tokens, where the no-spec rows at 16 streams had Marlin and Machete even (0.98x)
INT4_SPEC: dict[str, tuple[str, list[str], list[str], str]] = {
    "mtp3-marlin": ("kit", MTP3, [], "agree"),
    **{
        f"mtp3-{backend}": ("kit", MTP3, ["--linear-backend", backend], "agree")
        for backend in ("machete", "humming")
    },
}
# Plain `vllm serve` against the kit at this sizing was measured three times (docs/gpu.md: 1.14-1.16x at
# c=1); the plain argv stays for a rerun: `run --phases plain`.
PLAIN: dict[str, tuple[str, list[str], list[str], str]] = {
    "plain": ("plain", [], [], "random"),
    "kit": ("kit", [*LEVER_SIZING, *NOSPEC], [], "random"),
}
LEVER_PHASES = {
    "levers": LEVERS,
    "spec-graphs": SPEC_GRAPHS,
    "int4": INT4,
    "int4-spec": INT4_SPEC,
    "plain": PLAIN,
}
LEVER_PORTS = {"levers": 8800, "spec-graphs": 8900, "int4": 8960, "int4-spec": 8970, "plain": 8950}
# phase -> the (reference, other) server pairs compared by greedy parity once the phase is benched: the
# phase's first server against each of the others
PARITY_PAIRS = {
    phase: [(reference, other) for other in others]
    for phase, (reference, *others) in (
        ("spec-graphs", list(SPEC_GRAPHS)),
        ("int4", list(INT4)),
        ("int4-spec", list(INT4_SPEC)),
    )
}
STANDARD = {"c1": (1, 4, 512, 512), "c4": (4, 16, 512, 512)}  # label -> concurrency, prompts, in, out
THREE = {"c3": (3, 12, 512, 512)}
WIDE = {"c1": (1, 4, 512, 512), "c8": (8, 16, 512, 512), "c16": (16, 32, 512, 512)}
LOAD = {"load-c4": (4, 16, 4096, 128)}
BENCHES: dict[str, dict[str, tuple[int, int, int, int]]] = {
    "plain": STANDARD,
    "kit": {**LOAD, **STANDARD},
    "kit-mnbt2048": {**LOAD, **STANDARD},
    "kit-noasync": STANDARD,
    "kit16": WIDE,
    "kit16-marlin": WIDE,
    "kit16-humming": WIDE,
    "agree-nospec": STANDARD,
    "agree-mtp3": {**STANDARD, **THREE},
    "agree-mtp3-piecewise": STANDARD,
    "agree-mtp3-capture12": {**STANDARD, **THREE},
    **dict.fromkeys([*INT4, *INT4_SPEC], STANDARD),
}


log = gpu_suite.log


def write_json(path: Path, doc: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2))
    tmp.replace(path)


# --- vLLM's benchmark, in process -----------------------------------------------------------------------


def vllm_bench(
    url: str, model: str, tokenizer: str, concurrency: int, prompts: int, input_len: int, output_len: int
) -> dict[str, Any]:
    """``vllm bench serve`` (its own parser and main), random dataset, greedy, --ignore-eos."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    argv = [
        "--backend", "vllm", "--base-url", url, "--endpoint", "/v1/completions",
        "--model", model, "--tokenizer", tokenizer, "--dataset-name", "random",
        "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--num-prompts", str(prompts), "--max-concurrency", str(concurrency),
        "--ignore-eos", "--seed", "0", "--temperature", "0",
        "--percentile-metrics", "ttft,tpot,itl", "--metric-percentiles", "50,99",
    ]  # fmt: skip
    result = main(parser.parse_args(argv))
    keep = (
        "completed", "duration", "output_throughput", "mean_tpot_ms", "median_tpot_ms", "p99_tpot_ms",
        "mean_ttft_ms", "median_ttft_ms", "p99_ttft_ms", "mean_itl_ms", "p99_itl_ms", "total_output_tokens",
    )  # fmt: skip
    return {"argv": argv, **{k: result.get(k) for k in keep}}


def counters(port: int) -> dict[str, float]:
    status, text = gpu_suite.http(f"http://127.0.0.1:{port}/metrics", timeout=10)
    out: dict[str, float] = {}
    if status != 200:
        return out
    for name in (
        "vllm:spec_decode_num_drafts_total",
        "vllm:spec_decode_num_draft_tokens_total",
        "vllm:spec_decode_num_accepted_tokens_total",
        "vllm:prefix_cache_queries_total",
        "vllm:prefix_cache_hits_total",
    ):
        value = gpu_suite.metric_sum(text, name)
        if value is not None:
            out[name.split(":", 1)[1].removesuffix("_total")] = value
    return out


BenchFn = Callable[[str, str, str, int, int, int, int], dict[str, Any]]


def bench_row(
    work: Path,
    state: dict[str, Any],
    name: str,
    label: str,
    shape: tuple[int, ...],
    bench: BenchFn | None = None,
) -> dict:
    """One ``vllm bench serve`` run against one server, spec/prefix counters read around it. ``bench``:
    how to run it (default: in this process, :func:`vllm_bench`)."""
    server = state["servers"][name]
    concurrency, prompts, input_len, output_len = shape
    url = f"http://127.0.0.1:{server['port']}"
    before = counters(server["port"])
    try:
        row = (bench or vllm_bench)(
            url,
            compare.served_name(work, name, server["model"]),
            server["model"],
            concurrency,
            prompts,
            input_len,
            output_len,
        )
    except Exception as exc:  # a failed bench is a result of the run, not its end
        row = {"error": f"{type(exc).__name__}: {exc}"}
    after = counters(server["port"])
    row["counters"] = {k: after[k] - before.get(k, 0.0) for k in after}
    spec = row["counters"]
    if spec.get("spec_decode_num_drafts"):
        row["mean_accepted_length"] = round(
            1 + spec["spec_decode_num_accepted_tokens"] / spec["spec_decode_num_drafts"], 3
        )
        row["acceptance_rate"] = round(
            spec["spec_decode_num_accepted_tokens"] / max(spec["spec_decode_num_draft_tokens"], 1), 3
        )
    row.update(server=name, label=label, concurrency=concurrency, prompts=prompts, input_len=input_len,
               output_len=output_len)  # fmt: skip
    log(
        f"{name} {label}: {json.dumps({k: row.get(k) for k in ('output_throughput', 'median_tpot_ms', 'median_ttft_ms', 'p99_ttft_ms', 'mean_accepted_length', 'error')})}"
    )
    return row


# --- the multi-turn prefix-cache workload -----------------------------------------------------------------


def words(rng: random.Random, n: int) -> str:
    vocab = ["alpha", "river", "stone", "cloud", "seven", "lamp", "orbit", "cedar", "quartz", "meadow", "north",
             "harbor", "signal", "copper", "violet", "engine", "paper", "window", "garden", "thunder"]  # fmt: skip
    return " ".join(rng.choice(vocab) for _ in range(n))


def stream_ttft(http: httpx.Client, url: str, body: dict[str, Any]) -> tuple[float, str]:
    t0 = time.perf_counter()
    ttft = None
    text = []
    with http.stream("POST", f"{url}/v1/completions", json={**body, "stream": True}) as resp:
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.read().decode(errors='replace')[:300]}")
        for line in resp.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[6:])
            piece = "".join(c.get("text") or "" for c in chunk.get("choices") or [])
            if ttft is None and piece:
                ttft = time.perf_counter() - t0
            text.append(piece)
    return (ttft if ttft is not None else time.perf_counter() - t0), "".join(text)


def turn_size(
    http: httpx.Client, url: str, model: str, turns: int, max_tokens: int
) -> tuple[int, int, float]:
    """Words per turn so that the whole conversation fits the server's context: (words, max_model_len,
    tokens per word as the server's tokenizer counts them)."""
    max_len = int(http.get(f"{url}/v1/models").json()["data"][0].get("max_model_len") or 2048)
    sample = words(random.Random(1), 200)
    count = http.post(f"{url}/tokenize", json={"model": model, "prompt": sample}).json()["count"]
    per_word = count / 200
    budget = (max_len - turns * (max_tokens + 16)) * 0.9 / turns
    return max(8, int(min(budget, 1800) / per_word)), max_len, per_word


def multi_turn(work: Path, state: dict[str, Any], name: str, conversations: int = 4, turns: int = 4) -> dict:
    """TTFT per turn, prefix cache usable (one salt per conversation) vs defeated (a new salt each request).
    Each turn adds up to ~1800 tokens (vLLM caches a hybrid model's prefix in whole blocks of ~1584)."""
    server = state["servers"][name]
    url = f"http://127.0.0.1:{server['port']}"
    model = compare.served_name(work, name, server["model"])
    http = httpx.Client(timeout=httpx.Timeout(300.0, connect=10.0))
    turn_words, max_len, per_word = turn_size(http, url, model, turns, 32)
    out: dict[str, Any] = {"server": name, "conversations": conversations, "turns": turns, "modes": {},
                           "turn_words": turn_words, "tokens_per_word": per_word, "max_model_len": max_len}  # fmt: skip
    for mode in ("cache-usable", "cache-defeated"):
        rng = random.Random(7)  # the same conversations in both modes
        before = counters(server["port"])
        ttfts: list[list[float]] = []
        for c in range(conversations):
            history = ""
            row = []
            for t in range(turns):
                history += f"\nUser turn {t + 1}: " + words(rng, turn_words) + "\nAssistant:"
                salt = f"conv-{c}" if mode == "cache-usable" else f"conv-{c}-turn-{t}-{time.time_ns()}"
                body = {"model": model, "prompt": history, "max_tokens": 32, "temperature": 0,
                        "ignore_eos": True, "cache_salt": salt}  # fmt: skip
                ttft, text = stream_ttft(http, url, body)
                history += text
                row.append(round(ttft * 1000, 1))
            ttfts.append(row)
        after = counters(server["port"])
        per_turn = [sorted(r[t] for r in ttfts) for t in range(turns)]
        out["modes"][mode] = {
            "ttft_ms": ttfts,
            "median_ttft_ms_by_turn": [p[len(p) // 2] for p in per_turn],
            "prefix_cache": {k: after[k] - before.get(k, 0.0) for k in after if k.startswith("prefix")},
        }
        log(
            f"{name} multi-turn {mode}: {out['modes'][mode]['median_ttft_ms_by_turn']} {out['modes'][mode]['prefix_cache']}"
        )
    return out


def record_multi_turn(work: Path, state: dict[str, Any], name: str, doc: dict[str, Any]) -> None:
    """:func:`multi_turn` on one server into ``doc["multi_turn"]``; a failure is recorded, not raised."""
    try:
        doc["multi_turn"] = multi_turn(work, state, name)
    except Exception as exc:
        doc["multi_turn"] = {"error": f"{type(exc).__name__}: {exc}"}


# --- spawning -------------------------------------------------------------------------------------------


def render_plan(work: Path, name: str, model: Path, port: int, sets: list[str]) -> dict[str, Any]:
    argv = graph_modes.kit_argv(model, port, sets, work / f"{name}.plan.json")
    argv[argv.index("launch")] = "render"
    i = argv.index("--plan-file")
    del argv[i : i + 2]
    done = subprocess.run([*argv, "--json"], cwd=ROOT, capture_output=True, text=True, check=True)
    plan = json.loads(done.stdout)
    write_json(work / f"{name}.plan.json", plan)
    return plan


def with_flags(argv: list[str], extra: list[str]) -> list[str]:
    """``argv`` with ``extra``'s flags: a flag the command has already gets the new value in place (vLLM warns
    of duplicate keys), any other is appended."""
    out, i = list(argv), 0
    while i < len(extra):
        flag = extra[i]
        value = extra[i + 1] if i + 1 < len(extra) and not extra[i + 1].startswith("--") else None
        at = out.index(flag) if flag in out else -1
        if value is not None and 0 <= at < len(out) - 1:
            out[at + 1] = value
        else:
            out += [flag] if value is None else [flag, value]
        i += 1 if value is None else 2
    return out


def spawn_lever(work: Path, phase: str, name: str, model: Path, port: int) -> dict[str, Any]:
    kind, sets, extra, _ = LEVER_PHASES[phase][name]
    compare.PORTS[name] = port
    if kind == "plain":
        argv = compare.vllm_cli(
            "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "8192", "--max-num-seqs", "4", "--gpu-memory-utilization", "0.17",
            "--kv-cache-memory-bytes", str(int(2.5 * GIB)), *PLAIN_NEEDS,
        )  # fmt: skip
        server = compare.spawn(name, argv, work, PLAIN_ENV)
    elif not extra:
        server = compare.spawn(
            name, graph_modes.kit_argv(model, port, sets, work / f"{name}.plan.json"), work
        )
    else:
        # the kit's own command for this sizing, with one flag added: the lever, nothing else changed
        plan = render_plan(work, name, model, port, sets)
        argv = with_flags(plan["exec_argv"], extra)
        server = compare.spawn(name, argv, work, plan.get("env") or {})
    server["model"] = str(model)
    server["extra"] = extra
    log(f"spawned {name} on {port}: {' '.join(server['argv'][-6:])}")
    return server


def keep_logs(work: Path, names: list[str]) -> None:
    (work / "logs").mkdir(exist_ok=True)
    for name in names:
        log_file = work / f"{name}.vllm.log"
        if log_file.exists():
            (work / "logs" / f"{name}.log").write_bytes(log_file.read_bytes()[-300_000:])


def server_facts(work: Path, name: str, server: dict[str, Any]) -> dict[str, Any]:
    log_text = compare.server_log(work, name)
    return {
        "ready_s": server.get("ready_s"),
        "failed": server.get("failed"),
        "flags": graph_modes.plan_summary(work, name),
        "int4_kernels": compare.int4_kernels(work, name, log_text),
        "startup": compare.startup_facts(work, name, log_text),
        "extra": server.get("extra"),
        "argv": server.get("argv"),
    }


# --- the run --------------------------------------------------------------------------------------------


def bench_phase(
    work: Path,
    results: dict[str, Any],
    phase: str,
    state: dict[str, Any],
    benches: dict[str, dict[str, tuple[int, int, int, int]]],
    after: Callable[[str, dict[str, Any]], None] | None = None,
    finish: Callable[[dict[str, Any]], None] | None = None,
    bench: BenchFn | None = None,
    wait_s: float = 600,
) -> None:
    """Wait for the phase's spawned servers, record them, warm up and bench each ready one (``benches``:
    name -> label -> shape), ``after(name, doc)`` once each is benched, ``finish(doc)`` at the end; then
    stop them and keep their logs. Results are written after every step."""
    write_json(work / f"state-{phase}.json", state)
    t0 = time.monotonic()
    compare.wait_all(work, state, timeout_s=wait_s)
    doc = results[phase] = {
        "wait_s": round(time.monotonic() - t0, 1),
        "servers": {name: server_facts(work, name, server) for name, server in state["servers"].items()},
        "rows": [],
    }
    write_json(work / "results.json", results)
    try:
        for name, server in state["servers"].items():
            if "ready_s" not in server:
                continue
            compare.warm_up(work, state, name)
            for label, shape in benches.get(name, {}).items():
                doc["rows"].append(bench_row(work, state, name, label, shape, bench))
                write_json(work / "results.json", results)
            if after:
                after(name, doc)
                write_json(work / "results.json", results)
        if finish:
            finish(doc)
            write_json(work / "results.json", results)
    finally:
        graph_modes.stop_all(state)
        keep_logs(work, list(state["servers"]))


def phase_ceiling(
    work: Path, results: dict[str, Any], models: dict[str, Path], only: list[str] | None = None
) -> None:
    state: dict[str, Any] = {"servers": {}, "model": str(models["agree"])}  # compare.warm_up reads "model"
    for i, (name, (ckpt, sets)) in enumerate(CEILING.items()):
        if only and name not in only:
            continue
        port = 8700 + i
        compare.PORTS[name] = port
        argv = graph_modes.kit_argv(models[ckpt], port, sets, work / f"{name}.plan.json")
        state["servers"][name] = compare.spawn(name, argv, work)
        state["servers"][name]["model"] = str(models[ckpt])
    log("ceiling servers spawned")

    def parity(doc: dict[str, Any]) -> None:
        doc["parity"] = graph_modes.parity_rows(state, [("agree-nospec", "agree-mtp3")])

    bench_phase(work, results, "ceiling", state, dict.fromkeys(state["servers"], STANDARD), finish=parity)


def phase_levers(
    work: Path,
    results: dict[str, Any],
    models: dict[str, Path],
    phase: str,
    only: list[str] | None = None,
    multi_turn_on: bool = False,
) -> None:
    servers = LEVER_PHASES[phase]
    if only:
        servers = {name: servers[name] for name in only if name in servers}
    state: dict[str, Any] = {"servers": {}, "model": str(models[next(iter(servers.values()))[3]])}
    for i, (name, spec) in enumerate(servers.items()):
        model = models[spec[3]]
        state["servers"][name] = spawn_lever(work, phase, name, model, LEVER_PORTS[phase] + i)

    def after(name: str, doc: dict[str, Any]) -> None:
        if multi_turn_on and phase == "levers" and name == "kit":
            record_multi_turn(work, state, name, doc)

    def finish(doc: dict[str, Any]) -> None:
        pairs = [
            (a, b) for a, b in PARITY_PAIRS.get(phase, []) if a in state["servers"] and b in state["servers"]
        ]
        if pairs:
            doc["parity"] = graph_modes.parity_rows(state, pairs)

    bench_phase(work, results, phase, state, BENCHES, after=after, finish=finish)


def checkpoints_needed(phases: list[str]) -> set[str]:
    """The synthetic checkpoints the chosen phases serve (each takes ~30 s of GPU to write)."""
    needed = {ckpt for ckpt, _ in CEILING.values()} if "ceiling" in phases else set()
    for phase in phases:
        needed |= {spec[3] for spec in LEVER_PHASES.get(phase, {}).values()}
    return needed


def cmd_run(work: Path, phases: list[str], only: list[str] | None = None, multi_turn_on: bool = False) -> int:
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.update(started=time.strftime("%Y-%m-%d %H:%M:%S"), phases=phases, only=only)
    results["bandwidth_gbps"] = compare.copy_bandwidth_gbps()
    log(f"copy bandwidth {results['bandwidth_gbps']} GB/s")
    models = {"random": work / "synth-random", "agree": work / "synth-agree"}
    for key in sorted(checkpoints_needed(phases)):
        path = models[key]
        t0 = time.monotonic()
        if not (path / "config.json").exists():
            extra = ["--agreeing-mtp"] if key == "agree" else []
            subprocess.run(
                [PY, "-m", "serve", "synth-model", str(path), "--device", "cuda", *extra],
                cwd=ROOT,
                check=True,
            )
        results[f"synth_{key}_write_s"] = round(time.monotonic() - t0, 1)
    write_json(work / "results.json", results)
    try:
        if "ceiling" in phases:
            phase_ceiling(work, results, models, only)
        for phase in LEVER_PHASES:
            if phase in phases:
                phase_levers(work, results, models, phase, only, multi_turn_on)
    finally:
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        write_json(work / "results.json", results)
        (work / "DONE").write_text("done\n")
    return 0


def cmd_poll(work: Path, out: Path, wait_s: float, until: str | None = None) -> int:
    """Sleep until the run is done (or ``until`` appears in results.json, or ``wait_s`` passes), then bring
    back results.json, the run's log and one tarball of the plans and the server logs' tails (kept ones
    under logs/, those of servers still running under running/): the device returns at most 8 files."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and not (work / "DONE").exists():
        if until and (work / "results.json").exists() and until in (work / "results.json").read_text():
            break
        time.sleep(5)
    out.mkdir(parents=True, exist_ok=True)
    for name in ("results.json", "run.log"):
        if (work / name).exists():
            shutil.copy(work / name, out / name)
    with tarfile.open(out / "files.tgz", "w:gz") as tar:
        for path in [*sorted(work.glob("*.plan.json")), *sorted((work / "logs").glob("*.log"))]:
            tar.add(path, arcname=path.relative_to(work))
        for path in sorted(work.glob("*.vllm.log")):
            if not (work / "logs" / f"{path.name.removesuffix('.vllm.log')}.log").exists():
                data = path.read_bytes()[-150_000:]
                info = tarfile.TarInfo(f"running/{path.name}")
                info.size, info.mtime = len(data), int(time.time())
                tar.addfile(info, io.BytesIO(data))
    print(f"done={(work / 'DONE').exists()}")
    if (work / "run.log").exists():
        print((work / "run.log").read_text()[-6000:])
    return 0


def cmd_stop(work: Path) -> int:
    """Kill the servers of every phase's state file (each in its own session)."""
    for state_file in work.glob("state-*.json"):
        for server in json.loads(state_file.read_text())["servers"].values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server["pid"], signal.SIGKILL)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["run", "poll", "stop"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/lv"))
    ap.add_argument("--out", type=Path, default=Path("out/levers"))
    ap.add_argument("--wait", type=float, default=500)
    ap.add_argument("--until", default=None, help="poll: return as soon as this text is in results.json")
    ap.add_argument(
        "--phases",
        default="levers,spec-graphs",
        help="of: ceiling, levers, spec-graphs, int4, int4-spec, plain",
    )
    ap.add_argument("--only", default=None, help="run: these servers of the lever phases, in this order")
    ap.add_argument(
        "--multi-turn", action="store_true", help="run: the prefix-cache multi-turn workload on kit"
    )
    args = ap.parse_args()
    if args.step == "run":
        only = args.only.split(",") if args.only else None
        return cmd_run(args.work, args.phases.split(","), only, args.multi_turn)
    if args.step == "poll":
        return cmd_poll(args.work, args.out, args.wait, args.until)
    return cmd_stop(args.work)


if __name__ == "__main__":
    raise SystemExit(main())
