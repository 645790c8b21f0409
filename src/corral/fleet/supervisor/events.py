"""The event pipeline: queue -> batched insert-or-ignore -> acks -> listeners.

Acks go out only after the batch is committed, so an acknowledged event is durable;
a duplicate (a resend after reconnect) is acknowledged again but applied once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from corral.fleet.protocol import Envelope
from corral.fleet.store import EventRow, FleetStore
from corral.fleet.supervisor.state import FleetState, SessionState
from corral.llm.pricing import PricingTable
from corral.llm.types import Usage

log = logging.getLogger("corral.fleet.events")
SUPERVISOR_NODE = "supervisor"
MAX_EVENT_TYPES = 200  # distinct type labels in /metrics


class AckSink(Protocol):
    async def send_ack(self, seqs: list[int]) -> None: ...


@dataclass(slots=True)
class _Pending:
    row: EventRow
    sink: AckSink | None


Listener = Callable[[list[EventRow]], Awaitable[None]]


def _usage(data: dict[str, Any]) -> tuple[int, int, int]:
    def num(key: str) -> int:
        value = data.get(key, 0)
        return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0

    return num("input_tokens"), num("output_tokens"), num("cached_input_tokens")


class EventPipeline:
    def __init__(self, store: FleetStore, state: FleetState, prices: PricingTable, *,
                 batch_size: int = 500, flush_ms: int = 20) -> None:
        self.store, self.state, self.prices = store, state, prices
        self.batch_size, self.flush = batch_size, flush_ms / 1000
        self.listeners: list[Listener] = []
        self.stored_total = 0
        self.duplicates_total = 0
        self.stored_by_type: Counter[str] = Counter()  # at most MAX_EVENT_TYPES labels, then "other"
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._local_seq = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._local_seq = await self.store.max_seq(SUPERVISOR_NODE)
        self._task = asyncio.create_task(self._run(), name="fleet-event-pipeline")

    async def stop(self) -> None:
        # let queued events reach the store before shutdown
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._queue.join(), 5)
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    @property
    def backlog(self) -> int:
        return self._queue.qsize()

    def row_for(self, node_id: str, envelope: Envelope) -> EventRow:
        payload = envelope.payload
        data = payload.get("data") or {}
        kind = str(payload.get("type"))
        model = data.get("model") if isinstance(data.get("model"), str) else None
        tokens_in, tokens_out, cached = _usage(data) if kind == "usage" else (0, 0, 0)
        reported = data.get("cost_usd")
        if kind != "usage":
            cost = 0.0
        elif self.prices.price(model) is None and isinstance(reported, int | float):
            cost = float(reported)  # e.g. OpenCode's own figure for a model we have no price for
        else:
            cost = self.prices.cost(Usage(input_tokens=tokens_in, output_tokens=tokens_out,
                                          cached_input_tokens=cached), model)
        return EventRow(node_id=node_id, seq=int(envelope.seq or 0), envelope_id=envelope.id, type=kind,
                        session_id=payload.get("session_id"), project=payload.get("project"), model=model,
                        input_tokens=tokens_in, output_tokens=tokens_out, cost_usd=cost, ts=envelope.ts,
                        data=data)

    def submit(self, node_id: str, envelope: Envelope, sink: AckSink | None) -> None:
        self._queue.put_nowait(_Pending(self.row_for(node_id, envelope), sink))

    def submit_many(self, node_id: str, envelopes: list[Envelope], sink: AckSink | None) -> None:
        for envelope in envelopes:
            self._queue.put_nowait(_Pending(self.row_for(node_id, envelope), sink))

    def emit(self, kind: str, data: dict[str, Any], session_id: str | None = None,
             project: str | None = None) -> None:
        """An event of the supervisor's own (node.offline, policy.action...), stored like any other."""
        self._local_seq += 1
        env = Envelope(type="event", seq=self._local_seq,
                       payload={"type": kind, "session_id": session_id, "project": project, "data": data})
        self.submit(SUPERVISOR_NODE, env, None)

    async def _collect(self) -> list[_Pending]:
        batch = [await self._queue.get()]
        deadline = time.monotonic() + self.flush
        while len(batch) < self.batch_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            try:
                await self._write(batch)
            finally:
                for _ in batch:
                    self._queue.task_done()

    async def _write(self, batch: list[_Pending]) -> None:
        rows = [p.row for p in batch]
        attempt = 0
        applied: list[EventRow] = []
        scratch: dict[str, SessionState] = {}
        while True:

            def sessions_for(new: set[tuple[str, int]]) -> list[dict[str, Any]]:
                applied.clear()
                scratch.clear()
                for row in rows:
                    if (row.node_id, row.seq) in new:
                        applied.append(row)
                        self.state.apply_event(
                            row.node_id, row.type, row.session_id,
                            {"project": row.project, "data": row.data},
                            (row.input_tokens, row.output_tokens), row.cost_usd, row.ts, scratch)
                return [s.row() for s in scratch.values()]

            try:
                await self.state.restore_evicted(
                    self.store, (r.session_id for r in rows if r.node_id != SUPERVISOR_NODE), pin=True)
                new = await self.store.insert_events(rows, sessions_for)
                self.state.commit(scratch)
                break
            except Exception:  # the store may be briefly unavailable; keep the batch
                attempt += 1
                log.exception("storing %d events failed (attempt %d); retrying", len(rows), attempt)
                await asyncio.sleep(min(5.0, 0.1 * 2 ** attempt))
        self.stored_total += len(new)
        self.duplicates_total += len(rows) - len(new)
        self._count_types(applied)
        await self._ack(batch)
        for listener in self.listeners:
            try:
                await listener(applied)
            except Exception:  # a listener failing must not stop the pipeline
                log.exception("event listener failed")

    def _count_types(self, rows: list[EventRow]) -> None:
        """Event types are the nodes' free strings: the first MAX_EVENT_TYPES get a label each."""
        counts = self.stored_by_type
        for row in rows:
            kind = row.type
            if kind in counts or len(counts) < MAX_EVENT_TYPES:
                counts[kind] += 1
            else:
                counts["other"] += 1

    async def _ack(self, batch: list[_Pending]) -> None:
        by_sink: dict[int, tuple[AckSink, list[int]]] = {}
        for p in batch:
            if p.sink is not None:
                by_sink.setdefault(id(p.sink), (p.sink, []))[1].append(p.row.seq)
        for sink, seqs in by_sink.values():
            try:
                await sink.send_ack(seqs)
            except Exception:  # a closed socket: the node resends, we drop the dup
                log.debug("ack to a closed connection dropped")
