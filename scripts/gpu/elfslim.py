"""Make CUDA shared libraries smaller to carry without changing what one GPU runs: drop the device code that
GPU cannot run from their fat binaries, and zero the debug information nobody reads at run time.

A CUDA shared library keeps its kernels in the `.nv_fatbin` section: a row of fat binary containers, each
holding one entry per target (SASS for sm_75, sm_80, ..., and maybe PTX). The CUDA driver loads a container
from its start and reads its own header for its length, then picks the best entry for the device. An H200
(sm_90) can only run sm_90/sm_90a SASS or PTX of compute capability <= 9.0: SASS of another major version
never runs there. Pruning rewrites each container in place with only the entries that device can use, sets
the container's length to match and zero-fills the rest of its old extent, so every offset in the file stays
as it was (the fat binary wrappers point at container starts) and the zeros compress to nothing.

A container that would keep no entry is left as it was, and so is anything that does not parse as expected.
`__nv_relfatbin` (relocatable device code that a device link reads; NCCL carries 127 MB of it) has the same
container format and is pruned the same way. Debug sections (`.debug_*`) and the static symbol table
(`.symtab` with its `.strtab`; the dynamic linker and dlsym/dladdr use `.dynsym`/`.dynstr`, which stay) are
never loaded (no SHF_ALLOC); they are zero-filled in place, headers kept. Triton's libtriton.so carries 267 MB
of debug info, torch's two big libraries 168 MB of static symbols. Offsets never move, so the
file keeps its size and everything outside those sections is byte-identical; the zeros compress to nothing.

Verify a pruned file with `cuobjdump --list-elf` (Triton's wheel carries cuobjdump): the sm_90 entries must
be listed and byte-identical to the original's (`cuobjdump -xelf all`).
"""

from __future__ import annotations

import mmap
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path

FATBIN_MAGIC = 0xBA55ED50
HEADER = struct.Struct("<IHHQ")  # magic, version, header size, size of the entries that follow
ENTRY_KIND_PTX = 1
ENTRY_KIND_ELF = 2


@dataclass(frozen=True)
class Entry:
    offset: int  # from the start of the file
    length: int  # entry header + payload
    kind: int
    arch: int


@dataclass(frozen=True)
class Container:
    offset: int
    header_size: int
    entries_size: int
    entries: tuple[Entry, ...]


FATBIN_SECTIONS = (".nv_fatbin", "__nv_relfatbin")
SHT_NOBITS = 8
SHF_ALLOC = 2


@dataclass(frozen=True)
class Section:
    name: str
    type: int
    flags: int
    offset: int
    size: int
    holds_section_names: bool = False  # the table named by e_shstrndx: never cleared


def sections(elf: bytes | mmap.mmap) -> list[Section]:
    """The sections of a 64-bit little-endian ELF file (empty for anything else)."""
    if len(elf) < 64 or elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return []
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", elf, 0x3A)
    if shoff == 0 or shnum == 0 or shoff + shnum * shentsize > len(elf):
        return []

    def header(i: int) -> tuple[int, int, int, int, int]:
        name, stype, flags, _addr, off, size = struct.unpack_from("<IIQQQQ", elf, shoff + i * shentsize)
        return name, stype, flags, off, size

    stroff = header(shstrndx)[3]
    out = []
    for i in range(shnum):
        name, stype, flags, off, size = header(i)
        end = elf.find(b"\0", stroff + name)
        label = bytes(elf[stroff + name : end]).decode(errors="replace")
        out.append(Section(label, stype, flags, off, size, i == shstrndx))
    return out


def fatbin_section(elf: bytes | mmap.mmap, name: str = ".nv_fatbin") -> tuple[int, int] | None:
    """(file offset, size) of a fat binary section, or None."""
    for s in sections(elf):
        if s.name == name and s.type != SHT_NOBITS:
            return s.offset, s.size
    return None


def parse_containers(buf: bytes | mmap.mmap, start: int, size: int) -> list[Container]:
    """Walk the containers of a fatbin section; padding between them is skipped 8 bytes at a time."""
    out: list[Container] = []
    pos, end = start, start + size
    while pos + HEADER.size <= end:
        magic, _version, header_size, entries_size = HEADER.unpack_from(buf, pos)
        if magic != FATBIN_MAGIC:
            pos += 8
            continue
        entries: list[Entry] = []
        epos, eend = pos + header_size, pos + header_size + entries_size
        if eend > end:
            raise ValueError(f"fatbin container at {pos:#x} runs past the section end")
        while epos < eend:
            kind, _unk, ehdr = struct.unpack_from("<HHI", buf, epos)
            (payload,) = struct.unpack_from("<Q", buf, epos + 8)
            (arch,) = struct.unpack_from("<I", buf, epos + 28)
            if ehdr < 32 or epos + ehdr + payload > eend:
                raise ValueError(f"fatbin entry at {epos:#x} has a bad size")
            entries.append(Entry(epos, ehdr + payload, kind, arch))
            epos += ehdr + payload
        out.append(Container(pos, header_size, entries_size, tuple(entries)))
        pos = eend
    return out


def keep_entry(entry: Entry, sm: int) -> bool:
    """What a device of compute capability `sm` (90 for Hopper) can use: SASS of that exact capability
    (sm_90 and sm_90a both say 90) and PTX of a capability up to its own. Unknown kinds are kept."""
    if entry.kind == ENTRY_KIND_ELF:
        return entry.arch == sm
    if entry.kind == ENTRY_KIND_PTX:
        return entry.arch <= sm
    return True


@dataclass(frozen=True)
class PruneResult:
    containers: int
    entries_before: int
    entries_after: int
    bytes_zeroed: int  # device code dropped
    containers_untouched: int
    debug_zeroed: int = 0  # debug info and static symbols


def prune_buffer(buf: bytearray | mmap.mmap, sm: int, clear_debug: bool = True) -> PruneResult:
    """Prune the fat binary sections of an ELF image held in a writable buffer, in place, and (unless told
    not to) zero its debug sections."""
    secs = sections(buf)
    containers = []
    for s in secs:
        if s.name in FATBIN_SECTIONS and s.type != SHT_NOBITS:
            containers += parse_containers(buf, s.offset, s.size)
    before = after = zeroed = untouched = debug = 0
    for c in containers:
        before += len(c.entries)
        kept = [e for e in c.entries if keep_entry(e, sm)]
        if not kept or len(kept) == len(c.entries):
            after += len(c.entries)
            untouched += not kept
            continue
        after += len(kept)
        body = b"".join(bytes(buf[e.offset : e.offset + e.length]) for e in kept)
        magic, version, header_size, _ = HEADER.unpack_from(buf, c.offset)
        HEADER.pack_into(buf, c.offset, magic, version, header_size, len(body))
        start = c.offset + c.header_size
        buf[start : start + len(body)] = body
        rest = c.entries_size - len(body)
        buf[start + len(body) : start + c.entries_size] = bytes(rest)
        zeroed += rest
    if clear_debug:
        for s in secs:
            unloaded = (
                s.type != SHT_NOBITS and not s.flags & SHF_ALLOC and s.size and not s.holds_section_names
            )
            if unloaded and (s.name.startswith(".debug_") or s.name in (".symtab", ".strtab")):
                buf[s.offset : s.offset + s.size] = bytes(s.size)
                debug += s.size
    return PruneResult(len(containers), before, after, zeroed, untouched, debug)


def prune_file(src: Path, dst: Path, sm: int, clear_debug: bool = True) -> PruneResult:
    """Copy `src` to `dst` (same path allowed) with its fat binaries pruned for compute capability `sm`."""
    if src != dst:
        shutil.copyfile(src, dst)
    if dst.stat().st_size < 64:
        return PruneResult(0, 0, 0, 0, 0)
    with open(dst, "r+b") as fh, mmap.mmap(fh.fileno(), 0) as mm:
        result = prune_buffer(mm, sm, clear_debug)
        mm.flush()
    return result
