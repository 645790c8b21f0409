"""Corral's one redactor: what counts as a secret, and how it is masked, wherever text
or data leaves the process (logs, `corral config show`, service addresses, upstream
error messages, audit records).

- `redact_text`: free text (a log line, an upstream's error message). Secrets the
  caller knows (a provider's key) become ``***``; then anything shaped like a secret
  becomes ``[redacted]``: header-style credentials (``Authorization: ...``,
  ``x-api-key=...``), bearer tokens, vendor keys (``sk-...``, Google ``AIza...``, AWS
  ``AKIA...``, Slack ``xox?-...``), JWTs, ``password=``/``api_key=``-style pairs, and the
  password inside a URL.
- `redact_url`: ``scheme://user:***@host/...``.
- `redact_value`: structured data (a config dump, audit arguments): values under
  secret-looking keys (`is_secret_key`) and `SecretStr` values become ``***``; strings
  have their URL passwords masked.

Layer 0: it imports nothing of Corral's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

MASK = "***"  # a value known or declared to be secret
REDACTED = "[redacted]"  # a secret found by its shape inside free text

# Keys whose values are never shown (config fields, headers, audit arguments).
_SECRET_NAMES = frozenset({
    "api_key", "apikey", "master_key", "password", "passwd", "secret", "token", "access_token", "refresh_token",
    "client_secret", "credential", "credentials", "private_key", "authorization", "proxy-authorization",
    "api-key", "x-api-key", "x-goog-api-key", "cookie", "set-cookie",
})
_SECRET_SUFFIXES = ("_api_key", "_secret", "_token", "_password", "_passwd", "_credentials", "_private_key")

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Header-style secrets: `Authorization: Bearer x`, `'x-api-key': 'sk-...'`, `api-key=...`
    (re.compile(r"(?i)\b((?:proxy-)?authorization|x-api-key|api-key|x-goog-api-key)(['\"]?\s*[:=]\s*['\"]?)"
                r"([^'\"\n,}]+)"), rf"\1\2{REDACTED}"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), f"Bearer {REDACTED}"),
    (re.compile(r"\bsk-(?:ant-|corral-|proj-)?[A-Za-z0-9_-]{6,}"), f"sk-{REDACTED}"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"), f"jwt-{REDACTED}"),
    (re.compile(r"\bAIza[0-9A-Za-z_-]{30,}"), REDACTED),  # Google API keys
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), REDACTED),  # AWS access key ids
    (re.compile(r"\bxox[abp]-[A-Za-z0-9-]{8,}"), REDACTED),  # Slack tokens
    (re.compile(r"(?i)\b(api[_-]?key|access[_-]?token|refresh[_-]?token|client[_-]?secret|password|secret)"
                r"(['\"]?\s*[=:]\s*['\"]?)([^&\s'\",}]+)"), rf"\1\2{REDACTED}"),
    # The password of a URL's userinfo: `postgresql://user:pw@host`
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+@"), rf"\1{REDACTED}@"),
)


def is_secret_key(name: object) -> bool:
    """Whether a value under this key (a config field, a header, an argument) is secret."""
    if not isinstance(name, str):
        return False
    lowered = name.lower()
    return lowered in _SECRET_NAMES or lowered.endswith(_SECRET_SUFFIXES)


def redact_text(text: str, *, known: Iterable[str | None] = ()) -> str:
    """Free text with its secrets masked: the `known` ones verbatim (4 characters or
    more), then everything shaped like one."""
    for secret in known:
        if secret and len(secret) >= 4:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_url(url: str) -> str:
    """The URL with the password of its userinfo masked (anything else unchanged)."""
    if "://" not in url or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return url
    if not password:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:{MASK}@{host}"))


def redact_value(value: Any, key: object = None) -> Any:
    """Structured data with secrets masked (dicts and lists walked, keys kept)."""
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if value is not None and is_secret_key(key) and not isinstance(value, dict | list | tuple | bool):
        return MASK
    if isinstance(value, dict):
        return {k: redact_value(v, k) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    if isinstance(value, str):  # a URL's secrets, or those inside free text (a prompt, an error)
        return redact_url(value) if "://" in value and " " not in value else redact_text(value)
    return value
