"""The usage spool: rows on disk until stored, segments dropped once stored, rows left by a
dead process replayed once (a torn last line skipped), a live process's left alone."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Sequence
from pathlib import Path

from corral.store import UsageRecord
from corral.store.spool import UsageSpool


class Sink:
    def __init__(self) -> None:
        self.rows: dict[str, UsageRecord] = {}

    async def __call__(self, rows: Sequence[UsageRecord]) -> int:
        new = [r for r in rows if r.usage_id not in self.rows]
        self.rows.update((r.usage_id, r) for r in new)
        return len(new)


def row(n: int) -> UsageRecord:
    return UsageRecord(request_id=f"r{n}", model="m", key_id="k", input_tokens=n, cost_usd=n / 100, agent="a",
                       estimated=n % 2 == 0)


def segments(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.glob("usage-*.jsonl"))


async def test_stored_segments_are_deleted_and_the_open_one_stays_until_close(tmp_path: Path) -> None:
    spool = UsageSpool(tmp_path, fsync_interval=0.01, segment_rows=3)
    spool.start()
    rows = [row(n) for n in range(7)]
    for r in rows:
        spool.append(r)
    assert len(segments(tmp_path)) == 3  # 3 + 3 + 1
    spool.ack(rows[:4])
    assert len(segments(tmp_path)) == 2  # the first is stored; the second only in part
    spool.ack(rows[4:])
    assert len(segments(tmp_path)) == 1  # the open one, still written to
    spool.close()
    assert segments(tmp_path) == []


async def test_rows_of_a_dead_process_are_replayed_once_with_every_field(tmp_path: Path) -> None:
    dead = UsageSpool(tmp_path, fsync_interval=0)
    rows = [row(n) for n in range(5)]
    for r in rows:
        dead.append(r)
    dead.ack(rows[:2])  # stored before the crash: replayed too, and stored once
    for segment in list(dead._segments):  # the process dies: its descriptors (and locks) go
        os.close(segment.fd)
    path = tmp_path / segments(tmp_path)[0]
    with path.open("ab") as handle:
        handle.write(b'["torn')  # a write the crash cut short

    sink = Sink()
    for r in rows[:2]:
        sink.rows[r.usage_id] = r
    assert await UsageSpool(tmp_path).replay(sink) == 3
    assert sorted(sink.rows) == sorted(r.usage_id for r in rows)
    assert sink.rows[rows[4].usage_id] == rows[4]  # every field, the time included
    assert segments(tmp_path) == []


async def test_a_live_process_segment_is_left_alone(tmp_path: Path) -> None:
    live = UsageSpool(tmp_path, fsync_interval=0)
    live.append(row(1))
    path = tmp_path / segments(tmp_path)[0]
    fd = os.open(path, os.O_RDONLY)
    try:  # the writer holds its lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            locked = False
        except BlockingIOError:
            locked = True
    finally:
        os.close(fd)
    assert locked
    sink = Sink()
    assert await UsageSpool(tmp_path).replay(sink) == 0
    assert sink.rows == {} and segments(tmp_path) == [path.name]
    live.close()
    assert segments(tmp_path) == [path.name]  # not stored: kept for the next start
