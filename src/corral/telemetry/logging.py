"""Logs: JSON or console lines, a request id on every line of a request, and secrets
redacted before anything reaches a handler's stream.

`logging_config(level, fmt)` is a `logging.config.dictConfig` dict; `corral serve`
applies it and hands the same dict to uvicorn, so every worker process logs alike.

With ``log_file`` the lines go to that file instead of stderr. By default the file is
opened in append mode and reopened when it is moved or deleted (`WatchedFileHandler`):
several worker processes can share it, since each line is one append, and logrotate (or
any rename) rotates it. ``max_bytes`` > 0 makes Corral rotate it itself at that size,
keeping ``backup_count`` old files; that is for one process only: two processes would
each rotate the file under the other, so with ``--workers`` > 1 use the default.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

from corral.telemetry.redact import redact_text

redact = redact_text  # the one redactor's free-text rules (`corral.telemetry.redact`)

# Set by the gateway middleware for the duration of one request (per task, never global).
REQUEST_ID: ContextVar[str | None] = ContextVar("corral_request_id", default=None)

class RedactingFilter(logging.Filter):
    """Rewrites the message (with its arguments merged in) so no handler can print a secret."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        return True


class RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            record.request_id = REQUEST_ID.get()
        return True


_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "request_id", "rid", "color_message"}


class JsonFormatter(logging.Formatter):
    """One JSON object a line: ts, level, logger, message, request_id, extra fields, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            entry["request_id"] = request_id
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class ConsoleFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s%(rid)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        request_id = getattr(record, "request_id", None)
        record.rid = f" [{request_id}]" if request_id else ""
        return redact(super().format(record))


class OutageLog:
    """One warning per outage of a backing service, then debug lines until it is back,
    and one line when it is."""

    __slots__ = ("_down", "_log")

    def __init__(self, log: logging.Logger) -> None:
        self._log = log
        self._down = False

    def down(self, message: str) -> None:
        if self._down:
            self._log.debug(message)
        else:
            self._log.warning(message)
            self._down = True

    def up(self, message: str) -> None:
        if self._down:
            self._log.info(message)
            self._down = False


def make_handler(fmt: str = "console", stream: TextIO | None = None) -> logging.Handler:
    """A handler with Corral's formatter and filters (for tests and embedding apps)."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else ConsoleFormatter())
    handler.addFilter(RequestIdFilter())
    handler.addFilter(RedactingFilter())
    return handler


def _file_handler(log_file: str | os.PathLike[str], max_bytes: int, backup_count: int) -> dict[str, Any]:
    path = Path(log_file).expanduser().absolute()
    if not path.parent.is_dir():
        raise ValueError(f"log file {path}: directory {path.parent} does not exist")
    if path.is_dir():
        raise ValueError(f"log file {path} is a directory")
    if max_bytes < 0 or backup_count < 0:
        raise ValueError("log file max_bytes and backup_count must not be negative")
    if max_bytes:
        return {"class": "logging.handlers.RotatingFileHandler", "filename": str(path), "encoding": "utf-8",
                "maxBytes": max_bytes, "backupCount": backup_count}
    return {"class": "logging.handlers.WatchedFileHandler", "filename": str(path), "encoding": "utf-8"}


def logging_config(
    level: str = "info",
    fmt: str = "console",
    *,
    log_file: str | os.PathLike[str] | None = None,
    max_bytes: int = 0,
    backup_count: int = 5,
) -> dict[str, Any]:
    """The dictConfig; ``log_file`` sends the lines to a file instead of stderr (module docstring)."""
    level = level.upper()
    formatter = "corral.telemetry.logging.JsonFormatter" if fmt == "json" else \
        "corral.telemetry.logging.ConsoleFormatter"
    # uvicorn's own loggers propagate to ours, so its lines get the same format and redaction.
    uvicorn: Mapping[str, Any] = {"handlers": [], "propagate": True, "level": level}
    destination: dict[str, Any] = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}
    if log_file is not None:
        destination = _file_handler(log_file, max_bytes, backup_count)
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {
            "request_id": {"()": "corral.telemetry.logging.RequestIdFilter"},
            "redact": {"()": "corral.telemetry.logging.RedactingFilter"},
        },
        "formatters": {"corral": {"()": formatter}},
        "handlers": {"default": {**destination, "formatter": "corral", "filters": ["request_id", "redact"]}},
        "root": {"handlers": ["default"], "level": level},
        "loggers": {name: dict(uvicorn) for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def configure_logging(
    level: str = "info",
    fmt: str = "console",
    *,
    log_file: str | os.PathLike[str] | None = None,
    max_bytes: int = 0,
    backup_count: int = 5,
) -> dict[str, Any]:
    """Apply the config in this process; returns it for uvicorn's workers. `ValueError`
    (naming the path) if ``log_file`` cannot be a log file."""
    import logging.config

    config = logging_config(level, fmt, log_file=log_file, max_bytes=max_bytes, backup_count=backup_count)
    logging.config.dictConfig(config)
    return config
