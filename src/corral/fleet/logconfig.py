"""The log level and format of `corral supervisor` and `corral node`.

First match wins: ``--log-level`` / ``--log-format``, then ``$LOG_LEVEL`` / ``$LOG_FORMAT``
(what the HAL-O-SWARM guides set in their env files), then ``log_level`` / ``log_format`` in
the config file, then ``info`` / ``console``. ``warn`` is read as ``warning``.
"""

from __future__ import annotations

from collections.abc import Mapping

LEVELS = ("debug", "info", "warning", "error")
FORMATS = ("console", "json")


def resolve(flag_level: str | None, flag_format: str | None, env: Mapping[str, str],
            config_level: str | None, config_format: str | None) -> tuple[str, str]:
    """``(level, format)``; raises `ValueError` naming where a bad value came from."""
    level = _pick("log level", [("--log-level", flag_level), ("LOG_LEVEL", env.get("LOG_LEVEL")),
                                ("log_level", config_level)], LEVELS, "info")
    fmt = _pick("log format", [("--log-format", flag_format), ("LOG_FORMAT", env.get("LOG_FORMAT")),
                               ("log_format", config_format)], FORMATS, "console")
    return level, fmt


def _pick(what: str, sources: list[tuple[str, str | None]], allowed: tuple[str, ...], default: str) -> str:
    for name, raw in sources:
        if not raw:
            continue
        value = raw.strip().lower()
        value = "warning" if value == "warn" else value
        if value not in allowed:
            raise ValueError(f"{name}: {raw!r} is not a {what}; use one of {', '.join(allowed)}")
        return value
    return default
