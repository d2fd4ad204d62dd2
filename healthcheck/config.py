"""Settings of the sidecar, defined once: each field becomes a command-line flag and an environment
variable (``HEALTHCHECK_`` + the field name in upper case), so compose files and shells configure it the
same way. Precedence: flag > environment variable > default."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from healthcheck import ENV_PREFIX
from healthcheck.question import compile_expect


class SettingsError(ValueError):
    """A setting has a value the sidecar cannot use; the message names the flag and env variable."""


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Settings:
    # --- what to watch -------------------------------------------------------------------------
    vllm_url: str = _opt("http://127.0.0.1:8888", "Base URL of the vLLM OpenAI server.")
    model: str | None = _opt(
        None,
        "Served model name that /v1/models must list and the probe requests. Default: "
        "served_model_name from the plan file, else the first model vLLM lists.",
    )
    plan_file: Path | None = field(
        default=Path("run/plan.json"),
        metadata={"help": "The launcher's plan.json (for the plan info metric and the model name)."},
    )
    api_key: str | None = _opt(
        None, "API key for vLLM (sent as a Bearer token). Falls back to VLLM_API_KEY, then api_key_file."
    )
    api_key_file: Path | None = field(
        default=None, metadata={"help": "File holding the API key (e.g. a Docker secret)."}
    )

    # --- the sidecar's own server --------------------------------------------------------------
    host: str = _opt("0.0.0.0", "Address the sidecar listens on.")
    port: int = _opt(8889, "Port the sidecar listens on.")
    log_level: str = _opt("info", "Log level (debug, info, warning, error).")

    # --- the readiness probe -------------------------------------------------------------------
    probe_interval_s: float = _opt(5.0, "Seconds between the starts of two readiness probes.")
    probe_timeout_s: float = _opt(
        20.0, "Deadline for one whole probe (health + models + chat completion); slower counts as failed."
    )
    request_timeout_s: float = _opt(10.0, "Timeout for connecting and for each read of one HTTP call.")
    failure_threshold: int = _opt(
        2, "Consecutive failed probes before a ready sidecar turns not ready (sticky readiness)."
    )
    success_threshold: int = _opt(1, "Consecutive good probes before a not-ready sidecar turns ready.")
    probe_prompt: str | None = _opt(
        None,
        "User message of the synthetic chat completion: a question with one known answer. Default: "
        "readiness.prompt from the plan file, else the profile schema's default (the capital of France).",
    )
    probe_expect: str | None = _opt(
        None,
        "Python regular expression the probe's answer (content + reasoning) must match; a miss is the "
        "not-ready reason wrong_answer. Default: readiness.expect from the plan file; without a plan "
        "file the answer is not checked.",
    )
    probe_expect_off: str | None = _opt(
        None,
        "Turn the answer check off, with this reason (shown on /readyz and in the plan info metric), "
        "e.g. 'random weights'. The degeneration check still applies.",
    )
    probe_max_tokens: int | None = _opt(
        None,
        "max_tokens of the synthetic chat completion. Default: readiness.max_tokens from the plan file, "
        "else 32. Not below ~24 without an answer check: the shared detector judges loops only in texts "
        "of 24+ characters, and a looping 1-character token must reach that.",
    )
    probe_temperature: float = _opt(0.0, "Sampling temperature of the synthetic chat completion.")
    probe_extra_body: str | None = _opt(
        None,
        'JSON object merged into the chat request, e.g. \'{"chat_template_kwargs": '
        '{"enable_thinking": false}}\'. Default: readiness.extra_body from the plan file.',
    )
    max_response_bytes: int = _opt(
        1 << 20, "Largest body read from /health, /v1/models or a chat completion; larger fails the probe."
    )

    # --- vLLM's metrics and the derived figures ------------------------------------------------
    metrics_interval_s: float = _opt(5.0, "Seconds between reads of vLLM's /metrics.")
    metrics_max_bytes: int = _opt(16 << 20, "Largest vLLM /metrics body read; larger is dropped.")
    spec_window_s: float = _opt(
        60.0, "Sliding window for the derived spec-decode figures (acceptance rate, length, per position)."
    )
    gpu: bool = _opt(True, "Export NVML GPU telemetry when a GPU is present.")

    # --- autoheal ------------------------------------------------------------------------------
    autoheal: bool = _opt(False, "Restart the vLLM container after autoheal_failures failed probes.")
    autoheal_container: str | None = _opt(None, "Name or id of the vLLM container to restart.")
    autoheal_failures: int = _opt(6, "Consecutive failed probes that trigger a restart.")
    autoheal_backoff_s: float = _opt(
        300.0, "Least seconds between two restarts; doubles after each restart that did not heal."
    )
    autoheal_backoff_max_s: float = _opt(3600.0, "Upper bound of the doubling back-off.")
    autoheal_start_period_s: float = _opt(
        900.0,
        "Until vLLM has been ready once since the sidecar started (or since the last restart), failures "
        "trigger no restart before this many seconds: a cold start is not a fault.",
    )
    autoheal_stop_timeout_s: int = _opt(30, "Seconds Docker waits for vLLM to stop before killing it.")
    docker_url: str | None = _opt(
        None, "Docker API endpoint (default: DOCKER_HOST or the local socket unix:///var/run/docker.sock)."
    )

    def __post_init__(self) -> None:
        problems: list[tuple[str, Any, str]] = []
        if not self.vllm_url.startswith(("http://", "https://")):
            problems.append(("vllm_url", self.vllm_url, "must start with http:// or https://"))
        for name in ("probe_interval_s", "probe_timeout_s", "request_timeout_s", "metrics_interval_s"):
            if getattr(self, name) <= 0:
                problems.append((name, getattr(self, name), "must be > 0"))
        for name in ("failure_threshold", "success_threshold", "probe_max_tokens", "autoheal_failures"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                problems.append((name, getattr(self, name), "must be >= 1"))
        if self.probe_expect is not None:
            try:
                compile_expect(self.probe_expect)
            except ValueError as exc:
                problems.append(("probe_expect", self.probe_expect, f"is refused: {exc}"))
            if self.probe_expect_off is not None:
                problems.append(
                    ("probe_expect_off", self.probe_expect_off, f"conflicts with {flag_name('probe_expect')}")
                )
        if self.probe_expect_off is not None and not self.probe_expect_off.strip():
            problems.append(("probe_expect_off", self.probe_expect_off, "must say why the check is off"))
        if self.max_response_bytes < 1024:
            problems.append(("max_response_bytes", self.max_response_bytes, "must be >= 1024"))
        if self.autoheal and not self.autoheal_container:
            problems.append(("autoheal_container", None, "is required when autoheal is on"))
        if self.probe_extra_body is not None:
            try:
                extra = json.loads(self.probe_extra_body)
            except json.JSONDecodeError as exc:
                problems.append(("probe_extra_body", self.probe_extra_body, f"is not JSON: {exc}"))
            else:
                if not isinstance(extra, dict):
                    problems.append(("probe_extra_body", self.probe_extra_body, "must be a JSON object"))
        if problems:
            raise SettingsError(
                "; ".join(f"{flag_name(n)} / {env_name(n)} = {v!r} {why}" for n, v, why in problems)
            )

    @property
    def extra_body(self) -> dict[str, Any] | None:
        """The probe's extra request fields when set here; None: take the plan's."""
        return json.loads(self.probe_extra_body) if self.probe_extra_body is not None else None

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key to send: this setting, else VLLM_API_KEY (compose often shares vLLM's env), else the
        file. Read at startup; a missing file is an error the user can act on."""
        environ = os.environ if environ is None else environ
        if self.api_key:
            return self.api_key
        if environ.get("VLLM_API_KEY"):
            return environ["VLLM_API_KEY"]
        if self.api_key_file is not None:
            try:
                key = self.api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise SettingsError(
                    f"{flag_name('api_key_file')} / {env_name('api_key_file')}: cannot read "
                    f"{self.api_key_file}: {exc.strerror}"
                ) from exc
            return key or None
        return None

    def redacted(self) -> dict[str, Any]:
        """Settings as logged at startup: the key never appears."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if out["api_key"]:
            out["api_key"] = "***"
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


def _base_type(tp: Any) -> type:
    """``str | None`` -> str; the one concrete type a field holds."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _parse_bool(text: str) -> bool:
    low = text.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true/false)")


def _convert(name: str, tp: type, raw: str, where: str, optional: bool) -> Any:
    if optional and raw == "":
        return None  # compose writes ${VAR:-} as an empty string: that means "not set"
    try:
        if tp is bool:
            return _parse_bool(raw)
        if tp is Path:
            return Path(raw) if raw else None
        return tp(raw)
    except ValueError as exc:
        raise SettingsError(f"{where} = {raw!r}: {exc}") from exc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per Settings field; help text from the field, with its env variable and default."""
    hints = typing.get_type_hints(Settings)
    for f in dataclasses.fields(Settings):
        tp = _base_type(hints[f.name])
        help_text = f"{f.metadata['help']} [env {env_name(f.name)}; default {f.default!r}]"
        if tp is bool:
            parser.add_argument(
                flag_name(f.name),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=None,
                help=help_text,
            )
        else:
            parser.add_argument(
                flag_name(f.name), dest=f.name, default=None, metavar=tp.__name__.upper(), help=help_text
            )


def load_settings(
    args: argparse.Namespace | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from parsed flags (which win) and the environment."""
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(Settings)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(Settings):
        tp = _base_type(hints[f.name])
        optional = tp is not hints[f.name]
        flag_value = getattr(args, f.name, None) if args is not None else None
        if flag_value is not None:
            values[f.name] = (
                flag_value
                if isinstance(flag_value, bool)
                else _convert(f.name, tp, flag_value, flag_name(f.name), optional)
            )
        elif env_name(f.name) in environ:
            values[f.name] = _convert(f.name, tp, environ[env_name(f.name)], env_name(f.name), optional)
    return Settings(**values)


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    parser = argparse.ArgumentParser(prog="python -m healthcheck")
    add_arguments(parser)
    return load_settings(parser.parse_args(list(argv)), environ)
