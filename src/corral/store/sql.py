"""Hot insert statements written out, for the batch paths where SQLAlchemy's
per-parameter processing of a large insert cost more CPU than the database storing
the rows (the usage writer, the fleet's event store). The SQL is the same on SQLite
and Postgres; only the placeholders differ (qmark for sqlite3, numeric_dollar for
asyncpg)."""

from __future__ import annotations

from functools import lru_cache


@lru_cache(maxsize=16)  # a 1,000-row numeric_dollar statement is ~100 KB
def insert_values(table: str, columns: tuple[str, ...], rows: int, paramstyle: str, tail: str) -> str:
    """``INSERT INTO table (columns) VALUES (...), ... <tail>`` for `rows` rows, built once
    per shape (a batch's row count takes few values: the full chunk, and the remainders)."""
    width = len(columns)
    if paramstyle == "qmark":
        values = ["(" + ", ".join("?" * width) + ")"] * rows
    elif paramstyle == "numeric_dollar":
        values = ["(" + ", ".join(f"${n * width + i + 1}" for i in range(width)) + ")" for n in range(rows)]
    else:
        raise ValueError(f"no written-out inserts for paramstyle {paramstyle!r}")
    return f"INSERT INTO {table} ({', '.join(columns)}) VALUES {', '.join(values)} {tail}"
