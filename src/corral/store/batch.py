"""The batch writer: takes usage and audit records off the request path.

Producers ``await writer.put(record)``; one background task writes batches when
``batch_size`` records are waiting or ``flush_interval`` seconds after the first one.
The queue is bounded: when the database falls behind, ``put`` waits (backpressure,
counted in ``stats.blocked_puts``) instead of letting memory grow. A failed write is
retried with backoff, keeping its batch. ``aclose()`` writes everything still queued.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Sink = Callable[[Sequence[T]], Awaitable[None]]


class _Close:
    pass


_CLOSE = _Close()


@dataclass(slots=True)
class BatchStats:
    queued: int = 0  # accepted by put()
    written: int = 0
    batches: int = 0
    blocked_puts: int = 0  # put() calls that had to wait for room
    write_errors: int = 0  # failed write attempts (each retried)
    lost: int = 0  # records given up on at shutdown because the sink kept failing


class BatchWriter(Generic[T]):
    def __init__(
        self,
        sink: Sink[T],
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        retry_base: float = 0.2,
        retry_max: float = 10.0,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be >= 1")
        self._sink = sink
        self._queue: asyncio.Queue[T | _Close] = asyncio.Queue(maxsize=max_queue)
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight: list[T] = []
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    @property
    def capacity(self) -> int:
        return self._queue.maxsize

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="corral-batch-writer")

    async def put(self, record: T) -> None:
        if self._closing:
            raise RuntimeError("batch writer is closed")
        self.start()
        if self._queue.full():
            self.stats.blocked_puts += 1
        await self._queue.put(record)
        self.stats.queued += 1

    async def aclose(self, grace: float = 30.0) -> None:
        """Write everything queued, then stop. After ``grace`` seconds of a failing
        sink the remaining records are counted as lost and logged."""
        if self._closing:
            return
        self._closing = True
        if self._task is None:
            return
        await self._queue.put(_CLOSE)
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            lost = len(self._inflight) + sum(
                1 for _ in range(self._queue.qsize()) if not isinstance(self._queue.get_nowait(), _Close)
            )
            self.stats.lost += lost
            log.error("batch writer shut down with %d unwritten records", lost)

    async def _run(self) -> None:
        done = False
        while not done:
            batch, done = await self._next_batch()
            if batch:
                await self._write(batch)

    async def _next_batch(self) -> tuple[list[T], bool]:
        loop = asyncio.get_running_loop()
        item = await self._queue.get()
        deadline = loop.time() + self.flush_interval
        batch: list[T] = []
        while True:
            if isinstance(item, _Close):
                return batch, True
            batch.append(item)
            if len(batch) >= self.batch_size:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                try:
                    async with asyncio.timeout_at(deadline):
                        item = await self._queue.get()
                except TimeoutError:
                    return batch, False

    async def _write(self, batch: list[T]) -> None:
        self._inflight = batch
        delay = self._retry_base
        while True:
            try:
                await self._sink(batch)
            except Exception:
                self.stats.write_errors += 1
                log.exception("batch write of %d records failed; retrying in %.1fs", len(batch), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, self._retry_max)
                continue
            break
        self._inflight = []
        self.stats.written += len(batch)
        self.stats.batches += 1
