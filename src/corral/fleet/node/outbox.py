"""The node's outbox: every event is numbered and written to SQLite before it is sent,
and deleted only when the supervisor acknowledges it, so neither a dropped connection
nor a node restart loses an event. The same file keeps the node's sessions, so a
restarted node reports them again."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiosqlite

from corral.fleet.protocol import Envelope, encode


class Outbox:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: aiosqlite.Connection | None = None
        self.pending: dict[int, str] = {}  # seq -> encoded frame, in seq order
        self.next_seq = 1

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        await self._db.execute("PRAGMA journal_mode=WAL")
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("CREATE TABLE IF NOT EXISTS outbox (seq INTEGER PRIMARY KEY, frame TEXT NOT NULL)")
        await self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)")
        await self._db.execute("CREATE TABLE IF NOT EXISTS sessions (session_id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        await self._db.commit()
        async with self._db.execute("SELECT seq, frame FROM outbox ORDER BY seq") as cursor:
            self.pending = {int(seq): str(frame) async for seq, frame in cursor}
        async with self._db.execute("SELECT value FROM meta WHERE key = 'last_seq'") as cursor:
            row = await cursor.fetchone()
        self.next_seq = int(row[0]) + 1 if row else 1

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("outbox is not open")
        return self._db

    async def append(self, payload: dict[str, Any]) -> tuple[int, str]:
        seq = self.next_seq
        self.next_seq += 1
        frame = encode(Envelope(type="event", seq=seq, payload=payload))
        await self.db.execute("INSERT INTO outbox (seq, frame) VALUES (?, ?)", (seq, frame))
        await self.db.execute(
            "INSERT INTO meta (key, value) VALUES ('last_seq', ?) ON CONFLICT(key) DO UPDATE SET value = ?",
            (seq, seq))
        await self.db.commit()
        self.pending[seq] = frame
        return seq, frame

    async def ack(self, seqs: list[int]) -> None:
        known = [s for s in seqs if s in self.pending]
        if not known:
            return
        await self.db.executemany("DELETE FROM outbox WHERE seq = ?", [(s,) for s in known])
        await self.db.commit()
        for seq in known:
            self.pending.pop(seq, None)

    async def save_session(self, session_id: str, body: dict[str, Any]) -> None:
        await self.db.execute(
            "INSERT INTO sessions (session_id, body) VALUES (?, ?) ON CONFLICT(session_id) DO UPDATE SET body = ?",
            (session_id, json.dumps(body), json.dumps(body)))
        await self.db.commit()

    async def load_sessions(self) -> list[dict[str, Any]]:
        async with self.db.execute("SELECT body FROM sessions") as cursor:
            return [json.loads(body) async for (body,) in cursor]

    def after(self, seq: int) -> list[tuple[int, str]]:
        return [(s, f) for s, f in self.pending.items() if s > seq]
