"""serve.download, offline: no test here talks to the Hub. What is tested is what a user notices: a
complete cached snapshot is used without a download, an incomplete one is not taken for complete, and a
gated repository without a token ends in one actionable line. The real download path (progress bar,
resume) needs the Hub and is exercised only where it can be reached."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

hf = pytest.importorskip("huggingface_hub")

from serve import download  # noqa: E402

REPO = "acme/tiny-model"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def make_snapshot(cache: Path, files: dict[str, bytes], repo: str = REPO) -> Path:
    """The Hugging Face cache layout: refs/main -> snapshots/<commit>/<file> (symlink to a blob)."""
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    snap = root / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (root / "blobs").mkdir()
    for i, (name, data) in enumerate(files.items()):
        blob = root / "blobs" / f"blob{i}"
        blob.write_bytes(data)
        (snap / name).symlink_to(blob)
    return snap


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)


def test_complete_snapshot_is_used_without_download(tmp_path, offline, monkeypatch, capsys):
    snap = make_snapshot(tmp_path, {"config.json": b"{}", "model.safetensors": b"x"})
    calls = []
    real = hf.snapshot_download

    def spy(*args, **kwargs):
        calls.append(kwargs.get("local_files_only", False))
        return real(*args, **kwargs)

    monkeypatch.setattr(hf, "snapshot_download", spy)
    assert download.ensure_model(REPO, tmp_path) == snap
    assert calls == [True], "only the cache may be consulted"
    assert "skipping" in capsys.readouterr().err


def test_sharded_snapshot_missing_a_shard_is_not_complete(tmp_path, offline):
    index = {"weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}
    make_snapshot(
        tmp_path,
        {
            "config.json": b"{}",
            "model.safetensors.index.json": json.dumps(index).encode(),
            "model-00001-of-00002.safetensors": b"x",
        },
    )
    with pytest.raises(download.DownloadError) as err:
        download.ensure_model(REPO, tmp_path)
    msg = str(err.value)
    assert "HF_HUB_OFFLINE" in msg and "model-00002-of-00002.safetensors" in msg


def test_broken_blob_symlink_counts_as_missing(tmp_path):
    snap = make_snapshot(tmp_path, {"config.json": b"{}", "model.safetensors": b"x"})
    (snap / "model.safetensors").resolve().unlink()  # an interrupted download: the blob never landed
    assert download.missing_files(snap) == ["*.safetensors"]


def test_offline_and_not_cached_says_what_to_do(tmp_path, offline):
    with pytest.raises(download.DownloadError) as err:
        download.ensure_model(REPO, tmp_path)
    assert "HF_HUB_OFFLINE" in str(err.value) and "model.path" in str(err.value)


class _Resp:
    def __init__(self, status: int):
        self.status_code = status
        self.headers: dict[str, str] = {}
        self.request = None


def _gated(status: int) -> Exception:
    exc = hf.errors.GatedRepoError.__new__(hf.errors.GatedRepoError)
    Exception.__init__(exc, f"{status} Client Error: gated")
    exc.response = _Resp(status)  # type: ignore[attr-defined]
    return exc


@pytest.mark.parametrize("status", [401, 403])
def test_gated_without_token_names_hf_token(tmp_path, monkeypatch, status):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)

    def fake(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise hf.errors.LocalEntryNotFoundError("not cached")
        raise _gated(status)

    monkeypatch.setattr(hf, "snapshot_download", fake)
    with pytest.raises(download.DownloadError) as err:
        download.ensure_model(REPO, tmp_path)
    msg = str(err.value)
    assert "HF_TOKEN" in msg and f"https://huggingface.co/{REPO}" in msg and str(status) in msg


def test_gated_with_token_says_the_token_lacks_access(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def fake(repo_id, **kwargs):
        if kwargs.get("local_files_only"):
            raise hf.errors.LocalEntryNotFoundError("not cached")
        assert kwargs["token"] == "hf_secret"
        raise _gated(403)

    monkeypatch.setattr(hf, "snapshot_download", fake)
    with pytest.raises(download.DownloadError) as err:
        download.ensure_model(REPO, tmp_path, token="hf_secret")
    assert "has no access" in str(err.value) and "hf_secret" not in str(err.value)


def test_main_exit_code_and_one_line(tmp_path, offline, capsys):
    rc = download.main([REPO, "--cache-dir", str(tmp_path)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and err[-1].startswith("error: cannot download acme/tiny-model")


def test_main_skips_when_present(tmp_path, offline):
    make_snapshot(tmp_path, {"config.json": b"{}", "model.safetensors": b"x"})
    assert download.main([REPO, "--cache-dir", str(tmp_path)]) == 0
