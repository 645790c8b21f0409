"""The fleet wire protocol: versioned JSON envelopes over one WebSocket per node.

Every frame is ``{v, type, id, ts, seq, payload}``. ``seq`` is set only on ``event``
frames: the node numbers its events 1, 2, 3... and the supervisor acknowledges each
one after it is durably stored, so a node can resend what was not acknowledged and
the supervisor can drop what it already has. See docs/fleet-protocol.md.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

PROTOCOL_VERSION = 1
DEFAULT_MAX_FRAME_BYTES = 1024 * 1024

MessageType = Literal[
    "register", "registered", "heartbeat", "event", "ack", "command", "command_result", "error"
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


class HeartbeatPayload(_Payload):
    sessions: int = 0


class EventPayload(_Payload):
    type: str = Field(min_length=1, max_length=100)
    session_id: str | None = None
    project: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)


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
    "ack": AckPayload,
    "command": CommandPayload,
    "command_result": CommandResultPayload,
    "error": ErrorPayload,
}


def decode(raw: str | bytes, *, max_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Envelope:
    """Parse and validate one frame; raises ProtocolError with a stable code."""
    size = len(raw.encode() if isinstance(raw, str) else raw)
    if size > max_bytes:
        raise ProtocolError("frame_too_large", f"frame of {size} bytes exceeds the limit of {max_bytes}")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("invalid_json", f"frame is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_envelope", "frame must be a JSON object")
    ref = data.get("id") if isinstance(data.get("id"), str) else None
    if data.get("v") != PROTOCOL_VERSION:
        raise ProtocolError("unsupported_version", f"protocol version must be {PROTOCOL_VERSION}", ref)
    kind = data.get("type")
    if kind not in MESSAGE_TYPES:
        raise ProtocolError("unknown_type", f"unknown message type {kind!r}", ref)
    if ref is None or not ref:
        raise ProtocolError("invalid_envelope", "frame needs a non-empty string id")
    ts = data.get("ts")
    if not isinstance(ts, int | float) or isinstance(ts, bool) or ts <= 0:
        raise ProtocolError("invalid_envelope", "ts must be a positive number (unix seconds)", ref)
    seq = data.get("seq")
    if kind == "event" and (not isinstance(seq, int) or isinstance(seq, bool) or seq < 1):
        raise ProtocolError("invalid_envelope", "event frames need seq >= 1", ref)
    payload = data.get("payload", {})
    if not isinstance(payload, dict):
        raise ProtocolError("invalid_payload", "payload must be an object", ref)
    try:
        PAYLOADS[kind].model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ProtocolError("invalid_payload", f"{kind} payload: {where}: {first['msg']}", ref) from None
    return Envelope(type=kind, payload=payload, id=ref, ts=float(ts), seq=seq if kind == "event" else None)


def error_frame(code: str, message: str, ref: str | None = None) -> Envelope:
    return Envelope(type="error", payload=ErrorPayload(code=code, message=message, ref=ref).model_dump())
