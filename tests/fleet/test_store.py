from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import inspect

from corral.fleet.store import EventRow, FleetStore
from corral.store.engine import make_engine


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'fleet.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[FleetStore]:
    s = FleetStore(make_engine(db_url))
    await s.migrate()
    try:
        yield s
    finally:
        await s.close()


def _row(node: str, seq: int, kind: str = "usage", tokens: int = 10, cost: float = 0.5) -> EventRow:
    return EventRow(node_id=node, seq=seq, envelope_id=f"e{seq}", type=kind, session_id="s1", project="p",
                    model="m", input_tokens=tokens, output_tokens=tokens, cost_usd=cost, ts=time.time(), data={})


async def test_migration_creates_fleet_tables_with_their_own_version_table(store: FleetStore) -> None:
    await store.migrate()  # idempotent
    async with store.engine.connect() as conn:
        names = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    assert {"fleet_nodes", "fleet_sessions", "fleet_events", "fleet_commands", "fleet_audit",
            "fleet_provider_costs", "corral_fleet_alembic_version"} <= names
    assert "alembic_version" not in names


async def test_events_are_stored_exactly_once_by_node_and_seq(store: FleetStore) -> None:
    first = await store.insert_events([_row("a", 1), _row("a", 2), _row("b", 1)])
    again = await store.insert_events([_row("a", 2), _row("a", 3), _row("b", 1)])
    assert first == {("a", 1), ("a", 2), ("b", 1)}
    assert again == {("a", 3)}
    rows = await store.list_events(limit=100)
    assert [(r["node_id"], r["seq"]) for r in rows] == [("a", 1), ("a", 2), ("b", 1), ("a", 3)]
    assert await store.max_seq("a") == 3


async def test_session_rows_are_written_in_the_event_transaction(store: FleetStore) -> None:
    seen: list[set[tuple[str, int]]] = []

    def sessions_for(new: set[tuple[str, int]]) -> list[dict[str, object]]:
        seen.append(new)
        return [{"session_id": "s1", "node_id": "a", "project": "p", "backend": "b", "model": "m",
                 "state": "idle", "input_tokens": 5 * len(new), "output_tokens": 0, "cost_usd": 0.0,
                 "compactions": 0, "created_at": 1.0, "last_activity": 2.0}]

    await store.insert_events([_row("a", 1), _row("a", 2)], sessions_for)
    await store.insert_events([_row("a", 2)], sessions_for)
    assert seen == [{("a", 1), ("a", 2)}, set()]
    sessions = await store.load_sessions()
    assert sessions[0]["input_tokens"] == 0  # the second call wrote 5 * 0


async def test_cost_report_groups_usage_by_session_node_project_and_model(store: FleetStore) -> None:
    await store.insert_events([_row("a", 1, cost=0.25), _row("a", 2, cost=0.5), _row("b", 1, cost=1.0),
                               _row("b", 2, kind="session.idle", tokens=0, cost=0.0)])
    report = await store.cost_report(time.time() - 60)
    assert report["total_cost_usd"] == pytest.approx(1.75)
    assert report["by_node"]["a"]["cost_usd"] == pytest.approx(0.75)
    assert report["by_node"]["b"] == {"cost_usd": pytest.approx(1.0), "tokens": 20}
    assert report["by_project"]["p"]["tokens"] == 60 and report["by_model"]["m"]["cost_usd"] == pytest.approx(1.75)
    assert (await store.cost_report(time.time() + 60))["total_cost_usd"] == 0


async def test_commands_keep_idempotency_keys_unique(store: FleetStore) -> None:
    row = {"command_id": "c1", "idempotency_key": "k", "type": "kill", "node_id": "a", "target": {}, "args": {},
           "status": "pending", "output": None, "error": None, "actor": "t", "created_at": 1.0, "finished_at": None}
    assert await store.insert_command(row) is True
    assert await store.insert_command({**row, "command_id": "c2"}) is False
    await store.finish_command("c1", "success", {"ok": True}, None)
    found = await store.get_command(idempotency_key="k")
    assert found is not None and found["status"] == "success" and found["output"] == {"ok": True}


async def test_audit_purge_removes_only_entries_past_retention(store: FleetStore) -> None:
    now = time.time()
    base = {"actor": "a", "action": "x", "target": None, "args": {}, "result": "success", "error": None,
            "source": None}
    await store.insert_audit([{**base, "ts": now - 100 * 86400}, {**base, "ts": now - 10}])
    assert await store.purge_audit(now - 90 * 86400) == 1
    assert [r["ts"] for r in await store.list_audit()] == [pytest.approx(now - 10)]


async def test_event_rows_round_trip_every_column_in_batches_over_one_statement(store: FleetStore) -> None:
    data = {"text": "héllo ✓ \u2028", "n": [1, 2.5, {"deep": None, "ok": True}]}
    rows = [EventRow(node_id="a", seq=seq, envelope_id=f"e{seq}", type="usage", session_id="s1", project="p",
                     model="m", input_tokens=seq, output_tokens=2 * seq, cost_usd=seq / 4, ts=1700000000.5 + seq,
                     data={**data, "seq": seq})
            for seq in range(1, 1203)]  # over the 1,000 events of one statement
    new = await store.insert_events(rows[:700] + rows[600:])  # 100 repeated inside one call
    assert new == {("a", seq) for seq in range(1, 1203)}
    stored = await store.list_events(node_id="a", limit=2000)
    assert len(stored) == 1202
    last = stored[-1]
    assert {k: last[k] for k in ("seq", "envelope_id", "type", "session_id", "project", "model", "input_tokens",
                                 "output_tokens", "cost_usd", "ts", "data")} == {
        "seq": 1202, "envelope_id": "e1202", "type": "usage", "session_id": "s1", "project": "p", "model": "m",
        "input_tokens": 1202, "output_tokens": 2404, "cost_usd": 300.5, "ts": 1700001202.5,
        "data": {**data, "seq": 1202}}
    assert last["received_at"] > 1700000000
