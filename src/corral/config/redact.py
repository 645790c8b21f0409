"""A config as data that is safe to print: every secret becomes ``***``.

Masked: `SecretStr` fields (api keys, the master key), values under secret-looking keys
(``password``, ``token``, ``*_api_key``...), headers such as ``Authorization`` and
``api-key``, and the password inside URLs (``postgresql://user:***@host/db``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from corral.config.errors import is_secret_key
from corral.config.schema import CorralConfig

MASK = "***"


def _mask_url(value: str) -> str:
    if "://" not in value or "@" not in value:
        return value
    try:
        parts = urlsplit(value)
        password = parts.password
    except ValueError:
        return value
    if not password:
        return value
    netloc = parts.netloc.rsplit("@", 1)
    userinfo = (parts.username or "") + ":" + MASK
    return urlunsplit(parts._replace(netloc=f"{userinfo}@{netloc[1]}"))


def redact(value: Any, key: object = None) -> Any:
    if isinstance(value, SecretStr):
        return MASK if value.get_secret_value() else ""
    if value is not None and is_secret_key(key) and not isinstance(value, dict | list | bool):
        return MASK
    if isinstance(value, dict):
        return {k: redact(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _mask_url(value)
    return value


def redacted_dump(config: CorralConfig) -> dict[str, Any]:
    """The effective config as plain JSON-able data with secrets masked."""
    # Python mode keeps SecretStr objects, so secrets are recognised by type, not by name.
    dumped: dict[str, Any] = _jsonable(redact(config.model_dump(mode="python")))
    return dumped


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
