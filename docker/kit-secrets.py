#!/usr/bin/env python3
"""The compose stack's one-shot secrets step (service ``kit-secrets``): writes the API key and Grafana's
admin password into the ``kit-secrets`` volume, one file per reader, each mode 0600 and owned by the
uid that reads it, before any other service starts.

API key, from the first that is set (both set and different: refused):
  /run/secrets/vllm_api_key   a compose secret (host file VLLM_API_KEY_FILE);
  VLLM_API_KEY=generate       a random key, generated on the first start and kept in the volume;
  VLLM_API_KEY=<key>          that key;
  nothing                     no key (empty files): vLLM serves without one, as on loopback by default.
Files: api_key (KIT_UID: vLLM and the sidecar), api_key.prometheus (PROMETHEUS_UID: the scrape).

Grafana's admin password: GRAFANA_ADMIN_PASSWORD, else a random one generated on the first start and
kept. File: grafana_admin_password (GRAFANA_UID), read through GF_SECURITY_ADMIN_PASSWORD__FILE.

Where a secret is generated, one line says where it is (never the secret itself). Runs as root with
only CAP_CHOWN (to hand each file to its reader); the values it generated live in a root-only state
file, so that later starts keep them. Standard library only; bad input: one line, exit 2.
"""

from __future__ import annotations

import json
import os
import secrets
import string
import sys
from pathlib import Path

DIR = Path(os.environ.get("KIT_SECRETS_DIR", "/run/kit-secrets"))
API_KEY_SECRET = Path(os.environ.get("KIT_API_KEY_SECRET", "/run/secrets/vllm_api_key"))
STATE = ".state.json"
MAX_LEN = 512
# What a Bearer token can carry through every client unchanged: no space, quote or control character.
ALLOWED = set(string.ascii_letters + string.digits + "-._~+/=:@!#$%&*^|")


class Refused(Exception):
    pass


def _uid_gid(name: str, default: str) -> tuple[int, int]:
    value = os.environ.get(name, default)
    uid, _, gid = value.partition(":")
    try:
        return int(uid), int(gid or uid)
    except ValueError:
        raise Refused(f"{name}={value!r}: expected UID or UID:GID (numbers)") from None


def _check(what: str, value: str) -> str:
    if len(value) > MAX_LEN:
        raise Refused(f"{what}: {len(value)} characters, more than {MAX_LEN}; use a shorter one")
    bad = sorted({c for c in value if c not in ALLOWED})
    if bad:
        raise Refused(
            f"{what}: contains {', '.join(repr(c) for c in bad)}; use letters, digits and -._~+/=:@!#$%&*^| only"
        )
    return value


def _read_secret(path: Path) -> str:
    """The compose secret's content ('' when absent or empty: /dev/null is the default source)."""
    try:
        return path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return ""
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise Refused(
            f"VLLM_API_KEY_FILE (mounted at {path}): cannot read it ({why}); make it readable by uid 0 "
            "in the container (a regular file the Docker daemon can bind-mount)"
        ) from None


def _write(name: str, value: str, owner: tuple[int, int]) -> None:
    """Atomically: a new file created 0600, handed to its reader, then renamed over the old one."""
    tmp = DIR / f".{name}.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, value.encode())
        os.fsync(fd)
        os.fchown(fd, *owner)
    finally:
        os.close(fd)
    os.replace(tmp, DIR / name)


def _load_state() -> dict[str, dict[str, str]]:
    try:
        return json.loads((DIR / STATE).read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):
        print(f"[kit-secrets] {DIR / STATE} unreadable: generating new secrets", file=sys.stderr)
        return {}


def resolve_api_key(env: str, secret: str, state: dict[str, dict[str, str]]) -> tuple[str, str]:
    """(key, source); source is 'secret', 'generated', 'env' or 'none'."""
    env = env.strip()
    if secret and env and env != secret:
        raise Refused(
            "VLLM_API_KEY and VLLM_API_KEY_FILE are both set: keep one (the file is the safer place)"
        )
    if secret:
        return _check("VLLM_API_KEY_FILE", secret), "secret"
    if env == "generate":
        kept = state.get("api_key", {})
        if kept.get("source") == "generated" and kept.get("value"):
            return kept["value"], "kept"
        return secrets.token_urlsafe(32), "generated"
    if env:
        return _check("VLLM_API_KEY", env), "env"
    return "", "none"


def resolve_grafana(env: str, state: dict[str, dict[str, str]]) -> tuple[str, str]:
    if env:
        return _check("GRAFANA_ADMIN_PASSWORD", env), "env"
    kept = state.get("grafana_admin_password", {})
    if kept.get("source") == "generated" and kept.get("value"):
        return kept["value"], "kept"
    return secrets.token_urlsafe(24), "generated"


def main() -> int:
    try:
        kit = _uid_gid("KIT_UID", "1000:1000")
        prometheus = _uid_gid("PROMETHEUS_UID", "65534:65534")
        grafana = _uid_gid("GRAFANA_UID", "472:0")
        state = _load_state()
        key, key_source = resolve_api_key(
            os.environ.get("VLLM_API_KEY", ""), _read_secret(API_KEY_SECRET), state
        )
        password, pw_source = resolve_grafana(os.environ.get("GRAFANA_ADMIN_PASSWORD", ""), state)
    except Refused as exc:
        print(f"[kit-secrets] error: {exc}", file=sys.stderr)
        return 2

    new_state = {
        "api_key": {"source": "generated", "value": key}
        if key_source in ("generated", "kept")
        else {"source": key_source},
        "grafana_admin_password": {"source": "generated", "value": password}
        if pw_source in ("generated", "kept")
        else {"source": pw_source},
    }
    try:
        _write(STATE, json.dumps(new_state), (0, 0))
        _write("api_key", key, kit)
        _write("api_key.prometheus", key, prometheus)
        _write("grafana_admin_password", password, grafana)
    except OSError as exc:
        print(
            f"[kit-secrets] error: cannot write {exc.filename or DIR}: {exc.strerror}; it runs as root with "
            "CAP_CHOWN and the kit-secrets volume mounted read-write at "
            f"{DIR} (see docker-compose.yml)",
            file=sys.stderr,
        )
        return 1

    if key_source == "generated":
        print(
            f"[kit-secrets] generated a new API key: {DIR}/api_key in the kit-secrets volume; "
            f"show it with: docker compose exec vllm cat {DIR}/api_key",
            flush=True,
        )
    elif key_source == "none":
        print("[kit-secrets] no API key (VLLM_API_KEY empty): vLLM serves without one", flush=True)
    else:
        origin = {"secret": "VLLM_API_KEY_FILE", "env": "VLLM_API_KEY", "kept": "an earlier start"}
        print(f"[kit-secrets] API key from {origin[key_source]}: {DIR}/api_key", flush=True)
    if pw_source == "generated":
        print(
            f"[kit-secrets] generated Grafana's admin password: {DIR}/grafana_admin_password in the "
            f"kit-secrets volume; show it with: docker compose exec grafana cat {DIR}/grafana_admin_password",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
