"""The fleet wire protocol: versioned JSON envelopes over one WebSocket per node.

Every frame is ``{v, type, id, ts, seq, payload}``. ``seq`` is set only on ``event``
frames: the node numbers its events 1, 2, 3... and the supervisor acknowledges each
one after it is durably stored, so a node can resend what was not acknowledged and
the supervisor can drop what it already has. An ``events`` frame carries several event
frames, unchanged, in ``payload.events``; a node sends it only to a supervisor whose
``registered`` advertises ``max_batch_events``. See docs/fleet-protocol.md.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024
# events in one `events` frame; the supervisor advertises it in `registered`
MAX_BATCH_EVENTS = 1000

MessageType = Literal[
    "register", "registered", "heartbeat", "event", "events", "ack", "command", "command_result", "error"
]
MESSAGE_TYPES: frozenset[str] = frozenset(MessageType.__args__)  # type: ignore[attr-defined]

COMMAND_TYPES = ("start", "prompt", "resume", "restart", "kill", "status")
SESSION_STATES = ("running", "idle", "compacted", "error", "completed", "unreachable")


class ProtocolError(Exception):
    """A frame that cannot be accepted. ``code`` goes into the ``error`` frame."""

    def __init__(self, code: str, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.ref = ref


@dataclass(slots=True)
class Envelope:
    type: str
    payload: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = field(default_factory=time.time)
    seq: int | None = None
    v: int = PROTOCOL_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"v": self.v, "type": self.type, "id": self.id, "ts": self.ts, "seq": self.seq,
                "payload": self.payload}


def encode(envelope: Envelope) -> str:
    return orjson.dumps(envelope.to_dict()).decode()


def encode_batch(frames: Sequence[str]) -> str:
    """One ``events`` frame around already-encoded ``event`` frames, which are spliced in
    as they are (``payload`` is the envelope's last key), not parsed and encoded again."""
    empty = encode(Envelope(type="events", payload={"events": []}))
    return f"{empty[:-3]}{','.join(frames)}]}}}}"


_BATCH_OVERHEAD = len(encode_batch([])) + 8  # the wrapper's bytes; + 8 in case of a longer ts


def batch_frames(pending: Sequence[tuple[int, str]], *, max_events: int, max_bytes: int) -> list[tuple[int, str]]:
    """Groups encoded ``event`` frames, in order, into frames to send: ``(last seq, frame)``.

    A group is at most ``max_events`` events and ``max_bytes`` bytes of frame; a group of
    one is sent as the plain ``event`` frame (so ``max_events <= 1`` sends every event
    alone, as a supervisor that does not take ``events`` frames needs)."""
    out: list[tuple[int, str]] = []
    group: list[str] = []
    size = _BATCH_OVERHEAD
    last = 0

    def close() -> None:
        out.append((last, group[0] if len(group) == 1 else encode_batch(group)))

    for seq, frame in pending:
        length = len(frame) if frame.isascii() else len(frame.encode())
        if group and (len(group) >= max_events or size + length + 1 > max_bytes):
            close()
            group, size = [], _BATCH_OVERHEAD
        group.append(frame)
        size += length + 1
        last = seq
    if group:
        close()
    return out


# ---- payloads ---------------------------------------------------------------


class _Payload(BaseModel):
    model_config = ConfigDict(extra="allow")


class SessionSnapshot(_Payload):
    session_id: str
    project: str | None = None
    backend: str | None = None
    state: str = "idle"
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0


class RegisterPayload(_Payload):
    node_id: str = Field(min_length=1, max_length=200)
    hostname: str = ""
    version: str = ""
    backends: list[str] = Field(default_factory=list)
    projects: list[str] = Field(default_factory=list)
    sessions: list[SessionSnapshot] = Field(default_factory=list)
    last_seq: int = 0


class RegisteredPayload(_Payload):
    node_id: str
    heartbeat_interval_seconds: float
    max_frame_bytes: int
    max_batch_events: int = 0  # 0: this supervisor takes no `events` frames (before they existed)


class HeartbeatPayload(_Payload):
    sessions: int = 0


class EventPayload(_Payload):
    type: str = Field(min_length=1, max_length=100)
    session_id: str | None = None
    project: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


class EventsPayload(_Payload):
    events: list[Any] = Field(min_length=1)  # each one a whole `event` frame, checked by `split_batch`


class AckPayload(_Payload):
    seqs: list[int]


class CommandPayload(_Payload):
    command_id: str
    type: str
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: float = 30.0


class CommandResultPayload(_Payload):
    command_id: str
    status: Literal["success", "failure", "timeout"]
    output: dict[str, Any] = Field(default_factory=dict)
    error: str | None = None


class ErrorPayload(_Payload):
    code: str
    message: str
    ref: str | None = None  # the id of the frame that caused it, when known


PAYLOADS: dict[str, type[_Payload]] = {
    "register": RegisterPayload,
    "registered": RegisteredPayload,
    "heartbeat": HeartbeatPayload,
    "event": EventPayload,
    "events": EventsPayload,
    "ack": AckPayload,
    "command": CommandPayload,
    "command_result": CommandResultPayload,
    "error": ErrorPayload,
}


def decode(raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
           max_batch: int = MAX_BATCH_EVENTS) -> Envelope:
    """Parse and validate one frame; raises ProtocolError with a stable code.

    The entries of an ``events`` frame are checked by `split_batch`, one by one."""
    size = _size(raw, max_bytes)
    if size > max_bytes:
        raise ProtocolError("frame_too_large", f"frame of {size} bytes exceeds the limit of {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_envelope", "frame must be a JSON object")
    env = _envelope(data)
    if env.type == "events":
        events = env.payload.get("events")
        if isinstance(events, list) and len(events) > max_batch:
            raise ProtocolError("batch_too_large", f"events frame of {len(events)} events exceeds the limit of "
                                f"{max_batch}", env.id)
    return env


def split_batch(batch: Envelope) -> tuple[list[Envelope], list[ProtocolError]]:
    """The valid ``event`` frames of an ``events`` frame, and an error for each invalid one
    (``events[i] (seq n): ...``, ``ref`` its id): the valid ones are stored and
    acknowledged as if each had come alone, the invalid ones are not."""
    valid: list[Envelope] = []
    errors: list[ProtocolError] = []
    for index, entry in enumerate(batch.payload["events"]):
        try:
            if not isinstance(entry, dict):
                raise ProtocolError("invalid_envelope", "must be an event frame (a JSON object)")
            env = _envelope(entry)
            if env.type != "event":
                raise ProtocolError("invalid_envelope", f"must be an event frame, not {env.type!r}", env.id)
            valid.append(env)
        except ProtocolError as exc:
            seq = entry.get("seq") if isinstance(entry, dict) else None
            where = f"events[{index}]" + (f" (seq {seq})" if isinstance(seq, int) else "")
            errors.append(ProtocolError(exc.code, f"{where}: {exc.message}", exc.ref or batch.id))
    return valid, errors


def _size(raw: str | bytes, limit: int) -> int:
    """The frame's size in bytes, without encoding a str unless its length leaves it in doubt."""
    if isinstance(raw, bytes | bytearray | memoryview):
        return len(raw)
    if len(raw) > limit or len(raw) * 4 <= limit:  # UTF-8 takes 1 to 4 bytes a character
        return len(raw)
    return len(raw.encode())


def _envelope(data: dict[str, Any]) -> Envelope:
    # `type(x) in (...)`, not isinstance: JSON gives exact types, and bool is not a number here
    ref = data.get("id")
    if type(ref) is not str:
        ref = None
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version", f"protocol version must be {PROTOCOL_VERSION}", ref)
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}", ref)
    if not ref:
        raise ProtocolError("invalid_envelope", "frame needs a non-empty string id")
    ts: Any = data.get("ts")
    if type(ts) not in _NUMBERS or ts <= 0:
        raise ProtocolError("invalid_envelope", "ts must be a positive number (unix seconds)", ref)
    seq: Any = data.get("seq")
    if kind == "event":
        if type(seq) is not int or seq < 1:
            raise ProtocolError("invalid_envelope", "event frames need seq >= 1", ref)
    else:
        seq = None
    payload = data.get("payload", {})
    if type(payload) is not dict:
        raise ProtocolError("invalid_payload", "payload must be an object", ref)
    check = _FAST_CHECKS.get(kind)
    problem = check(payload) if check is not None else _model_problem(kind, payload)
    if problem:
        raise ProtocolError("invalid_payload", f"{kind} payload: {problem}", ref)
    return Envelope(kind, payload, ref, float(ts), seq)


_NUMBERS = (int, float)


def _model_problem(kind: str, payload: dict[str, Any]) -> str | None:
    try:
        PAYLOADS[kind].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        return f"{'.'.join(str(p) for p in first['loc'])}: {first['msg']}"
    return None


def _event_problem(payload: dict[str, Any]) -> str | None:
    """`EventPayload`'s rules, checked by hand: events are most of the traffic, and a
    pydantic validation per event was a tenth of the supervisor's time."""
    kind = payload.get("type")
    if type(kind) is not str or not 1 <= len(kind) <= 100:
        if "type" not in payload:
            return "type: Field required"
        if not isinstance(kind, str):
            return "type: Input should be a valid string"
        return "type: String should have 1 to 100 characters"
    session_id, project = payload.get("session_id"), payload.get("project")
    if not (session_id is None or type(session_id) is str):
        return "session_id: Input should be a valid string"
    if not (project is None or type(project) is str):
        return "project: Input should be a valid string"
    if "data" in payload and type(payload["data"]) is not dict:
        return "data: Input should be a valid dictionary"
    return None


def _events_problem(payload: dict[str, Any]) -> str | None:
    events = payload.get("events")
    if not isinstance(events, list):
        return "events: Field required" if events is None else "events: Input should be a valid list"
    if not events:
        return "events: List should have at least 1 item after validation, not 0"
    return None


_FAST_CHECKS = {"event": _event_problem, "events": _events_problem}


def error_frame(code: str, message: str, ref: str | None = None) -> Envelope:
    return Envelope(type="error", payload=ErrorPayload(code=code, message=message, ref=ref).model_dump())
