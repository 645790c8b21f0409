"""Counters shared by the worker processes of one machine without Redis: one SQLite file.

`corral serve --workers N` without ``cache.url`` gives each worker its own process, and
per-process counters would multiply every limit and budget by N. The parent names one
file (`ServeArgs.shared_counters`); every worker opens it, and each check is one
``BEGIN IMMEDIATE`` transaction (the file's write lock), so the workers take rpm slots,
check budgets and hold reservations one at a time, as the Redis script does across
replicas. The file lives while the server runs: budgets are seeded from the stored
usage at start like every other counter.

The statements are short and the file is local (WAL, no fsync: losing it loses nothing
that is not rebuilt from the store), so they run on the event loop: about 60 µs a check
with two workers (bench/README.md).
"""

from __future__ import annotations

import math
import sqlite3
import time
from typing import Any

from corral.gateway.counters import HELD_RETRY_AFTER, WINDOW_MS
from corral.gateway.limits import RESERVATION_TTL_MS, BudgetRule, Refusal, Rule, budget_retry_after

_SCHEMA = """
CREATE TABLE IF NOT EXISTS rpm (counter TEXT NOT NULL, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS rpm_counter_at ON rpm (counter, at);
CREATE TABLE IF NOT EXISTS tpm (counter TEXT NOT NULL, second INTEGER NOT NULL, tokens INTEGER NOT NULL,
                                PRIMARY KEY (counter, second));
CREATE TABLE IF NOT EXISTS spend (counter TEXT PRIMARY KEY, amount REAL NOT NULL, expires REAL NOT NULL);
CREATE TABLE IF NOT EXISTS held (counter TEXT NOT NULL, member TEXT NOT NULL, amount REAL NOT NULL,
                                 expires REAL NOT NULL, PRIMARY KEY (counter, member));
"""


class SharedFileCounters:
    def __init__(self, path: str, *, clock: Any = time.time) -> None:
        self.path = path
        self._clock = clock
        self._db = sqlite3.connect(path, timeout=10, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.executescript(_SCHEMA)

    def _now_ms(self) -> float:
        return float(self._clock()) * 1000

    async def admit(
        self, member: str, rpm: list[Rule], tpm: list[Rule], budgets: list[BudgetRule], reserve: float = 0.0
    ) -> Refusal | None:
        db, now = self._db, self._now_ms()
        db.execute("BEGIN IMMEDIATE")
        try:
            refusal = self._check(db, now, rpm, tpm, budgets)
            if refusal is None:
                db.executemany("INSERT INTO rpm VALUES (?, ?)", [(r.counter, now) for r in rpm])
                if reserve > 0:
                    db.executemany("INSERT OR REPLACE INTO held VALUES (?, ?, ?, ?)",
                                   [(b.counter, member, reserve, now + RESERVATION_TTL_MS) for b in budgets])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return refusal

    @staticmethod
    def _check(db: sqlite3.Connection, now: float, rpm: list[Rule], tpm: list[Rule],
               budgets: list[BudgetRule]) -> Refusal | None:
        for rule in rpm:
            db.execute("DELETE FROM rpm WHERE counter = ? AND at <= ?", (rule.counter, now - WINDOW_MS))
            count, oldest = db.execute("SELECT count(*), min(at) FROM rpm WHERE counter = ?",
                                       (rule.counter,)).fetchone()
            if count >= rule.limit:
                return Refusal(rule.which, (oldest + WINDOW_MS - now) / 1000)
        floor = int(now // 1000) - 59
        for rule in tpm:
            db.execute("DELETE FROM tpm WHERE counter = ? AND second < ?", (rule.counter, floor))
            total, oldest = db.execute("SELECT coalesce(sum(tokens), 0), min(second) FROM tpm WHERE counter = ?",
                                       (rule.counter,)).fetchone()
            if total >= rule.limit:
                return Refusal(rule.which, (oldest + 60) - now / 1000 if oldest is not None else 1.0)
        for budget in budgets:
            row = db.execute("SELECT amount FROM spend WHERE counter = ? AND expires > ?",
                             (budget.counter, now)).fetchone()
            if row is None:
                return Refusal(budget.which, None, missing=budget)
            if row[0] >= budget.max_budget:
                return Refusal(budget.which, budget_retry_after(budget))
            db.execute("DELETE FROM held WHERE counter = ? AND expires <= ?", (budget.counter, now))
            held = db.execute("SELECT coalesce(sum(amount), 0) FROM held WHERE counter = ?",
                              (budget.counter,)).fetchone()[0]
            if row[0] + held >= budget.max_budget:
                return Refusal(budget.which, HELD_RETRY_AFTER)
        return None

    async def add_usage(self, member: str, tpm_counters: list[str], tokens: int, budgets: list[BudgetRule],
                        cost: float) -> list[float]:
        db, now = self._db, self._now_ms()
        second = int(now // 1000)
        after: list[float] = []
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany("INSERT INTO tpm VALUES (?, ?, ?) ON CONFLICT (counter, second)"
                           " DO UPDATE SET tokens = tokens + excluded.tokens",
                           [(c, second, tokens) for c in tpm_counters])
            for budget in budgets:
                db.execute("DELETE FROM held WHERE counter = ? AND member = ?", (budget.counter, member))
                row = db.execute("UPDATE spend SET amount = amount + ?, expires = ? WHERE counter = ? AND expires > ?"
                                 " RETURNING amount", (cost, now + budget.ttl_seconds * 1000, budget.counter, now)
                                 ).fetchone() if cost > 0 else None
                after.append(row[0] if row is not None else math.nan)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return after

    async def seed_spend(self, rule: BudgetRule, amount: float) -> None:
        now = self._now_ms()
        self._db.execute("INSERT INTO spend VALUES (?, ?, ?) ON CONFLICT (counter) DO UPDATE"
                         " SET amount = excluded.amount, expires = excluded.expires WHERE spend.expires <= ?",
                         (rule.counter, amount, now + rule.ttl_seconds * 1000, now))

    async def spend(self, rule: BudgetRule) -> float:
        row = self._db.execute("SELECT amount FROM spend WHERE counter = ? AND expires > ?",
                               (rule.counter, self._now_ms())).fetchone()
        return float(row[0]) if row is not None else 0.0

    async def has_spend(self, rule: BudgetRule) -> bool:
        row = self._db.execute("SELECT 1 FROM spend WHERE counter = ? AND expires > ?",
                               (rule.counter, self._now_ms())).fetchone()
        return row is not None

    async def aclose(self) -> None:
        self._db.close()
