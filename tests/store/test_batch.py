from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from corral.store import BatchWriter, Store, UsageRecord


async def test_batch_writer_flushes_by_size_and_everything_on_close(store: Store) -> None:
    writer: BatchWriter[UsageRecord] = BatchWriter(store.write_batch, batch_size=10, flush_interval=30)
    for i in range(25):
        await writer.put(UsageRecord(request_id=f"r{i}", model="m", cost_usd=0.1))
    for _ in range(100):
        if writer.stats.written >= 20:
            break
        await asyncio.sleep(0.02)
    assert writer.stats.written == 20  # two full batches; 5 wait for the interval
    await writer.aclose()
    assert writer.stats.written == 25 and writer.stats.batches == 3
    assert await store.usage.count() == 25


async def test_batch_writer_flushes_a_partial_batch_after_the_interval() -> None:
    written: list[list[int]] = []

    async def sink(batch: Sequence[int]) -> None:
        written.append(list(batch))

    writer: BatchWriter[int] = BatchWriter(sink, batch_size=100, flush_interval=0.05)
    await writer.put(1)
    await writer.put(2)
    for _ in range(100):
        if written:
            break
        await asyncio.sleep(0.01)
    assert written == [[1, 2]]
    await writer.aclose()


async def test_full_queue_makes_put_wait_instead_of_growing() -> None:
    release = asyncio.Event()
    written: list[int] = []

    async def slow_sink(batch: Sequence[int]) -> None:
        await release.wait()
        written.extend(batch)

    writer: BatchWriter[int] = BatchWriter(slow_sink, max_queue=3, batch_size=1, flush_interval=0.01)
    await writer.put(0)
    await asyncio.sleep(0.02)  # record 0 is now in flight, stuck in the sink
    for i in range(1, 4):
        await writer.put(i)
    assert writer.stats.blocked_puts == 0
    blocked = asyncio.create_task(writer.put(99))
    await asyncio.sleep(0.05)
    assert not blocked.done() and writer.depth == 3 and writer.stats.blocked_puts == 1
    release.set()
    await asyncio.wait_for(blocked, 2)
    await writer.aclose()
    assert written == [0, 1, 2, 3, 99]


async def test_failed_writes_are_retried_without_losing_the_batch() -> None:
    attempts = 0
    written: list[int] = []

    async def flaky(batch: Sequence[int]) -> None:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise ConnectionError("database away")
        written.extend(batch)

    writer: BatchWriter[int] = BatchWriter(flaky, batch_size=10, flush_interval=0.01, retry_base=0.01)
    for i in range(3):
        await writer.put(i)
    await writer.aclose()
    assert written == [0, 1, 2]
    assert writer.stats.write_errors == 2 and writer.stats.lost == 0


async def test_close_gives_up_on_a_dead_sink_after_the_timeout_and_counts_the_loss() -> None:
    async def dead(batch: Sequence[int]) -> None:
        raise ConnectionError("gone")

    writer: BatchWriter[int] = BatchWriter(dead, batch_size=2, flush_interval=0.01, retry_base=0.01)
    for i in range(5):
        await writer.put(i)
    await writer.aclose(grace=0.2)
    assert writer.stats.lost == 5 and writer.stats.written == 0


async def test_a_queue_smaller_than_a_batch_is_written_when_full_not_after_the_interval() -> None:
    written: list[list[int]] = []

    async def sink(batch: Sequence[int]) -> None:
        written.append(list(batch))

    writer: BatchWriter[int] = BatchWriter(sink, max_queue=2, batch_size=100, flush_interval=30)
    for i in range(5):
        await asyncio.wait_for(writer.put(i), 2)  # would wait 30 s for room if a full queue waited for the interval
    assert writer.stats.blocked_puts >= 1
    assert [r for batch in written for r in batch] == [0, 1, 2, 3]
    await writer.aclose()
    assert [r for batch in written for r in batch] == [0, 1, 2, 3, 4]


async def test_records_left_after_a_full_batch_wait_for_their_own_interval() -> None:
    written: list[list[int]] = []

    async def sink(batch: Sequence[int]) -> None:
        written.append(list(batch))

    writer: BatchWriter[int] = BatchWriter(sink, batch_size=3, flush_interval=0.2)
    for i in range(4):
        await writer.put(i)
    await asyncio.sleep(0.05)
    assert written == [[0, 1, 2]] and writer.depth == 1
    for _ in range(100):
        if len(written) == 2:
            break
        await asyncio.sleep(0.02)
    assert written == [[0, 1, 2], [3]] and writer.depth == 0
    await writer.aclose()
    assert writer.stats.batches == 2 and writer.stats.written == 4
    with pytest.raises(RuntimeError, match="closed"):
        await writer.put(5)
