"""``python -m serve fix-mtp MODEL_DIR``: store a quantized ``mtp.fc`` as bf16 so vLLM's MTP drafter loads it.

AutoRound packs mtp.fc (the MTP head's fusion layer) to INT4 like any other linear layer, but vLLM's
Qwen3_5MTP builds ``mtp.fc`` unquantized (``mtp.fc`` is not inside ``block_name_to_quantize``) and
silently skips ``mtp.fc.qweight``: the drafter then runs with an uninitialised fc and MTP accepts 0%
(vLLM 0.32, seen on its CPU build, refuses instead: "There is no module or parameter named 'fc.qweight'
in Qwen3_5MultiTokenPredictor").

The math differs from the model card's ``dequant_mtp_fc.py``: ``auto_round:auto_gptq`` stores every zero
point minus 1 (classic GPTQ; auto-round's ``qlinear_torch_zp.py`` adds the 1 back), so the weight is
``(q - (stored_zero + 1)) * scale``. The card computes ``(q - stored_zero) * scale``: one quantization step
(``+scale``) off on every weight.

How it writes: only the shard holding mtp.fc is rewritten, tensor by tensor from the original file
(nothing else is loaded); the new shard and index are written to temporary files in the model directory,
fsynced, read back and compared, and only then renamed over the originals. The originals stay in
``.fix-mtp-backup/`` (hard links: no extra space). A run killed before the renames leaves the model as it
was; one killed between the two renames (shard done, index not) is completed by the next run.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from serve.checkpoint import autoround
from serve.errors import KitError

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"
BACKUP_DIR = ".fix-mtp-backup"
TMP_TAG = ".fix-mtp.tmp"
QUANT_SUFFIXES = ("qweight", "qzeros", "scales")
CHUNK = 16 << 20
MAX_HEADER = 100 << 20

DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E4M3": 1, "F8_E5M2": 1, "I16": 2, "U16": 2, "F16": 2,
               "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}  # fmt: skip
NUMPY_DTYPES = {"I32": np.int32, "F16": np.float16, "F32": np.float32}

# Test hook: a fault injected at a named step ("after-temp-write", "after-shard-replace"), so tests can
# kill a real run mid-write and check what it leaves behind.
FAULT_ENV = "SERVE_FIX_MTP_FAULT"


# ---------------------------------------------------------------- safetensors, streamed


@dataclass
class Shard:
    path: Path
    tensors: dict[str, dict[str, Any]]  # name -> {"dtype", "shape", "data_offsets"}
    metadata: dict[str, str] | None
    data_start: int

    def nbytes(self, name: str) -> int:
        start, end = self.tensors[name]["data_offsets"]
        return int(end - start)

    def read(self, name: str) -> bytes:
        start, end = self.tensors[name]["data_offsets"]
        with self.path.open("rb") as f:
            f.seek(self.data_start + start)
            data = f.read(end - start)
        if len(data) != end - start:
            raise KitError(f"{self.path}: tensor {name} is cut short; the file is truncated, re-download it")
        return data

    def array(self, name: str) -> np.ndarray:
        info = self.tensors[name]
        dtype = NUMPY_DTYPES.get(info["dtype"])
        if dtype is None:
            raise KitError(
                f"{self.path}: tensor {name} has dtype {info['dtype']}, expected one of "
                f"{', '.join(NUMPY_DTYPES)}; this is not an AutoRound-packed layer"
            )
        return np.frombuffer(self.read(name), dtype=dtype).reshape(info["shape"])

    def copy_to(self, name: str, out: BinaryIO, digest: Any) -> None:
        """Stream one tensor's bytes into out, in chunks, hashing what was copied."""
        start, end = self.tensors[name]["data_offsets"]
        with self.path.open("rb") as f:
            f.seek(self.data_start + start)
            left = end - start
            while left:
                chunk = f.read(min(CHUNK, left))
                if not chunk:
                    raise KitError(f"{self.path}: tensor {name} is cut short; the file is truncated")
                out.write(chunk)
                digest.update(chunk)
                left -= len(chunk)


def read_shard(path: Path) -> Shard:
    """Parse and check a safetensors header without reading tensor data."""
    if not path.is_file():
        raise KitError(f"{path}: shard missing; re-download the model (the index lists it)")
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise KitError(f"{path}: {size} bytes, too short for a safetensors file; re-download it")
        n = int.from_bytes(head, "little")
        if n > min(MAX_HEADER, size - 8):
            raise KitError(
                f"{path}: header length {n} exceeds the file ({size} bytes); truncated or "
                "not a safetensors file, re-download it"
            )
        try:
            header = json.loads(f.read(n))
        except ValueError as exc:
            raise KitError(f"{path}: header is not valid JSON ({exc}); re-download the file") from exc
    if not isinstance(header, dict):
        raise KitError(f"{path}: header is not a JSON object; re-download the file")
    metadata = header.pop("__metadata__", None)
    data_len = size - 8 - n
    for name, info in header.items():
        _check_entry(path, name, info, data_len)
    return Shard(path=path, tensors=header, metadata=metadata, data_start=8 + n)


def _check_entry(path: Path, name: str, info: Any, data_len: int) -> None:
    try:
        start, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        expected = count * DTYPE_SIZES[info["dtype"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise KitError(f"{path}: header entry {name} is malformed ({exc}); re-download the file") from exc
    if end > data_len:
        raise KitError(
            f"{path}: tensor {name} ends at byte {end} of the data but the file holds "
            f"{data_len}; the file is truncated, re-download it"
        )
    if end - start != expected:
        raise KitError(
            f"{path}: tensor {name} spans {end - start} bytes, its shape {info['shape']} "
            f"{info['dtype']} needs {expected}; the file is corrupt, re-download it"
        )


def _header_bytes(entries: dict[str, dict[str, Any]], metadata: dict[str, str] | None) -> bytes:
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(entries)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # safetensors pads the header to 8 bytes
    return len(raw).to_bytes(8, "little") + raw


# ---------------------------------------------------------------- the model directory


@dataclass
class Model:
    root: Path
    config: dict[str, Any]
    quant: dict[str, Any]
    index: dict[str, Any] | None  # None: a single model.safetensors
    shard_name: str
    prefix: str  # "mtp.fc." (or a prefixed variant such as "model.mtp.fc.")
    shard: Shard


@dataclass
class Outcome:
    changed: bool
    lines: list[str] = field(default_factory=list)


def load_model(root: Path) -> Model:
    if not root.is_dir():
        raise KitError(f"{root}: no such model directory; give the folder holding config.json")
    config = _read_json(root / "config.json", "the model's config.json")
    quant = _quant_config(root, config)
    index_path = root / INDEX
    if index_path.exists():
        index = _read_json(index_path, "the safetensors index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise KitError(f"{index_path}: key weight_map missing or empty; re-download the index")
        names: dict[str, str] = weight_map
    elif (root / SINGLE).exists():
        index = None
        names = dict.fromkeys(read_shard(root / SINGLE).tensors, SINGLE)
    else:
        raise KitError(f"{root}: neither {INDEX} nor {SINGLE}; not a safetensors checkpoint")
    prefix = _mtp_fc_prefix(root, names)
    shard_name = _shard_of(root, names, prefix)
    shard = read_shard(root / shard_name)
    if index is not None:
        _check_index_against_shards(root, names, shard_name, shard, prefix)
    return Model(root, config, quant, index, shard_name, prefix, shard)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise KitError(f"{path}: {what} is missing; is this a Hugging Face model directory?") from exc
    except (OSError, ValueError) as exc:
        raise KitError(f"{path}: cannot read {what} ({exc}); re-download it") from exc
    if not isinstance(data, dict):
        raise KitError(f"{path}: {what} is not a JSON object; re-download it")
    return data


def _quant_config(root: Path, config: dict[str, Any]) -> dict[str, Any]:
    quant = config.get("quantization_config")
    if quant is None and (root / "quantization_config.json").exists():
        quant = _read_json(root / "quantization_config.json", "quantization_config.json")
    if not isinstance(quant, dict):
        raise KitError(
            f"{root / 'config.json'}: no quantization_config; fix-mtp repairs AutoRound INT4 "
            "checkpoints only (a bf16 model has nothing to dequantize)"
        )
    method = quant.get("quant_method")
    if method not in ("auto-round", "intel/auto-round", "gptq"):
        raise KitError(
            f"{root / 'config.json'}: quantization_config.quant_method is {method!r}, not "
            "'auto-round'; fix-mtp only knows AutoRound/GPTQ packing"
        )
    fmt = quant.get("packing_format", "auto_round:auto_gptq" if method != "gptq" else "gptq")
    try:
        autoround.zero_offset(fmt)
    except ValueError as exc:
        raise KitError(
            f"{root / 'config.json'}: quantization_config.packing_format {fmt!r} is not a "
            "4-bit GPTQ-style packing fix-mtp knows"
        ) from exc
    if quant.get("bits", 4) != 4:
        raise KitError(
            f"{root / 'config.json'}: quantization_config.bits is {quant.get('bits')}; "
            "fix-mtp unpacks 4-bit weights only"
        )
    return {**quant, "packing_format": fmt}


def _mtp_fc_prefix(root: Path, names: dict[str, str]) -> str:
    found = sorted({n[: -len(s)] for n in names for s in ("qweight", "weight") if n.endswith("mtp.fc." + s)})
    if not found:
        raise KitError(
            f"{root}: no mtp.fc tensors in the checkpoint; this model has no MTP head, "
            "so there is nothing for fix-mtp to repair"
        )
    if len(found) > 1:
        raise KitError(f"{root}: several MTP fc layers ({', '.join(found)}); fix-mtp handles one")
    return found[0]


def _shard_of(root: Path, names: dict[str, str], prefix: str) -> str:
    shards = {names[prefix + s] for s in (*QUANT_SUFFIXES, "weight") if prefix + s in names}
    if len(shards) != 1:
        raise KitError(f"{root / INDEX}: {prefix}* is spread over {sorted(shards)}; expected one shard")
    return shards.pop()


def _check_index_against_shards(
    root: Path, names: dict[str, str], shard_name: str, shard: Shard, prefix: str
) -> None:
    for shard_file in sorted(set(names.values())):
        if not (root / shard_file).is_file():
            raise KitError(f"{root / INDEX}: lists shard {shard_file}, which is missing; re-download it")
    # An interrupted run (shard rewritten, index not yet) leaves exactly these names stale: allowed.
    stale_ok = {prefix + s for s in QUANT_SUFFIXES} if prefix + "weight" in shard.tensors else set()
    for name, file in names.items():
        if file == shard_name and name not in shard.tensors and name not in stale_ok:
            raise KitError(
                f"{root / INDEX}: weight_map says {name} is in {shard_name}, its header has "
                "no such tensor; the index does not match the shards, re-download them"
            )


# ---------------------------------------------------------------- what to do


def plan_fix(model: Model) -> tuple[str, list[str]]:
    """("fix" | "index-only" | "nothing", reasons) from the shard header, which is the truth."""
    p, tensors = model.prefix, model.shard.tensors
    quantized = [p + s for s in QUANT_SUFFIXES if p + s in tensors]
    has_weight = p + "weight" in tensors
    if quantized and has_weight:
        raise KitError(
            f"{model.shard.path}: holds both {p}weight and {', '.join(quantized)}; restore "
            f"the original from {BACKUP_DIR}/ or re-download the shard"
        )
    if quantized and len(quantized) != len(QUANT_SUFFIXES):
        missing = sorted(set(p + s for s in QUANT_SUFFIXES) - set(quantized))
        raise KitError(
            f"{model.shard.path}: {', '.join(missing)} missing beside {quantized[0]}; "
            "the shard is incomplete, re-download it"
        )
    if quantized:
        if not vllm_builds_fc_unquantized(model.quant, p.rstrip(".")):
            blocks = model.quant.get("block_name_to_quantize")
            return "nothing", [
                f"nothing to do: quantization_config makes vLLM build {p.rstrip('.')} "
                f"quantized too (block_name_to_quantize {blocks!r}), "
                f"so {p}qweight loads as it is"
            ]
        return "fix", []
    if model.index is not None:
        weight_map = model.index["weight_map"]
        if any(p + s in weight_map for s in QUANT_SUFFIXES) or p + "weight" not in weight_map:
            return "index-only", [
                f"{model.shard_name} already holds {p}weight but {INDEX} still lists the "
                "quantized tensors (an interrupted run): updating the index"
            ]
    return "nothing", [f"nothing to do: {p}weight is already stored unquantized in {model.shard_name}"]


def vllm_builds_fc_unquantized(quant: dict[str, Any], module: str) -> bool:
    """Mirror of vLLM's INC rule (inc/config_parser.py): a layer named in extra_config with bits >= 16 is
    unquantized; otherwise a layer outside every block_name_to_quantize prefix is; with no block list,
    every linear layer but the LM head is quantized."""
    extra = (quant.get("extra_config") or {}).get(module)
    if isinstance(extra, dict) and extra.get("bits", 16) >= 16:
        return True
    blocks = quant.get("block_name_to_quantize") or quant.get("to_quant_block_names")
    if not blocks:
        return False
    if isinstance(blocks, str):
        blocks = blocks.split(",")
    return not any(module.startswith(b) for b in blocks)


@dataclass
class Dequantized:
    weight_bits: np.ndarray  # bf16 bit patterns [out, in]
    in_features: int
    out_features: int
    group_size: int
    card_max_abs_diff: float
    card_mean_abs_diff: float
    weight_rms: float


def dequantize_fc(model: Model) -> Dequantized:
    p, shard = model.prefix, model.shard
    qweight = shard.array(p + "qweight")
    qzeros = shard.array(p + "qzeros")
    scales = shard.array(p + "scales")
    if qweight.dtype != np.int32 or qzeros.dtype != np.int32 or qweight.ndim != 2 or scales.ndim != 2:
        raise KitError(
            f"{shard.path}: {p}qweight/qzeros must be 2-D int32 (GPTQ packing), found "
            f"{qweight.dtype} {list(qweight.shape)} / {qzeros.dtype} {list(qzeros.shape)}"
        )
    try:
        group = autoround.infer_group_size(qweight.shape, scales.shape)
    except ValueError as exc:
        raise KitError(f"{shard.path}: {p}: {exc}; the tensors do not fit together") from exc
    declared = _declared_group_size(model)
    if declared not in (None, -1, group):
        raise KitError(
            f"{model.root / 'config.json'}: quantization_config group_size {declared} does not "
            f"match {p}scales {list(scales.shape)} (group {group}); check the config"
        )
    _check_expected_shape(model, qweight.shape[0] * autoround.PACK_FACTOR, qweight.shape[1])
    packed = autoround.Packed(qweight=qweight, qzeros=qzeros, scales=scales.astype(np.float16))
    fmt = model.quant["packing_format"]
    try:
        ours = autoround.dequantize(packed, group, fmt)
    except ValueError as exc:
        raise KitError(f"{shard.path}: {p}: {exc}") from exc
    # The card's script uses the stored zero as is: its weight minus ours is offset * scale, exactly
    # (tests/unit/test_autoround.py checks the identity), so no second dequantization is needed.
    step = np.abs(packed.scales.astype(np.float64)) * autoround.zero_offset(fmt)
    return Dequantized(
        weight_bits=autoround.float32_to_bf16_bits(ours),
        in_features=ours.shape[1],
        out_features=ours.shape[0],
        group_size=group,
        card_max_abs_diff=float(step.max()),
        card_mean_abs_diff=float(step.mean()),  # every group holds the same number of weights
        weight_rms=float(np.sqrt(np.mean(np.square(ours, dtype=np.float64)))),
    )


def _declared_group_size(model: Model) -> int | None:
    extra = (model.quant.get("extra_config") or {}).get(model.prefix.rstrip("."), {})
    return extra.get("group_size", model.quant.get("group_size"))


def _check_expected_shape(model: Model, in_f: int, out_f: int) -> None:
    text = model.config.get("text_config", model.config)
    hidden = text.get("hidden_size")
    if isinstance(hidden, int) and (in_f, out_f) != (2 * hidden, hidden):
        raise KitError(
            f"{model.shard.path}: {model.prefix}qweight unpacks to [{out_f}, {in_f}] but "
            f"hidden_size {hidden} needs [{hidden}, {2 * hidden}]; config and weights disagree"
        )


# ---------------------------------------------------------------- writing


def _new_entries(model: Model, weight_bytes: int, out_f: int, in_f: int) -> list[tuple[str, dict[str, Any]]]:
    """Tensors of the new shard in file order: the fc's quantized trio replaced by one bf16 weight."""
    p = model.prefix
    order = sorted(model.shard.tensors, key=lambda n: model.shard.tensors[n]["data_offsets"][0])
    out: list[tuple[str, dict[str, Any]]] = []
    offset = 0
    for name in order:
        if name in (p + "qzeros", p + "scales"):
            continue
        if name == p + "qweight":
            entry = {"dtype": "BF16", "shape": [out_f, in_f], "data_offsets": [offset, offset + weight_bytes]}
            out.append((p + "weight", entry))
            offset += weight_bytes
            continue
        size = model.shard.nbytes(name)
        info = model.shard.tensors[name]
        out.append(
            (name, {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [offset, offset + size]})
        )
        offset += size
    return out


def _write_shard(model: Model, deq: Dequantized, tmp: Path) -> dict[str, str]:
    """Stream the new shard into tmp; return sha256 per tensor of what was written."""
    weight = deq.weight_bits.astype("<u2").tobytes()
    entries = _new_entries(model, len(weight), deq.out_features, deq.in_features)
    digests: dict[str, str] = {}
    with tmp.open("wb") as out:
        out.write(_header_bytes(dict(entries), model.shard.metadata))
        for name, _ in entries:
            digest = hashlib.sha256()
            if name == model.prefix + "weight":
                out.write(weight)
                digest.update(weight)
            else:
                model.shard.copy_to(name, out, digest)
            digests[name] = digest.hexdigest()
        out.flush()
        os.fsync(out.fileno())
    return digests


def _verify_shard(tmp: Path, digests: dict[str, str]) -> None:
    """Read the written file back: same tensor set, each tensor's bytes as intended."""
    written = read_shard(tmp)
    if set(written.tensors) != set(digests):
        raise KitError(
            f"{tmp}: read back {len(written.tensors)} tensors, wrote {len(digests)}; nothing changed"
        )
    for name, expected in digests.items():
        digest = hashlib.sha256()
        written.copy_to(name, _Null(), digest)
        if digest.hexdigest() != expected:
            raise KitError(f"{tmp}: tensor {name} reads back differently; disk problem? nothing changed")


class _Null:
    def write(self, _: bytes) -> None:
        pass


def _new_index(model: Model, deq: Dequantized) -> dict[str, Any] | None:
    if model.index is None:
        return None
    index = json.loads(json.dumps(model.index))
    p = model.prefix
    removed = 0
    for s in QUANT_SUFFIXES:
        if index["weight_map"].pop(p + s, None) is not None and p + s in model.shard.tensors:
            removed += model.shard.nbytes(p + s)
    index["weight_map"][p + "weight"] = model.shard_name
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    meta = index.setdefault("metadata", {})
    if isinstance(meta.get("total_size"), int):
        meta["total_size"] += deq.out_features * deq.in_features * 2 - removed
    return index


def _fsync_write(path: Path, text: str) -> None:
    with path.open("w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _backup(model: Model, names: list[str]) -> Path:
    """Keep the originals: hard links (no copy) in .fix-mtp-backup/; an existing backup is never replaced,
    since after an interrupted run the file in place may already be the rewritten one."""
    backup = model.root / BACKUP_DIR
    backup.mkdir(exist_ok=True)
    for name in names:
        target = backup / name
        if target.exists():
            continue
        try:
            os.link(model.root / name, target)
        except OSError:
            shutil.copy2(model.root / name, target)
    return backup


def _fault(step: str) -> None:
    if os.environ.get(FAULT_ENV) == step:
        os.kill(os.getpid(), 9)


def _remove_stale_temps(root: Path) -> None:
    for tmp in root.glob(f".*{TMP_TAG}"):
        tmp.unlink(missing_ok=True)


def _check_writable(root: Path) -> None:
    if not os.access(root, os.W_OK):
        raise KitError(
            f"{root}: directory is read-only; fix-mtp rewrites the shard holding mtp.fc. "
            "Copy the model to a writable folder (or mount it read-write) and run it there"
        )


def fix_mtp(root: str | Path, *, dry_run: bool = False) -> Outcome:
    """Dequantize a quantized mtp.fc in place (see the module docstring). Raises KitError on bad input."""
    model = load_model(Path(root))
    action, reasons = plan_fix(model)
    if action == "nothing":
        return Outcome(False, reasons)
    _check_writable(model.root)
    if action == "index-only":
        return _finish_index(model, reasons, dry_run)
    deq = dequantize_fc(model)
    lines = _describe(model, deq)
    if dry_run:
        return Outcome(False, [*lines, "dry run: nothing written"])
    _remove_stale_temps(model.root)
    changed = [model.shard_name] + ([INDEX] if model.index is not None else [])
    tmp_shard = model.root / f".{model.shard_name}{TMP_TAG}"
    tmp_index = model.root / f".{INDEX}{TMP_TAG}"
    shard_replaced = False
    try:
        digests = _write_shard(model, deq, tmp_shard)
        new_index = _new_index(model, deq)
        if new_index is not None:
            _fsync_write(tmp_index, json.dumps(new_index, indent=2) + "\n")
        _fault("after-temp-write")
        _verify_shard(tmp_shard, digests)
        _verify_weight(tmp_shard, model.prefix, deq)
        backup = _backup(model, changed)
        os.replace(tmp_shard, model.root / model.shard_name)
        shard_replaced = True
        _fault("after-shard-replace")
        if new_index is not None:
            os.replace(tmp_index, model.root / INDEX)
        _fsync_dir(model.root)
    except OSError as exc:
        _remove_stale_temps(model.root)
        if shard_replaced:
            raise KitError(
                f"{model.root / INDEX}: updating the index failed ({exc}) after {model.shard_name} "
                "was rewritten; run fix-mtp again to finish"
            ) from exc
        raise KitError(f"{model.root}: writing failed ({exc}); the model files are unchanged") from exc
    except BaseException:
        _remove_stale_temps(model.root)
        raise
    lines.append(
        f"wrote {model.shard_name}"
        + (f" and {INDEX}" if new_index else "")
        + f" (verified by reading back); originals kept in {backup}/"
    )
    return Outcome(True, lines)


def _verify_weight(tmp: Path, prefix: str, deq: Dequantized) -> None:
    shard = read_shard(tmp)
    got = np.frombuffer(shard.read(prefix + "weight"), dtype="<u2").reshape(deq.out_features, deq.in_features)
    if not np.array_equal(got, deq.weight_bits):
        raise KitError(f"{tmp}: {prefix}weight reads back differently; nothing changed")


def _finish_index(model: Model, reasons: list[str], dry_run: bool) -> Outcome:
    assert model.index is not None
    index = json.loads(json.dumps(model.index))
    p = model.prefix
    for s in QUANT_SUFFIXES:
        index["weight_map"].pop(p + s, None)
    index["weight_map"][p + "weight"] = model.shard_name
    index["weight_map"] = dict(sorted(index["weight_map"].items()))
    meta = index.setdefault("metadata", {})
    meta["total_size"] = sum(_shard_data_size(model.root / f) for f in set(index["weight_map"].values()))
    if dry_run:
        return Outcome(False, [*reasons, "dry run: nothing written"])
    _backup(model, [INDEX])
    tmp = model.root / f".{INDEX}{TMP_TAG}"
    _fsync_write(tmp, json.dumps(index, indent=2) + "\n")
    os.replace(tmp, model.root / INDEX)
    _fsync_dir(model.root)
    return Outcome(True, [*reasons, f"wrote {INDEX}"])


def _shard_data_size(path: Path) -> int:
    shard = read_shard(path)
    return sum(shard.nbytes(n) for n in shard.tensors)


def _describe(model: Model, deq: Dequantized) -> list[str]:
    p, fmt = model.prefix, model.quant["packing_format"]
    offset = autoround.zero_offset(fmt)
    rel = deq.card_mean_abs_diff / deq.weight_rms if deq.weight_rms else float("nan")
    lines = [
        f"{p.rstrip('.')}: stored quantized in {model.shard_name} (qweight/qzeros/scales, "
        f"group {deq.group_size}, {fmt}); vLLM's MTP drafter wants {p}weight: older vLLM skips the "
        "quantized tensors (MTP accepts 0% of drafts), vLLM 0.32 refuses to start ('no module or "
        "parameter named fc.qweight')",
        f"dequantizing to bf16 [{deq.out_features}, {deq.in_features}] as (q - (zero + {offset})) * scale, "
        f"the {fmt} convention",
    ]
    if offset:
        lines.append(
            "NOTE: this differs from the model card's dequant_mtp_fc.py, which computes (q - zero) * scale "
            "with the stored zero (zero point minus 1): its weights are one quantization step off, "
            f"max |difference| {deq.card_max_abs_diff:.4g}, mean {deq.card_mean_abs_diff:.4g} "
            f"({rel:.1%} of the weights' RMS {deq.weight_rms:.4g})"
        )
    return lines


# ---------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_dir", metavar="MODEL_DIR", help="model folder (config.json + safetensors)")
    parser.add_argument("--dry-run", action="store_true", help="check and report, write nothing")


def run(args: argparse.Namespace) -> int:
    outcome = fix_mtp(args.model_dir, dry_run=args.dry_run)
    for line in outcome.lines:
        print(line)
    return 0
