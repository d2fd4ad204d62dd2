"""Settings of the sidecar, defined once on pydantic-settings: each field is a command-line flag
(``--probe-interval-s``), an environment variable (``HEALTHCHECK_`` + the field name in upper case) and
a default, with its help from the field's description. Precedence: flag > environment variable >
default. An empty environment value (compose's ``${VAR:-}``) means "not set" for a field that may be
None (``HEALTHCHECK_PLAN_FILE=`` turns the plan file off).

``Settings(...)`` itself reads nothing: ``parse_settings`` is the one place that reads argv and the
environment, so tests pass both explicitly."""

from __future__ import annotations

import json
import os
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    CliSettingsSource,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from pydantic_settings.sources.utils import parse_env_vars

from healthcheck import ENV_PREFIX
from healthcheck.keys import resolve_key
from healthcheck.question import compile_expect
from healthcheck.redact import redact_json_text, redact_url

PROG = "python -m healthcheck"


class SettingsError(ValueError):
    """A setting has a value the sidecar cannot use; the message names the flag and env variable."""


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, frozen=True, extra="forbid")

    # --- what to watch -------------------------------------------------------------------------
    vllm_url: str = Field("http://127.0.0.1:8888", description="Base URL of the vLLM OpenAI server.")
    model: str | None = Field(
        None,
        description="Served model name that /v1/models must list and the probe requests. Default: "
        "served_model_name from the plan file, else the first model vLLM lists.",
    )
    plan_file: Path | None = Field(
        Path("run/plan.json"),
        description="The launcher's plan.json (for the plan info metric and the model name); empty: none.",
    )
    api_key: str | None = Field(
        None,
        description="API key for vLLM (sent as a Bearer token by the probes and the /metrics reads), "
        "and the sidecar's own: with a key, /metrics, / and the detail of /readyz want "
        "'Authorization: Bearer <key>'. Falls back to VLLM_API_KEY, then api_key_file.",
    )
    api_key_file: Path | None = Field(None, description="File holding the API key (e.g. a Docker secret).")

    # --- the sidecar's own server --------------------------------------------------------------
    host: str = Field(
        "127.0.0.1",
        description="Address the sidecar listens on. Loopback by default; compose sets 0.0.0.0 inside "
        "the container, where the published port decides who can reach it.",
    )
    port: int = Field(8889, description="Port the sidecar listens on.")
    published_bind: str | None = Field(
        None,
        description="Host address the sidecar's port is published on, where that decides who can reach it "
        "(compose: HEALTHCHECK_BIND); the key check then judges it instead of --host.",
    )
    allow_unauthenticated: bool = Field(
        False,
        description="Serve on an address other machines can reach without an API key (then /metrics, / "
        "and the detail of /readyz are open to them), with a loud warning. Without it such an address "
        "needs a key, which the sidecar then requires as 'Authorization: Bearer <key>'.",
    )
    log_level: str = Field("info", description="Log level (debug, info, warning, error).")
    header_timeout_s: float = Field(
        5.0,
        description="Seconds a client has to send a whole request line and headers (and again between "
        "two requests on a kept-alive connection); slower connections are closed.",
    )
    body_timeout_s: float = Field(
        5.0, description="Seconds a client has to send a request body once its headers are in."
    )
    max_connections: int = Field(
        512,
        description="Open connections at most (half-open ones count); further requests get 503. Far "
        "above what Docker and Prometheus use, so that stray connections cannot starve the healthcheck.",
    )

    # --- the readiness probe -------------------------------------------------------------------
    probe_interval_s: float = Field(5.0, description="Seconds between the starts of two readiness probes.")
    probe_timeout_s: float = Field(
        20.0,
        description="Deadline for one whole probe (health + models + chat completion); slower counts as failed.",
    )
    request_timeout_s: float = Field(
        10.0, description="Timeout for connecting and for each read of one HTTP call."
    )
    failure_threshold: int = Field(
        2, description="Consecutive failed probes before a ready sidecar turns not ready (sticky readiness)."
    )
    success_threshold: int = Field(
        1, description="Consecutive good probes before a not-ready sidecar turns ready."
    )
    probe_prompt: str | None = Field(
        None,
        description="User message of the synthetic chat completion: a question with one known answer. "
        "Default: readiness.prompt from the plan file, else the profile schema's default (the capital "
        "of France).",
    )
    probe_expect: str | None = Field(
        None,
        description="Python regular expression the probe's answer (content + reasoning) must match; a "
        "miss is the not-ready reason wrong_answer. Default: readiness.expect from the plan file; "
        "without a plan file the answer is not checked.",
    )
    probe_expect_off: str | None = Field(
        None,
        description="Turn the answer check off, with this reason (shown on /readyz and in the plan info "
        "metric), e.g. 'random weights'. The degeneration check still applies.",
    )
    probe_max_tokens: int | None = Field(
        None,
        description="max_tokens of the synthetic chat completion. Default: readiness.max_tokens from the "
        "plan file, else 32. Not below ~24 without an answer check: the shared detector judges loops "
        "only in texts of 24+ characters, and a looping 1-character token must reach that.",
    )
    probe_temperature: float = Field(
        0.0, description="Sampling temperature of the synthetic chat completion."
    )
    probe_extra_body: str | None = Field(
        None,
        description='JSON object merged into the chat request, e.g. \'{"chat_template_kwargs": '
        '{"enable_thinking": false}}\'. Default: readiness.extra_body from the plan file.',
    )
    max_response_bytes: int = Field(
        1 << 20,
        description="Largest body read from /health, /v1/models or a chat completion; larger fails the probe.",
    )

    # --- vLLM's metrics and the derived figures ------------------------------------------------
    metrics_interval_s: float = Field(5.0, description="Seconds between reads of vLLM's /metrics.")
    metrics_max_bytes: int = Field(
        16 << 20, description="Largest vLLM /metrics body read; larger is dropped."
    )
    spec_window_s: float = Field(
        60.0,
        description="Sliding window for the derived spec-decode figures (acceptance rate, length, per position).",
    )
    gpu: bool = Field(True, description="Export NVML GPU telemetry when a GPU is present.")

    # --- gone: restarts are the launcher's (serve launch --watchdog) -----------------------------
    autoheal: bool = Field(
        False,
        description="Removed: the sidecar no longer restarts vLLM (that needed the Docker socket). The "
        "launcher in the vLLM container does, see SERVE_WATCHDOG. Only false is accepted.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)  # the environment and argv are read by parse_settings only

    @field_validator("*", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: Any, info: ValidationInfo) -> Any:
        """compose writes ``${VAR:-}`` as "": for a field that may be None, that means None."""
        annotation = cls.model_fields[info.field_name or ""].annotation
        return None if value == "" and type(None) in typing.get_args(annotation) else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        problems: list[tuple[str, Any, str]] = []
        if not self.vllm_url.startswith(("http://", "https://")):
            problems.append(("vllm_url", redact_url(self.vllm_url), "must start with http:// or https://"))
        for name in (
            "probe_interval_s",
            "probe_timeout_s",
            "request_timeout_s",
            "metrics_interval_s",
            "header_timeout_s",
            "body_timeout_s",
        ):
            if getattr(self, name) <= 0:
                problems.append((name, getattr(self, name), "must be > 0"))
        for name in ("failure_threshold", "success_threshold", "probe_max_tokens", "max_connections"):
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
        if self.autoheal:
            problems.append(
                (
                    "autoheal",
                    True,
                    "is no longer supported: restarts come from the launcher inside the vLLM container "
                    "(SERVE_WATCHDOG, docs/docker.md); unset it",
                )
            )
        if self.probe_extra_body is not None:
            try:
                extra = json.loads(self.probe_extra_body)
            except json.JSONDecodeError as exc:
                problems.append(("probe_extra_body", "[not shown]", f"is not JSON: {exc}"))
            else:
                if not isinstance(extra, dict):
                    problems.append(("probe_extra_body", "[not shown]", "must be a JSON object"))
        if problems:
            raise SettingsError(
                "; ".join(f"{flag_name(n)} / {env_name(n)} = {v!r} {why}" for n, v, why in problems)
            )
        return self

    @property
    def extra_body(self) -> dict[str, Any] | None:
        """The probe's extra request fields when set here; None: take the plan's."""
        return json.loads(self.probe_extra_body) if self.probe_extra_body is not None else None

    def resolve_api_key(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The key to send: this setting, else VLLM_API_KEY (compose often shares vLLM's env), else the
        file. Read at startup; a missing file is an error the user can act on."""
        try:
            return resolve_key(self.api_key, self.api_key_file, os.environ if environ is None else environ)
        except OSError as exc:
            raise SettingsError(
                f"{flag_name('api_key_file')} / {env_name('api_key_file')}: cannot read "
                f"{self.api_key_file}: {exc.strerror}"
            ) from exc

    def redacted(self) -> dict[str, Any]:
        """Settings as logged at startup: no key, no URL password, no secret in the extra body."""
        out = self.model_dump()
        if out["api_key"]:
            out["api_key"] = "***"
        out["vllm_url"] = redact_url(self.vllm_url)
        if self.probe_extra_body is not None:
            out["probe_extra_body"] = redact_json_text(self.probe_extra_body)
        return {k: (str(v) if isinstance(v, Path) else v) for k, v in out.items()}


class _EnvironSource(EnvSettingsSource):
    """pydantic-settings' own environment source, over a given mapping instead of os.environ."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings, env_prefix=ENV_PREFIX, case_sensitive=False)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, False, False, None)


def _cli_source(argv: Sequence[str] | bool) -> CliSettingsSource[Settings]:
    return CliSettingsSource(
        Settings,
        cli_prog_name=PROG,
        cli_parse_args=argv,  # type: ignore[arg-type]
        cli_kebab_case=True,
        cli_implicit_flags=True,  # bools: --gpu / --no-gpu
        cli_hide_none_type=True,
        cli_avoid_json=True,
        cli_exit_on_error=True,
    )


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Settings from flags (which win) over ``HEALTHCHECK_*`` variables over defaults. SettingsError
    names the flag and variable of every bad value; a malformed command line exits 2 (argparse)."""
    environ = os.environ if environ is None else environ
    values = {**_EnvironSource(environ)(), **_cli_source(list(argv))()}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        if err["type"] == "value_error" and isinstance(err.get("ctx", {}).get("error"), SettingsError):
            parts.append(str(err["ctx"]["error"]))
            continue
        name = str(err["loc"][0]) if err["loc"] else "?"
        shown = "[not shown]" if name in ("api_key", "probe_extra_body") else err.get("input")
        if name == "vllm_url" and isinstance(shown, str):
            shown = redact_url(shown)
        parts.append(f"{flag_name(name)} / {env_name(name)} = {shown!r}: {err['msg']}")
    return "; ".join(parts)


# The help of each flag names its environment variable, derived from the field name (defined once).
for _name, _field in Settings.model_fields.items():
    _field.description = f"{_field.description} [env {env_name(_name)}]"
