"""The offline GPU bundle's own logic (scripts/gpu/): cutting a stream into parts, the manifest, staging a
part per device call, joining and unpacking, and pruning CUDA fat binaries. Tiny fake parts and a
hand-built ELF stand in for the real 700 MB bundle and torch's libraries; the zstd codec is the real
library (libzstd through ctypes), as on the GPU machine. A fraction of a second in all."""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
import struct
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

GPU_SCRIPTS = Path(__file__).resolve().parents[2] / "scripts" / "gpu"
sys.path.insert(0, str(GPU_SCRIPTS))
import bundle_cli  # noqa: E402
import bundlelib  # noqa: E402
import elfslim  # noqa: E402

LIBZSTD = bundlelib.find_libzstd()
needs_zstd = pytest.mark.skipif(LIBZSTD is None, reason="libzstd.so is not installed (Debian: libzstd1)")


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "torch/__init__.py": b"__version__ = '2.14.0'\n",
        "torch/lib/libfake.so": os.urandom(3000) + bytes(5000),
        "nvidia/nccl/lib/libnccl.so.2": b"\x7fELF" + os.urandom(700),
        "vllm/entrypoints/cli/main.py": b"print('hi')\n" * 50,
    }
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "torch/lib/libfake.so").chmod(0o755)
    return files


def tar_bytes(root: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(root.rglob("*")):
            tar.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buf.getvalue()


def build_bundle(tmp: Path, stream: bytes, part_size: int, first: int | None = None) -> tuple[Path, list]:
    """What make-bundle.py writes: callNN folders, each with one part and the manifest."""
    flat = tmp / "flat"
    parts = bundlelib.split_stream(io.BytesIO(stream), flat, part_size, first)
    import hashlib

    manifest = bundlelib.Manifest(
        bundle="test-bundle-1",
        stream_sha256=hashlib.sha256(stream).hexdigest(),
        stream_size=len(stream),
        parts=parts,
        extras={"libzstd.so.1": "0" * 64},
        info={"vllm": "0.0.0"},
    )
    out = tmp / "bundle"
    for i, p in enumerate(parts, start=1):
        d = out / bundlelib.call_dir_name(i)
        d.mkdir(parents=True)
        (flat / p.name).rename(d / p.name)
        (d / bundlelib.MANIFEST).write_text(manifest.to_json())
    return out, parts


def test_split_stream_cuts_exact_sizes_and_joins_back(tmp_path):
    data = os.urandom(10_000)
    parts = bundlelib.split_stream(io.BytesIO(data), tmp_path, part_size=3000, first_part_size=1000)
    assert [p.size for p in parts] == [1000, 3000, 3000, 3000]
    assert b"".join((tmp_path / p.name).read_bytes() for p in parts) == data
    assert all(bundlelib.sha256_file(tmp_path / p.name) == p.sha256 for p in parts)
    assert bundlelib.split_stream(io.BytesIO(b""), tmp_path / "empty", 10) == []


def test_manifest_round_trips(tmp_path):
    m = bundlelib.Manifest("b", "ab" * 32, 5, [bundlelib.Part("part-001.zst", 5, "cd" * 32)], info={"k": [1]})
    assert bundlelib.Manifest.from_json(m.to_json()) == m
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(bundlelib.BundleError, match=r"m\.json: not a readable bundle manifest"):
        bundlelib.Manifest.load(tmp_path / "m.json")


def test_stage_is_idempotent_and_says_what_is_missing(tmp_path, capsys):
    out, _ = build_bundle(tmp_path, os.urandom(2500), part_size=1000)
    stage = tmp_path / "stage"
    assert bundle_cli.main(["stage", str(out / "call02"), "--stage", str(stage)]) == 3
    text = capsys.readouterr().out
    assert "part-002.zst: staged" in text and "still to carry: call01 call03" in text
    assert "WARNING earlier calls are missing (call01)" in text
    assert bundle_cli.main(["stage", str(out / "call02"), "--stage", str(stage)]) == 3
    assert "part-002.zst: already staged" in capsys.readouterr().out
    assert bundle_cli.main(["stage", str(out / "call01"), "--stage", str(stage)]) == 3
    assert bundle_cli.main(["stage", str(out / "call03"), "--stage", str(stage)]) == 0
    assert "all 3 parts staged" in capsys.readouterr().out
    assert bundle_cli.main(["status", "--stage", str(stage)]) == 0


def test_stage_refuses_a_corrupt_part_naming_it(tmp_path, capsys):
    out, _ = build_bundle(tmp_path, os.urandom(2500), part_size=1000)
    part = out / "call02" / "part-002.zst"
    data = bytearray(part.read_bytes())
    data[10] ^= 0xFF
    part.write_bytes(bytes(data))
    assert bundle_cli.main(["stage", str(out / "call02"), "--stage", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "call02/part-002.zst: sha256" in err and "re-copy this part" in err
    assert not (tmp_path / "s" / "part-002.zst").exists()


def test_stage_refuses_files_the_manifest_does_not_name(tmp_path):
    out, _ = build_bundle(tmp_path, os.urandom(100), part_size=1000)
    (out / "call01" / "stray.bin").write_bytes(b"x")
    with pytest.raises(bundlelib.BundleError, match=r"stray\.bin: not named in"):
        bundlelib.stage(out / "call01", tmp_path / "s")


def test_a_new_bundle_clears_parts_of_an_old_one(tmp_path):
    old, _ = build_bundle(tmp_path / "old", os.urandom(2500), part_size=1000)
    stage = tmp_path / "stage"
    bundlelib.stage(old / "call01", stage)
    new, _ = build_bundle(tmp_path / "new", os.urandom(1500), part_size=1000)
    manifest, _ = bundlelib.stage(new / "call02", stage)
    assert bundlelib.missing_calls(manifest, stage) == ["call01"]
    assert sorted(p.name for p in stage.iterdir()) == ["manifest.json", "part-002.zst"]


UNPACKERS = [
    pytest.param(True, False, id="libzstd+tar"),
    pytest.param(False, False, id="libzstd+tarfile"),
    pytest.param(
        True,
        True,
        id="zstd-command+tar",
        marks=pytest.mark.skipif(shutil.which("zstd") is None, reason="no zstd command"),
    ),
]


def staged(tmp_path: Path, level: int = 3) -> tuple[dict[str, bytes], list, Path]:
    src = tmp_path / "src"
    files = make_tree(src)
    stream = bundlelib.zstd_compress_ctypes(tar_bytes(src), LIBZSTD, level=level)
    out, parts = build_bundle(tmp_path, stream, part_size=max(200, len(stream) // 3))
    stage = tmp_path / "stage"
    for d in sorted(out.iterdir()):
        bundlelib.stage(d, stage)
    return files, parts, stage


@needs_zstd
@pytest.mark.parametrize(("tar_command", "zstd_command"), UNPACKERS)
def test_staged_parts_unpack_to_the_same_tree(tmp_path, monkeypatch, tar_command, zstd_command):
    files, parts, stage = staged(tmp_path)
    assert len(parts) >= 3
    if zstd_command:
        monkeypatch.setattr(bundlelib, "find_libzstd", lambda extra=(): None)
    site = tmp_path / "site"
    manifest = bundlelib.Manifest.load(stage / bundlelib.MANIFEST)
    how = bundlelib.unpack(manifest, stage, site, use_tar_command=tar_command)
    assert ("zstd command" in how) == zstd_command and ("tar command" in how) == tar_command
    for name, data in files.items():
        assert (site / name).read_bytes() == data
    assert os.access(site / "torch/lib/libfake.so", os.X_OK)


@needs_zstd
def test_unpack_runs_once(tmp_path, capsys):
    _, _, stage = staged(tmp_path)
    site = tmp_path / "site"
    assert bundle_cli.main(["installed", "--stage", str(stage), "--site", str(site)]) == 3
    assert bundle_cli.main(["unpack", "--stage", str(stage), "--site", str(site)]) == 0
    assert bundle_cli.main(["installed", "--stage", str(stage), "--site", str(site)]) == 0
    assert bundle_cli.main(["unpack", "--stage", str(stage), "--site", str(site)]) == 0
    assert "already in" in capsys.readouterr().out


@needs_zstd
@pytest.mark.parametrize(("tar_command", "zstd_command"), UNPACKERS)
def test_unpack_detects_a_part_changed_after_staging(tmp_path, monkeypatch, tar_command, zstd_command):
    _, parts, stage = staged(tmp_path, level=1)
    if zstd_command:
        monkeypatch.setattr(bundlelib, "find_libzstd", lambda extra=(): None)
    last = stage / parts[-1].name
    data = bytearray(last.read_bytes())
    data[-1] ^= 0x01  # same size, so staging's size check passes; the checksum must catch it
    last.unlink()  # staged parts may be hard links to the carried ones: write a new file
    last.write_bytes(bytes(data))
    manifest = bundlelib.Manifest.load(stage / bundlelib.MANIFEST)
    with pytest.raises(bundlelib.BundleError):
        bundlelib.unpack(manifest, stage, tmp_path / "site", use_tar_command=tar_command)


def test_joined_parts_check_every_part_and_the_whole(tmp_path):
    data = os.urandom(2500)
    out, parts = build_bundle(tmp_path, data, part_size=1000)
    stage = tmp_path / "stage"
    for d in sorted(out.iterdir()):
        bundlelib.stage(d, stage)
    manifest = bundlelib.Manifest.load(stage / bundlelib.MANIFEST)
    joined = bundlelib.JoinedParts(manifest, stage)
    assert joined.read(700) + joined.read() == data
    middle = stage / parts[1].name
    changed = bytearray(middle.read_bytes())
    changed[5] ^= 0xFF
    middle.unlink()
    middle.write_bytes(bytes(changed))
    joined = bundlelib.JoinedParts(manifest, stage)
    with pytest.raises(bundlelib.BundleError, match=r"part-002\.zst: sha256 mismatch while joining"):
        joined.read()


def test_unpack_with_parts_missing_names_them(tmp_path):
    out, _ = build_bundle(tmp_path, os.urandom(2500), part_size=1000)
    stage = tmp_path / "stage"
    bundlelib.stage(out / "call01", stage)
    manifest = bundlelib.Manifest.load(stage / bundlelib.MANIFEST)
    with pytest.raises(bundlelib.BundleError, match=r"parts missing: part-002\.zst part-003\.zst"):
        bundlelib.unpack(manifest, stage, tmp_path / "site")


def test_extract_refuses_paths_leaving_the_target(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("../evil.txt")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    buf.seek(0)
    with tarfile.open(fileobj=buf, mode="r|") as tar, pytest.raises(bundlelib.BundleError, match="outside"):
        bundlelib.extract_all(tar, tmp_path / "site")
    assert not (tmp_path / "evil.txt").exists()


def test_env_lines_put_the_bundle_first(tmp_path):
    (tmp_path / "KIT-BUNDLE.json").write_text(
        '{"vllm": "0.33.0", "prepend_ld_library_path": ["nvidia/nccl/lib"], '
        '"env": {"PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK": "1"}}'
    )
    lines = bundle_cli.env_lines(tmp_path)
    assert f'export PYTHONPATH={tmp_path}"${{PYTHONPATH:+:$PYTHONPATH}}"' in lines
    assert (
        f'export LD_LIBRARY_PATH={tmp_path}/nvidia/nccl/lib"${{LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}}"' in lines
    )
    assert "export PYTORCH_SKIP_CUDNN_COMPATIBILITY_CHECK=1" in lines


# -- fat binaries -------------------------------------------------------------------------------------


def fat_entry(kind: int, arch: int, payload: bytes) -> bytes:
    header = struct.pack("<HHIQIIHHI", kind, 0x0101, 64, len(payload), len(payload), 0, 8, 1, arch)
    return header + bytes(64 - len(header)) + payload


def fat_container(entries: list[bytes]) -> bytes:
    body = b"".join(entries)
    return struct.pack("<IHHQ", elfslim.FATBIN_MAGIC, 1, 16, len(body)) + body


def make_elf(sections: list[tuple[str, bytes, int]]) -> bytes:
    """A minimal 64-bit ELF: header, the given (name, data, flags) sections, a name table, section headers."""
    names = b"\0" + b"".join(n.encode() + b"\0" for n, _, _ in sections) + b".shstrtab\0"
    body = bytearray(64)
    headers = [bytes(64)]
    name_off = 1
    for name, data, flags in sections:
        headers.append(struct.pack("<IIQQQQIIQQ", name_off, 1, flags, 0, len(body), len(data), 0, 0, 8, 0))
        body += data
        name_off += len(name) + 1
    headers.append(struct.pack("<IIQQQQIIQQ", name_off, 3, 0, 0, len(body), len(names), 0, 0, 1, 0))
    body += names
    body += bytes(-len(body) % 8)
    sh_off = len(body)
    ident = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    body[:64] = ident + struct.pack(
        "<HHIQQQIHHHHHH", 3, 62, 1, 0, 0, sh_off, 0, 64, 0, 0, 64, len(headers), len(headers) - 1
    )
    return bytes(body) + b"".join(headers)


def test_prune_keeps_only_sm90_and_keeps_every_offset(tmp_path):
    sm80, sm90, sm100 = (bytes([a]) * 96 for a in (80, 90, 100))
    c1 = fat_container([fat_entry(2, 80, sm80), fat_entry(2, 90, sm90), fat_entry(2, 100, sm100)])
    c2 = fat_container([fat_entry(2, 100, sm100)])  # nothing for sm_90: must stay as it was
    c3 = fat_container([fat_entry(1, 80, b"ptx80" * 8), fat_entry(1, 120, b"ptx120" * 8)])
    section = c1 + bytes(8) + c2 + c3
    src = tmp_path / "lib.so"
    debug = os.urandom(300)
    symtab, strtab = os.urandom(48), b"\0main\0helper\0"
    sections = [(".nv_fatbin", section, 2), (".debug_info", debug, 0), (".rodata", b"keep", 2)]
    src.write_bytes(make_elf([*sections, (".symtab", symtab, 0), (".strtab", strtab, 0)]))
    assert elfslim.sections(src.read_bytes())[-1].holds_section_names
    dst = tmp_path / "pruned.so"
    r = elfslim.prune_file(src, dst, 90)
    assert (r.containers, r.entries_before, r.entries_after, r.containers_untouched) == (3, 6, 3, 1)
    assert r.debug_zeroed == len(debug) + len(symtab) + len(strtab)
    old, new = src.read_bytes(), dst.read_bytes()
    assert len(old) == len(new)
    off, size = elfslim.fatbin_section(new)
    cs = elfslim.parse_containers(new, off, size)
    assert [[(e.kind, e.arch) for e in c.entries] for c in cs] == [[(2, 90)], [(2, 100)], [(1, 80)]]
    kept = cs[0].entries[0]
    assert new[kept.offset + 64 : kept.offset + kept.length] == sm90
    assert new[:off] == old[:off]
    dbg = next(x for x in elfslim.sections(new) if x.name == ".debug_info")
    assert new[dbg.offset : dbg.offset + dbg.size] == bytes(len(debug))
    assert new[off + size : dbg.offset] == old[off + size : dbg.offset]
    rodata = next(x for x in elfslim.sections(new) if x.name == ".rodata")
    assert new[rodata.offset : rodata.offset + rodata.size] == b"keep"
    for name in (".symtab", ".strtab"):
        sec = next(x for x in elfslim.sections(new) if x.name == name)
        assert new[sec.offset : sec.offset + sec.size] == bytes(sec.size)
    assert [x.name for x in elfslim.sections(new)] == [x.name for x in elfslim.sections(old)]
    # what was dropped is zeros, so it compresses to nothing
    c1_end = off + len(c1)
    assert new[cs[0].offset + 16 + cs[0].entries_size : c1_end] == bytes(
        c1_end - (cs[0].offset + 16 + cs[0].entries_size)
    )


def test_prune_leaves_files_without_fat_binaries_alone(tmp_path):
    f = tmp_path / "plain.so"
    f.write_bytes(b"\x7fELF" + bytes(200))
    assert elfslim.prune_file(f, f, 90).entries_before == 0
    f.write_bytes(b"not an elf")
    assert elfslim.prune_file(f, f, 90).containers == 0


# -- builder checks -----------------------------------------------------------------------------------


def load_make_bundle():
    pytest.importorskip("tomllib")  # the builder needs Python >= 3.11
    pytest.importorskip("packaging")
    spec = importlib.util.spec_from_file_location("make_bundle", GPU_SCRIPTS / "make-bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_wheel(tmp: Path, name: str, version: str, requires: list[str]) -> Path:
    whl = tmp / f"{name}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    meta += "".join(f"Requires-Dist: {r}\n" for r in requires)
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr(f"{name}-{version}.dist-info/METADATA", meta)
    return whl


def test_builder_refuses_a_wheel_outside_vllms_pin(tmp_path, capsys):
    mb = load_make_bundle()
    paths = {
        "vllm": fake_wheel(
            tmp_path, "vllm", "0.33.0", ["torch==2.14.0", "xgrammar==0.2.8; platform_machine == 'x86_64'"]
        ),
        "torch": fake_wheel(tmp_path, "torch", "2.14.0", []),
        "xgrammar": fake_wheel(tmp_path, "xgrammar", "0.2.9", []),
    }
    wheels = {n: {"version": p.name.split("-")[1], "why": "t"} for n, p in paths.items()}
    with pytest.raises(SystemExit) as exc:
        mb.check_pins(tmp_path / "spec.toml", wheels, paths, {"versions": {}, "packages": []})
    assert exc.value.code == 2
    assert "xgrammar==0.2.9: vllm requires xgrammar==0.2.8" in capsys.readouterr().err


def test_builder_refuses_carrying_what_the_machine_has(tmp_path, capsys):
    mb = load_make_bundle()
    paths = {
        "vllm": fake_wheel(
            tmp_path, "vllm", "0.33.0", ["transformers<5.21,>=5.16.1", "flashinfer-python==0.7.2"]
        ),
        "transformers": fake_wheel(tmp_path, "transformers", "5.17.0", []),
    }
    wheels = {"vllm": {"version": "0.33.0", "why": "t"}, "transformers": {"version": "5.17.0", "why": "t"}}
    machine = {"versions": {"transformers": "5.17.0"}, "packages": ["transformers"]}
    with pytest.raises(SystemExit):
        mb.check_pins(tmp_path / "spec.toml", wheels, paths, machine)
    assert "transformers==5.17.0: the machine already has this version" in capsys.readouterr().err
    del wheels["transformers"], paths["transformers"]
    notes = mb.check_pins(tmp_path / "spec.toml", wheels, paths, machine)
    assert notes == [
        "not carried, not on the machine: flashinfer-python==0.7.2 (vllm; carry it or add it to `left_out` in spec.toml)"
    ]
    notes = mb.check_pins(tmp_path / "spec.toml", wheels, paths, machine, {"flashinfer-python": "optional"})
    assert notes == ["left out: flashinfer-python==0.7.2 (optional)"]


def test_merge_links_what_the_bundle_lacks_and_keeps_its_own(tmp_path, capsys):
    site, machine = tmp_path / "site", tmp_path / "machine"
    (site / "nvidia/cu13/include/cccl/nv").mkdir(parents=True)
    (site / "nvidia/cu13/include/crt").mkdir()
    (site / "KIT-BUNDLE.json").write_text(
        '{"vllm": "0.33.0", "merge_machine_dirs": ["nvidia/cu13/include", "nvidia/cu13/lib", "nvidia/none"]}'
    )
    (machine / "nvidia/cu13/include").mkdir(parents=True)
    (machine / "nvidia/cu13/lib").mkdir()
    for name in ("nvrtc.h", "cuda_runtime.h", "crt"):
        (machine / "nvidia/cu13/include" / name).write_text("machine's")
    (machine / "nvidia/cu13/lib/libnvrtc.so.13").write_text("lib")

    lines = bundle_cli.merge_machine_dirs(site, [tmp_path / "empty", machine])
    include = site / "nvidia/cu13/include"
    assert (include / "nvrtc.h").read_text() == "machine's" and (include / "nvrtc.h").is_symlink()
    assert (include / "crt").is_dir() and not (include / "crt").is_symlink()  # the bundle's own stays
    assert (site / "nvidia/cu13/lib/libnvrtc.so.13").resolve() == machine / "nvidia/cu13/lib/libnvrtc.so.13"
    assert lines == [
        f"merge: nvidia/cu13/include: linked 2 entries of {machine}/nvidia/cu13/include",
        f"merge: nvidia/cu13/lib: linked 1 entries of {machine}/nvidia/cu13/lib",
        "merge: nvidia/none: the machine has none; the bundle's alone",
    ]
    again = bundle_cli.merge_machine_dirs(site, [machine])
    assert again[:2] == [
        f"merge: nvidia/cu13/include: linked 0 entries of {machine}/nvidia/cu13/include",
        f"merge: nvidia/cu13/lib: linked 0 entries of {machine}/nvidia/cu13/lib",
    ]


def test_machine_roots_leave_out_the_bundle(tmp_path, monkeypatch):
    site = tmp_path / "site"
    site.mkdir()
    monkeypatch.setattr(bundle_cli.sys, "path", [str(site), str(tmp_path), str(tmp_path / "absent")])
    assert bundle_cli.machine_roots(site) == [tmp_path]
