"""An offline bundle carried to the GPU machine in parts: split, manifest, stage, join, unpack.

Standard library only: the staging side runs under the GPU machine's python3 before anything is installed.

The bundle is one zstd-compressed tar stream of an installed site-packages tree, cut into parts of at most a
given size. Each device call carries one folder `callNN/` holding one part and a copy of the manifest (the
first also holds a zstd decoder library, in case the machine has none). The manifest names every part with its
size and sha256, and the sha256 of the whole stream. Staging a part checks it against the manifest and links or
copies it into the staging folder; once all parts are there, the stream is joined, checked, decompressed and
unpacked.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

MANIFEST = "manifest.json"
MIB = 1024 * 1024
CHUNK = 4 * MIB


class BundleError(Exception):
    """A bundle that cannot be staged or unpacked; the message says what to do."""


@dataclass(frozen=True)
class Part:
    name: str
    size: int
    sha256: str


@dataclass
class Manifest:
    bundle: str  # e.g. "vllm-0.33.0-sm90", also names the marker of a finished install
    stream_sha256: str
    stream_size: int
    parts: list[Part]
    compression: str = "zstd"
    extras: dict[str, str] = field(default_factory=dict)  # file name -> sha256, carried in call01
    info: dict[str, Any] = field(default_factory=dict)  # free-form: contents, sizes, environment

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        raw = json.loads(text)
        raw["parts"] = [Part(**p) for p in raw["parts"]]
        return cls(**raw)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        try:
            return cls.from_json(path.read_text())
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise BundleError(f"{path}: not a readable bundle manifest ({exc})") from exc


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def part_name(index: int) -> str:
    return f"part-{index:03d}.zst"


def call_dir_name(index: int) -> str:
    return f"call{index:02d}"


def split_stream(
    src: IO[bytes], dest: Path, part_size: int, first_part_size: int | None = None
) -> list[Part]:
    """Cut `src` into parts of `part_size` bytes (the first may be smaller) written into `dest`."""
    if part_size <= 0 or (first_part_size is not None and first_part_size <= 0):
        raise ValueError("part sizes must be positive")
    dest.mkdir(parents=True, exist_ok=True)
    parts: list[Part] = []
    index = 1
    limit = first_part_size or part_size
    while True:
        h = hashlib.sha256()
        written = 0
        path = dest / part_name(index)
        with open(path, "wb") as out:
            while written < limit:
                block = src.read(min(CHUNK, limit - written))
                if not block:
                    break
                out.write(block)
                h.update(block)
                written += len(block)
        if written == 0:
            path.unlink()
            break
        parts.append(Part(path.name, written, h.hexdigest()))
        index += 1
        limit = part_size
    return parts


def stage(call_dir: Path, stage_dir: Path) -> tuple[Manifest, list[str]]:
    """Check the parts (and extras) in one carried call folder against its manifest and put them into
    `stage_dir`. Returns the manifest and a line per file handled. Idempotent: a part already staged with
    the right checksum is left alone. A staging folder holding another bundle's parts is emptied first."""
    manifest_path = call_dir / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(f"{call_dir}: no {MANIFEST}; carry one of the bundle's callNN folders")
    manifest = Manifest.load(manifest_path)
    stage_dir.mkdir(parents=True, exist_ok=True)
    staged_manifest = stage_dir / MANIFEST
    if staged_manifest.is_file() and Manifest.load(staged_manifest) != manifest:
        for child in stage_dir.iterdir():
            if child.is_file():
                child.unlink()
    shutil.copyfile(manifest_path, staged_manifest)
    wanted = {p.name: p for p in manifest.parts}
    lines: list[str] = []
    for path in sorted(call_dir.iterdir()):
        if path.name == MANIFEST:
            continue
        if path.name in wanted:
            expected = wanted[path.name].sha256
        elif path.name in manifest.extras:
            expected = manifest.extras[path.name]
        else:
            raise BundleError(f"{path}: not named in {manifest_path}; rebuild the bundle")
        target = stage_dir / path.name
        if (
            target.is_file()
            and target.stat().st_size == path.stat().st_size
            and sha256_file(target) == expected
        ):
            lines.append(f"{path.name}: already staged")
            continue
        got = sha256_file(path)
        if got != expected:
            raise BundleError(f"{path}: sha256 {got} but the manifest says {expected}; re-copy this part")
        tmp = target.with_name(target.name + ".tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copyfile(path, tmp)
        os.replace(tmp, target)
        lines.append(f"{path.name}: staged ({path.stat().st_size} bytes, sha256 ok)")
    return manifest, lines


def missing_parts(manifest: Manifest, stage_dir: Path) -> list[str]:
    """Parts not yet in `stage_dir` with the manifest's size (checksums were checked when staged)."""
    out = []
    for p in manifest.parts:
        f = stage_dir / p.name
        if not f.is_file() or f.stat().st_size != p.size:
            out.append(p.name)
    return out


def missing_calls(manifest: Manifest, stage_dir: Path) -> list[str]:
    """The callNN folders still to carry (part i travels in call i)."""
    names = {p.name: i for i, p in enumerate(manifest.parts, start=1)}
    return [call_dir_name(names[n]) for n in missing_parts(manifest, stage_dir)]


class JoinedParts:
    """A read-only file object over the staged parts in order that checks each part's sha256 as it goes
    and the whole stream's at the end."""

    def __init__(self, manifest: Manifest, stage_dir: Path) -> None:
        self._parts = list(manifest.parts)
        self._dir = stage_dir
        self._manifest = manifest
        self._index = -1
        self._fh: IO[bytes] | None = None
        self._h = hashlib.sha256()
        self._whole = hashlib.sha256()
        self._done = False

    def _next(self) -> bool:
        if self._fh is not None:
            self._fh.close()
            part = self._parts[self._index]
            if self._h.hexdigest() != part.sha256:
                raise BundleError(f"{self._dir / part.name}: sha256 mismatch while joining; stage it again")
        self._index += 1
        if self._index >= len(self._parts):
            self._fh = None
            if not self._done and self._whole.hexdigest() != self._manifest.stream_sha256:
                raise BundleError(
                    "the joined stream's sha256 does not match the manifest; rebuild the bundle"
                )
            self._done = True
            return False
        self._fh = open(self._dir / self._parts[self._index].name, "rb")  # noqa: SIM115 (closed in _next/close)
        self._h = hashlib.sha256()
        return True

    def read(self, n: int = -1) -> bytes:
        if self._index == -1 and not self._next():
            return b""
        out = bytearray()
        while self._fh is not None and (n < 0 or len(out) < n):
            block = self._fh.read(CHUNK if n < 0 else n - len(out))
            if block:
                self._h.update(block)
                self._whole.update(block)
                out += block
            elif not self._next():
                break
        return bytes(out)

    def readinto(self, buf: Any) -> int:
        data = self.read(len(buf))
        buf[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


class _InBuffer(ctypes.Structure):
    _fields_ = [("src", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


class _OutBuffer(ctypes.Structure):
    _fields_ = [("dst", ctypes.c_void_p), ("size", ctypes.c_size_t), ("pos", ctypes.c_size_t)]


def find_libzstd(extra_dirs: Iterable[Path] = ()) -> str | None:
    for d in extra_dirs:
        for cand in sorted(Path(d).glob("libzstd.so*")):
            return str(cand)
    found = ctypes.util.find_library("zstd")
    if found:
        return found
    for cand in (
        "libzstd.so.1",
        "/usr/lib/x86_64-linux-gnu/libzstd.so.1",
        "/lib/x86_64-linux-gnu/libzstd.so.1",
    ):
        try:
            ctypes.CDLL(cand)
            return cand
        except OSError:
            continue
    return None


def zstd_decompress_ctypes(src: Any, libpath: str, out_chunk: int = CHUNK) -> Iterator[bytes]:
    """Stream-decompress zstd frames from a file object with the zstd C library, through ctypes."""
    lib = ctypes.CDLL(libpath)
    lib.ZSTD_createDStream.restype = ctypes.c_void_p
    lib.ZSTD_freeDStream.argtypes = [ctypes.c_void_p]
    lib.ZSTD_initDStream.argtypes = [ctypes.c_void_p]
    lib.ZSTD_initDStream.restype = ctypes.c_size_t
    lib.ZSTD_DCtx_setParameter.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    lib.ZSTD_DCtx_setParameter.restype = ctypes.c_size_t
    lib.ZSTD_decompressStream.argtypes = [
        ctypes.c_void_p,
        ctypes.POINTER(_OutBuffer),
        ctypes.POINTER(_InBuffer),
    ]
    lib.ZSTD_decompressStream.restype = ctypes.c_size_t
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    lib.ZSTD_getErrorName.argtypes = [ctypes.c_size_t]
    lib.ZSTD_getErrorName.restype = ctypes.c_char_p

    def check(code: int) -> int:
        if lib.ZSTD_isError(code):
            raise BundleError(f"zstd: {lib.ZSTD_getErrorName(code).decode()}")
        return code

    ds = lib.ZSTD_createDStream()
    if not ds:
        raise BundleError("zstd: cannot create a decompression stream")
    try:
        check(lib.ZSTD_initDStream(ds))
        check(lib.ZSTD_DCtx_setParameter(ds, 100, 31))  # ZSTD_d_windowLogMax: accept --long windows
        out = ctypes.create_string_buffer(out_chunk)
        while True:
            data = src.read(CHUNK)
            if not data:
                break
            inbuf = ctypes.create_string_buffer(data, len(data))
            ib = _InBuffer(ctypes.cast(inbuf, ctypes.c_void_p), len(data), 0)
            while ib.pos < ib.size:
                ob = _OutBuffer(ctypes.cast(out, ctypes.c_void_p), out_chunk, 0)
                check(lib.ZSTD_decompressStream(ds, ctypes.byref(ob), ctypes.byref(ib)))
                if ob.pos:
                    yield ctypes.string_at(out, ob.pos)
            # flush what the decoder still holds for this input
            while True:
                ob = _OutBuffer(ctypes.cast(out, ctypes.c_void_p), out_chunk, 0)
                empty = _InBuffer(None, 0, 0)
                check(lib.ZSTD_decompressStream(ds, ctypes.byref(ob), ctypes.byref(empty)))
                if not ob.pos:
                    break
                yield ctypes.string_at(out, ob.pos)
    finally:
        lib.ZSTD_freeDStream(ds)


def zstd_compress_ctypes(data: bytes, libpath: str, level: int = 3) -> bytes:
    """One zstd frame of `data` (small inputs: tests and tools; the builder uses the zstd command)."""
    lib = ctypes.CDLL(libpath)
    lib.ZSTD_compressBound.argtypes = [ctypes.c_size_t]
    lib.ZSTD_compressBound.restype = ctypes.c_size_t
    lib.ZSTD_compress.argtypes = [
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_char_p,
        ctypes.c_size_t,
        ctypes.c_int,
    ]
    lib.ZSTD_compress.restype = ctypes.c_size_t
    lib.ZSTD_isError.argtypes = [ctypes.c_size_t]
    lib.ZSTD_isError.restype = ctypes.c_uint
    bound = lib.ZSTD_compressBound(len(data))
    out = ctypes.create_string_buffer(bound)
    n = lib.ZSTD_compress(out, bound, data, len(data), level)
    if lib.ZSTD_isError(n):
        raise BundleError("zstd: compression failed")
    return ctypes.string_at(out, n)


class _IterReader:
    """A file object over an iterator of byte blocks (for tarfile's stream mode)."""

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._blocks)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _zstd_command_blocks(joined: JoinedParts) -> Iterator[bytes]:
    """Decompress with the zstd command, fed from a thread (errors there are re-raised here)."""
    proc = subprocess.Popen(["zstd", "-dcq", "--long=31"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    errors: list[BaseException] = []

    def feed() -> None:
        assert proc.stdin is not None
        try:
            while block := joined.read(CHUNK):
                proc.stdin.write(block)
        except BaseException as exc:  # re-raised below, in the caller's thread
            errors.append(exc)
        finally:
            proc.stdin.close()

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    while block := proc.stdout.read(CHUNK):
        yield block
    feeder.join()
    if errors:
        raise errors[0]
    if proc.wait() != 0:
        raise BundleError("zstd exited with an error")


def unpack(manifest: Manifest, stage_dir: Path, dest: Path, use_tar_command: bool = True) -> str:
    """Join, check, decompress and unpack the staged stream into `dest`. Returns how it was done.
    Decoder: libzstd through ctypes (the machine's, else the copy carried in call01), else the zstd
    command. Unpacking: GNU tar when there is one (five times faster than tarfile here), else tarfile."""
    missing = missing_parts(manifest, stage_dir)
    if missing:
        raise BundleError(f"{stage_dir}: parts missing: {' '.join(missing)}")
    dest.mkdir(parents=True, exist_ok=True)
    joined = JoinedParts(manifest, stage_dir)
    lib = find_libzstd([stage_dir])
    if lib is not None:
        how = f"libzstd {lib}"
        blocks = zstd_decompress_ctypes(joined, lib)
    elif shutil.which("zstd"):
        how = "zstd command"
        blocks = _zstd_command_blocks(joined)
    else:
        raise BundleError("no zstd decoder: neither libzstd.so (also not the one carried in call01) nor zstd")
    tar_cmd = shutil.which("tar") if use_tar_command else None
    if tar_cmd:
        how += ", tar command"
        proc = subprocess.Popen(
            [tar_cmd, "-x", "-f", "-", "-C", str(dest), "--no-same-owner"], stdin=subprocess.PIPE
        )
        assert proc.stdin is not None
        try:
            for block in blocks:
                proc.stdin.write(block)
        finally:
            proc.stdin.close()
            rc = proc.wait()
        if rc != 0:
            raise BundleError(f"tar exited with status {rc} while unpacking into {dest}")
    else:
        how += ", tarfile"
        with tarfile.open(fileobj=_IterReader(blocks), mode="r|") as tar:
            extract_all(tar, dest)
    # reading to the end checks the last part's and the whole stream's sha256
    while joined.read(CHUNK):
        pass
    joined.close()
    return how


def extract_all(tar: tarfile.TarFile, dest: Path) -> None:
    """Extract a tar stream of plain files and folders, refusing absolute paths, '..' and links."""
    kwargs: dict[str, Any] = {}
    if hasattr(tarfile, "data_filter"):
        kwargs["filter"] = "tar"
    for member in tar:
        parts = Path(member.name).parts
        if member.name.startswith("/") or ".." in parts:
            raise BundleError(f"tar member {member.name!r} would land outside {dest}")
        if not (member.isfile() or member.isdir()):
            raise BundleError(f"tar member {member.name!r} is not a plain file or folder")
        tar.extract(member, dest, **kwargs)
