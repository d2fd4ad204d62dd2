"""The launcher's watchdog: restarts a wedged vLLM from inside its own container, with no Docker socket.

With the watchdog on, ``python -m serve launch`` keeps vLLM as its child instead of exec'ing it,
probes it with the sidecar's own readiness probe (healthcheck.probe: /health, /v1/models and a real
chat completion, the question from plan.json) and, after ``watchdog_failures`` failed probes in a row
past the start period (healthcheck.restart_policy), kills vLLM's process group and exits with
``EXIT_WEDGED``; Docker's ``restart: unless-stopped`` then starts the container again. SIGTERM, SIGINT,
SIGHUP and SIGQUIT are passed on to vLLM, and its exit code is passed through (128 + N for a signal),
so ``docker stop`` behaves as when vLLM was exec'd. A guard process (healthcheck.orphan_guard) stops
vLLM's process group when the launcher dies first (SIGKILL on bare metal), so vLLM is never orphaned.

Settings are environment variables (``SERVE_WATCHDOG``, ``SERVE_WATCHDOG_*``), defined once here on
pydantic-settings. ``SERVE_WATCHDOG=auto`` (the default) turns it on inside a container only."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from healthcheck.orphan_guard import Guard
from healthcheck.plan_info import PlanFile
from healthcheck.probe import Prober, ProbeResult
from healthcheck.probe_loop import ProbeLoop
from healthcheck.question import ProbeQuestion, resolve_question
from healthcheck.restart_policy import RESTART, WAIT_START_PERIOD, RestartPolicy
from serve.launch.plan_document import parse as parse_plan

EXIT_WEDGED = 75  # EX_TEMPFAIL: vLLM was killed for failing its readiness probes; a restart may heal
FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
CONTAINER_MARKERS = (Path("/.dockerenv"), Path("/run/.containerenv"))


class WatchdogSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SERVE_", extra="ignore", frozen=True)

    watchdog: Literal["auto", "on", "off"] = Field(
        "auto", description="auto: on inside a container (/.dockerenv or /run/.containerenv), off elsewhere."
    )
    watchdog_failures: int = Field(
        6, ge=1, description="Failed readiness probes in a row that make the launcher kill vLLM and exit."
    )
    watchdog_interval_s: float = Field(10.0, gt=0, description="Seconds between the starts of two probes.")
    watchdog_start_period_s: float = Field(
        2400.0,
        ge=0,
        description="Until vLLM has been ready once, failures kill nothing before this many seconds: a "
        "first start downloads and compiles (compose passes VLLM_START_PERIOD's value).",
    )
    watchdog_probe_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of one whole probe (health + models + chat completion)."
    )
    watchdog_orphan_grace_s: float = Field(
        15.0,
        ge=0,
        description="When the launcher dies before vLLM (killed with SIGKILL, crashed), its guard sends "
        "vLLM's process group SIGTERM, then SIGKILL after this many seconds.",
    )

    def enabled(self, markers: Sequence[Path] = CONTAINER_MARKERS) -> bool:
        if self.watchdog == "auto":
            return any(p.exists() for p in markers)
        return self.watchdog == "on"


def load_settings(environ: Mapping[str, str] | None = None) -> WatchdogSettings:
    """The watchdog's settings from the environment; ValueError naming the variable on a bad value."""
    environ = os.environ if environ is None else environ
    names = {f"SERVE_{name.upper()}": name for name in WatchdogSettings.model_fields}
    values = {names[k]: v for k, v in environ.items() if k in names and v != ""}
    try:
        return WatchdogSettings.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = f"SERVE_{str(err['loc'][0]).upper()}"
        raise ValueError(f"{name}={err.get('input')!r}: {err['msg']}") from None


def probe_url(host: str, port: int) -> str:
    """Where the watchdog reaches vLLM from inside its container: a wildcard address means loopback."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _say(message: str) -> None:
    print(f"[watchdog] {message}", file=sys.stderr, flush=True)


class Watchdog:
    """vLLM as a child process, watched by readiness probes; ``run`` returns the exit code."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        plan_file: Path,
        settings: WatchdogSettings,
    ) -> None:
        self.argv = list(argv)
        self.env = dict(env)
        self.settings = settings
        doc = parse_plan(json.loads(plan_file.read_text(encoding="utf-8")), str(plan_file))
        self.url = probe_url(
            doc.host or "", doc.port or 8000
        )  # no port: vLLM's default, as render's base_url
        self.plan = PlanFile(plan_file)
        self.plan.refresh()
        self.policy = RestartPolicy(
            failures_to_restart=settings.watchdog_failures,
            start_period_s=settings.watchdog_start_period_s,
            started_at=time.monotonic(),
        )
        self._verdict: asyncio.Future[ProbeResult] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._pending: list[signal.Signals] = []  # signals that came before vLLM was started
        self._held_said = False

    def _question(self) -> ProbeQuestion:
        return resolve_question(
            prompt=None,
            max_tokens=None,
            extra_body=None,
            expect=None,
            expect_off=None,
            plan_block=self.plan.readiness,
        )

    def _observe(self, result: ProbeResult) -> None:
        if self._verdict is not None and self._verdict.done():
            return  # decided (or stopping): later probes change nothing
        was_ready = self.policy.ready_once
        decision = self.policy.observe(result.ok, time.monotonic())
        if result.ok and not was_ready:
            _say(
                f"vLLM at {self.url} is ready; restarting it after {self.settings.watchdog_failures} failed probes in a row"
            )
        elif not result.ok and was_ready:  # a cold start's failures are expected: not logged one by one
            _say(
                f"probe failed ({self.policy.failures}/{self.settings.watchdog_failures}): "
                f"{result.reason}: {result.detail}"
            )
        if decision == WAIT_START_PERIOD and not self._held_said:
            self._held_said = True
            _say(f"not ready yet; within the start period of {self.settings.watchdog_start_period_s:g} s")
        if decision == RESTART and self._verdict is not None and not self._verdict.done():
            self._verdict.set_result(result)

    def _forward(self, sig: signal.Signals) -> None:
        # A server that is shutting down fails probes: that is no wedge, so the verdict is off.
        if self._verdict is not None and not self._verdict.done():
            self._verdict.cancel()
        if self._proc is None:
            self._pending.append(sig)
            return
        with contextlib.suppress(ProcessLookupError):
            self._proc.send_signal(sig)

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        self._verdict = loop.create_future()
        for sig in FORWARDED:
            loop.add_signal_handler(sig, self._forward, sig)
        # Its own session and process group: the wedge kill reaches the engine core and the workers.
        # The guard, started first, stops that group should the launcher die before it.
        guard = Guard(self.settings.watchdog_orphan_grace_s)
        try:
            proc = self._proc = subprocess.Popen(self.argv, env=self.env, start_new_session=True)
        except OSError:
            guard.release()
            raise
        guard.watch(proc.pid)
        for sig in self._pending:
            proc.send_signal(sig)
        prober = Prober(
            self.url,
            expected_model=lambda: self.plan.served_model_name,
            api_key=self.env.get("VLLM_API_KEY") or None,
            deadline_s=self.settings.watchdog_probe_timeout_s,
            request_timeout_s=self.settings.watchdog_probe_timeout_s,
            max_response_bytes=1 << 20,
            question=self._question,
            temperature=0.0,
        )
        probing = asyncio.create_task(
            ProbeLoop(prober.run, self._observe, interval_s=self.settings.watchdog_interval_s).run()
        )
        exited = asyncio.create_task(_exit_code(proc))
        try:
            waited: set[asyncio.Future[Any]] = {exited, self._verdict}
            await asyncio.wait(waited, return_when=asyncio.FIRST_COMPLETED)
            if not exited.done() and not self._verdict.cancelled():
                last = self._verdict.result()
                _say(
                    f"vLLM failed {self.settings.watchdog_failures} readiness probes in a row (last: "
                    f"{last.reason}: {last.detail}); killing its process group and exiting {EXIT_WEDGED} "
                    "so that the container restarts"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await exited
                return EXIT_WEDGED
            code = await exited
        finally:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)  # helpers vLLM left behind when it ended
            guard.release()
            probing.cancel()
            await asyncio.gather(probing, return_exceptions=True)
            await prober.aclose()
            for sig in FORWARDED:
                loop.remove_signal_handler(sig)
        return code if code >= 0 else 128 - code


async def _exit_code(proc: subprocess.Popen[bytes]) -> int:
    # Polled rather than asyncio's child watcher: with a signal forwarded while the child exits, the
    # watcher thread could miss the exit and the launcher would wait for ever (seen on 3.11).
    while proc.poll() is None:
        await asyncio.sleep(0.2)
    return proc.returncode


def supervise(
    argv: Sequence[str], env: Mapping[str, str], plan_file: Path, settings: WatchdogSettings
) -> int:
    _say(
        f"vLLM runs as a child; killed after {settings.watchdog_failures} failed probes "
        f"{settings.watchdog_interval_s:g} s apart (start period {settings.watchdog_start_period_s:g} s)"
    )
    return asyncio.run(Watchdog(argv, env, plan_file, settings).run())
