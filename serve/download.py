"""Model download before vLLM starts: into the Hugging Face cache (the container's cache volume), with
huggingface_hub's progress bars, resumable (an interrupted run picks up its partial files), and skipped
when a complete snapshot is already there, which is checked on disk, without asking the Hub.

``python -m serve.download [MODEL] [--revision R] [--cache-dir DIR]`` downloads MODEL (a Hugging Face
repository id); without MODEL it downloads the ``model.id`` of the profile that ``python -m serve launch``
would use (``--profile`` / ``SERVE_PROFILE``, ``--set`` / ``SERVE_SET``), and does nothing when the
profile serves a local ``model.path``.

A gated or private repository without a usable ``HF_TOKEN`` ends in one line that says what to do,
not in a traceback from inside vLLM after minutes of start-up.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from serve.errors import KitError

DEFAULT_PROFILE = "qwen3.6-27b-rtx5090"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")


class DownloadError(KitError):
    """The model could not be fetched; the message says why and what to do."""


def missing_files(snapshot: Path) -> list[str]:
    """Files a servable snapshot lacks: config.json, and every shard that the safetensors index names
    (or, without an index, any weight file at all). A broken symlink (blob never finished) counts as
    missing. Empty list = complete."""
    missing = []
    if not (snapshot / "config.json").is_file():
        missing.append("config.json")
    index = snapshot / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text()).get("weight_map", {})
        except (OSError, ValueError):
            return [*missing, index.name + " (unreadable)"]
        missing += sorted({f for f in weight_map.values() if not (snapshot / f).is_file()})
    elif not any(p.is_file() and p.name.endswith(WEIGHT_SUFFIXES) for p in snapshot.iterdir()):
        missing.append("*.safetensors")
    return missing


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _access_error(repo_id: str, token: str | None, exc: BaseException) -> DownloadError:
    status = _status(exc)
    page = f"https://huggingface.co/{repo_id}"
    if token:
        why = (
            f"the token (HF_TOKEN_FILE / HF_TOKEN) has no access to {repo_id} (HTTP {status or '401/403'}): accept the "
            f"model's terms at {page} with the account the token belongs to, or use a token with read access"
        )
    else:
        why = (
            f"{repo_id} needs a Hugging Face token (HTTP {status or '401/403'}: gated or private): accept the "
            f"terms at {page}, create a read token at https://huggingface.co/settings/tokens and set "
            "HF_TOKEN (docker compose: HF_TOKEN_FILE in .env, a file holding the token)"
        )
    return DownloadError(f"cannot download {repo_id}: {why}")


def token_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The Hugging Face token: the file named by HF_TOKEN_FILE (compose's secret, mounted into the
    download service only), else HF_TOKEN. An unreadable file is an error the user can act on."""
    environ = os.environ if environ is None else environ
    path = environ.get("HF_TOKEN_FILE")
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            why = getattr(exc, "strerror", None) or "not UTF-8 text"
            raise DownloadError(
                f"HF_TOKEN_FILE={path}: cannot read it ({why}); make the host file readable by the "
                "container's user (uid 1000), e.g. chmod 0644 in a 0700 directory, or leave HF_TOKEN_FILE unset"
            ) from None
        if text:
            return text
    return environ.get("HF_TOKEN") or None


def ensure_model(
    repo_id: str,
    cache_dir: str | Path | None = None,
    token: str | None = None,
    *,
    revision: str | None = None,
) -> Path:
    """The local snapshot directory of ``repo_id``: the cached one when it is complete, else downloaded
    (resuming partial files). ``cache_dir`` defaults to huggingface_hub's (``$HF_HOME/hub``); ``token``
    to the file HF_TOKEN_FILE names, else ``HF_TOKEN``. With ``HF_HUB_OFFLINE=1`` only the cache is looked at."""
    try:
        from huggingface_hub import errors as hf_errors
        from huggingface_hub import snapshot_download
    except ImportError:
        raise DownloadError(
            "huggingface_hub is not installed: pip install 'qwen-vllm-kit[download]'"
        ) from None

    token = token or token_from_env()
    cache = str(cache_dir) if cache_dir is not None else None

    try:
        cached = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, local_files_only=True))
    except (hf_errors.LocalEntryNotFoundError, FileNotFoundError, OSError):
        cached = None
    if cached is not None and not missing_files(cached):
        print(f"[download] {repo_id}: complete snapshot in the cache, skipping: {cached}", file=sys.stderr)
        return cached

    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline:
        partial = f" (lacks {', '.join(missing_files(cached))})" if cached is not None else ""
        raise DownloadError(
            f"cannot download {repo_id}: HF_HUB_OFFLINE is set and the cache "
            f"{cache or os.environ.get('HF_HOME', '~/.cache/huggingface')} has no complete snapshot{partial}; "
            "unset HF_HUB_OFFLINE, or put the model there, or serve a local directory (model.path)"
        )

    print(f"[download] {repo_id}: downloading into the cache (resumes partial files)", file=sys.stderr)
    try:
        path = Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, token=token))
    except hf_errors.GatedRepoError as exc:
        raise _access_error(repo_id, token, exc) from None
    except hf_errors.RevisionNotFoundError:
        raise DownloadError(
            f"cannot download {repo_id}: revision {revision!r} does not exist; fix model.revision"
        ) from None
    except hf_errors.RepositoryNotFoundError as exc:
        if _status(exc) in (401, 403) and not token:
            raise _access_error(repo_id, None, exc) from None
        raise DownloadError(
            f"cannot download {repo_id}: no such repository (or private and the token has no access); "
            "check model.id and HF_TOKEN"
        ) from None
    except hf_errors.HfHubHTTPError as exc:
        if _status(exc) in (401, 403):
            raise _access_error(repo_id, token, exc) from None
        raise DownloadError(f"cannot download {repo_id}: {exc}; run again to resume") from None
    except OSError as exc:  # network down, disk full: the partial files stay and the next run resumes
        raise DownloadError(f"cannot download {repo_id}: {exc}; run again to resume") from None

    lacking = missing_files(path)
    if lacking:
        raise DownloadError(
            f"downloaded {repo_id} to {path}, but it lacks {', '.join(lacking)}: not a model vLLM can "
            "load; check model.id"
        )
    print(f"[download] {repo_id}: ready at {path}", file=sys.stderr)
    return path


def _model_from_profile(profile: str, sets: list[str]) -> tuple[str | None, str | None]:
    """(repo id, revision) to download for the profile, or (None, reason) when nothing is to be."""
    from serve.launch.layering import load_profile

    model = load_profile(profile, sets).profile.model
    if model.path:
        return None, f"the profile serves the local directory {model.path}"
    return model.id, model.revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m serve.download",
        description="Download a model into the Hugging Face cache before vLLM starts (skipped when complete).",
    )
    parser.add_argument(
        "model", nargs="?", help="Hugging Face repository id; default: the profile's model.id"
    )
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: the profile's)")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face hub cache (default: $HF_HOME/hub)")
    parser.add_argument(
        "--profile",
        default=os.environ.get("SERVE_PROFILE", DEFAULT_PROFILE),
        help="profile (env SERVE_PROFILE)",
    )
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args(argv)
    try:
        repo_id, revision = args.model, args.revision
        if repo_id is None:
            repo_id, detail = _model_from_profile(args.profile, args.sets)
            if repo_id is None:
                print(f"[download] nothing to download: {detail}", file=sys.stderr)
                return 0
            revision = revision or detail
        ensure_model(repo_id, args.cache_dir, revision=revision)
    except KitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("[download] interrupted; run again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
