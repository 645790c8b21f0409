"""The usage spool: every usage row is on this machine's disk before the call's answer
ends, so a process crash (kill -9, OOM) loses none of them.

`append` writes one JSON line to the process's segment file (one `write` on an
``O_APPEND`` descriptor: once it returns, the row is in the kernel and survives the
process); the batch writer ships rows to the database in batches and `ack`s them, and a
segment whose rows are all stored is deleted. A background thread ``fsync``s the open
segment every ``fsync_interval`` seconds when it has new rows (group commit), so a
machine (power) loss loses at most the rows of that interval (docs/store.md).

`replay` (at start) stores the rows of segments no live process holds (each process
keeps an exclusive ``flock`` on its own segments) and deletes them. Rows carry the
server's usage id, so a row stored before the crash and replayed after it is stored
once (``ON CONFLICT (usage_id) DO NOTHING``).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter
from pathlib import Path
from typing import Any

import orjson

from corral.store.usage import UsageRecord

log = logging.getLogger("corral.spool")

_FIELDS = tuple(name for name in UsageRecord.__dataclass_fields__ if name != "ts")
_values = attrgetter(*_FIELDS)
_HEADER = json.dumps({"corral_usage_spool": 1, "fields": [*_FIELDS, "ts"]}) + "\n"
SEGMENT_ROWS = 5_000  # rows per segment file before the next one is opened
REPLAY_BATCH = 500


@dataclass(slots=True)
class _Segment:
    path: Path
    fd: int
    appended: int = 0
    acked: int = 0


class UsageSpool:
    def __init__(self, directory: Path, *, fsync_interval: float = 0.1, segment_rows: int = SEGMENT_ROWS) -> None:
        self.directory = directory
        self.fsync_interval = fsync_interval
        self.segment_rows = segment_rows
        self._segments: deque[_Segment] = deque()  # oldest first; the last one is written to
        self._seq = 0
        self._dirty = False
        self._lock = threading.Lock()  # segments are closed by the event loop while the fsync thread runs
        self._stop = threading.Event()
        self._syncer: threading.Thread | None = None
        self.appended = 0
        self.replayed = 0
        self.broken = False

    # ---- the request path -----------------------------------------------------

    def append(self, record: object) -> None:
        """Make a usage row durable against a crash of this process (other records pass)."""
        if type(record) is not UsageRecord or self.broken:
            return
        line = orjson.dumps([*_values(record), record.ts])  # about 1 µs: this is on every call's path
        try:
            segment = self._segments[-1] if self._segments else None
            if segment is None or segment.appended >= self.segment_rows:
                segment = self._open_segment()
            os.write(segment.fd, line + b"\n")
        except OSError as exc:
            # The disk failed (full, read-only): rows go on to the database from memory, as
            # without a spool; the segments written so far stay for the next start's replay.
            self.broken = True
            log.error("usage spool disabled, rows are no longer crash-safe: %s", exc)
            return
        segment.appended += 1
        self.appended += 1
        self._dirty = True

    def ack(self, records: Sequence[object]) -> None:
        """These records (in the order they were appended) are in the database."""
        if self.broken:
            return
        n = sum(1 for r in records if type(r) is UsageRecord)
        segments = self._segments
        while n and segments:
            oldest = segments[0]
            take = min(n, oldest.appended - oldest.acked)
            oldest.acked += take
            n -= take
            if oldest.acked < oldest.appended:
                break
            if len(segments) == 1 and oldest.appended < self.segment_rows:
                break  # still being written to
            segments.popleft()
            self._drop(oldest)

    # ---- start and stop ---------------------------------------------------------

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.fsync_interval > 0 and self._syncer is None:
            self._syncer = threading.Thread(target=self._sync_loop, name="corral-usage-fsync", daemon=True)
            self._syncer.start()

    def close(self) -> None:
        """Stop the fsync thread; segments with rows not yet stored stay for the next start."""
        self._stop.set()
        if self._syncer is not None:
            self._syncer.join(timeout=5)
            self._syncer = None
        with self._lock:
            for segment in self._segments:
                os.fsync(segment.fd)
                if segment.acked >= segment.appended:
                    segment.path.unlink(missing_ok=True)
                os.close(segment.fd)
            self._segments.clear()

    async def replay(self, store_rows: Callable[[Sequence[UsageRecord]], Awaitable[int]]) -> int:
        """Store the rows left by processes that are gone; returns how many were new."""
        if not self.directory.is_dir():
            return 0
        new = 0
        for path in sorted(self.directory.glob("usage-*.jsonl")):
            fd = _lock_if_orphaned(path)
            if fd is None:
                continue  # a live process's segment
            try:
                rows = _read(path)
                for start in range(0, len(rows), REPLAY_BATCH):
                    new += await store_rows(rows[start:start + REPLAY_BATCH])
                path.unlink(missing_ok=True)
                self.replayed += len(rows)
                if rows:
                    log.warning("replayed %d usage rows from %s (%d were not yet stored)", len(rows), path.name, new)
            finally:
                os.close(fd)
        return new

    # ---- internals -----------------------------------------------------------------

    def _open_segment(self) -> _Segment:
        self._seq += 1
        path = self.directory / f"usage-{os.getpid()}-{self._seq:06d}.jsonl"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, _HEADER.encode())
        segment = _Segment(path, fd)
        with self._lock:
            self._segments.append(segment)
        return segment

    def _drop(self, segment: _Segment) -> None:
        with self._lock:
            segment.path.unlink(missing_ok=True)
            os.close(segment.fd)

    def _sync_loop(self) -> None:
        while not self._stop.wait(self.fsync_interval):
            if not self._dirty:
                continue
            self._dirty = False
            with self._lock:
                fds = [s.fd for s in self._segments]
                for fd in fds:
                    try:
                        os.fdatasync(fd)
                    except OSError as exc:
                        log.error("usage spool fsync failed: %s", exc)


def _lock_if_orphaned(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _read(path: Path) -> list[UsageRecord]:
    lines = path.read_bytes().split(b"\n")
    if not lines or not lines[0]:
        return []
    fields: list[str] = json.loads(lines[0])["fields"]
    rows: list[UsageRecord] = []
    for line in lines[1:]:
        if not line:
            continue
        try:
            values: list[Any] = json.loads(line)
        except ValueError:  # a line torn by the crash: its call never got its last byte
            log.warning("skipped a torn line in %s", path.name)
            continue
        data = dict(zip(fields, values, strict=True))
        data["ts"] = datetime.fromisoformat(data["ts"])
        rows.append(UsageRecord(**{k: v for k, v in data.items() if k in UsageRecord.__dataclass_fields__}))
    return rows
