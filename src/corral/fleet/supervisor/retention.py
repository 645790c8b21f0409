"""Retention: audit entries and stored events older than their window are purged, both on
the audit's schedule (``audit.purge_interval_seconds``)."""

from __future__ import annotations

import asyncio
import logging
import time

from corral.fleet.store import FleetStore

log = logging.getLogger("corral.fleet.retention")
DAY = 86400.0


class Retention:
    def __init__(self, store: FleetStore, *, audit_days: float, event_days: float, interval: float) -> None:
        self.store = store
        self.audit_days, self.event_days, self.interval = audit_days, event_days, interval
        self.audit_purged_total = 0
        self.events_purged_total = 0
        self._task: asyncio.Task[None] | None = None

    def apply(self, *, audit_days: float, event_days: float, interval: float) -> None:
        self.audit_days, self.event_days, self.interval = audit_days, event_days, interval

    async def purge_once(self, now: float | None = None) -> tuple[int, int]:
        """``(audit entries, events)`` removed. ``event_days`` 0 keeps events forever."""
        now = time.time() if now is None else now
        audit = await self.store.purge_audit(now - self.audit_days * DAY)
        events = await self.store.purge_events(now - self.event_days * DAY) if self.event_days else 0
        self.audit_purged_total += audit
        self.events_purged_total += events
        if audit or events:
            log.info("retention purge removed %d audit entries and %d events", audit, events)
        return audit, events

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="fleet-retention-purge")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _loop(self) -> None:
        while True:
            try:
                await self.purge_once()
            except Exception:  # try again next interval
                log.exception("retention purge failed")
            await asyncio.sleep(self.interval)
