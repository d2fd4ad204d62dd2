"""The compose stack's secrets step (docker/kit-secrets.py) and the download step's token file, run here as
plain processes (no Docker; well under a second). The stack test (test_compose.py) runs them in the real
containers with their real owners."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from serve import download

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "docker" / "kit-secrets.py"


def _run(tmp_path: Path, secret: str | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    secret_path = tmp_path / "vllm_api_key"
    if secret is not None:
        secret_path.write_text(secret)
    me = f"{os.getuid()}:{os.getgid()}"
    full = {
        "PATH": os.environ.get("PATH", ""),
        "KIT_SECRETS_DIR": str(tmp_path / "out"),
        "KIT_API_KEY_SECRET": str(secret_path),
        "KIT_UID": me,
        "PROMETHEUS_UID": me,
        "GRAFANA_UID": me,
        **env,
    }
    (tmp_path / "out").mkdir(exist_ok=True)
    return subprocess.run([sys.executable, str(SCRIPT)], env=full, capture_output=True, text=True, timeout=30)


def _files(tmp_path: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (tmp_path / "out").iterdir()}


def test_no_key_by_default_writes_empty_files_and_a_generated_grafana_password(tmp_path):
    proc = _run(tmp_path)
    assert proc.returncode == 0, proc.stderr
    files = _files(tmp_path)
    assert files["api_key"] == "" and files["api_key.prometheus"] == ""
    assert len(files["grafana_admin_password"]) >= 24 and files["grafana_admin_password"] != "admin"
    assert "generated Grafana's admin password" in proc.stdout
    assert files["grafana_admin_password"] not in proc.stdout + proc.stderr
    for path in (tmp_path / "out").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_generate_makes_a_key_once_and_keeps_it(tmp_path):
    first = _run(tmp_path, VLLM_API_KEY="generate")
    key = _files(tmp_path)["api_key"]
    assert first.returncode == 0 and len(key) >= 32
    assert "generated a new API key: " in first.stdout and key not in first.stdout
    assert _files(tmp_path)["api_key.prometheus"] == key
    second = _run(tmp_path, VLLM_API_KEY="generate")
    assert second.returncode == 0 and _files(tmp_path)["api_key"] == key
    assert "generated" not in second.stdout.split("Grafana")[0], "a kept key must not be announced again"
    state = json.loads((tmp_path / "out" / ".state.json").read_text())
    assert state["api_key"] == {"source": "generated", "value": key}


def test_a_given_key_and_a_secret_file(tmp_path):
    assert _run(tmp_path, VLLM_API_KEY="given-key-1").returncode == 0
    assert _files(tmp_path)["api_key"] == "given-key-1"
    assert _run(tmp_path, secret="from-file-2\n").returncode == 0
    assert _files(tmp_path)["api_key"] == "from-file-2"
    # Switching back to generate after a given key: a new random key, not the given one kept.
    assert _run(tmp_path, secret="", VLLM_API_KEY="generate").returncode == 0
    assert _files(tmp_path)["api_key"] not in ("", "from-file-2", "given-key-1")


@pytest.mark.parametrize(
    ("env", "secret", "needle"),
    [
        ({"VLLM_API_KEY": "a b"}, None, "VLLM_API_KEY: contains ' '"),
        ({"VLLM_API_KEY": "x" * 600}, None, "more than 512"),
        ({"VLLM_API_KEY": "one"}, "two", "both set"),
        ({"GRAFANA_ADMIN_PASSWORD": 'pa"ss'}, None, "GRAFANA_ADMIN_PASSWORD: contains"),
        ({"KIT_UID": "kit"}, None, "KIT_UID='kit'"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path, env, secret, needle):
    proc = _run(tmp_path, secret=secret, **env)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and "Traceback" not in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert _files(tmp_path) == {}


def test_download_reads_the_token_file_first(tmp_path):
    token = tmp_path / "hf_token"
    token.write_text("hf_from_file\n")
    assert download.token_from_env({"HF_TOKEN_FILE": str(token), "HF_TOKEN": "hf_env"}) == "hf_from_file"
    assert download.token_from_env({"HF_TOKEN_FILE": "/dev/null", "HF_TOKEN": "hf_env"}) == "hf_env"
    assert download.token_from_env({}) is None
    with pytest.raises(download.DownloadError, match=r"HF_TOKEN_FILE=.*missing: cannot read it"):
        download.token_from_env({"HF_TOKEN_FILE": str(tmp_path / "missing")})
