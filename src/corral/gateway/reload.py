"""Live config reload (`corral serve --watch`, SIGHUP).

A reload loads the config again with the loader (every problem with file:line:key). An
invalid config changes nothing: the error is logged, counted and shown by `/health`
(`ReloadStatus`). A valid one is handed to the gateway (`Reloadable.apply`), which builds
the next `Serving` over the same long-lived parts and swaps it in; the settings that
cannot change in a running process (`RESTART_SECTIONS`) keep their old values and are
named in the log as needing a restart.

With ``--watch`` the config file's directory is watched (and those of its ``.env`` and
of the agents' ``instructions_file``s) with watchfiles; any change there re-reads the
files, and a reload happens when their hash changed (so a Kubernetes ConfigMap, swapped
by a symlink, is seen too). With ``--workers N`` every worker runs its own reloader.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel

from corral.config.loaded import LoadedConfig
from corral.config.schema import CorralConfig
from corral.telemetry.metrics import GatewayMetrics

log = logging.getLogger("corral.gateway.reload")

# What a running process cannot change: the listening socket and the server's own
# settings, the database and Redis connections, logging, metrics and tracing, the usage
# spool and budget alerts (`billing`), the knowledge bases' stores, and the failed-auth
# throttle (its counts would be lost).
RESTART_SECTIONS = ("server", "database", "cache", "observability", "billing", "knowledge")
RESTART_KEYS = (("auth", "throttle"),)


class Reloadable(Protocol):
    async def apply(self, config: CorralConfig, config_hash: str) -> None: ...


@dataclass(frozen=True)
class ConfigSource:
    """Where the served config comes from, to load it again."""

    path: str | None  # `--config`; None: $CORRAL_CONFIG, ./corral.yaml or zero-config
    model: str | None = None  # `--model`
    strict_providers: bool = False
    watch: bool = False  # `--watch`: reload when the files change

    def load(self) -> LoadedConfig:
        from corral.config.loader import load_config

        loaded = load_config(self.path, model=self.model)
        if self.strict_providers:
            loaded.config.verification.strict = True
        return loaded


def watched_files(loaded: LoadedConfig) -> list[Path]:
    """The files a config is read from: the config, its .env, the agents' instructions."""
    if loaded.path is None:
        return []
    files = [loaded.path.resolve(), loaded.path.resolve().parent / ".env"]
    for agent in loaded.config.agents.values():
        if agent.instructions_file:
            files.append(Path(agent.instructions_file).expanduser().resolve())
    return files


def hash_files(files: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0")
        try:
            digest.update(path.read_bytes())
        except OSError:
            digest.update(b"\0missing")
        digest.update(b"\0")
    return digest.hexdigest()[:12]


def hash_config(config: CorralConfig) -> str:
    """The hash of a config that has no file (zero-config, or built by a test)."""
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]


def config_hash(loaded: LoadedConfig) -> str:
    """What `/health` and ``corral_config_info`` show: the hash of the files the config
    was read from (a changed secret in .env changes it too, without revealing it)."""
    return hash_files(watched_files(loaded)) if loaded.path is not None else hash_config(loaded.config)


def restart_only_changes(old: CorralConfig, new: CorralConfig) -> list[str]:
    """The settings (``section.key``) that differ in a section a reload cannot change."""
    changed = []
    for section in RESTART_SECTIONS:
        before, after = getattr(old, section), getattr(new, section)
        if not isinstance(before, BaseModel):  # a mapping (knowledge bases by name)
            if before != after:
                changed.append(section)
            continue
        for name in type(before).model_fields:
            if getattr(before, name) != getattr(after, name):
                changed.append(f"{section}.{name}")
    for section, key in RESTART_KEYS:
        if getattr(getattr(old, section), key) != getattr(getattr(new, section), key):
            changed.append(f"{section}.{key}")
    return changed


def keep_restart_only(old: CorralConfig, new: CorralConfig) -> CorralConfig:
    update: dict[str, Any] = {section: getattr(old, section) for section in RESTART_SECTIONS}
    for section, key in RESTART_KEYS:
        part = update.get(section, getattr(new, section))
        update[section] = part.model_copy(update={key: getattr(getattr(old, section), key)})
    return new.model_copy(update=update)


@dataclass
class ReloadStatus:
    """The config being served and the last reload attempt (`/health` shows it)."""

    config_hash: str
    last_attempt: float | None = None  # unix time
    result: Literal["ok", "error"] | None = None
    error: str | None = None  # the loader's message: every problem with file:line:key
    restart_required: list[str] = field(default_factory=list)  # changed, but kept until a restart
    reloads: int = 0  # applied since start

    def to_json(self) -> dict[str, Any]:
        return {"config_hash": self.config_hash, "last_attempt": self.last_attempt, "result": self.result,
                "error": self.error, "restart_required": self.restart_required, "reloads": self.reloads}


class ConfigReloader:
    def __init__(self, target: Reloadable, source: ConfigSource, *, current: CorralConfig, status: ReloadStatus,
                 metrics: GatewayMetrics | None, sighup: bool, watched: list[Path]) -> None:
        self.target = target
        self.source = source
        self.current = current  # the config served, as loaded (restart-only settings as in use)
        self.status = status
        self.metrics = metrics
        self.sighup = sighup
        self.watched = watched
        self._seen = hash_files(watched) if watched else status.config_hash
        self._wanted = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._serve(), name="corral-config-reload"))
        if self.sighup and hasattr(signal, "SIGHUP"):
            loop.add_signal_handler(signal.SIGHUP, self.request)
        if self.source.watch:
            if self.watched:
                self._tasks.append(loop.create_task(self._watch(), name="corral-config-watch"))
                log.info("watching %s for config changes", ", ".join(str(p) for p in self.watched))
            else:
                log.warning("--watch: zero-config mode has no config file to watch (SIGHUP still reloads)")

    async def stop(self) -> None:
        if self.sighup and hasattr(signal, "SIGHUP"):
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
                signal.signal(signal.SIGHUP, signal.SIG_IGN)  # not the default (exit) while shutting down
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()

    def request(self) -> None:
        """Reload soon (SIGHUP, a file change); requests made during a reload coalesce into one more."""
        self._wanted.set()

    async def _serve(self) -> None:
        while True:
            await self._wanted.wait()
            self._wanted.clear()
            await self.reload()

    async def reload(self) -> bool:
        """Load, validate and apply the config; True when the new one is served."""
        from corral.config.errors import ConfigError

        async with self._lock:
            self.status.last_attempt = time.time()
            try:
                loaded = await asyncio.to_thread(self.source.load)
            except ConfigError as exc:
                return self._failed(f"the new config is invalid; still serving {self.status.config_hash}:\n{exc}",
                                    str(exc))
            new_hash = config_hash(loaded)
            changed = restart_only_changes(self.current, loaded.config)
            config = keep_restart_only(self.current, loaded.config)
            try:
                await self.target.apply(config, new_hash)
            except Exception as exc:
                log.debug("applying the new config failed", exc_info=True)
                error = f"{type(exc).__name__}: {exc}"
                return self._failed(f"the new config cannot be applied; still serving {self.status.config_hash}: "
                                    f"{error}", error)
            self.current = config
            self.watched = watched_files(loaded)
            self._seen = hash_files(self.watched) if self.watched else new_hash
            self.status.config_hash, self.status.result, self.status.error = new_hash, "ok", None
            self.status.restart_required = changed
            self.status.reloads += 1
            if self.metrics is not None:
                self.metrics.count_reload("ok")
                self.metrics.config_loaded(new_hash)
            for note in loaded.notes:
                log.info("config: %s", note)
            log.info("config reloaded: now serving %s (models: %s; agents: %s)", new_hash,
                     ", ".join(sorted(config.models)) or "(none)", ", ".join(sorted(config.agents)) or "(none)")
            if changed:
                log.warning("config: changed settings that need a restart (the old values stay in use until "
                            "then): %s", ", ".join(changed))
            return True

    def _failed(self, message: str, error: str) -> bool:
        log.error("config reload failed: %s", message)
        self.status.result, self.status.error = "error", error
        if self.metrics is not None:
            self.metrics.count_reload("error")
        return False

    async def _watch(self) -> None:
        from watchfiles import awatch

        while True:
            watched = list(self.watched)
            directories = sorted({str(p.parent) for p in watched if p.parent.is_dir()})
            # Any change in these directories re-reads the files: an editor that replaces the
            # file and a ConfigMap swapped by a symlink both change what the path reads.
            async for _ in awatch(*directories, debounce=200, step=50, recursive=False):
                seen = hash_files(self.watched)
                if seen != self._seen:
                    self._seen = seen
                    self.request()
                if self.watched != watched:  # a reload added or dropped an instructions file
                    break
