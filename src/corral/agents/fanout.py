"""Run events fanned out through Redis, so any replica can stream any run.

The replica executing a run appends each event to a Redis stream of its own,
``<prefix>run:<id>:events``, with the entry id ``<attempt>-<seq>`` (the run's claim
count and the event's position in that attempt). The ids make the log exact: a follower
on another replica reads with one ``XREAD`` from an id on, which returns what is stored
and then blocks for what comes next, in order, with no gap and no duplicate; a write
retried after an error, or a late write from an executor that lost its lease, is
refused by Redis instead of being stored twice or out of order.

Writing never blocks the run: events are queued and written in pipelined batches by one
task. While Redis is unreachable the batch is kept (up to `MAX_PENDING` events) and
retried, with one warning per outage; followers on other replicas then end with the
run's stored state. A stream expires `retention_seconds` after its last event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson

from corral.agents.events import RunEvent
from corral.telemetry.logging import OutageLog

log = logging.getLogger("corral.agents")

MAX_PENDING = 10_000
MAX_BATCH = 500
WRITE_TIMEOUT = 5.0  # seconds for one batch: a hung Redis holds events back, not the run
MAX_LEN = 100_000  # events kept per run (approximately): a runaway run cannot fill Redis


class RedisRunEvents:
    def __init__(self, client: Any, *, prefix: str = "corral:", retention_seconds: int = 3600,
                 retry_seconds: float = 0.5, block_ms: int = 2000) -> None:
        self.client = client
        self.prefix = prefix
        self.retention_seconds = retention_seconds
        self.retry_seconds = retry_seconds
        self.block_ms = block_ms  # how long a follower waits for an event before checking on the run
        self._pending: deque[tuple[str, str, bytes]] = deque()  # (key, id, payload)
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()  # set while everything queued is written
        self._writer: asyncio.Task[None] | None = None
        self._outage = OutageLog(log)
        self.dropped = 0

    @classmethod
    def from_url(cls, url: str, *, prefix: str = "corral:") -> RedisRunEvents:
        import redis.asyncio as aioredis

        return cls(aioredis.from_url(url, socket_connect_timeout=2.0, socket_keepalive=True), prefix=prefix)

    def key(self, run_id: str) -> str:
        return f"{self.prefix}run:{run_id}:events"

    # ---- the executing replica ---------------------------------------------------

    def publish(self, run_id: str, attempt: int, seq: int, event: RunEvent) -> None:
        """Queue one event (``seq`` counts from 1 within the attempt); never blocks."""
        if len(self._pending) >= MAX_PENDING:
            self._pending.popleft()
            self.dropped += 1
        # orjson writes the dataclass as `event_json` would, without building the dict first.
        self._pending.append((self.key(run_id), f"{attempt}-{seq}", orjson.dumps(event)))
        self._drained.clear()
        self._wake.set()
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), name="corral-run-events")

    async def _write_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                try:
                    await self._write_batch()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    self._outage.down(f"run events are not reaching Redis (other replicas cannot stream the runs "
                               f"executing here until it is back; {len(self._pending)} events kept): {exc}")
                    await asyncio.sleep(self.retry_seconds)
            self._drained.set()

    async def _write_batch(self) -> None:
        batch = [self._pending.popleft() for _ in range(min(MAX_BATCH, len(self._pending)))]
        pipe = self.client.pipeline(transaction=False)
        for key, entry_id, payload in batch:
            pipe.xadd(key, {"e": payload}, id=entry_id, maxlen=MAX_LEN, approximate=True)
        for key in dict.fromkeys(key for key, _, _ in batch):
            pipe.expire(key, self.retention_seconds)
        try:
            # An id already stored (a retried write, or an executor that lost its claim) is refused: fine.
            async with asyncio.timeout(WRITE_TIMEOUT):
                await pipe.execute(raise_on_error=False)
        except BaseException:
            self._pending.extendleft(reversed(batch))  # in order, ahead of what came since
            while len(self._pending) > MAX_PENDING:
                self._pending.popleft()
                self.dropped += 1
            raise
        self._outage.up("run events reach Redis again")

    async def aclose(self, *, flush_within: float = 2.0) -> None:
        """Write what is queued (within ``flush_within`` seconds), then close."""
        if self._writer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), flush_within)
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        await self.client.aclose()

    # ---- any replica -------------------------------------------------------------

    async def read(self, run_id: str, after: str, *, block_ms: int | None = None) -> list[tuple[str, dict[str, Any]]]:
        """The events stored after the entry id ``after``, waiting up to ``block_ms`` for
        one if there are none yet; [] when none came."""
        block = self.block_ms if block_ms is None else block_ms
        answer = await self.client.xread({self.key(run_id): after}, count=MAX_BATCH, block=block)
        if not answer:
            return []
        return [(entry_id.decode(), orjson.loads(fields[b"e"])) for entry_id, fields in answer[0][1]]

    async def follow(self, run_id: str, after: str, *,
                     block_ms: int | None = None) -> AsyncIterator[tuple[str, dict[str, Any]] | None]:
        """Events after ``after`` until ``run.finished``, each with its entry id
        (``<attempt>-<seq>``); None each time ``block_ms`` passes without one (the caller
        decides whether to go on waiting)."""
        while True:
            entries = await self.read(run_id, after, block_ms=block_ms)
            if not entries:
                yield None
            for entry_id, event in entries:
                after = entry_id
                yield entry_id, event
                if event.get("type") == "run.finished":
                    return

