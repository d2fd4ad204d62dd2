"""Read a model directory's safetensors headers without loading a tensor: weight bytes per dtype and
per role, and the consistency of the index with the shards. Used by the memory planner (weight bytes)
and ``serve doctor``.

Nothing here writes. A problem is reported as a :class:`Problem` (severity, code, message naming
the file and what to do) so doctor can show all of them; one file's header is read by
:func:`serve.checkpoint.safetensors_file.read_header`.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from serve.checkpoint.model_dir import INDEX_NAME, read_index, shard_path
from serve.checkpoint.safetensors_file import (
    Header,
    MtpFcState,
    SafetensorsError,
    mtp_fc_state,
    read_header,
    summarize,
)
from serve.errors import KitError
from serve.launch.memory import WeightBytes

Severity = Literal["info", "warn", "error"]


@dataclass(frozen=True)
class Problem:
    severity: Severity
    code: str
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"severity": self.severity, "code": self.code, "message": self.message}


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
        """How ``mtp.fc`` is stored (:func:`serve.checkpoint.safetensors_file.mtp_fc_state`)."""
        return mtp_fc_state(self.tensor_names)

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
            index = read_index(d)
            weight_map = index["weight_map"]
            index_meta = index["metadata"] if isinstance(index.get("metadata"), dict) else {}
        except KitError as exc:
            out.problems.append(Problem("error", "index-invalid", str(exc)))
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
        try:
            path = shard_path(d, shard, source=d / INDEX_NAME if shard not in on_disk else d)
        except KitError as exc:
            out.problems.append(Problem("error", "shard-outside-dir", str(exc)))
            continue
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
        for shard, absent in missing_by_shard.items():
            shown = ", ".join(sorted(absent)[:3]) + (" ..." if len(absent) > 3 else "")
            out.problems.append(
                Problem(
                    "error",
                    "tensor-not-in-shard",
                    f"{d / INDEX_NAME}: {len(absent)} tensors mapped to {shard} are not in its header "
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
