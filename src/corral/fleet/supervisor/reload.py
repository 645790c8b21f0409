"""Live reload of supervisor.yaml: what may change while running, what needs a restart,
the file's hash, and the file watcher behind ``corral supervisor --watch``."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from corral.config.fleet import SupervisorConfig

log = logging.getLogger("corral.fleet.reload")

# Bound at start: sockets, the store's engine, the event pipeline's batching, the session
# table, the process's logging.
RESTART_ONLY = ("server", "tls", "database_url", "event_batch_size", "event_flush_ms", "sessions", "log_level",
                "log_format")
_HIDDEN = frozenset({"database_url"})  # named in logs, never shown (it may hold a password)


def file_hash(path: Path) -> str:
    """The first 16 hex digits of the file's SHA-256 (``sha256sum supervisor.yaml`` shows it too)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    except OSError:
        return ""


def needs_restart(running: SupervisorConfig, fresh: SupervisorConfig) -> list[str]:
    """The restart-only keys whose value differs, as ``key (old -> new)``."""
    changes = []
    for key in RESTART_ONLY:
        old, new = getattr(running, key), getattr(fresh, key)
        if old == new:
            continue
        if hasattr(old, "model_fields") and hasattr(new, "model_fields"):
            changes += [_change(f"{key}.{name}", getattr(old, name), getattr(new, name))
                        for name in type(old).model_fields if getattr(old, name) != getattr(new, name)]
        else:
            changes.append(_change(key, old, new))
    return changes


def _change(key: str, old: Any, new: Any) -> str:
    return key if key in _HIDDEN else f"{key} ({old!r} -> {new!r})"


def changed_keys(running: SupervisorConfig, fresh: SupervisorConfig) -> list[str]:
    """Top-level keys a reload changes (secrets compared by value, never shown)."""
    def plain(config: SupervisorConfig, key: str) -> Any:
        return _reveal(getattr(config, key))
    return [key for key in SupervisorConfig.model_fields if plain(running, key) != plain(fresh, key)]


def _reveal(value: Any) -> Any:
    from pydantic import BaseModel, SecretStr

    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _reveal(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, list):
        return [_reveal(v) for v in value]
    if isinstance(value, dict):
        return {k: _reveal(v) for k, v in value.items()}
    return value


async def watch(path: Path, on_change: Callable[[str], None], *, loaded_hash: str, interval: float = 1.0) -> None:
    """Call ``on_change`` when the file's content differs from the last seen (at first, the
    ``loaded_hash`` the running config was read from). Polling by content survives editors that
    replace the file and Kubernetes ConfigMaps that swap a symlink."""
    last = loaded_hash
    while True:
        await asyncio.sleep(interval)
        current = file_hash(path)
        if current and current != last:
            last = current
            on_change("file change")
