"""The batch writer: takes usage and audit records off the request path.

Producers ``await writer.put(record)``; one background task writes batches when
``batch_size`` records are waiting or ``flush_interval`` seconds after the first one.
The queue is bounded: when the database falls behind, ``put`` waits (backpressure,
counted in ``stats.blocked_puts``) instead of letting memory grow. A failed write is
retried with backoff, keeping its batch. ``aclose()`` writes everything still queued.

With a ``journal`` (`corral.store.spool.UsageSpool`) every record is appended to it in
``put`` (on disk before the caller goes on) and acknowledged once its batch is stored,
so records queued here when the process dies are stored at the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
Sink = Callable[[Sequence[T]], Awaitable[None]]


class Journal(Protocol):
    def append(self, record: object) -> None: ...

    def ack(self, records: Sequence[object]) -> None: ...


@dataclass(slots=True)
class BatchStats:
    queued: int = 0  # accepted by put()
    written: int = 0
    batches: int = 0
    blocked_puts: int = 0  # put() calls that had to wait for room
    write_errors: int = 0  # failed write attempts (each retried)
    lost: int = 0  # records given up on at shutdown because the sink kept failing


class BatchWriter(Generic[T]):
    """Records wait in a plain list; the background task is woken once per batch (when
    it is full, when the interval of its first record is up, or on close), not once per
    record: a task wake-up per record cost more CPU than the rest of recording a call."""

    def __init__(
        self,
        sink: Sink[T],
        *,
        max_queue: int = 10_000,
        batch_size: int = 500,
        flush_interval: float = 1.0,
        retry_base: float = 0.2,
        retry_max: float = 10.0,
        journal: Journal | None = None,
    ) -> None:
        if max_queue < 1 or batch_size < 1:
            raise ValueError("max_queue and batch_size must be >= 1")
        self._sink = sink
        self._journal = journal
        self._max_queue = max_queue
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self._retry_base = retry_base
        self._retry_max = retry_max
        self._pending: list[T] = []
        self._due: float | None = None  # loop time the oldest pending record must be written by
        self._timer: asyncio.TimerHandle | None = None
        self._wake = asyncio.Event()  # a batch is full or due, or the writer is closing
        self._room = asyncio.Event()  # set when records leave a full queue
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._inflight: list[T] = []
        self.stats = BatchStats()

    @property
    def depth(self) -> int:
        return len(self._pending)

    @property
    def capacity(self) -> int:
        return self._max_queue

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="corral-batch-writer")

    async def put(self, record: T) -> None:
        if self._closing:
            raise RuntimeError("batch writer is closed")
        if self._task is None:
            self.start()
        pending = self._pending
        if len(pending) >= self._max_queue:
            self.stats.blocked_puts += 1
            while len(pending) >= self._max_queue:
                self._room.clear()
                self._wake.set()
                await self._room.wait()
        if self._journal is not None:
            self._journal.append(record)
        pending.append(record)
        self.stats.queued += 1
        if len(pending) >= self.batch_size:
            self._wake.set()
        elif self._due is None:
            self._arm()

    def _arm(self) -> None:
        loop = asyncio.get_running_loop()
        self._due = loop.time() + self.flush_interval
        self._timer = loop.call_at(self._due, self._wake.set)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = None
        self._due = None

    async def aclose(self, grace: float = 30.0) -> None:
        """Write everything queued, then stop. After ``grace`` seconds of a failing
        sink the remaining records are counted as lost and logged."""
        if self._closing:
            return
        self._closing = True
        if self._task is None:
            return
        self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(self._task), grace)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            lost = len(self._inflight) + len(self._pending)
            self._pending.clear()
            self.stats.lost += lost
            log.error("batch writer shut down with %d unwritten records", lost)
        finally:
            self._disarm()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wake.wait()
            self._wake.clear()
            pending = self._pending
            while pending and (len(pending) >= min(self.batch_size, self._max_queue) or self._closing
                               or (self._due is not None and loop.time() >= self._due)):
                batch = pending[:self.batch_size]
                del pending[:self.batch_size]
                self._disarm()
                self._room.set()
                await self._write(batch)
            if pending and self._due is None:  # the rest waits for its own interval
                self._arm()
            if self._closing and not pending:
                return

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
        if self._journal is not None:
            self._journal.ack(batch)
        self.stats.written += len(batch)
        self.stats.batches += 1
