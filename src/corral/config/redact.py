"""A config as data that is safe to print: every secret becomes ``***``.

Masked: `SecretStr` fields (api keys, the master key), values under secret-looking keys
(``password``, ``token``, ``*_api_key``...), headers such as ``Authorization`` and
``api-key``, and the password inside URLs (``postgresql://user:***@host/db``): the
rules of `corral.telemetry.redact`, Corral's one redactor.
"""

from __future__ import annotations

from typing import Any

from corral.config.schema import CorralConfig
from corral.telemetry.redact import MASK, redact_value

redact = redact_value  # the one redactor's rules (`corral.telemetry.redact`)
__all__ = ["MASK", "redact", "redacted_dump"]


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
