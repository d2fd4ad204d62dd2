"""Read a model directory's safetensors headers (8-byte little-endian length + JSON) without
loading a tensor: weight bytes per dtype and per role, and the consistency of the index with
the shards. Used by the memory planner (weight bytes) and ``serve doctor``.

Nothing here writes. A problem is reported as a :class:`Problem` (severity, code, message naming
the file and what to do) so doctor can show all of them; :func:`read_header` raises
:class:`SafetensorsError` for a single unreadable file.
"""

from __future__ import annotations

import json
import os
import struct
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serve.errors import KitError
from serve.launch.memory import WeightBytes

Severity = Literal["info", "warn", "error"]

INDEX_NAME = "model.safetensors.index.json"
# A header larger than this is not a safetensors header (the format caps it at 100 MB).
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES: dict[str, float] = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
    "F4": 0.5, "F6_E2M3": 0.75, "F6_E3M2": 0.75,
}  # fmt: skip


class SafetensorsError(KitError):
    """One safetensors file cannot be read as such."""


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.begin


@dataclass(frozen=True)
class Header:
    path: str
    header_len: int
    file_size: int
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]

    @property
    def data_start(self) -> int:
        return 8 + self.header_len

    @property
    def data_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors.values())


def parse_header(raw_len: bytes, raw_json: bytes, *, path: str, file_size: int) -> Header:
    """Pure part of :func:`read_header`: validate the length prefix, the JSON and the offsets
    against ``file_size``."""
    if len(raw_len) < 8:
        raise SafetensorsError(
            f"{path}: {file_size} bytes, shorter than the 8-byte header length; the file is "
            "truncated or not safetensors. Download it again"
        )
    (header_len,) = struct.unpack("<Q", raw_len)
    if header_len > MAX_HEADER_BYTES or 8 + header_len > file_size:
        raise SafetensorsError(
            f"{path}: header length {header_len} exceeds the file size {file_size}; the file is "
            "truncated (an interrupted download?). Download it again"
        )
    try:
        obj = json.loads(raw_json.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SafetensorsError(f"{path}: header is not valid JSON ({exc}); download the file again") from None
    if not isinstance(obj, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object; download the file again")
    metadata = obj.pop("__metadata__", None) or {}
    tensors: dict[str, TensorInfo] = {}
    data_len = file_size - 8 - header_len
    for name, info in obj.items():
        try:
            begin, end = (int(x) for x in info["data_offsets"])
            t = TensorInfo(name, str(info["dtype"]), tuple(int(x) for x in info["shape"]), begin, end)
        except (KeyError, TypeError, ValueError):
            raise SafetensorsError(f"{path}: tensor {name!r} has a malformed header entry {info!r}") from None
        if not 0 <= t.begin <= t.end:
            raise SafetensorsError(f"{path}: tensor {name!r} has bad data_offsets {[t.begin, t.end]}")
        if t.end > data_len:
            raise SafetensorsError(
                f"{path}: tensor {name!r} ends at byte {t.end} of the data section but the file "
                f"holds only {data_len} data bytes; the file is truncated. Download it again"
            )
        tensors[name] = t
    return Header(path, header_len, file_size, tensors, dict(metadata))


def read_header(path: str | os.PathLike[str]) -> Header:
    """Read only the header of one safetensors file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with p.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) < 8:
                return parse_header(raw_len, b"", path=str(p), file_size=size)
            (n,) = struct.unpack("<Q", raw_len)
            if n > MAX_HEADER_BYTES or 8 + n > size:
                return parse_header(raw_len, b"", path=str(p), file_size=size)
            raw_json = f.read(n)
    except OSError as exc:
        raise SafetensorsError(f"{p}: cannot read ({exc.strerror}); check the path and permissions") from None
    return parse_header(raw_len, raw_json, path=str(p), file_size=size)


# --------------------------------------------------------------------------------------
# Roles of tensors (what decode reads, what the planner counts)
# --------------------------------------------------------------------------------------

Role = Literal["embedding", "lm_head", "vision", "mtp", "other"]


def tensor_role(name: str) -> Role:
    if name.startswith("mtp.") or ".mtp." in name:
        return "mtp"
    if "visual." in name or name.startswith(("vision_tower.", "vision_model.", "model.vision")):
        return "vision"
    if name.startswith("lm_head.") or name.endswith(".lm_head.weight"):
        return "lm_head"
    if name.endswith("embed_tokens.weight") or name.endswith("wte.weight"):
        return "embedding"
    return "other"


@dataclass(frozen=True)
class Problem:
    severity: Severity
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message}


MtpFcState = Literal["bf16", "quantized", "missing", "none"]


@dataclass
class ModelFiles:
    """What the headers say about a model directory."""

    directory: str
    shards: list[str] = field(default_factory=list)
    index_present: bool = False
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    bytes_by_role: dict[str, int] = field(default_factory=dict)
    tensor_names: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(self.bytes_by_dtype.values())

    @property
    def weight_bytes(self) -> WeightBytes:
        r = self.bytes_by_role
        return WeightBytes(
            total=self.total_bytes,
            embedding=r.get("embedding", 0),
            vision=r.get("vision", 0),
            mtp=r.get("mtp", 0),
        )

    @property
    def mtp_fc(self) -> MtpFcState:
        """How ``mtp.fc`` is stored. vLLM's Qwen3_5MTP loader expects ``mtp.fc.weight``; a packed
        ``mtp.fc.qweight`` is skipped silently and MTP accepts 0% (seed card; fix-mtp repairs it)."""
        names = self.tensor_names
        if any(n.startswith("mtp.fc.qweight") or n == "mtp.fc.qzeros" for n in names):
            return "quantized"
        if "mtp.fc.weight" in names:
            return "bf16"
        if any(n.startswith("mtp.") for n in names):
            return "missing"
        return "none"

    @property
    def ok(self) -> bool:
        return not any(p.severity == "error" for p in self.problems)

    def to_dict(self) -> dict[str, Any]:
        return {
            "directory": self.directory,
            "shards": self.shards,
            "index_present": self.index_present,
            "total_bytes": self.total_bytes,
            "bytes_by_dtype": self.bytes_by_dtype,
            "bytes_by_role": self.bytes_by_role,
            "num_tensors": len(self.tensor_names),
            "mtp_fc": self.mtp_fc,
            "problems": [p.to_dict() for p in self.problems],
        }


def _add(acc: dict[str, int], key: str, n: int) -> None:
    acc[key] = acc.get(key, 0) + n


def summarize(headers: Iterable[Header]) -> tuple[dict[str, int], dict[str, int], set[str]]:
    """Bytes per dtype and per role over ``headers``, and all tensor names. Pure."""
    by_dtype: dict[str, int] = {}
    by_role: dict[str, int] = {}
    names: set[str] = set()
    for h in headers:
        for t in h.tensors.values():
            _add(by_dtype, t.dtype, t.nbytes)
            _add(by_role, tensor_role(t.name), t.nbytes)
            names.add(t.name)
    return by_dtype, by_role, names


def scan_model_dir(directory: str | os.PathLike[str]) -> ModelFiles:
    """Read every shard's header (never tensor data) and check the index against them:
    missing shards, truncated files, tensors the index lists but the shard lacks, tensors no
    index entry points at, and the index's ``total_size``."""
    d = Path(directory)
    out = ModelFiles(directory=str(d))
    if not d.is_dir():
        out.problems.append(
            Problem("error", "not-a-directory", f"{d}: not a directory; pass the model directory")
        )
        return out
    try:
        listing = sorted(p.name for p in d.iterdir())
    except OSError as exc:
        out.problems.append(
            Problem("error", "unreadable-dir", f"{d}: cannot list ({exc.strerror}); check permissions")
        )
        return out
    on_disk = [n for n in listing if n.endswith(".safetensors")]
    weight_map: dict[str, str] = {}
    index_meta: dict[str, Any] = {}
    if INDEX_NAME in listing:
        out.index_present = True
        try:
            idx = json.loads((d / INDEX_NAME).read_text(encoding="utf-8"))
            weight_map = dict(idx["weight_map"])
            index_meta = dict(idx.get("metadata") or {})
        except OSError as exc:
            out.problems.append(
                Problem("error", "index-unreadable", f"{d / INDEX_NAME}: cannot read ({exc.strerror})")
            )
        except (ValueError, KeyError, TypeError) as exc:
            out.problems.append(
                Problem(
                    "error",
                    "index-invalid",
                    f"{d / INDEX_NAME}: not a valid index ({exc!s}); it needs a 'weight_map' "
                    "object. Download it again",
                )
            )
    if not on_disk and not weight_map:
        out.problems.append(
            Problem(
                "error",
                "no-safetensors",
                f"{d}: no *.safetensors files; vLLM needs the weights in safetensors format",
            )
        )
        return out

    shards = sorted(set(on_disk) | set(weight_map.values()))
    out.shards = shards
    headers: dict[str, Header] = {}
    for shard in shards:
        path = d / shard
        if shard not in on_disk:
            n = sum(1 for v in weight_map.values() if v == shard)
            out.problems.append(
                Problem(
                    "error",
                    "missing-shard",
                    f"{path}: listed in {INDEX_NAME} for {n} tensors but not on disk; download it",
                )
            )
            continue
        try:
            headers[shard] = read_header(path)
        except SafetensorsError as exc:
            out.problems.append(Problem("error", "bad-shard", str(exc)))

    if weight_map:
        missing_by_shard: dict[str, list[str]] = defaultdict(list)
        for name, shard in weight_map.items():
            h = headers.get(shard)
            if h is not None and name not in h.tensors:
                missing_by_shard[shard].append(name)
        for shard, names in missing_by_shard.items():
            shown = ", ".join(sorted(names)[:3]) + (" ..." if len(names) > 3 else "")
            out.problems.append(
                Problem(
                    "error",
                    "tensor-not-in-shard",
                    f"{d / INDEX_NAME}: {len(names)} tensors mapped to {shard} are not in its header "
                    f"({shown}); the index and the shards disagree. Download both again",
                )
            )
        unindexed = [(n, s) for s, h in headers.items() for n in h.tensors if weight_map.get(n) != s]
        if unindexed:
            shown = ", ".join(f"{n} ({s})" for n, s in sorted(unindexed)[:3])
            out.problems.append(
                Problem(
                    "warn",
                    "tensor-not-in-index",
                    f"{d / INDEX_NAME}: {len(unindexed)} tensors in shard headers have no index "
                    f"entry pointing at them ({shown}); vLLM may ignore or double-load them",
                )
            )
    elif len(on_disk) > 1:
        out.problems.append(
            Problem(
                "warn",
                "no-index",
                f"{d}: {len(on_disk)} safetensors files but no {INDEX_NAME}; vLLM loads every "
                "*.safetensors file it finds",
            )
        )

    by_dtype, by_role, names = summarize(headers.values())
    out.bytes_by_dtype, out.bytes_by_role, out.tensor_names = by_dtype, by_role, names
    declared = index_meta.get("total_size")
    if isinstance(declared, (int, float)) and headers and len(headers) == len(shards):
        actual = out.total_bytes
        if declared and abs(int(declared) - actual) > max(1024, actual // 1000):
            out.problems.append(
                Problem(
                    "info",
                    "index-total-size",
                    f"{d / INDEX_NAME}: metadata.total_size {int(declared):,} differs from the "
                    f"shard headers' {actual:,} bytes (harmless for vLLM)",
                )
            )
    return out
