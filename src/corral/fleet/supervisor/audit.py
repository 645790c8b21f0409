"""The audit log: every command and policy action, with secrets redacted (`retention.py` purges it)."""

from __future__ import annotations

import logging
import time
from typing import Any

from corral.fleet.store import FleetStore
from corral.telemetry.redact import redact_value

log = logging.getLogger("corral.fleet.audit")


class AuditLog:
    def __init__(self, store: FleetStore, *, enabled: bool = True) -> None:
        self.store, self.enabled = store, enabled

    async def record(self, *, actor: str, action: str, target: str | None, args: dict[str, Any],
                     result: str, error: str | None = None, source: str | None = None) -> None:
        if not self.enabled:
            return
        row = {"ts": time.time(), "actor": actor, "action": action, "target": target,
               "args": redact_value(args), "result": result, "error": redact_value(error) if error else None,
               "source": source}
        try:
            await self.store.insert_audit([row])
        except Exception:  # auditing must not break the action it records
            log.exception("audit write failed for %s", action)
