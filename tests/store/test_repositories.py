from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone

import pytest

from corral.store import AuditRecord, KeyRecord, RunRecord, SessionRecord, Store, TeamRecord, UsageRecord


async def test_keys_are_found_by_hash_and_revocation_hides_them_from_the_active_list(store: Store) -> None:
    await store.teams.create(TeamRecord(id="t1", name="research"))
    expires = datetime(2030, 1, 1, tzinfo=UTC)
    key = KeyRecord(
        id="k1",
        key_hash="a" * 64,
        key_prefix="sk-corral-abcd",
        team_id="t1",
        models=("gpt", "claude"),
        max_budget=5.0,
        budget_duration="30d",
        rpm=100,
        tpm=1000,
        model_limits={"gpt": {"rpm": 5}},
        expires_at=expires,
        metadata={"owner": "ana"},
    )
    await store.keys.create(key)
    found = await store.keys.get_by_hash("a" * 64)
    assert found is not None
    assert found.models == ("gpt", "claude")
    assert found.model_limits == {"gpt": {"rpm": 5}}
    assert found.expires_at == expires and found.expires_at.tzinfo is not None
    assert found.team_id == "t1" and found.metadata == {"owner": "ana"}

    revoked = await store.keys.revoke("k1")
    assert revoked is not None and revoked.revoked
    assert await store.keys.list() == []
    assert [k.id for k in await store.keys.list(include_revoked=True)] == ["k1"]
    assert await store.keys.rotate("k1", key_hash="b" * 64, key_prefix="sk-corral-x") is None


async def test_rotate_replaces_the_hash_and_keeps_the_id(store: Store) -> None:
    await store.keys.create(KeyRecord(id="k1", key_hash="a" * 64, key_prefix="sk-corral-aaaa"))
    rotated = await store.keys.rotate("k1", key_hash="b" * 64, key_prefix="sk-corral-bbbb")
    assert rotated is not None and rotated.id == "k1" and rotated.rotated_at is not None
    assert await store.keys.get_by_hash("a" * 64) is None
    assert (await store.keys.get_by_hash("b" * 64)) == rotated


async def test_usage_insert_is_exactly_once_per_usage_id_not_per_client_request_id(store: Store) -> None:
    first = [UsageRecord(request_id=f"r{i}", model="gpt", key_id="k1", cost_usd=0.5) for i in range(3)]
    assert await store.usage.insert_many(first) == 3
    # A replay of the same rows (a spool shipped twice) adds nothing; a client reusing
    # its request id for a new call is a new row.
    again = [*first, UsageRecord(request_id="r2", model="gpt", key_id="k1", cost_usd=0.25)]
    assert await store.usage.insert_many(again) == 1
    assert await store.usage.count() == 4
    assert await store.usage.total_cost("k1") == pytest.approx(1.75)


async def test_usage_times_are_stored_to_the_microsecond_as_utc_whatever_their_zone(store: Store) -> None:
    plus5 = datetime(2026, 3, 2, 4, 30, 0, 123456, tzinfo=timezone(timedelta(hours=5)))  # 23:30:00.123456 UTC
    whole = datetime(2026, 3, 1, 23, 30, 1, tzinfo=UTC)  # no microseconds: still stored with them
    await store.usage.insert_many([UsageRecord("z", "gpt", key_id="k1", cost_usd=1.0, ts=plus5),
                                   UsageRecord("u", "gpt", key_id="k1", cost_usd=2.0, ts=whole)])
    stored = await store.usage.get("z")
    assert stored is not None and stored.ts == plus5
    assert await store.usage.total_cost("k1", since=plus5) == 3.0
    assert await store.usage.total_cost("k1", since=plus5 + timedelta(microseconds=1)) == 2.0
    assert await store.usage.total_cost("k1", since=whole) == 2.0
    assert await store.usage.total_cost("k1", since=whole + timedelta(microseconds=1)) == 0.0
    assert {r.group: r.cost_usd for r in await store.usage.spend("day")} == {"2026-03-01": 3.0}


async def test_spend_groups_by_key_model_and_utc_day(store: Store) -> None:
    day1 = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    day2 = day1 + timedelta(hours=1)
    await store.usage.insert_many(
        [
            UsageRecord("a", "gpt", key_id="k1", input_tokens=10, output_tokens=5, cost_usd=1.0, ts=day1),
            UsageRecord("b", "claude", key_id="k1", input_tokens=1, output_tokens=1, cost_usd=2.0, ts=day2),
            UsageRecord("c", "gpt", key_id="k2", input_tokens=3, output_tokens=3, cost_usd=4.0, ts=day2),
        ]
    )
    by_key = {r.group: (r.requests, r.cost_usd) for r in await store.usage.spend("key")}
    assert by_key == {"k1": (2, 3.0), "k2": (1, 4.0)}
    by_model = {r.group: (r.requests, r.input_tokens, r.output_tokens) for r in await store.usage.spend("model")}
    assert by_model == {"claude": (1, 1, 1), "gpt": (2, 13, 8)}
    by_day = {r.group: r.cost_usd for r in await store.usage.spend("day")}
    assert by_day == {"2026-03-01": 1.0, "2026-03-02": 6.0}
    since = {r.group: r.cost_usd for r in await store.usage.spend("key", since=day2)}
    assert since == {"k1": 2.0, "k2": 4.0}
    assert await store.usage.total_cost("k1", since=day2) == 2.0


async def test_spend_of_a_jwt_subject_counts_only_its_calls_made_without_a_key(store: Store) -> None:
    await store.usage.insert_many([
        UsageRecord("a", "gpt", subject="ana@example.com", team_id="research", cost_usd=1.0),
        UsageRecord("b", "gpt", subject="ana@example.com", team_id="research", cost_usd=0.5),
        UsageRecord("c", "gpt", key_id="k1", subject="ana@example.com", team_id="research", cost_usd=4.0),
        UsageRecord("d", "gpt", subject="bob@example.com", cost_usd=8.0),
    ])
    assert await store.usage.total_cost(subject="ana@example.com") == pytest.approx(1.5)
    assert await store.usage.total_cost(team_id="research") == pytest.approx(5.5)
    by_subject = {r.group: r.requests for r in await store.usage.spend("subject")}
    assert by_subject == {"ana@example.com": 3, "bob@example.com": 1}
    assert {r.group: r.cost_usd for r in await store.usage.spend("team")} == {None: 8.0, "research": 5.5}
    with pytest.raises(ValueError, match="exactly one"):
        await store.usage.total_cost("k1", subject="ana@example.com")


async def test_audit_records_round_trip(store: Store) -> None:
    await store.audit.insert_many([AuditRecord(actor="master", action="key.create", target="k1", detail={"a": 1})])
    [record] = await store.audit.list(target="k1")
    assert (record.actor, record.action, record.detail) == ("master", "key.create", {"a": 1})


async def test_messages_get_consecutive_seqs_under_concurrent_appends(store: Store) -> None:
    await store.sessions.create(SessionRecord(id="s1", agent="helper", owner="ana"))
    await asyncio.gather(*(store.sessions.append_messages("s1", [("user", {"text": str(i)})]) for i in range(8)))
    messages = await store.sessions.messages("s1")
    assert [m.seq for m in messages] == list(range(1, 9))
    assert sorted(m.content["text"] for m in messages) == [str(i) for i in range(8)]
    assert [m.seq for m in await store.sessions.messages("s1", after_seq=6)] == [7, 8]
    with pytest.raises(KeyError):
        await store.sessions.append_messages("missing", [("user", "x")])
    assert await store.sessions.delete("s1")
    assert await store.sessions.messages("s1") == []


async def test_each_queued_run_is_claimed_by_exactly_one_worker(store: Store) -> None:
    base = datetime.now(UTC)
    for i in range(6):
        await store.runs.enqueue(RunRecord(id=f"run{i}", agent="a", created_at=base + timedelta(seconds=i)))
    await store.runs.enqueue(RunRecord(id="urgent", agent="a", priority=5, created_at=base + timedelta(seconds=9)))
    claims = await asyncio.gather(*(store.runs.claim(f"w{i}") for i in range(10)))
    claimed = [c.id for c in claims if c is not None]
    assert sorted(claimed) == sorted(["urgent", *(f"run{i}" for i in range(6))])
    first = await store.runs.claim("late")
    assert first is None
    run = await store.runs.get("urgent")
    assert run is not None and run.state == "running" and run.attempts == 1


async def test_a_run_whose_lease_expired_is_claimed_again_and_finish_is_final(store: Store) -> None:
    await store.runs.enqueue(RunRecord(id="r", agent="a", input={"q": 1}))
    claimed = await store.runs.claim("w1", lease_seconds=-1)
    assert claimed is not None and claimed.claimed_by == "w1"
    again = await store.runs.claim("w2", lease_seconds=60)
    assert again is not None and again.claimed_by == "w2" and again.attempts == 2
    assert not await store.runs.finish("r", "succeeded", worker="w1")
    assert await store.runs.finish("r", "succeeded", output={"answer": 42}, worker="w2")
    assert not await store.runs.finish("r", "failed")
    done = await store.runs.get("r")
    assert done is not None and done.state == "succeeded" and done.output == {"answer": 42}
    assert [r.id for r in await store.runs.list(state="succeeded")] == ["r"]


async def test_an_agent_call_store_round_leaves_no_garbage_for_the_cycle_collector(store: Store) -> None:
    """`corral serve` runs the cyclic collector rarely (corral.process); what an agent call
    does in the store (session, messages, a run to its end) must free itself by
    reference counting, or memory climbs until the next collection (the soak)."""
    import gc

    async def one_call(n: int) -> None:
        await store.sessions.create(SessionRecord(id=f"g{n}", agent="helper"))
        assert await store.sessions.get(f"g{n}") is not None
        await store.sessions.append_messages(f"g{n}", [("user", "hi"), ("assistant", "hello")])
        assert len(await store.sessions.messages(f"g{n}", limit=10)) == 2
        await store.runs.enqueue(RunRecord(id=f"r{n}", agent="helper", session_id=f"g{n}"))
        claimed = await store.runs.claim("w", agents=["helper"])
        assert claimed is not None and claimed.id == f"r{n}"
        assert await store.runs.finish(f"r{n}", "succeeded", output={"text": "hello"}, worker="w")
        assert (await store.runs.get(f"r{n}")).state == "succeeded"

    await one_call(0)  # warm: statement caches, connections
    gc.collect()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        for n in range(1, 6):
            await one_call(n)
        gc.collect()
        leftovers = [type(o).__name__ for o in gc.garbage]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert leftovers == []
