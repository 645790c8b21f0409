"""Conversation memory in the store: a session's messages as the runner's history.

Messages are appended as they happened. After a compaction a ``summary`` record holds
a snapshot of the compacted conversation; history then starts from the latest
snapshot, so the transcript stays complete while the model sees the short form."""

from __future__ import annotations

from typing import Any

from corral.agents.messages import message_to_json, messages_from_json, messages_to_json
from corral.agents.spec import RunState
from corral.llm.types import Message
from corral.store import SessionRecord, Store

SUMMARY_ROLE = "summary"


class SessionConflict(Exception):
    pass


async def ensure_session(store: Store, session_id: str, agent: str, *, owner: str | None = None,
                         variables: dict[str, Any] | None = None) -> SessionRecord:
    record = await store.sessions.get(session_id)
    if record is None:
        metadata = {"variables": dict(variables or {})}
        try:
            return await store.sessions.create(SessionRecord(session_id, agent, owner, metadata=metadata))
        except Exception:  # a concurrent request created it first
            record = await store.sessions.get(session_id)
            if record is None:
                raise
    if record.agent != agent:
        raise SessionConflict(f"session {session_id!r} belongs to agent {record.agent!r}, not {agent!r}")
    if owner is not None and record.owner not in (None, owner):
        raise SessionConflict(f"session {session_id!r} belongs to another key")
    return record


async def load_history(store: Store, session_id: str) -> list[Message]:
    records = await store.sessions.messages(session_id)
    start = 0
    history: list[Message] = []
    for index in range(len(records) - 1, -1, -1):
        if records[index].role == SUMMARY_ROLE:
            history = messages_from_json(records[index].content.get("messages", []))
            start = index + 1
            break
    history.extend(messages_from_json([r.content for r in records[start:]]))
    return history


async def save_run_messages(store: Store, session_id: str, state: RunState, run_id: str) -> None:
    new = state.messages[state.base:]
    entries: list[tuple[str, Any]] = [(m.role, message_to_json(m)) for m in new]
    if state.compacted:
        entries.append((SUMMARY_ROLE, {"messages": messages_to_json(state.messages)}))
    if entries:
        await store.sessions.append_messages(session_id, entries, run_id=run_id)
    state.base = len(state.messages)
    state.compacted = False
