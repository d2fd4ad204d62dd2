"""Rule api-key-off-loopback on the sidecar's port: compose publishes it on HEALTHCHECK_BIND, which it
passes to the launcher as SERVE_SIDECAR_PUBLISHED_BIND. Not loopback and no key: refused, with the fix;
the profile's serving.allow_unauthenticated: a loud warning. Real planner, shipped descriptions; ~1 s."""

from __future__ import annotations

import functools

import pytest

from serve.errors import Refusal
from serve.launch import config_files, probes
from serve.launch.layering import load_profile
from serve.launch.plan import Plan, plan

PROFILE = "qwen3.6-27b-h100"  # loopback, no waiver of its own
IN_CONTAINER = {"SERVE_PUBLISHED_BIND": "127.0.0.1"}  # compose's default for the API port


@functools.cache
def _engine():
    return probes.engine_facts("vllm-0.33")


def _plan(environ: dict[str, str], sets: tuple[str, ...] = ()) -> Plan:
    loaded = load_profile(PROFILE, cli_sets=["serving.host=0.0.0.0", *sets], environ=environ)
    layer = loaded.profile.model.model_copy(update={"path": None})
    model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    return plan(loaded, probes.gpu_facts("h100"), _engine(), model)


def _rule_warnings(result: Plan) -> list[str]:
    return [w for w in result.warnings if "[api-key-off-loopback]" in w]


def test_an_open_sidecar_port_without_a_key_is_refused_with_the_fix():
    with pytest.raises(Refusal) as caught:
        _plan({**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": "0.0.0.0"})
    said = str(caught.value)
    assert "the sidecar's port is published on 0.0.0.0 (HEALTHCHECK_BIND)" in said, said
    assert "API port" not in said, said  # that one is on loopback
    for fix in (
        "VLLM_API_KEY",
        "and the sidecar too",
        "HEALTHCHECK_BIND=127.0.0.1",
        "allow_unauthenticated: true",
    ):
        assert fix in said, (fix, said)


@pytest.mark.parametrize(
    "environ",
    [
        {**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": "127.0.0.1"},
        {**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": "::1"},
        {**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": "0.0.0.0", "VLLM_API_KEY": "k"},
        {**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": ""},  # unset: not compose
    ],
)
def test_a_loopback_or_keyed_sidecar_port_does_not_fire(environ):
    assert _rule_warnings(_plan(environ)) == []


def test_the_profiles_waiver_warns_and_names_the_sidecars_own():
    result = _plan(
        {**IN_CONTAINER, "SERVE_SIDECAR_PUBLISHED_BIND": "0.0.0.0"}, ("serving.allow_unauthenticated=true",)
    )
    (warning,) = _rule_warnings(result)
    assert "WITHOUT AN API KEY" in warning and "HEALTHCHECK_ALLOW_UNAUTHENTICATED=true" in warning, warning
    assert "read the sidecar's metrics" in warning, warning


def test_both_ports_open_are_named_in_one_refusal():
    with pytest.raises(Refusal) as caught:
        _plan({"SERVE_PUBLISHED_BIND": "0.0.0.0", "SERVE_SIDECAR_PUBLISHED_BIND": "10.0.0.7"})
    said = str(caught.value)
    assert (
        "the API port is published on 0.0.0.0 (VLLM_BIND) and the sidecar's port is published on 10.0.0.7"
        in said
    )
    assert "VLLM_BIND=127.0.0.1" in said and "HEALTHCHECK_BIND=127.0.0.1" in said, said
