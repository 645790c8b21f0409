"""The key cache kept current on every replica: loaded at start, reloaded every
`refresh_seconds` (with the budget counters re-seeded), and, with Redis, told at once
of a change another replica made (a pub/sub channel of key ids)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from corral.gateway.auth import KeyCache
from corral.gateway.budgets import BudgetSeeder
from corral.store import KeyRecord

log = logging.getLogger("corral.keys")

REFRESH_SECONDS = 30.0


class KeySync:
    def __init__(self, keys: KeyCache, budgets: BudgetSeeder, *, redis: Any = None, channel: str = "corral:keys",
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.keys = keys
        self.budgets = budgets
        self.redis = redis  # redis.asyncio client when cache.url is set
        self.channel = channel
        self.refresh_seconds = refresh_seconds
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.keys.load()
        await self.budgets.seed_all()
        loop = asyncio.get_running_loop()
        self._tasks.append(loop.create_task(self._refresh_loop(), name="corral-key-refresh"))
        if self.redis is not None:
            self._tasks.append(loop.create_task(self._listen(), name="corral-key-invalidation"))

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    async def key_changed(self, key_id: str) -> KeyRecord | None:
        """After an admin change: update this replica now, and tell the others."""
        record = await self.keys.reload(key_id)
        if self.redis is not None:
            try:
                await self.redis.publish(self.channel, key_id)
            except Exception as exc:
                log.warning("could not publish key change (other replicas refresh within %.0fs): %s",
                            self.refresh_seconds, exc)
        return record

    async def _refresh_loop(self) -> None:
        while True:
            await asyncio.sleep(self.refresh_seconds)
            try:
                await self.keys.load()
                await self.budgets.seed_all()
            except Exception as exc:
                log.warning("key cache refresh failed: %s", exc)

    async def _listen(self) -> None:
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                try:
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            key_id = message["data"]
                            await self.keys.reload(key_id.decode() if isinstance(key_id, bytes) else str(key_id))
                finally:
                    await pubsub.aclose()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("key invalidation channel lost (%s); resubscribing", exc)
                await asyncio.sleep(1.0)
