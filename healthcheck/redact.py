"""Secrets out of everything the sidecar shows: /readyz details, /, and log lines.

An engine or proxy error may quote the request back (its Authorization header, a bearer token, an
``api_key`` field), a URL may carry ``user:password@``, and ``--probe-extra-body`` may hold a key. Each
is replaced by ``[redacted]``; the configured key itself is removed wherever it appears, in any form."""

from __future__ import annotations

import json
import logging
import re
import urllib.parse
from collections.abc import Iterable
from typing import Any

MASK = "[redacted]"

# Header values: "Authorization: Bearer x", "authorization=Basic x", "Proxy-Authorization: x",
# "X-Api-Key: x"; up to the end of the value (a quote, comma, semicolon, brace or line end).
_HEADER = re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key)(\"?\s*[:=]\s*\"?)([^\"',;}\r\n]+)")
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]{4,}")
# Key-like fields in JSON or query strings: "api_key": "x", apikey=x, "token": "x", "password": "x".
_FIELD = re.compile(
    r"(?i)([\"']?\b(?:api[_-]?key|apikey|access[_-]?token|token|secret|password|passwd)[\"']?\s*[:=]\s*)"
    r"([\"']?)([^\"'\s,&}]+)"
)
_OPENAI_KEY = re.compile(r"\bsk-[A-Za-z0-9_-]{8,}")
_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s@]+@")
_SECRET_KEYS = re.compile(r"(?i)(api[_-]?key|apikey|token|secret|password|passwd|authorization)")


class Redactor:
    """Removes the known secrets (the configured API key) and anything shaped like a credential."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        self.secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        text = _URL_USERINFO.sub(lambda m: f"{m.group(1)}{MASK}@", text)
        text = _HEADER.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        text = _BEARER.sub(MASK, text)
        text = _FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{MASK}", text)
        return _OPENAI_KEY.sub(MASK, text)


def redact_url(url: str) -> str:
    """``http://user:pw@host:8000/x`` -> ``http://[redacted]@host:8000/x``; others unchanged."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{MASK}@{host}"))


def redact_json(value: Any) -> Any:
    """A JSON value with the values of secret-named keys replaced (for logging --probe-extra-body)."""
    if isinstance(value, dict):
        return {
            k: (MASK if isinstance(k, str) and _SECRET_KEYS.search(k) else redact_json(v))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    return value


def redact_json_text(text: str) -> str:
    try:
        return json.dumps(redact_json(json.loads(text)))
    except (ValueError, TypeError):
        return MASK


class RedactingFilter(logging.Filter):
    """On a handler: every record's final message goes through the redactor (tracebacks included)."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = self.redactor.text(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = self.redactor.text(record.exc_text)
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Every handler of the root logger redacts (uvicorn's own loggers propagate there or get it too)."""
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access"):
        for handler in logging.getLogger(name).handlers:
            handler.addFilter(RedactingFilter(redactor))
