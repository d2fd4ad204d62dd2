"""Issue 16's two launcher rules with what layering knows that the rule table's cases cannot say: which file
set a key (a shipped profile or the user's own), what is inherited through ``extends``, and the environment
(VLLM_API_KEY, compose's SERVE_PUBLISHED_BIND). Real planner, shipped descriptions; in-process, ~2 s."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

from serve.errors import Refusal
from serve.launch import config_files, probes
from serve.launch.layering import load_profile
from serve.launch.plan import Plan, plan
from serve.launch.render import render_argv

SEED = "qwen3.6-27b-rtx5090"


@functools.cache
def _engine(name: str):
    return probes.engine_facts(name)


def _plan(profile: str, sets=(), environ=None, engine="vllm-0.33", gpu="rtx5090") -> Plan:
    loaded = load_profile(profile, cli_sets=list(sets), environ=dict(environ or {}))
    layer = loaded.profile.model.model_copy(update={"path": None})
    model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    return plan(loaded, probes.gpu_facts(gpu), _engine(engine), model)


def _user_profile(tmp_path: Path, body: str) -> str:
    path = tmp_path / "mine.yaml"
    path.write_text(f"extends: {SEED}\n{body}")
    return str(path)


# ------------------------------------------------------------------------------------ trust_remote_code


@pytest.mark.parametrize("profile", config_files.shipped("profiles"))
def test_no_shipped_profile_renders_trust_remote_code_on_mainline(profile):
    try:
        argv = render_argv(_plan(profile, gpu="rtx5090-x2" if "tp2" in profile else "h100"))
    except Refusal:
        pytest.skip(f"{profile} is refused on h100 / vllm-0.33 (tp, CPU)")
    assert "--trust-remote-code" not in argv


def test_seed_value_is_dropped_with_a_warning_naming_the_registry():
    result = _plan(SEED)
    assert result.value("trust_remote_code") is False
    assert result.decisions["trust_remote_code"].rule == "no-remote-code-native-arch"
    assert (
        "registers Qwen3_5ForConditionalGeneration natively" in result.decisions["trust_remote_code"].reason
    )
    assert any(
        w.startswith("[no-remote-code-native-arch] changed trust_remote_code") for w in result.warnings
    )


def test_engine_without_a_registry_keeps_the_seed_value_loudly():
    result = _plan(
        SEED, sets=["serving.speculative={method: mtp, num_speculative_tokens: 1}"], engine="tq-fork"
    )
    assert "--trust-remote-code" in render_argv(result)
    assert any(
        "[remote-code-loud] --trust-remote-code kept" in w and "pin model.revision" in w
        for w in result.warnings
    )


@pytest.mark.parametrize("how", ["own-file", "set", "env-set"])
def test_the_users_own_true_wins_loudly_and_asks_for_a_revision(tmp_path, how):
    profile, sets, environ = SEED, ["serving.host=127.0.0.1"], {}
    if how == "own-file":
        profile = _user_profile(tmp_path, "model:\n  trust_remote_code: true\n")
    elif how == "set":
        sets += ["model.trust_remote_code=true"]
    else:
        environ = {"SERVE_SET": "model.trust_remote_code=true"}
    result = _plan(profile, sets=sets, environ=environ)
    assert "--trust-remote-code" in render_argv(result)
    loud = [w for w in result.warnings if w.startswith("[remote-code-loud] WARNING")]
    assert loud and "registers Qwen3_5ForConditionalGeneration natively" in loud[0]
    assert "pin model.revision" in loud[0]


def test_a_user_file_that_only_extends_the_seed_does_not_own_its_trust_remote_code(tmp_path):
    result = _plan(_user_profile(tmp_path, "serving:\n  host: 127.0.0.1\n"))
    assert result.value("trust_remote_code") is False


def test_pinned_revision_is_acknowledged():
    result = _plan(SEED, sets=["model.trust_remote_code=true", "model.revision=0123abc"])
    loud = [w for w in result.warnings if w.startswith("[remote-code-loud] WARNING")]
    assert loud and "pinned to model.revision 0123abc" in loud[0]
    assert "--revision" in render_argv(result)


# ------------------------------------------------------------------------------------ API key / exposure


def test_seed_keeps_the_cards_open_host_with_a_loud_warning():
    result = _plan(SEED)
    assert tuple(render_argv(result)[render_argv(result).index("--host") :][:2]) == ("--host", "0.0.0.0")
    assert any("[api-key-off-loopback] WARNING" in w and "WITHOUT AN API KEY" in w for w in result.warnings)


def test_allow_unauthenticated_is_not_inherited(tmp_path):
    mine = _user_profile(tmp_path, "serving:\n  max_num_seqs: 2\n")  # inherits host 0.0.0.0, not the waiver
    with pytest.raises(Refusal, match=r"0\.0\.0\.0:8888, reachable from other machines, and no API key"):
        _plan(mine)
    said = _user_profile(tmp_path, "serving:\n  allow_unauthenticated: true\n")
    assert any("WITHOUT AN API KEY" in w for w in _plan(said).warnings)


@pytest.mark.parametrize(
    "sets, environ, outcome",
    [
        (["serving.host=0.0.0.0"], {}, "refused"),
        (["serving.host=10.0.0.5"], {}, "refused"),
        (["serving.host=my-box.lan"], {}, "refused"),
        (["serving.host=0.0.0.0"], {"VLLM_API_KEY": "k"}, "quiet"),
        (["serving.host=0.0.0.0", "serving.extra_args=[--api-key, k]"], {}, "quiet"),
        (["serving.host=0.0.0.0", "serving.allow_unauthenticated=true"], {}, "warned"),
        (["serving.host=::1"], {}, "quiet"),
        (["serving.host=localhost"], {}, "quiet"),
        # compose: vLLM binds 0.0.0.0 in the container; the published address decides
        (["serving.host=0.0.0.0"], {"SERVE_PUBLISHED_BIND": "127.0.0.1"}, "quiet"),
        (["serving.host=0.0.0.0"], {"SERVE_PUBLISHED_BIND": "0.0.0.0"}, "refused"),
        (["serving.host=0.0.0.0"], {"SERVE_PUBLISHED_BIND": "0.0.0.0", "VLLM_API_KEY": "k"}, "quiet"),
        (["serving.host=0.0.0.0"], {"VLLM_API_KEY": " "}, "refused"),
    ],
)
def test_exposure(sets, environ, outcome):
    try:
        result = _plan("qwen3.6-27b-h100", sets=sets, environ=environ, gpu="h100")
    except Refusal as exc:
        assert outcome == "refused", str(exc)
        assert "VLLM_API_KEY" in str(exc) and "allow_unauthenticated: true" in str(exc)
        return
    warned = any("[api-key-off-loopback]" in w for w in result.warnings)
    assert (outcome, warned) in (("quiet", False), ("warned", True)), result.warnings
