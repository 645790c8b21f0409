"""Secret redaction for audit arguments and logs."""

from __future__ import annotations

import re
from typing import Any

_SECRET_KEY = re.compile(r"token|password|passwd|secret|api[_-]?key|auth|credential|private", re.I)
_SECRET_VALUE = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+[A-Za-z0-9._\-]{8,}|xox[abp]-[A-Za-z0-9\-]{8,})")
REDACTED = "[redacted]"


def redact(value: Any, key: str = "") -> Any:
    if key and _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, dict):
        return {str(k): redact(v, str(k)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    if isinstance(value, str):
        return _SECRET_VALUE.sub(REDACTED, value)
    return value
