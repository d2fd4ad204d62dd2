"""vLLM 0.24.0 and 0.33.0 side by side on the GPU machine (issue 17's 0.24 half), and the MTP 1 and 2 ceiling
on 0.33 (issue 14 item 1), in one background run that short ``poll`` calls bring back.

    # after the 0.24 bundle is staged (KIT_SITE=/tmp/site-0.24); the 0.33 one may still be on its way:
    (setsid python3 tests/gpu/engines.py run --work /tmp/en > /tmp/en.log 2>&1 < /dev/null &)
    python3 tests/gpu/engines.py poll --work /tmp/en --out $OUT/p1 --wait 270

Both bundles live beside each other (``/tmp/site-0.24``: vLLM 0.24 on the machine's torch 2.11;
``/tmp/site-0.33``: vLLM 0.33 with its torch 2.14). Every server is started through a shell that sources its
engine's ``kit-env.sh`` on top of the machine's own environment, so the launcher's ``--engine auto`` probes
that engine and nothing of the other leaks in. 0.24's servers start at once; 0.33's as soon as its site is
installed (the staging calls go on while 0.24 compiles). vLLM's own ``vllm bench serve`` (0.33's, the
benchmark of every earlier table) runs in one worker process under 0.33's environment, its import paid once.

Phase ``engines``, one sizing for every server (max_model_len 8192, max_num_seqs 4, 4 GiB of KV), the
shape-exact synthetic checkpoint with the agreeing MTP head (``synth-model --agreeing-mtp``: the bigram
model, whose greedy answer walks a cycle of 512 tokens and whose MTP head predicts it, so every draft is
accepted):
- ``e24-plain`` / ``e33-plain``: ``vllm serve MODEL`` with the sizing flags and what the engine needs on this
  machine (no FlashInfer);
- ``e24-kit`` / ``e33-kit``: ``serve launch --profile qwen3.6-27b-h100 --gpu auto --engine auto``, no
  speculative decoding (the kit's flags on each engine);
- ``e24-mtp1``: the kit with MTP 1 on 0.24, which the kit refuses (rule ``spec-gdn-hybrid-needs-0.28``) unless
  ``serving.speculative`` is set on the command line: set here, loudly, to measure what the rule guards.
Each at c=1 and c=4 (512 in / 512 out, greedy); then greedy parity ``e24-kit`` vs ``e24-mtp1`` and
``e33-kit`` vs ``e24-kit`` (same model, two engines), sequential and concurrent; the multi-turn prefix-cache
workload on ``e33-kit`` (prefix caching is on by default for this hybrid model from 0.26).

Phase ``ceiling``, 0.33, the same sizing: MTP 1, 2 and 3 on the agreeing checkpoint (the 100% bracket), MTP 1
on random weights (the 0% bracket; MTP 3's was measured on 2026-12-02), TurboQuant 4-bit KV without
speculative decoding (its speed beside ``e33-kit``); beside them four tiny Qwen3.5 servers on 0.24 for greedy
parity MTP 1 vs none: random weights (drafts rejected, so mixed batches of prefill, decode and verify rows:
the batch shape of vLLM PR 51812's bug) and the bigram model (every draft accepted, answers not constant).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare  # spawn, readiness, bandwidth, served name, int4 kernels
import gpu_suite
import graph_modes  # kit_argv, pair parity, parity prompts
import levers  # bench_phase, vllm_bench, multi-turn, sizing

ROOT = gpu_suite.ROOT
log = gpu_suite.log

SITES = {
    "0.24": Path(os.environ.get("KIT_SITE_0_24", "/tmp/site-0.24")),
    "0.33": Path(os.environ.get("KIT_SITE_0_33", "/tmp/site-0.33")),
}
BENCH_ENGINE = "0.33"
SIZING = levers.sizing(4, 4, 0.16)
KV_BYTES = 4 * levers.GIB
NOSPEC = levers.NOSPEC
MTP1_OVERRIDE = ["serving.speculative={method: mtp, num_speculative_tokens: 1}"]
TQ = ["serving.kv_cache=turboquant-4bit"]

# name -> (engine, kind, checkpoint, --set items)
ENGINES: dict[str, tuple[str, str, str, list[str]]] = {
    "e24-plain": ("0.24", "plain", "agree", []),
    "e24-kit": ("0.24", "kit", "agree", [*SIZING, *NOSPEC]),
    "e24-mtp1": ("0.24", "kit", "agree", [*SIZING, *MTP1_OVERRIDE]),
    "e33-plain": ("0.33", "plain", "agree", []),
    "e33-kit": ("0.33", "kit", "agree", [*SIZING, *NOSPEC]),
}
TINY_SIZING = graph_modes.TINY_SIZING
CEILING: dict[str, tuple[str, str, str, list[str]]] = {
    # benched in this order (what matters most first, in case the device time runs out)
    "c33-mtp1": ("0.33", "kit", "agree", [*SIZING, *levers.mtp(1)]),
    "c33-random-mtp1": ("0.33", "kit", "random", [*SIZING, *levers.mtp(1)]),
    "c33-mtp3": ("0.33", "kit", "agree", [*SIZING, *levers.mtp(3)]),
    "c33-tq": ("0.33", "kit", "agree", [*SIZING, *TQ, *NOSPEC]),
    "c33-mtp2": ("0.33", "kit", "agree", [*SIZING, *levers.mtp(2)]),
    "t24-random-nospec": ("0.24", "kit", "tiny-random", [*TINY_SIZING, *NOSPEC]),
    "t24-random-mtp1": ("0.24", "kit", "tiny-random", [*TINY_SIZING, *MTP1_OVERRIDE]),
    "t24-bigram-nospec": ("0.24", "kit", "tiny-bigram", [*TINY_SIZING, *NOSPEC]),
    "t24-bigram-mtp1": ("0.24", "kit", "tiny-bigram", [*TINY_SIZING, *MTP1_OVERRIDE]),
}
PHASES = {"engines": ENGINES, "ceiling": CEILING}
PARITY = {
    "engines": [("e24-kit", "e24-mtp1"), ("e33-kit", "e24-kit")],
    "ceiling": [("t24-random-nospec", "t24-random-mtp1"), ("t24-bigram-nospec", "t24-bigram-mtp1")],
}
PARITY_AFTER = {"ceiling": "c33-mtp1"}  # the tiny parity (issue 17) right after the first bench, not last
SYNTH = {"agree": ["--agreeing-mtp"], "random": []}
TINY = {"tiny-random": ["--vl"], "tiny-bigram": ["--vl", "--bigram-mtp"]}  # --vl: the layout 0.24 registers
PORT_BASE = {"engines": 8750, "ceiling": 8770}
SITE_WAIT_S = 900  # for the other engine's site, once the first servers are spawned
SERVER_WAIT_S = 900  # for the phase's servers to be ready, from the last spawn


# --- one engine's environment ---------------------------------------------------------------------------


def machine_env() -> dict[str, str]:
    """The machine's own environment: what the caller had before it sourced a bundle's kit-env.sh
    (KIT_BASE_PYTHONPATH / KIT_BASE_LD_LIBRARY_PATH, exported by the device command first), without the
    variables any bundle sets."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "LD_LIBRARY_PATH"):
        base = os.environ.get(f"KIT_BASE_{key}")
        if base is not None:
            env[key] = base
    for site in SITES.values():
        info = site / "KIT-BUNDLE.json"
        if info.is_file():
            for key in json.loads(info.read_text()).get("env", {}):
                env.pop(key, None)
    return env


def in_engine(engine: str, argv: list[str]) -> list[str]:
    """``argv`` run by a shell that first sources the engine's kit-env.sh (its PYTHONPATH, libraries, env)."""
    script = 'source "$0/kit-env.sh" && export PYTHONPATH="$PYTHONPATH:$KIT_ROOT" && exec "$@"'
    return ["bash", "-c", script, str(SITES[engine]), *argv]


def installed(engine: str) -> bool:
    """The engine's site is unpacked and its kit-env.sh written (install-bundle.sh writes it last)."""
    env_file = SITES[engine] / "kit-env.sh"
    return env_file.is_file() and "PYTHONPATH" in env_file.read_text()


class BenchWorker:
    """``vllm bench serve`` of one engine, in one long-lived process (its import paid once)."""

    def __init__(self, work: Path, engine: str) -> None:
        argv = in_engine(engine, [gpu_suite.PY, str(Path(__file__).resolve()), "bench-worker"])
        self.log = (work / "bench-worker.log").open("ab")
        env = {**machine_env(), "KIT_ROOT": str(ROOT), "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env, text=True
        )
        self.n = 0

    def __call__(self, url: str, model: str, tokenizer: str, concurrency: int, prompts: int, i: int, o: int):
        self.n += 1
        request = {"id": self.n, "args": [url, model, tokenizer, concurrency, prompts, i, o]}
        assert self.proc.stdin and self.proc.stdout
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        for line in self.proc.stdout:
            if line.startswith("KIT-BENCH "):
                reply = json.loads(line[len("KIT-BENCH ") :])
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["row"]
            self.log.write(line.encode())
        raise RuntimeError(f"the bench worker exited (rc {self.proc.wait()}); see bench-worker.log")

    def close(self) -> None:
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


def cmd_bench_worker() -> int:
    """Read one JSON request per line, run the bench, answer on a ``KIT-BENCH`` line (the bench's own
    output goes to the same stdout and is passed on to the log)."""
    for line in sys.stdin:
        request = json.loads(line)
        try:
            reply: dict[str, Any] = {"id": request["id"], "row": levers.vllm_bench(*request["args"])}
        except Exception as exc:  # reported to the orchestrator, which records it as the row's result
            reply = {"id": request["id"], "error": f"{type(exc).__name__}: {exc}"}
        print("KIT-BENCH " + json.dumps(reply), flush=True)
    return 0


# --- servers --------------------------------------------------------------------------------------------


def server_argv(
    name: str, spec: tuple[str, str, str, list[str]], model: Path, port: int, work: Path
) -> list[str]:
    _, kind, _, sets = spec
    if kind == "plain":
        return compare.vllm_cli(
            "serve", str(model), "--host", "127.0.0.1", "--port", str(port),
            "--max-model-len", "8192", "--max-num-seqs", "4", "--gpu-memory-utilization", "0.16",
            "--kv-cache-memory-bytes", str(KV_BYTES), *levers.PLAIN_NEEDS,
        )  # fmt: skip
    return graph_modes.kit_argv(model, port, sets, work / f"{name}.plan.json")


def spawn(work: Path, state: dict[str, Any], phase: str, name: str, models: dict[str, Path]) -> None:
    spec = PHASES[phase][name]
    engine, kind, checkpoint, _ = spec
    port = PORT_BASE[phase] + list(PHASES[phase]).index(name)
    compare.PORTS[name] = port
    model = models[checkpoint]
    env = {**machine_env(), "KIT_ROOT": str(ROOT), **(levers.PLAIN_ENV if kind == "plain" else {})}
    server = compare.spawn(name, in_engine(engine, server_argv(name, spec, model, port, work)), work, env)
    server.update(model=str(model), engine=engine)
    state["servers"][name] = server
    log(f"spawned {name} ({engine}, {kind}, {checkpoint}) on {port}")


def spawn_installed(work: Path, state: dict[str, Any], phase: str, models: dict[str, Path]) -> list[str]:
    """Spawn the phase's servers whose engine is installed and that are not spawned yet; the names left."""
    for name, spec in PHASES[phase].items():
        if name not in state["servers"] and installed(spec[0]):
            spawn(work, state, phase, name, models)
    return [name for name in PHASES[phase] if name not in state["servers"]]


def make_model(work: Path, key: str, results: dict[str, Any]) -> Path:
    path = work / (f"synth-{key}" if key in SYNTH else key)
    if not (path / "config.json").exists():
        t0 = time.monotonic()
        if key in SYNTH:
            argv = [gpu_suite.PY, "-m", "serve", "synth-model", str(path), "--device", "cuda", *SYNTH[key]]
        else:
            argv = [
                gpu_suite.PY,
                "-m",
                "serve",
                "tiny-model",
                str(path),
                "--arch",
                "qwen3_5",
                *TINY[key],
            ]
        subprocess.run(argv, cwd=ROOT, check=True)
        results[f"model_{key}_write_s"] = round(time.monotonic() - t0, 1)
    return path


# --- the run --------------------------------------------------------------------------------------------


def run_phase(
    work: Path,
    results: dict[str, Any],
    phase: str,
    models: dict[str, Path],
    get_bench: Callable[[], levers.BenchFn | None],
    meanwhile: Callable[[], None] = lambda: None,
) -> None:
    """Spawn what can start, do ``meanwhile`` (write the other checkpoints), spawn the rest as their
    engine's site appears, then bench, parity and stop (levers.bench_phase)."""
    state: dict[str, Any] = {"servers": {}, "model": str(models["agree"])}  # compare.warm_up reads "model"
    pending = spawn_installed(work, state, phase, models)
    meanwhile()
    deadline = time.monotonic() + SITE_WAIT_S
    while pending and time.monotonic() < deadline:
        time.sleep(5)
        pending = spawn_installed(work, state, phase, models)
    for name in pending:
        state["servers"][name] = {"name": name, "failed": f"engine {PHASES[phase][name][0]} not installed"}
    benches = {n: levers.STANDARD for n, spec in PHASES[phase].items() if not spec[2].startswith("tiny")}

    def after(name: str, doc: dict[str, Any]) -> None:
        if phase == "engines" and name == "e33-kit":
            levers.record_multi_turn(work, state, name, doc)
        if "parity" not in doc and name == PARITY_AFTER.get(phase):
            doc["parity"] = graph_modes.parity_rows(state, PARITY[phase])

    def finish(doc: dict[str, Any]) -> None:
        for name in state["servers"]:
            doc["servers"].setdefault(name, {})["engine"] = PHASES[phase][name][0]
        if "parity" not in doc:
            doc["parity"] = graph_modes.parity_rows(state, PARITY[phase])

    levers.bench_phase(
        work,
        results,
        phase,
        state,
        benches,
        after=after,
        finish=finish,
        bench=get_bench(),
        wait_s=SERVER_WAIT_S,
    )


def cmd_run(work: Path, phases: list[str]) -> int:
    work.mkdir(parents=True, exist_ok=True)
    results_file = work / "results.json"
    results: dict[str, Any] = json.loads(results_file.read_text()) if results_file.exists() else {}
    results.update(started=time.strftime("%Y-%m-%d %H:%M:%S"), phases=phases)
    results["bandwidth_gbps"] = compare.copy_bandwidth_gbps()
    log(f"copy bandwidth {results['bandwidth_gbps']} GB/s")
    models = {"agree": make_model(work, "agree", results)}
    levers.write_json(results_file, results)
    worker: BenchWorker | None = None

    def get_bench() -> levers.BenchFn | None:
        nonlocal worker
        if worker is None and installed(BENCH_ENGINE):
            worker = BenchWorker(work, BENCH_ENGINE)
        return worker

    def other_models() -> None:
        for key in [*SYNTH, *TINY]:
            models[key] = make_model(work, key, results)
        levers.write_json(results_file, results)

    try:
        for i, phase in enumerate(phases):
            run_phase(
                work, results, phase, models, get_bench, meanwhile=other_models if i == 0 else lambda: None
            )
            levers.write_json(results_file, results)
    finally:
        if worker is not None:
            worker.close()
        results["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
        levers.write_json(results_file, results)
        (work / "DONE").write_text("done\n")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("step", choices=["run", "poll", "stop", "bench-worker"])
    ap.add_argument("--work", type=Path, default=Path("/tmp/en"))
    ap.add_argument("--out", type=Path, default=Path("out/engines"))
    ap.add_argument("--wait", type=float, default=270)
    ap.add_argument("--phases", default="engines,ceiling")
    args = ap.parse_args()
    if args.step == "run":
        return cmd_run(args.work, args.phases.split(","))
    if args.step == "poll":
        return levers.cmd_poll(args.work, args.out, args.wait)
    if args.step == "stop":
        return levers.cmd_stop(args.work)
    return cmd_bench_worker()


if __name__ == "__main__":
    raise SystemExit(main())
