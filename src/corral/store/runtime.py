"""What the agent runtime persists: sessions, their messages, and runs with a queue.

A run is ``queued`` until a worker claims it (``running``, with a lease); the worker
finishes it as ``succeeded``, ``failed`` or ``cancelled``. A claim whose lease expired
(the worker died) can be claimed again. On Postgres the claim skips rows other workers
hold (``FOR UPDATE SKIP LOCKED``); SQLite serialises writers, so the same single
``UPDATE ... RETURNING`` statement is a transactional claim there.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import RowMapping, and_, bindparam, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from corral.store.models import agent_messages, agent_runs, agent_sessions

RunState = Literal["queued", "running", "succeeded", "failed", "cancelled"]
FINAL_STATES: frozenset[str] = frozenset({"succeeded", "failed", "cancelled"})


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class SessionRecord:
    id: str
    agent: str
    owner: str | None = None
    title: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class MessageRecord:
    session_id: str
    seq: int
    role: str
    content: Any
    run_id: str | None = None
    created_at: datetime = field(default_factory=_now)


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    agent: str
    state: str = "queued"
    session_id: str | None = None
    priority: int = 0
    input: dict[str, Any] = field(default_factory=dict)
    output: Any = None
    error: str | None = None
    attempts: int = 0
    claimed_by: str | None = None
    lease_expires_at: datetime | None = None
    created_at: datetime = field(default_factory=_now)
    updated_at: datetime = field(default_factory=_now)


def _fields(cls: Any, row: RowMapping) -> dict[str, Any]:
    return {name: row[name] for name in cls.__dataclass_fields__}


# The statements of every agent call, built once: an expression built per call (`c.id ==
# value`) leaves reference cycles (bind parameters and their comparators) for the cyclic
# garbage collector, which `corral serve` runs rarely (`corral.process`).
_INSERT_SESSION = agent_sessions.insert()
_GET_SESSION = select(agent_sessions).where(agent_sessions.c.id == bindparam("session_id"))
_TOUCH_SESSION = (update(agent_sessions).where(agent_sessions.c.id == bindparam("session_id"))
                  .values(updated_at=bindparam("now")))
_LAST_SEQ = select(func.coalesce(func.max(agent_messages.c.seq), 0)).where(
    agent_messages.c.session_id == bindparam("session_id"))


class SessionRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def create(self, record: SessionRecord) -> SessionRecord:
        async with self._engine.begin() as conn:
            await conn.execute(_INSERT_SESSION, _as_map(record))
        return record

    async def get(self, session_id: str) -> SessionRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_GET_SESSION, {"session_id": session_id})).mappings().first()
        return SessionRecord(**_fields(SessionRecord, row)) if row else None

    async def list(
        self, *, agent: str | None = None, owner: str | None = None, limit: int = 100
    ) -> list[SessionRecord]:
        query = select(agent_sessions).order_by(agent_sessions.c.updated_at.desc()).limit(limit)
        if agent is not None:
            query = query.where(agent_sessions.c.agent == agent)
        if owner is not None:
            query = query.where(agent_sessions.c.owner == owner)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [SessionRecord(**_fields(SessionRecord, row)) for row in rows]

    async def delete(self, session_id: str) -> bool:
        async with self._engine.begin() as conn:
            result = await conn.execute(delete(agent_sessions).where(agent_sessions.c.id == session_id))
        return result.rowcount > 0

    async def append_messages(
        self, session_id: str, messages: Sequence[tuple[str, Any]], *, run_id: str | None = None
    ) -> builtins.list[MessageRecord]:
        """Append ``(role, content)`` pairs with the next sequence numbers, atomically."""
        now = _now()
        async with self._engine.begin() as conn:
            # Writing the session row first takes its row lock (Postgres) or the database
            # write lock (SQLite) before reading max(seq), so concurrent appends never collide.
            if (await conn.execute(_TOUCH_SESSION, {"session_id": session_id, "now": now})).rowcount == 0:
                raise KeyError(session_id)
            start = int((await conn.execute(_LAST_SEQ, {"session_id": session_id})).scalar_one()) + 1
            records = [
                MessageRecord(session_id, start + i, role, content, run_id, now)
                for i, (role, content) in enumerate(messages)
            ]
            if records:
                await conn.execute(agent_messages.insert(), [_as_map(r) for r in records])
        return records

    async def messages(
        self, session_id: str, *, after_seq: int = 0, limit: int | None = None
    ) -> builtins.list[MessageRecord]:
        query, params = _MESSAGES, {"session_id": session_id, "after_seq": after_seq}
        if limit is not None:
            query, params["limit"] = _MESSAGES_LIMITED, limit
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query, params)).mappings().all()
        return [MessageRecord(**_fields(MessageRecord, row)) for row in rows]


class RunRepository:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def enqueue(self, record: RunRecord) -> RunRecord:
        async with self._engine.begin() as conn:
            await conn.execute(_INSERT_RUN, _as_map(record))
        return record

    async def get(self, run_id: str) -> RunRecord | None:
        async with self._engine.connect() as conn:
            row = (await conn.execute(_GET_RUN, {"run_id": run_id})).mappings().first()
        return RunRecord(**_fields(RunRecord, row)) if row else None

    async def list(
        self, *, session_id: str | None = None, state: str | None = None, limit: int = 100
    ) -> list[RunRecord]:
        query = select(agent_runs).order_by(agent_runs.c.created_at.desc()).limit(limit)
        if session_id is not None:
            query = query.where(agent_runs.c.session_id == session_id)
        if state is not None:
            query = query.where(agent_runs.c.state == state)
        async with self._engine.connect() as conn:
            rows = (await conn.execute(query)).mappings().all()
        return [RunRecord(**_fields(RunRecord, row)) for row in rows]

    async def claim(
        self, worker: str, *, lease_seconds: float = 60.0, agents: Sequence[str] | None = None
    ) -> RunRecord | None:
        """Take the most urgent claimable run for ``worker``, or None."""
        now = _now()
        params: dict[str, Any] = {"now": now, "worker": worker, "lease": now + timedelta(seconds=lease_seconds)}
        claim = _CLAIM
        if agents is not None:
            claim, params["agents"] = _CLAIM_OF_AGENTS, list(agents)
        async with self._engine.begin() as conn:
            row = (await conn.execute(claim, params)).mappings().first()
        return RunRecord(**_fields(RunRecord, row)) if row else None

    async def extend_lease(self, run_id: str, worker: str, *, lease_seconds: float = 60.0) -> bool:
        now = _now()
        query = (
            update(agent_runs)
            .where(agent_runs.c.id == run_id, agent_runs.c.claimed_by == worker, agent_runs.c.state == "running")
            .values(lease_expires_at=now + timedelta(seconds=lease_seconds), updated_at=now)
        )
        async with self._engine.begin() as conn:
            return (await conn.execute(query)).rowcount > 0

    async def save(
        self,
        run_id: str,
        *,
        input: dict[str, Any] | None = None,
        state: str | None = None,
        worker: str | None = None,
        release: bool = False,
        lease_seconds: float | None = None,
    ) -> bool:
        """Update a run that is not final: its input (the agent runtime keeps its checkpoint
        there), a non-final state (``input-required``, or ``queued`` to hand it back to the
        queue), the lease. With ``worker`` only that worker's claim is updated; ``release``
        clears the claim. False if the run is final or held by another worker."""
        if state is not None and state in FINAL_STATES:
            raise ValueError(f"use finish() for the final state {state}")
        now = _now()
        values: dict[str, Any] = {"updated_at": now}
        if input is not None:
            values["input"] = input
        if state is not None:
            values["state"] = state
        if release:
            values.update(claimed_by=None, lease_expires_at=None)
        elif lease_seconds is not None:
            values["lease_expires_at"] = now + timedelta(seconds=lease_seconds)
        query = update(agent_runs).where(agent_runs.c.id == run_id, agent_runs.c.state.not_in(FINAL_STATES))
        if worker is not None:
            query = query.where(agent_runs.c.claimed_by == worker)
        async with self._engine.begin() as conn:
            return (await conn.execute(query.values(**values))).rowcount > 0

    async def finish(
        self,
        run_id: str,
        state: RunState,
        *,
        output: Any = None,
        error: str | None = None,
        worker: str | None = None,
    ) -> bool:
        """Move a run to a final state; False if it was already final (or another worker holds it)."""
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state}")
        query = _FINISH_RUN if worker is None else _FINISH_RUN_OF_WORKER
        params = {"run_id": run_id, "worker": worker, "new_state": state, "new_output": output,
                  "new_error": error, "now": _now()}
        async with self._engine.begin() as conn:
            return (await conn.execute(query, params)).rowcount > 0



_MESSAGES = (select(agent_messages)
             .where(agent_messages.c.session_id == bindparam("session_id"),
                    agent_messages.c.seq > bindparam("after_seq"))
             .order_by(agent_messages.c.seq))
_MESSAGES_LIMITED = _MESSAGES.limit(bindparam("limit"))
_INSERT_RUN = agent_runs.insert()
_GET_RUN = select(agent_runs).where(agent_runs.c.id == bindparam("run_id"))
_NOT_FINAL = agent_runs.c.state.not_in(sorted(FINAL_STATES))
_FINISH_RUN = (update(agent_runs).where(agent_runs.c.id == bindparam("run_id"), _NOT_FINAL)
               .values(state=bindparam("new_state"), output=bindparam("new_output"), error=bindparam("new_error"),
                       lease_expires_at=None, updated_at=bindparam("now")))
_FINISH_RUN_OF_WORKER = _FINISH_RUN.where(agent_runs.c.claimed_by == bindparam("worker"))


def _claim(of_agents: bool) -> Any:
    """The claim: the most urgent run that is queued or whose lease ran out, taken in one
    statement (`claim`)."""
    claimable = or_(
        agent_runs.c.state == "queued",
        and_(agent_runs.c.state == "running", agent_runs.c.lease_expires_at < bindparam("now")),
    )
    pick = (
        select(agent_runs.c.id)
        .where(claimable)
        .order_by(agent_runs.c.priority.desc(), agent_runs.c.created_at, agent_runs.c.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if of_agents:
        pick = pick.where(agent_runs.c.agent.in_(bindparam("agents", expanding=True)))
    return (
        update(agent_runs)
        .where(agent_runs.c.id == pick.scalar_subquery(), claimable)
        .values(state="running", claimed_by=bindparam("worker"), attempts=agent_runs.c.attempts + 1,
                lease_expires_at=bindparam("lease"), updated_at=bindparam("now"))
        .returning(*agent_runs.c)
    )


_CLAIM = _claim(False)
_CLAIM_OF_AGENTS = _claim(True)

def _as_map(record: Any) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__dataclass_fields__}
