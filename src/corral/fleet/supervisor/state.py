"""In-memory view of nodes and sessions, mirrored to the store.

Nodes are online while frames arrive; the monitor marks them offline after
``heartbeat_interval x missed_count`` of silence and their sessions unreachable.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from corral.fleet.protocol import RegisterPayload

ACTIVE_STATES = ("running", "idle", "compacted", "error")

# event type -> session state it implies
EVENT_STATES = {
    "session.started": "running",
    "session.running": "running",
    "session.idle": "idle",
    "session.compacted": "compacted",
    "session.error": "error",
    "session.completed": "completed",
    "session.killed": "completed",
}


@dataclass
class NodeState:
    node_id: str
    hostname: str = ""
    version: str = ""
    backends: list[str] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)
    status: str = "offline"
    address: str | None = None
    connected_at: float | None = None
    last_seen: float = 0.0

    def row(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SessionState:
    session_id: str
    node_id: str
    project: str | None = None
    backend: str | None = None
    model: str | None = None
    state: str = "idle"
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    compactions: int = 0
    created_at: float = field(default_factory=time.time)
    last_activity: float = field(default_factory=time.time)

    def row(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class FleetState:
    def __init__(self) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.sessions: dict[str, SessionState] = {}

    def load(self, nodes: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> None:
        for row in nodes:
            node = NodeState(**row)
            # nobody is connected to a freshly started supervisor
            node.status = "offline"
            self.nodes[node.node_id] = node
        for row in sessions:
            session = SessionState(**row)
            if session.state in ACTIVE_STATES:
                session.state = "unreachable"
            self.sessions[session.session_id] = session

    def register(self, reg: RegisterPayload, address: str | None, now: float) -> tuple[NodeState, list[SessionState]]:
        node = self.nodes.get(reg.node_id) or NodeState(node_id=reg.node_id)
        node.hostname, node.version = reg.hostname, reg.version
        node.backends, node.projects = list(reg.backends), list(reg.projects)
        node.status, node.address, node.connected_at, node.last_seen = "online", address, now, now
        self.nodes[node.node_id] = node
        changed: list[SessionState] = []
        reported = set()
        for snap in reg.sessions:
            reported.add(snap.session_id)
            session = self.sessions.get(snap.session_id) or SessionState(
                session_id=snap.session_id, node_id=node.node_id, created_at=now)
            session.node_id = node.node_id
            session.project = snap.project or session.project
            session.backend = snap.backend or session.backend
            session.model = snap.model or session.model
            session.state = snap.state if snap.state != "unreachable" else "idle"
            if session.state == "running":
                session.last_activity = max(session.last_activity, now)
            self.sessions[session.session_id] = session
            changed.append(session)
        for session in self.sessions.values():
            # sessions the node no longer has ended while we could not see them
            if session.node_id == node.node_id and session.session_id not in reported \
                    and session.state in (*ACTIVE_STATES, "unreachable"):
                session.state = "completed"
                changed.append(session)
        return node, changed

    def mark_offline(self, node_id: str) -> list[SessionState]:
        node = self.nodes.get(node_id)
        if node is None:
            return []
        node.status = "offline"
        changed = []
        for session in self.sessions.values():
            if session.node_id == node_id and session.state in ACTIVE_STATES:
                session.state = "unreachable"
                changed.append(session)
        return changed

    def apply_event(self, node_id: str, kind: str, session_id: str | None, payload: dict[str, Any],
                    tokens: tuple[int, int], cost: float, ts: float,
                    scratch: dict[str, SessionState] | None = None) -> SessionState | None:
        """Applies one stored event. With ``scratch``, changes go to copies kept there, so a
        batch whose transaction fails leaves the live state untouched (see `commit`)."""
        if not session_id:
            return None
        sessions = self.sessions if scratch is None else scratch
        session = sessions.get(session_id)
        if session is None and scratch is not None and session_id in self.sessions:
            session = sessions[session_id] = dataclasses.replace(self.sessions[session_id])
        if session is None and node_id == "supervisor":
            return None
        if session is None:
            session = SessionState(session_id=session_id, node_id=node_id, created_at=ts, last_activity=ts)
            sessions[session_id] = session
        data = payload.get("data") or {}
        session.project = payload.get("project") or session.project
        session.backend = data.get("backend") or session.backend
        session.model = data.get("model") or session.model
        session.input_tokens += tokens[0]
        session.output_tokens += tokens[1]
        session.cost_usd += cost
        session.last_activity = max(session.last_activity, ts)
        if kind == "session.compacted":
            session.compactions += 1
        state = EVENT_STATES.get(kind)
        if state:
            session.state = state
        return session

    def commit(self, scratch: dict[str, SessionState]) -> None:
        for session_id, copy in scratch.items():
            live = self.sessions.get(session_id)
            if live is None:
                self.sessions[session_id] = copy
            else:
                # keep the live object (others hold references); take the new values
                live.__dict__.update(copy.__dict__)

    def node_for_project(self, project: str) -> NodeState | None:
        for node in self.nodes.values():
            if node.status == "online" and project in node.projects:
                return node
        return None
