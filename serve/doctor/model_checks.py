"""Checks of the model directory: config.json, the AutoRound quantization, the weights and the MTP head."""

from __future__ import annotations

from typing import Any

from serve.checkpoint.safetensors_index import ModelFiles
from serve.doctor.inputs import Check, DoctorInputs, Severity

# The kit's profiles are written for AutoRound's GPTQ-style packing of Qwen3.6-27B.
AUTOROUND_PACKING = "auto_round:auto_gptq"


def _size(n: int) -> str:
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= div:
            return f"{n / div:.2f} {unit}"
    return f"{n} B"


def check_model(inp: DoctorInputs) -> list[Check]:
    if inp.model_dir is None:
        return [
            Check("model", "info", "no model directory given (--model-dir, or model.path in the profile)")
        ]
    out: list[Check] = []
    if inp.config_error:
        out.append(Check("model-config", "error", inp.config_error))
    cfg = inp.config or {}
    text = cfg.get("text_config") or cfg
    if cfg:
        arch = (cfg.get("architectures") or ["unknown"])[0]
        out.append(Check("model-config", "ok", f"{arch} ({cfg.get('model_type', '?')})"))
        q = cfg.get("quantization_config") or text.get("quantization_config")
        if not q:
            out.append(
                Check(
                    "quantization",
                    "warn",
                    f"{inp.model_dir}/config.json has no quantization_config: not an AutoRound checkpoint; "
                    "the kit's memory figures and profiles assume Qwen3.6-27B INT4 AutoRound",
                )
            )
        else:
            method = str(q.get("quant_method", "?"))
            packing = q.get("packing_format") or q.get("packing")
            if method.replace("-", "_") != "auto_round":
                out.append(
                    Check(
                        "quantization",
                        "warn",
                        f"quantization_config.quant_method is {method!r}, not 'auto-round': not an "
                        "AutoRound checkpoint; fix-mtp and the profiles assume AutoRound",
                    )
                )
            elif packing and packing != AUTOROUND_PACKING:
                out.append(
                    Check(
                        "quantization",
                        "warn",
                        f"AutoRound packing {packing!r}, expected {AUTOROUND_PACKING!r}: fix-mtp's "
                        "zero-point convention differs for this packing",
                    )
                )
            else:
                out.append(
                    Check(
                        "quantization",
                        "ok",
                        f"AutoRound W{q.get('bits', '?')} group {q.get('group_size', '?')}, "
                        f"sym={q.get('sym', '?')}, packing {packing or '?'}",
                    )
                )
    files = inp.files
    if files is not None:
        for p in files.problems:
            sev: Severity = "info" if p.severity == "info" else p.severity
            out.append(Check(f"weights:{p.code}", sev, p.message))
        if files.tensor_names:
            by = ", ".join(f"{k} {_size(v)}" for k, v in sorted(files.bytes_by_dtype.items()))
            out.append(
                Check(
                    "weights",
                    "ok" if files.ok else "error",
                    f"{len(files.shards)} shard(s), {_size(files.total_bytes)} ({by})",
                    {"bytes_by_role": files.bytes_by_role},
                )
            )
        out.extend(_check_mtp(inp, files, text))
    return out


def _check_mtp(inp: DoctorInputs, files: ModelFiles, text: dict[str, Any]) -> list[Check]:
    wants_mtp = inp.serving.num_speculative_tokens > 0
    has_mtp_config = int(text.get("mtp_num_hidden_layers") or 0) > 0
    state = files.mtp_fc
    d = inp.model_dir
    if state == "quantized":
        return [
            Check(
                "mtp-head",
                "error" if wants_mtp or has_mtp_config else "warn",
                f"mtp.fc is stored quantized (mtp.fc.qweight): vLLM's MTP loader expects mtp.fc.weight, "
                f"skips the weight and MTP then accepts 0% of drafts. Run: python -m serve fix-mtp {d}",
            )
        ]
    if state == "bf16":
        return [Check("mtp-head", "ok", "MTP head present, mtp.fc.weight unquantized")]
    if has_mtp_config or wants_mtp:
        return [
            Check(
                "mtp-head",
                "error" if wants_mtp else "warn",
                "config.json declares an MTP head but the checkpoint has no mtp.fc weight"
                + ("; speculative MTP cannot work: turn speculative decoding off" if wants_mtp else ""),
            )
        ]
    return []
