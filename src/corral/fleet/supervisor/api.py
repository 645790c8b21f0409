"""The shapes of the supervisor's HTTP API: the models that validate its requests (query
strings, command bodies, chat-ops payloads) and describe its answers. `openapi.py` builds
`/openapi.json` from these same models, so the document cannot drift from the checks.
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from corral.fleet.protocol import COMMAND_TYPES, SESSION_STATES

T = TypeVar("T")
CommandType = Literal["start", "prompt", "resume", "restart", "kill", "status"]
assert set(CommandType.__args__) == set(COMMAND_TYPES)  # type: ignore[attr-defined]
SessionStateName = Literal["running", "idle", "compacted", "error", "completed", "unreachable"]
assert set(SessionStateName.__args__) == set(SESSION_STATES)  # type: ignore[attr-defined]


class _Query(BaseModel):
    model_config = ConfigDict(extra="ignore")  # unknown query parameters are ignored


class NodesQuery(_Query):
    status: Literal["online", "offline"] | None = None


class NodeQuery(_Query):
    limit: int = Field(1000, ge=0, description="Sessions listed with the node (at most 10000).")


class SessionsQuery(_Query):
    node_id: str | None = None
    project: str | None = None
    state: SessionStateName | None = None
    limit: int = Field(1000, ge=0, description="At most 10000.")


class EventsQuery(_Query):
    session_id: str | None = None
    node_id: str | None = None
    type: str | None = Field(None, description="An event type prefix, e.g. `session.` or `usage`.")
    after: int = Field(0, ge=0, description="Only events with a larger `id` (page with `meta.next_after`).")
    limit: int = Field(100, ge=0, description="At most 1000.")


class LimitQuery(_Query):
    limit: int = Field(100, ge=0, description="At most 1000.")


class AuditQuery(LimitQuery):
    action: str | None = Field(None, description="Only this action, e.g. `command.kill` or `chatops.status`.")


class CommandTarget(BaseModel):
    model_config = ConfigDict(extra="forbid")
    node_id: str | None = None
    project: str | None = None
    session_id: str | None = None


class CommandRequest(BaseModel):
    """``POST /api/v1/commands``: run a command on a node and wait for its result."""

    model_config = ConfigDict(extra="forbid")
    type: CommandType
    target: CommandTarget = Field(default_factory=CommandTarget,
                                  description="One of node_id, project (any online node with it) or session_id.")
    args: dict[str, Any] = Field(default_factory=dict)
    timeout: float | None = Field(None, gt=0, le=3600, description="Seconds to wait (default: the config's).")
    idempotency_key: str | None = Field(None, max_length=200)
    actor: str | None = Field(None, max_length=100, description="Recorded in the audit log (default `api`).")


class SlackSlashCommand(BaseModel):
    """The form Slack posts for a slash command (the fields Corral reads; Slack sends more)."""

    model_config = ConfigDict(extra="allow")
    user_id: str
    user_name: str = ""
    command: str = "/corral"
    text: str = ""
    trigger_id: str | None = None


class SlackInteractivity(BaseModel):
    """Slack's interactivity form: one ``payload`` field holding JSON (``block_actions``)."""

    payload: str


class DiscordInteraction(BaseModel):
    """The interaction Discord posts (the fields Corral reads; Discord sends more)."""

    model_config = ConfigDict(extra="allow")
    type: int = Field(description="1 PING, 2 APPLICATION_COMMAND.")
    id: str | None = None
    data: dict[str, Any] = Field(default_factory=dict)
    member: dict[str, Any] | None = None
    user: dict[str, Any] | None = None


# ---- answers -------------------------------------------------------------------------


class _Row(BaseModel):
    model_config = ConfigDict(extra="allow")


class Node(_Row):
    node_id: str
    hostname: str
    version: str
    backends: list[str]
    projects: list[str]
    status: Literal["online", "offline"]
    address: str | None
    connected_at: float | None
    last_seen: float


class Session(_Row):
    session_id: str
    node_id: str
    project: str | None
    backend: str | None
    model: str | None
    state: SessionStateName
    input_tokens: int
    output_tokens: int
    cost_usd: float
    compactions: int
    created_at: float
    last_activity: float


class NodeDetail(Node):
    sessions: list[Session]


class Event(_Row):
    id: int
    node_id: str
    seq: int
    envelope_id: str
    type: str
    session_id: str | None
    project: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    cost_usd: float
    ts: float
    received_at: float
    data: dict[str, Any]


class Command(_Row):
    command_id: str
    idempotency_key: str | None
    type: str
    node_id: str | None
    target: dict[str, Any]
    args: dict[str, Any]
    status: Literal["pending", "success", "failure", "timeout"]
    output: dict[str, Any] | None
    error: str | None
    actor: str
    created_at: float
    finished_at: float | None


class CostBreakdown(BaseModel):
    cost_usd: float
    tokens: int


class CostReport(_Row):
    period: Literal["today", "week", "month"]
    since: float
    total_cost_usd: float
    input_tokens: int
    output_tokens: int
    by_session: dict[str, CostBreakdown]
    by_node: dict[str, CostBreakdown]
    by_project: dict[str, CostBreakdown]
    by_model: dict[str, CostBreakdown]
    provider_reported: dict[str, float]
    providers: dict[str, dict[str, Any]]
    degraded: bool


class AuditEntry(_Row):
    id: int
    ts: float
    actor: str
    action: str
    target: str | None
    args: dict[str, Any]
    result: str
    error: str | None
    source: str | None


class Data(BaseModel, Generic[T]):
    """Every /api/v1 answer: ``data`` plus ``meta`` (totals, paging)."""

    data: T
    meta: dict[str, Any]


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorDetail


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, bool]
    config: dict[str, Any]


class SlackMessage(_Row):
    response_type: Literal["ephemeral", "in_channel"]
    text: str
    blocks: list[dict[str, Any]] | None = None


class DiscordResponse(_Row):
    type: int = Field(description="1 PONG, 4 CHANNEL_MESSAGE_WITH_SOURCE.")
    data: dict[str, Any] | None = None


def first_error(exc: ValidationError) -> str:
    """``field: message`` for the first problem (the API answers one at a time)."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(p) for p in error["loc"])
    return f"{where}: {error['msg']}" if where else str(error["msg"])
