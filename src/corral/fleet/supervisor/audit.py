"""The audit log: every command and policy action, with secrets redacted; retention purge."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from corral.fleet.redact import redact
from corral.fleet.store import FleetStore

log = logging.getLogger("corral.fleet.audit")


class AuditLog:
    def __init__(self, store: FleetStore, *, enabled: bool = True, retention_days: float = 90.0,
                 purge_interval: float = 3600.0) -> None:
        self.store, self.enabled = store, enabled
        self.retention = retention_days * 86400
        self.purge_interval = purge_interval
        self.purged_total = 0
        self._task: asyncio.Task[None] | None = None

    def apply(self, *, enabled: bool, retention_days: float, purge_interval: float) -> None:
        self.enabled, self.retention, self.purge_interval = enabled, retention_days * 86400, purge_interval

    async def record(self, *, actor: str, action: str, target: str | None, args: dict[str, Any],
                     result: str, error: str | None = None, source: str | None = None) -> None:
        if not self.enabled:
            return
        row = {"ts": time.time(), "actor": actor, "action": action, "target": target,
               "args": redact(args), "result": result, "error": redact(error) if error else None,
               "source": source}
        try:
            await self.store.insert_audit([row])
        except Exception:  # auditing must not break the action it records
            log.exception("audit write failed for %s", action)

    async def purge_once(self) -> int:
        removed = await self.store.purge_audit(time.time() - self.retention)
        self.purged_total += removed
        if removed:
            log.info("audit retention purge removed %d entries", removed)
        return removed

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleet-audit-purge")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception:  # try again next interval
                log.exception("audit purge failed")
            await asyncio.sleep(self.purge_interval)
