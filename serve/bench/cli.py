"""`python -m serve bench`: the seed card's throughput table on your own box, a concurrency sweep,
% of the memory-bandwidth roofline per row, and A/B of two profiles.

Against a live endpoint::

    python -m serve bench --base-url http://127.0.0.1:8888 [--plan-file run/plan.json] [--quick]

A/B (each profile launched in turn through ``python -m serve launch``, same prompts, ratios per row)::

    python -m serve bench --ab qwen3.6-27b-rtx5090 qwen3.6-27b-rtx5090-fast [--set k=v ...]

The bench assumes it is the only client of the server: /metrics deltas over a row count every request
the server saw in that window.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx

from serve.bench import predict, report
from serve.bench.client import chat_body, list_models, scrape_counters, stream_chat, wait_ready
from serve.bench.roofline import Roofline, roofline_from_plan
from serve.bench.stats import (
    GENERATION_TOKENS,
    REQUEST_SUCCESS,
    CounterReset,
    CounterSnapshot,
    RequestSample,
    RowResult,
    RowSpec,
    ab_rows,
    counter_delta,
    counter_total,
    summarize_row,
)
from serve.client.endpoint import Endpoint, api_key_from, normalize_base_url
from serve.client.launched import LaunchedProcess
from serve.errors import KitError
from serve.launch.plan_document import parse as parse_plan

# The seed card's table (RTX 5090, TurboQuant 4-bit KV, MTP n=1): 58, 60, 60 and 61 tok/s.
SEED_PROMPTS: tuple[tuple[str, int], ...] = (
    ("Write a haiku", 128),
    ("Explain quantum computing in 3 paragraphs", 256),
    ("Write 8 paragraphs about deep learning history", 1024),
    ("What is 127*83? Show reasoning", 256),
)
# The sweep repeats one prompt at rising concurrency; the 256-token one is the seed's typical row.
SWEEP_PROMPT = SEED_PROMPTS[1]
QUICK_MAX_TOKENS = 32
WARMUP_MAX_TOKENS = 32  # warm-up compiles/captures; it need not decode a full answer
DEFAULT_PLAN_FILE = "run/plan.json"
SCHEMA_VERSION = 1
PLAN_TIMEOUT_S = 300


# --------------------------------------------------------------------------------------------------
# Options and the rows they give (pure)
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BenchOptions:
    repeats: int
    warmup: int
    concurrency: tuple[int, ...]
    ignore_eos: bool
    temperature: float | None
    max_tokens_cap: int | None
    progress: bool = True

    def to_json(self) -> dict[str, Any]:
        return {
            "repeats": self.repeats,
            "warmup": self.warmup,
            "concurrency": list(self.concurrency),
            "ignore_eos": self.ignore_eos,
            "temperature": self.temperature,
            "max_tokens_cap": self.max_tokens_cap,
        }


def auto_concurrency(max_num_seqs: int) -> tuple[int, ...]:
    """1, 2, 4, ... up to max_num_seqs, plus max_num_seqs itself: every level for the seed's 3, a
    readable handful for vLLM's default 256."""
    levels = []
    c = 1
    while c < max_num_seqs:
        levels.append(c)
        c *= 2
    levels.append(max_num_seqs)
    return tuple(levels)


def parse_concurrency(text: str, max_num_seqs: int | None) -> tuple[tuple[int, ...], str | None]:
    """``"1,2,3"`` or ``"auto"`` -> sorted levels, plus a warning when auto had nothing to go on or a
    level exceeds max_num_seqs (those requests would queue, measuring the scheduler instead)."""
    if text.strip() == "auto":
        if not max_num_seqs:
            return (1,), (
                "--concurrency auto needs settings.max_num_seqs from plan.json and none was found; "
                "sweeping concurrency 1 only (pass --plan-file or --concurrency 1,2,4)"
            )
        return auto_concurrency(max_num_seqs), None
    try:
        levels = sorted({int(x) for x in text.split(",") if x.strip()})
    except ValueError:
        raise KitError(f"--concurrency {text!r}: give comma-separated integers (1,2,3) or 'auto'") from None
    if not levels or levels[0] < 1:
        raise KitError(f"--concurrency {text!r}: levels must be integers >= 1")
    warning = None
    if max_num_seqs and levels[-1] > max_num_seqs:
        warning = (
            f"--concurrency {levels[-1]} exceeds the server's max_num_seqs {max_num_seqs}: the extra "
            "requests wait in vLLM's queue, so those rows measure queueing too"
        )
    return tuple(levels), warning


def plan_rows(options: BenchOptions) -> list[RowSpec]:
    """The seed's four prompts single stream, then the sweep prompt at each concurrency above 1
    (concurrency 1 of the sweep prompt is its single-stream row)."""
    cap = options.max_tokens_cap

    def tokens(n: int) -> int:
        return min(n, cap) if cap else n

    rows = [RowSpec("single", p, tokens(n), 1) for p, n in SEED_PROMPTS]
    prompt, n = SWEEP_PROMPT
    rows += [RowSpec("sweep", prompt, tokens(n), c) for c in options.concurrency if c > 1]
    return rows


def requests_in(rows: Sequence[RowSpec], options: BenchOptions) -> int:
    return sum(r.concurrency * (options.repeats + options.warmup) for r in rows)


# --------------------------------------------------------------------------------------------------
# plan.json
# --------------------------------------------------------------------------------------------------


def read_plan(path: Path) -> dict[str, Any]:
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError:
        raise KitError(
            f"plan file {path} does not exist; start the server with `python -m serve launch`"
        ) from None
    except json.JSONDecodeError as exc:
        raise KitError(f"plan file {path} is not JSON ({exc}); pass the file `serve launch` wrote") from None
    if not isinstance(plan, dict):
        raise KitError(f"plan file {path} holds {type(plan).__name__}, expected an object")
    return parse_plan(plan, f"plan file {path}").to_dict()  # the one model: extra keys dropped, types checked


def find_plan_file(explicit: str | None, environ: Mapping[str, str]) -> Path | None:
    """--plan-file, else $SERVE_PLAN_FILE, else run/plan.json when it exists. An explicit file that
    is missing is an error; the default one is optional (bench works on any endpoint)."""
    if explicit:
        return Path(explicit)
    if environ.get("SERVE_PLAN_FILE"):
        return Path(environ["SERVE_PLAN_FILE"])
    default = Path(DEFAULT_PLAN_FILE)
    return default if default.exists() else None


def context_from_plan(
    plan: Mapping[str, Any] | None, endpoint: Endpoint, plan_path: Path | None
) -> dict[str, Any]:
    facts = (plan or {}).get("facts") or {}
    return {
        "base_url": endpoint.base_url,
        "model": endpoint.model,
        "plan_file": str(plan_path) if plan_path else None,
        "profile": (plan or {}).get("profile"),
        "command": (plan or {}).get("command"),
        "settings": (plan or {}).get("settings") or {},
        "gpu": facts.get("gpu"),
        "engine": facts.get("engine"),
    }


# --------------------------------------------------------------------------------------------------
# Running rows (I/O)
# --------------------------------------------------------------------------------------------------


async def _settled_counters(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    before: CounterSnapshot,
    expect_tokens: int,
    expect_requests: int = 0,
    timeout_s: float = 10.0,
) -> CounterSnapshot | None:
    """Scrape /metrics until vLLM's generation-token and finished-request counters have caught up with
    what the client received: the engine's stats reach the API process asynchronously (seen on a loaded
    2-core machine: a warm-up request counted inside the next row's window more than 3 s after its stream
    ended), so a scrape right after the last byte can miss the last step."""
    deadline = time.monotonic() + timeout_s
    while True:
        after = await scrape_counters(client, endpoint)
        if after is None:
            return None
        try:
            delta = counter_delta(before, after)
        except CounterReset:
            return after
        generated = counter_total(delta, GENERATION_TOKENS)
        finished = counter_total(delta, REQUEST_SUCCESS)
        caught_up = (generated is None or generated >= expect_tokens) and (
            finished is None or finished >= expect_requests
        )
        if caught_up or time.monotonic() > deadline:
            return after
        await asyncio.sleep(0.1)


async def run_row(
    client: httpx.AsyncClient,
    endpoint: Endpoint,
    spec: RowSpec,
    options: BenchOptions,
    roofline: Roofline | None,
    progress: report.Progress,
) -> RowResult:
    def body(max_tokens: int) -> dict:
        return chat_body(
            endpoint.model,
            spec.prompt,
            max_tokens,
            ignore_eos=options.ignore_eos,
            temperature=options.temperature,
        )

    start = await scrape_counters(client, endpoint) if options.warmup else None
    warmup_tokens = warmup_requests = 0
    for _ in range(options.warmup):
        warm = await asyncio.gather(
            *(
                stream_chat(client, endpoint, body(min(spec.max_tokens, WARMUP_MAX_TOKENS)))
                for _ in range(spec.concurrency)
            )
        )
        warmup_tokens += sum(s.completion_tokens for s in warm)
        warmup_requests += len(warm)
        progress.update(spec.concurrency, "warm-up")

    # The warm-up's last tokens can reach /metrics after its streams ended (seen: a row whose delta
    # held one warm-up request more); wait for them before the row's own window opens.
    if start is not None:
        before = await _settled_counters(client, endpoint, start, warmup_tokens, warmup_requests)
    else:
        before = await scrape_counters(client, endpoint)
    samples: list[RequestSample] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for _ in range(options.repeats):
            try:
                samples.append(await stream_chat(client, endpoint, body(spec.max_tokens)))
            except httpx.TransportError:
                errors += 1  # a dropped stream is counted, not fatal; HTTP errors (bad request) are fatal
            progress.update(1, f"c={spec.concurrency} {spec.max_tokens} tok")

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(spec.concurrency)))
    wall = time.perf_counter() - t0
    if not samples:
        raise KitError(
            f"every request of row {spec.prompt!r} (concurrency {spec.concurrency}) failed; is the server up?"
        )

    delta = None
    if before is not None:
        after = await _settled_counters(
            client, endpoint, before, sum(s.completion_tokens for s in samples), len(samples)
        )
        if after is not None:
            try:
                delta = counter_delta(before, after)
            except CounterReset as exc:
                print(
                    f"warning: server counters reset during a row ({exc}); no /metrics numbers for it",
                    file=sys.stderr,
                )
    return summarize_row(spec, samples, wall, errors, delta, roofline.ceiling_tok_s if roofline else None)


async def run_bench_async(
    endpoint: Endpoint,
    options: BenchOptions,
    roofline: Roofline | None,
    context: dict[str, Any],
    roofline_reason: str | None,
    label: str = "bench",
) -> dict[str, Any]:
    rows = plan_rows(options)
    progress = report.Progress(requests_in(rows, options), label, enabled=options.progress)
    # generous read timeout: a 1024-token answer at 20 tok/s (CUDA graphs off) takes ~50 s
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=600.0)
    limits = httpx.Limits(max_connections=max(options.concurrency) + 4)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results = []
    try:
        async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
            for spec in rows:
                results.append(await run_row(client, endpoint, spec, options, roofline, progress))
    except httpx.TransportError as exc:
        raise KitError(
            f"{endpoint.base_url}: {type(exc).__name__} {exc}; is the server up? check --base-url"
        ) from None
    finally:
        progress.close()
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "python -m serve bench",
        "started_at": started,
        "context": context,
        "options": options.to_json(),
        "roofline": _roofline_json(roofline, roofline_reason),
        "rows": [r.to_json() for r in results],
    }


def _roofline_json(roofline: Roofline | None, reason: str | None) -> dict[str, Any]:
    return roofline.to_json() if roofline is not None else {"reason": reason or "unknown"}


def chart_title(result: Mapping[str, Any], profile: str | None = None) -> str:
    ctx = result.get("context") or {}
    name = profile or ctx.get("profile") or ctx.get("model")
    gpu = (ctx.get("gpu") or {}).get("name") or (ctx.get("engine") or {}).get("device") or "?"
    engine = (ctx.get("engine") or {}).get("version") or "?"
    return f"{name} on {gpu}, vLLM {engine}, {result.get('started_at')}"


def write_outputs(out_dir: Path, stem: str, result: dict[str, Any]) -> list[Path]:
    """bench.json, bench.md and bench.png (when matplotlib is there); returns the paths written."""
    json_path, md_path, png_path = (out_dir / f"{stem}.{ext}" for ext in ("json", "md", "png"))
    report.write_json(json_path, result)
    md_path.write_text(report.markdown_report(result))
    written = [json_path, md_path]
    message = report.write_chart(png_path, [(stem, result["rows"])], title=chart_title(result))
    if message:
        print(f"note: {message}", file=sys.stderr)
    else:
        written.append(png_path)
    return written


# --------------------------------------------------------------------------------------------------
# A/B: launch each profile through the launcher
# --------------------------------------------------------------------------------------------------


def launch_argv(profile: str, sets: Sequence[str], plan_file: Path) -> list[str]:
    argv = [sys.executable, "-m", "serve", "launch", "--profile", profile]
    for kv in sets:
        argv += ["--set", kv]
    return [*argv, "--plan-file", str(plan_file)]


def merge_sets(common: Sequence[str], side: Sequence[str]) -> list[str]:
    """--set for both profiles, then --set-a/--set-b; a side's key replaces the common one (the
    launcher refuses one key set twice with different values)."""
    side_keys = {kv.split("=", 1)[0].strip() for kv in side}
    return [kv for kv in common if kv.split("=", 1)[0].strip() not in side_keys] + list(side)


def add_set_arguments(group: Any, both_help: str, side_a: str, side_b: str) -> None:
    """--set for both launched sides and --set-a/--set-b for one, as ``merge_sets`` combines them
    (bench --ab and parity)."""
    group.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=both_help)
    group.add_argument(
        "--set-a", action="append", default=[], metavar="KEY=VALUE", help=f"override for {side_a} only"
    )
    group.add_argument(
        "--set-b", action="append", default=[], metavar="KEY=VALUE", help=f"override for {side_b} only"
    )


def _port_open(url: str) -> bool:
    parsed = urlparse(url)
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or 80), timeout=0.5):
            return True
    except OSError:
        return False


class LaunchedServer:
    """``python -m serve launch`` in its own process group (:class:`serve.client.launched.LaunchedProcess`):
    wait for plan.json (written before the launcher execs vLLM), then for a real completion; on exit stop
    the whole group (vLLM's engine core is a child process) with SIGTERM, then SIGKILL after
    ``stop_timeout_s``."""

    def __init__(
        self,
        argv: list[str],
        plan_file: Path,
        log_file: Path,
        *,
        ready_timeout_s: float,
        stop_timeout_s: float = 60.0,
    ):
        self.argv, self.plan_file, self.log_file = argv, plan_file, log_file
        self.ready_timeout_s, self.stop_timeout_s = ready_timeout_s, stop_timeout_s
        # The launcher's watchdog (on in containers) probes vLLM with a chat completion every few
        # seconds: traffic that lands inside a row's /metrics window (seen: a 29-token prompt counted as
        # a third request of a two-request row). The bench watches the server itself, so it is off here.
        self.process = LaunchedProcess(argv, log_file, env={**os.environ, "SERVE_WATCHDOG": "off"})
        self.plan: dict[str, Any] = {}

    @property
    def proc(self) -> Any:
        return self.process.proc

    def start(self, api_key: str | None) -> Endpoint:
        self.plan_file.unlink(missing_ok=True)  # wait for this launch's plan, not a stale one
        self.process.start()
        t0 = time.monotonic()
        while not self.plan_file.exists():
            if dead := self.process.exited():
                raise KitError(dead)
            # the launcher validates the argv with vLLM's own parser first (imports vLLM: 15-60 s)
            if time.monotonic() - t0 > PLAN_TIMEOUT_S:
                command = " ".join(self.argv)
                raise KitError(
                    f"`{command}` wrote no {self.plan_file} in {PLAN_TIMEOUT_S} s; see {self.log_file}"
                )
            time.sleep(0.2)
        time.sleep(0.2)  # the launcher writes atomically, but give exec a moment
        self.plan = read_plan(self.plan_file)
        base_url = normalize_base_url(
            str(self.plan.get("base_url") or f"http://127.0.0.1:{self.plan.get('port', 8000)}"),
            where=f"{self.plan_file}: base_url",
        )
        # vLLM needs many seconds to import before it binds; something answering now is another server
        if _port_open(base_url) and self.process.exited() is None and time.monotonic() - t0 < 5:
            raise KitError(
                f"{base_url} already accepts connections before the launched vLLM could bind it: another "
                "server holds the port; stop it or pass --set with another port"
            )
        model = str(self.plan.get("served_model_name") or self.plan.get("model") or "")
        endpoint = Endpoint(base_url=base_url, model=model, api_key=api_key)
        waited = asyncio.run(wait_ready(endpoint, self.ready_timeout_s, alive=self.process.exited))
        print(
            f"ready after {time.monotonic() - t0:.0f} s ({waited:.0f} s after plan.json): {base_url}",
            file=sys.stderr,
        )
        return endpoint

    def stop(self) -> None:
        """SIGTERM to the whole group, SIGKILL what is left after ``stop_timeout_s``; returns when
        the group is gone, so the next launch finds the port and the memory free."""
        self.process.stop(self.stop_timeout_s)

    def __enter__(self) -> LaunchedServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds through LaunchedServer.__exit__, so `kill`/`docker stop` of the bench
    # stops the vLLM it launched instead of orphaning it
    raise SystemExit(128 + signum)


def run_ab(args: argparse.Namespace, options: BenchOptions, out_dir: Path) -> int:
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        return _run_ab(args, options, out_dir)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_ab(args: argparse.Namespace, options: BenchOptions, out_dir: Path) -> int:
    profile_a, profile_b = args.ab
    sides = (
        ("A", profile_a, merge_sets(args.set, args.set_a)),
        ("B", profile_b, merge_sets(args.set, args.set_b)),
    )
    results: dict[str, dict[str, Any]] = {}
    for side, profile, sets in sides:
        side_dir = out_dir / side
        plan_file = side_dir / "plan.json"
        argv = launch_argv(profile, sets, plan_file)
        print(f"[{side}] {' '.join(argv)}", file=sys.stderr)
        with LaunchedServer(
            argv, plan_file, side_dir / "server.log", ready_timeout_s=args.ready_timeout
        ) as server:
            endpoint = server.start(_api_key(args))
            levels, warning = parse_concurrency(
                args.concurrency_text, (server.plan.get("settings") or {}).get("max_num_seqs")
            )
            if warning:
                print(f"warning: {warning}", file=sys.stderr)
            side_options = _with_levels(options, levels)
            roofline, reason = roofline_from_plan(server.plan, args.bandwidth_gbps)
            context = context_from_plan(server.plan, endpoint, plan_file)
            result = asyncio.run(
                run_bench_async(endpoint, side_options, roofline, context, reason, label=f"{side} {profile}")
            )
        results[side] = result
        for path in write_outputs(side_dir, "bench", result):
            print(f"wrote {path}", file=sys.stderr)
    ab = ab_result(profile_a, results["A"], profile_b, results["B"])
    report.write_json(out_dir / "ab.json", ab)
    (out_dir / "ab.md").write_text(
        report.ab_markdown(ab)
        + "\n"
        + _section("A", profile_a, results["A"])
        + "\n"
        + _section("B", profile_b, results["B"])
    )
    message = report.write_chart(
        out_dir / "ab.png",
        [(f"A {profile_a}", results["A"]["rows"]), (f"B {profile_b}", results["B"]["rows"])],
        title="A/B: " + chart_title(results["B"], profile=f"{profile_a} vs {profile_b}"),
    )
    if message:
        print(f"note: {message}", file=sys.stderr)
    print(report.ab_markdown(ab))
    print(
        f"wrote {out_dir / 'ab.json'}, {out_dir / 'ab.md'}" + ("" if message else f", {out_dir / 'ab.png'}"),
        file=sys.stderr,
    )
    return 0


def _section(side: str, profile: str, result: Mapping[str, Any]) -> str:
    return f"# {side}: `{profile}`\n\n" + report.markdown_report(result)


def ab_result(name_a: str, a: Mapping[str, Any], name_b: str, b: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "a": {"name": name_a, "context": a.get("context"), "started_at": a.get("started_at")},
        "b": {"name": name_b, "context": b.get("context"), "started_at": b.get("started_at")},
        "rows": ab_rows(a["rows"], b["rows"]),
    }


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument_group("target (one of)")
    target.add_argument(
        "--base-url",
        help="a live OpenAI-compatible endpoint, e.g. http://127.0.0.1:8888 (default: plan.json's base_url)",
    )
    target.add_argument(
        "--ab",
        nargs=2,
        metavar=("PROFILE_A", "PROFILE_B"),
        help="launch each profile in turn with `python -m serve launch`, bench both, report B/A per row",
    )
    parser.add_argument(
        "--model", help="model name to send (default: plan.json's served_model_name, else the server's first)"
    )
    parser.add_argument("--api-key", help="bearer token (default: $VLLM_API_KEY, then $OPENAI_API_KEY)")
    parser.add_argument(
        "--plan-file",
        help="plan.json from `serve launch`: model/GPU facts, max_num_seqs, the roofline "
        f"(default: $SERVE_PLAN_FILE, then {DEFAULT_PLAN_FILE} if present)",
    )
    parser.add_argument(
        "--repeats", type=int, help="measured requests per row and stream (default 3; --quick 1)"
    )
    parser.add_argument("--warmup", type=int, help="warm-up rounds per row, not measured (default 1)")
    parser.add_argument(
        "--concurrency",
        dest="concurrency_text",
        help="sweep levels, e.g. 1,2,3, or 'auto' = 1,2,4.. up to max_num_seqs (default auto; --quick 1,2)",
    )
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="generate exactly max_tokens per request (vLLM's ignore_eos)",
    )
    parser.add_argument("--temperature", type=float, help="sampling temperature (default: the server's)")
    parser.add_argument(
        "--bandwidth-gbps",
        type=float,
        help="GPU memory bandwidth per GPU in GB/s for the roofline, e.g. a copy bandwidth measured on "
        "this machine (default: plan.json's facts.gpu, the description of the GPU the launcher detected; "
        "none where the GPU was only assumed)",
    )
    parser.add_argument(
        "--out", default="out/bench", help="directory for bench.json, bench.md, bench.png (default out/bench)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"1 repeat, max_tokens capped at {QUICK_MAX_TOKENS}, concurrency 1,2: "
        "a harness check, not a measurement",
    )
    parser.add_argument(
        "--no-progress", dest="progress", action="store_false", help="no progress bar on stderr"
    )
    pred = parser.add_argument_group(
        "prediction (no server): MTP tok/s at a per-position acceptance, from measured brackets"
    )
    pred.add_argument(
        "--predict",
        action="store_true",
        help="print a PREDICTION from --tpot-nospec-ms/--tpot-reject-ms/--tpot-accept-ms (serve.bench.predict)",
    )
    pred.add_argument("--tpot-nospec-ms", type=float, help="measured TPOT without speculative decoding")
    pred.add_argument(
        "--tpot-reject-ms", type=float, help="measured TPOT with MTP n, 0%% accepted (random-weight synth)"
    )
    pred.add_argument(
        "--tpot-accept-ms", type=float, help="measured TPOT with MTP n, 100%% accepted (synth --agreeing-mtp)"
    )
    pred.add_argument("--mtp", type=int, default=3, help="num_speculative_tokens of the brackets (default 3)")
    pred.add_argument(
        "--acceptance",
        help="per-position rates, e.g. 0.85,0.63,0.44 (default: what users report at MTP 3)",
    )
    pred.add_argument(
        "--acceptance-kind",
        choices=predict.KINDS,
        default="marginal",
        help="marginal (vLLM's per-position figures: accepted at k / drafts) or conditional (default marginal)",
    )
    ab = parser.add_argument_group("A/B")
    add_set_arguments(ab, "profile override for both launches (repeatable)", "profile A", "profile B")
    ab.add_argument(
        "--ready-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for each launched server to answer (default 900)",
    )


def _api_key(args: argparse.Namespace) -> str | None:
    return api_key_from(args.api_key)


def _with_levels(options: BenchOptions, levels: tuple[int, ...]) -> BenchOptions:
    return BenchOptions(
        repeats=options.repeats,
        warmup=options.warmup,
        concurrency=levels,
        ignore_eos=options.ignore_eos,
        temperature=options.temperature,
        max_tokens_cap=options.max_tokens_cap,
        progress=options.progress,
    )


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    warmup = args.warmup if args.warmup is not None else 1
    if repeats < 1:
        raise KitError(f"--repeats {repeats}: at least 1")
    if warmup < 0:
        raise KitError(f"--warmup {warmup}: 0 or more")
    if args.concurrency_text is None:
        args.concurrency_text = "1,2" if args.quick else "auto"
    return BenchOptions(
        repeats=repeats,
        warmup=warmup,
        concurrency=(1,),  # resolved against max_num_seqs once the plan is known
        ignore_eos=args.ignore_eos,
        temperature=args.temperature,
        max_tokens_cap=QUICK_MAX_TOKENS if args.quick else None,
        progress=args.progress,
    )


def _resolve_model(
    endpoint_url: str, explicit: str | None, plan: Mapping[str, Any] | None, api_key: str | None
) -> str:
    if explicit:
        return explicit
    if plan and (plan.get("served_model_name") or plan.get("model")):
        return str(plan.get("served_model_name") or plan.get("model"))

    async def first() -> list[str]:
        async with httpx.AsyncClient(timeout=10.0) as client:
            return await list_models(client, Endpoint(endpoint_url, "", api_key))

    try:
        models = asyncio.run(first())
    except httpx.HTTPError as exc:
        raise KitError(
            f"cannot reach {endpoint_url} ({type(exc).__name__}: {exc}); is the server up? check --base-url"
        ) from None
    if not models:
        raise KitError(f"{endpoint_url}/v1/models lists no model; pass --model")
    return models[0]


def run_predict(args: argparse.Namespace) -> int:
    missing = [f for f in ("tpot_nospec_ms", "tpot_reject_ms", "tpot_accept_ms") if getattr(args, f) is None]
    if missing:
        raise KitError("bench --predict needs " + ", ".join("--" + f.replace("_", "-") for f in missing))
    if args.acceptance is None:
        rates = list(predict.USERS_ACCEPTANCE)
    else:
        try:
            rates = [float(x) for x in args.acceptance.split(",") if x.strip()]
        except ValueError:
            raise KitError(
                f"bench --predict: --acceptance {args.acceptance!r} is not comma-separated numbers"
            ) from None
    concurrency = 1
    if args.concurrency_text:
        try:
            concurrency = int(args.concurrency_text)
        except ValueError:
            raise KitError(
                f"bench --predict: --concurrency {args.concurrency_text!r}: give the one level the TPOTs were measured at"
            ) from None
    result = predict.predict(
        tpot_nospec_s=args.tpot_nospec_ms / 1e3,
        tpot_reject_s=args.tpot_reject_ms / 1e3,
        tpot_accept_s=args.tpot_accept_ms / 1e3,
        num_speculative_tokens=args.mtp,
        acceptance=rates,
        kind=args.acceptance_kind,
        concurrency=concurrency,
    )
    print(predict.format_prediction(result))
    return 0


def run(args: argparse.Namespace, *, environ: Mapping[str, str] | None = None) -> int:
    environ = os.environ if environ is None else environ
    if args.predict:
        return run_predict(args)
    options = options_from_args(args)
    out_dir = Path(args.out)
    if args.ab:
        if args.base_url:
            raise KitError("--ab launches its own servers; drop --base-url")
        return run_ab(args, options, out_dir)

    plan_path = find_plan_file(args.plan_file, environ)
    plan = read_plan(plan_path) if plan_path else None
    base_url = args.base_url or (plan or {}).get("base_url")
    if not base_url:
        raise KitError(
            "no endpoint: pass --base-url URL, or --plan-file with the plan.json `serve launch` wrote"
        )
    base_url = normalize_base_url(
        str(base_url), where="--base-url" if args.base_url else f"{plan_path}: base_url"
    )
    api_key = _api_key(args)
    model = _resolve_model(base_url, args.model, plan, api_key)
    endpoint = Endpoint(base_url=base_url, model=model, api_key=api_key)

    levels, warning = parse_concurrency(
        args.concurrency_text, ((plan or {}).get("settings") or {}).get("max_num_seqs")
    )
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    options = _with_levels(options, levels)
    roofline, reason = roofline_from_plan(plan, args.bandwidth_gbps)
    context = context_from_plan(plan, endpoint, plan_path)
    result = asyncio.run(run_bench_async(endpoint, options, roofline, context, reason))
    written = write_outputs(out_dir, "bench", result)
    print(report.markdown_report(result))
    print("wrote " + ", ".join(str(p) for p in written), file=sys.stderr)
    return 0
