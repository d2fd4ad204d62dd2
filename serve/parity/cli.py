"""`python -m serve parity`: greedy parity between two configurations, token id by token id.

Two configurations of one profile, each launched in turn through ``python -m serve launch`` (as
``serve bench --ab`` does)::

    python -m serve parity --profile cpu-real --set-b serving.speculative.method=ngram

two profiles (``--ab PROFILE_A PROFILE_B``), two live endpoints, or one of each::

    python -m serve parity --base-url-a http://127.0.0.1:8000 --base-url-b http://127.0.0.1:8001
    python -m serve parity --base-url-a http://127.0.0.1:8000 --profile cpu-real --set-b serving.kv_cache=fp8

Exit 0 when the token agreement is at least ``--threshold``, 1 below it, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import signal
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from serve import atomic
from serve.bench.cli import LaunchedServer, add_set_arguments, launch_argv, merge_sets
from serve.bench.stats import SpecDecodeStats
from serve.client.endpoint import Endpoint, api_key_from, normalize_base_url
from serve.errors import KitError
from serve.launch.layering import load_profile
from serve.parity.client import Generation, ParityClient, resolve_model, scrape_counters, spec_decode_over
from serve.parity.compare import DEFAULT_THRESHOLD, ParityResult, check_threshold, compare, table
from serve.parity.prompts import BUILTIN_PROMPTS, load_prompts

SCHEMA_VERSION = 1
DEFAULT_MAX_TOKENS = 32
DEFAULT_OUT = "out/parity"

DESCRIPTION = """\
Greedy parity: the same prompts at temperature 0 on two configurations, compared token id by token
id. Per prompt the first position where the two differ; overall the token agreement (positions equal
up to the shorter length, plus the position where one side stopped and the other went on) and the
share of prompts that came out identical. Exit 1 when the token agreement is under --threshold.

Speculative decoding (MTP, ngram, a draft model) is lossless by design: with greedy sampling it must
give exactly the target model's tokens, so the default threshold is 1.0 and ANY drift is a bug, of
the class of vLLM PR 51812 (Qwen GDN gates misaligned with speculative tokens: MTP output drifts at a
fixed position) or TurboQuant KV + speculative decoding + CUDA graphs (vLLM issues 40831, 53180:
degenerate output while /health is 200). KV quantization (fp8) and weight quantization (INT4) are
not lossless: compare them with a floor you measured (--threshold 0.5, ...), as a quality figure.

Each side is a live endpoint (--base-url-a/--base-url-b) or launched from a profile (--profile, or
--ab PROFILE_A PROFILE_B) with its overrides (--set for both, --set-a/--set-b for one side). Launched
sides run one after the other (one server at a time) on a free port unless serving.port is set."""


@dataclass
class Side:
    name: str  # "A" or "B"
    base_url: str | None = None
    profile: str | None = None
    sets: list[str] = field(default_factory=list)
    model: str | None = None
    id_source: str | None = None
    logprobs: bool = False
    spec_decode: SpecDecodeStats | None = None
    plan: dict[str, Any] = field(default_factory=dict)
    generations: list[Generation] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"--base-url-{self.name.lower()}" if self.base_url else f"the launch of profile {self.profile}"

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "id_source": self.id_source,
            "logprobs": self.logprobs,
            "spec_decode": dataclasses.asdict(self.spec_decode) if self.spec_decode else None,
        }
        if self.base_url and not self.profile:
            out["base_url"] = self.base_url
        else:
            out.update(
                profile=self.profile,
                sets=self.sets,
                base_url=self.plan.get("base_url"),
                command=self.plan.get("command"),
            )
        return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = DESCRIPTION
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    target = parser.add_argument_group("sides (each a live endpoint or a launched profile)")
    target.add_argument("--base-url-a", metavar="URL", help="side A is this live endpoint")
    target.add_argument("--base-url-b", metavar="URL", help="side B is this live endpoint")
    target.add_argument(
        "--profile", help="launch the side(s) without a --base-url from this profile, through `serve launch`"
    )
    target.add_argument(
        "--ab", nargs=2, metavar=("PROFILE_A", "PROFILE_B"), help="launch A and B from two profiles"
    )
    add_set_arguments(target, "override for both launches (repeatable)", "A", "B")
    parser.add_argument(
        "--prompts",
        metavar="FILE",
        help=f'one prompt per line, or JSONL (.jsonl: a string or {{"prompt": ...}} per line); '
        f"default: {len(BUILTIN_PROMPTS)} built-in short prompts",
    )
    parser.add_argument(
        "--max-tokens",
        type=int,
        default=DEFAULT_MAX_TOKENS,
        help=f"tokens per answer (default {DEFAULT_MAX_TOKENS})",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help="lowest token agreement that passes, a fraction in [0, 1] (default 1.0: identical, for lossless "
        "pairs such as speculative decoding on vs off)",
    )
    parser.add_argument("--json", metavar="FILE", help="write the full result (token ids included) here")
    parser.add_argument("--model", help="model name to send to both sides (default: each endpoint's first)")
    parser.add_argument("--api-key", help="bearer token (default: $VLLM_API_KEY, then $OPENAI_API_KEY)")
    parser.add_argument(
        "--out",
        default=DEFAULT_OUT,
        help=f"plan.json and server.log of launched sides (default {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--ready-timeout",
        type=float,
        default=900.0,
        help="seconds to wait for a launched server (default 900)",
    )


# --------------------------------------------------------------------------------------------------
# Options -> sides (checked before anything is launched or sent)
# --------------------------------------------------------------------------------------------------


def sides_from_args(args: argparse.Namespace) -> tuple[Side, Side]:
    if args.profile and args.ab:
        raise KitError("--profile and --ab both given; pass one (--ab for two profiles)")
    profiles = tuple(args.ab) if args.ab else (args.profile, args.profile)
    urls = (args.base_url_a, args.base_url_b)
    if args.ab and any(urls):
        raise KitError(
            "--ab launches both sides from two profiles; with a live side pass --profile PROFILE for the "
            "launched one"
        )
    side_sets = (args.set_a, args.set_b)
    sides = []
    for name, url, profile, own in zip("AB", urls, profiles, side_sets, strict=True):
        option = f"--base-url-{name.lower()}"
        if url:
            if own:
                raise KitError(
                    f"--set-{name.lower()} {own[0]!r}: side {name} is the live endpoint {option}; "
                    "overrides only apply to a launched side"
                )
            sides.append(Side(name, base_url=normalize_base_url(url, where=option)))
        elif profile:
            sides.append(Side(name, profile=profile, sets=merge_sets(args.set, own)))
        else:
            raise KitError(f"side {name} has no target: pass {option} URL, or --profile PROFILE to launch it")
    if all(s.base_url for s in sides):
        if args.profile or args.ab:
            raise KitError(
                "both sides are live endpoints (--base-url-a, --base-url-b): --profile/--ab would "
                "launch nothing; drop it"
            )
        if args.set:
            raise KitError(f"--set {args.set[0]!r}: both sides are live endpoints; nothing is launched")
    return sides[0], sides[1]


def check_options(args: argparse.Namespace) -> None:
    try:
        check_threshold(args.threshold)
    except ValueError as exc:
        raise KitError(f"--threshold {exc}") from None
    if args.max_tokens < 1:
        raise KitError(f"--max-tokens {args.max_tokens}: at least 1")
    if args.json and Path(args.json).is_dir():
        raise KitError(f"--json {args.json}: is a directory; give a file name, e.g. {args.json}/parity.json")


def check_profiles(sides: Sequence[Side]) -> None:
    """Load each launched side's profile with its overrides: an unknown profile or key fails now, not
    after side A has run for minutes."""
    for side in sides:
        if side.profile:
            load_profile(side.profile, side.sets)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_port(sets: list[str]) -> list[str]:
    if any(kv.split("=", 1)[0].strip() == "serving.port" for kv in sets):
        return sets
    return [*sets, f"serving.port={free_port()}"]


# --------------------------------------------------------------------------------------------------
# Running (I/O)
# --------------------------------------------------------------------------------------------------


def _generate_all(side: Side, endpoint: Endpoint, prompts: Sequence[str], max_tokens: int) -> None:
    timeout = httpx.Timeout(connect=10.0, read=600.0, write=30.0, pool=30.0)
    t0 = time.monotonic()
    # one request at a time: batch composition is not part of what is compared
    with httpx.Client(timeout=timeout) as http:
        client = ParityClient(side.name, endpoint, http, side.where)
        before = scrape_counters(http, endpoint)
        for prompt in prompts:
            side.generations.append(client.generate(prompt, max_tokens))
        generated = sum(len(g.token_ids) for g in side.generations)
        side.spec_decode = spec_decode_over(http, endpoint, before, generated)
    side.id_source = side.generations[0].id_source if side.generations else None
    side.logprobs = client.logprobs
    print(
        f"[{side.name}] {len(prompts)} prompts, {generated} tokens in {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )


def _launcher(side: Side, args: argparse.Namespace) -> LaunchedServer:
    assert side.profile is not None
    side_dir = Path(args.out) / side.name
    plan_file = side_dir / "plan.json"
    side.sets = _with_port(side.sets)
    argv = launch_argv(side.profile, side.sets, plan_file)
    print(f"[{side.name}] {' '.join(argv)}", file=sys.stderr)
    return LaunchedServer(argv, plan_file, side_dir / "server.log", ready_timeout_s=args.ready_timeout)


def _start(side: Side, server: LaunchedServer, args: argparse.Namespace, api_key: str | None) -> Endpoint:
    endpoint = server.start(api_key)
    side.plan = server.plan
    if args.model:
        endpoint = Endpoint(endpoint.base_url, args.model, api_key)
    side.model = endpoint.model
    return endpoint


def _live(side: Side, api_key: str | None) -> Endpoint:
    assert side.base_url is not None and side.model is not None
    return Endpoint(side.base_url, side.model, api_key)


def _run_in_turn(
    sides: Sequence[Side], args: argparse.Namespace, prompts: Sequence[str], api_key: str | None
) -> None:
    """One server at a time: launch a side, generate, stop it, then the next (the default: two 27B
    servers do not fit one GPU)."""
    for side in sides:
        if side.base_url:
            _generate_all(side, _live(side, api_key), prompts, args.max_tokens)
            continue
        with _launcher(side, args) as server:
            _generate_all(side, _start(side, server, args, api_key), prompts, args.max_tokens)


def result_json(
    result: ParityResult, sides: Sequence[Side], args: argparse.Namespace, started: str
) -> dict[str, Any]:
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": "python -m serve parity",
        "started_at": started,
        "options": {
            "max_tokens": args.max_tokens,
            "temperature": 0,
            "threshold": args.threshold,
            "prompts_file": args.prompts,
        },
        "a": sides[0].to_json(),
        "b": sides[1].to_json(),
        **result.to_json(),
    }


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds through LaunchedServer.__exit__: no orphaned vLLM


def run(args: argparse.Namespace) -> int:
    check_options(args)
    prompts = load_prompts(args.prompts)
    side_a, side_b = sides_from_args(args)
    sides = (side_a, side_b)
    check_profiles(sides)
    api_key = api_key_from(args.api_key)
    for side in sides:
        if side.base_url:
            side.model = resolve_model(side.base_url, args.model, api_key, side.where)

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        _run_in_turn(sides, args, prompts, api_key)
    finally:
        signal.signal(signal.SIGTERM, previous)

    result = compare(
        prompts,
        [g.token_ids for g in side_a.generations],
        [g.token_ids for g in side_b.generations],
        threshold=args.threshold,
        texts_a=[g.text for g in side_a.generations],
        texts_b=[g.text for g in side_b.generations],
        tops_a=[g.top_logprobs for g in side_a.generations],
        tops_b=[g.top_logprobs for g in side_b.generations],
    )
    print(f"A: {_describe(side_a)}\nB: {_describe(side_b)}")
    print(f"{len(prompts)} prompts, max_tokens {args.max_tokens}, temperature 0\n")
    print(table(result))
    if args.json:
        atomic.write_text(
            Path(args.json), json.dumps(result_json(result, sides, args, started), indent=2) + "\n"
        )
        print(f"wrote {args.json}", file=sys.stderr)
    return 0 if result.passed else 1


def _describe(side: Side) -> str:
    if side.profile:
        sets = " ".join(f"--set {kv}" for kv in side.sets if not kv.startswith("serving.port="))
        target = f"profile {side.profile} {sets}".rstrip()
    else:
        target = str(side.base_url)
    spec = side.spec_decode
    drafted = (
        f", speculative decoding: {spec.accepted_tokens} of {spec.draft_tokens} draft tokens accepted"
        if spec
        else ""
    )
    return f"{target} (model {side.model}, ids via {side.id_source}{drafted})"
