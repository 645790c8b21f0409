"""In-memory view of nodes and sessions, mirrored to the store.

Nodes are online while frames arrive; the monitor marks them offline after
``heartbeat_interval x missed_count`` of silence and their sessions unreachable.

Memory holds the sessions that can still change and the recently finished ones. A finished
(``completed``) session leaves memory after ``finished_retention`` seconds, or sooner when more
than ``max_finished`` finished sessions are held (the oldest go first); its row stays in the
store, which the HTTP API reads for it. An event or a command for an evicted session first
brings its stored row back (`restore_evicted`), so its totals keep counting from the stored ones.
"""

from __future__ import annotations

import dataclasses
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from corral.fleet.protocol import RegisterPayload

if TYPE_CHECKING:
    from corral.fleet.store import FleetStore

ACTIVE_STATES = ("running", "idle", "compacted", "error")
FINISHED_STATES = ("completed",)

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
    def __init__(self, *, finished_retention: float = 3600.0, max_finished: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.nodes: dict[str, NodeState] = {}
        self.sessions: dict[str, SessionState] = {}
        self.finished_retention, self.max_finished = finished_retention, max_finished
        self.evicted_total = 0
        self._clock = clock
        # finished sessions in memory -> when they were seen finished, oldest first
        self._finished: OrderedDict[str, float] = OrderedDict()
        # sessions of a batch being stored: not evicted before its commit
        self._pinned: set[str] = set()

    def load(self, nodes: list[dict[str, Any]], sessions: list[dict[str, Any]]) -> None:
        for row in nodes:
            node = NodeState(**row)
            # nobody is connected to a freshly started supervisor
            node.status = "offline"
            self.nodes[node.node_id] = node
        finished = sorted((r for r in sessions if r["state"] in FINISHED_STATES), key=lambda r: r["last_activity"])
        kept = finished[len(finished) - self.max_finished:] if self.max_finished else []
        for row in [*(r for r in sessions if r["state"] not in FINISHED_STATES), *kept]:
            session = SessionState(**row)
            if session.state in ACTIVE_STATES:
                session.state = "unreachable"
            self.sessions[session.session_id] = session
            self._track(session)

    # ---- finished sessions: retention in memory --------------------------------------

    def _track(self, session: SessionState) -> None:
        if session.state in FINISHED_STATES:
            self._finished.setdefault(session.session_id, self._clock())
        else:
            self._finished.pop(session.session_id, None)

    @property
    def finished_in_memory(self) -> int:
        return len(self._finished)

    def evict(self) -> list[str]:
        """Drop finished sessions held longer than the retention, and the oldest beyond
        ``max_finished``; their rows are in the store already. O(1) when none is due."""
        now = self._clock()
        evicted: list[str] = []
        kept: list[tuple[str, float]] = []  # pinned: due, but back in front afterwards
        while self._finished:
            session_id, since = next(iter(self._finished.items()))
            if now - since < self.finished_retention and len(self._finished) + len(kept) <= self.max_finished:
                break  # the rest finished later
            self._finished.popitem(last=False)
            if session_id in self._pinned:
                kept.append((session_id, since))
                continue
            session = self.sessions.get(session_id)
            if session is not None and session.state in FINISHED_STATES:
                del self.sessions[session_id]
                evicted.append(session_id)
        for session_id, since in reversed(kept):
            self._finished[session_id] = since
            self._finished.move_to_end(session_id, last=False)
        self.evicted_total += len(evicted)
        return evicted

    def restore(self, rows: Iterable[dict[str, Any]]) -> None:
        """Put stored sessions back in memory."""
        for row in rows:
            if row["session_id"] not in self.sessions:
                session = self.sessions[row["session_id"]] = SessionState(**row)
                self._track(session)

    async def restore_evicted(self, store: FleetStore, session_ids: Iterable[str | None], *,
                              pin: bool = False) -> None:
        """Before applying anything to these sessions: bring back the stored rows of those not
        in memory, so their totals continue from the stored ones instead of from zero. No
        store read when every one is in memory (the usual case). ``pin`` keeps them all in
        memory until the next `commit`, for a caller that awaits before applying."""
        wanted = {sid for sid in session_ids if sid}
        absent: set[str] = set()  # in the store neither: new sessions
        for _ in range(3):  # one evicted again while the store was read: read it once more
            missing = sorted(wanted - absent - self.sessions.keys())
            if not missing:
                break
            rows = await store.get_sessions(missing)
            self.restore(rows)
            absent.update(set(missing) - {row["session_id"] for row in rows})
        if pin:
            self._pinned.update(wanted & self.sessions.keys())

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
        for session in changed:
            self._track(session)
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
        if scratch is None:
            self._track(session)
        return session

    def commit(self, scratch: dict[str, SessionState]) -> None:
        for session_id, copy in scratch.items():
            live = self.sessions.get(session_id)
            if live is None:
                self.sessions[session_id] = live = copy
            else:
                # keep the live object (others hold references); take the new values
                live.__dict__.update(copy.__dict__)
            self._track(live)
        self._pinned.clear()
        self.evict()

    def node_for_project(self, project: str) -> NodeState | None:
        for node in self.nodes.values():
            if node.status == "online" and project in node.projects:
                return node
        return None
