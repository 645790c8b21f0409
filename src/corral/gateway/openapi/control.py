"""Bodies of the control-plane routes: agents, runs, sessions, admin (keys, teams,
spend), health, the verification report, and the JSON-RPC envelopes of the A2A and MCP
entry points.

The request models named ``*Body`` and ``*Query`` describe what the handlers of
`corral.gateway.agents` check by hand today; they are written to be the validators
those handlers switch to. The admin request bodies are the admin module's own models."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr

from corral.gateway.admin import json_safe
from corral.gateway.openapi.llm import Out

Variables = Annotated[dict[str, StrictStr | StrictInt | StrictFloat | StrictBool], AfterValidator(json_safe)]

# ---- health and reports ---------------------------------------------------------


class ReloadState(Out):
    """The config being served and the last reload attempt (docs/operations.md, "Live reload")."""

    config_hash: str = Field(description="Hash of the files the served config was read from (12 hex digits).")
    last_attempt: float | None = Field(description="Unix time of the last reload attempt; null before the first.")
    result: Literal["ok", "error"] | None = Field(description="Outcome of the last attempt.")
    error: str | None = Field(description="Why the last attempt was refused: every problem with file:line:key.")
    restart_required: list[str] = Field(description="Settings the last applied reload could not change.")
    reloads: int = Field(description="Reloads applied since the process started.")


class Health(Out):
    status: Literal["ok"]
    version: str
    reload: ReloadState


class Liveness(Out):
    status: Literal["ok"]


class Readiness(Out):
    status: Literal["ready", "starting"]


class VerificationReport(Out):
    """The provider verification report (docs/verification.md): ``status`` is
    ``complete`` once it ran, else ``pending``, ``failed`` or ``disabled``."""

    model_config = ConfigDict(extra="allow")

    version: int
    status: Literal["complete", "pending", "failed", "disabled"]
    providers: list[dict[str, Any]]
    services: Any = Field(description="the boot summary when `corral up` started the stack, else null")


# ---- agents, runs, sessions -------------------------------------------------------


class AgentOut(Out):
    id: str
    object: Literal["agent"]
    description: str | None
    type: str
    model: str | None


class AgentList(Out):
    object: Literal["list"]
    data: list[AgentOut]


class RunToolCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    name: str
    arguments: str = ""


class RunPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text", "image"]
    text: str | None = None
    url: str | None = Field(default=None, description="for an image part")
    detail: str | None = None


class RunMessage(BaseModel):
    """A message of a run's input: OpenAI-style roles, text or parts, tool calls."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[RunPart] | None = None
    tool_calls: list[RunToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None


class RunCreateBody(BaseModel):
    """Give ``input`` (a string) or ``messages`` (a non-empty list)."""

    model_config = ConfigDict(extra="forbid")

    input: str | None = None
    messages: list[RunMessage] | None = Field(default=None, min_length=1)
    mode: Literal["wait", "stream", "background"] = Field(
        default="wait", description="wait: answer with the finished run; stream: run events as SSE; "
                                    "background: queue it and answer 202")
    session_id: str | None = Field(default=None, min_length=1, description="continue this session "
                                   "(or send the x-corral-session-id header)")
    variables: Variables | None = Field(default=None,
                                                                   description="values for {name} in the "
                                                                               "agent's instructions")
    timeout: float | None = Field(default=None, gt=0, le=3600, description="wait mode: seconds to wait for the "
                                                                            "run (default: the agent's timeout "
                                                                            "+ 10)")


class RunApproveBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    approved: StrictBool = Field(default=True, description="approve (or refuse) every pending tool call")
    decisions: dict[str, StrictBool] | None = Field(default=None, description="tool call id -> approved, per call")
    wait: StrictBool = Field(default=False, description="answer once the run is final or paused again")
    timeout: float | None = Field(default=None, gt=0, le=3600, description="with wait: seconds (default 60)")


class RunGetQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait: float | None = Field(default=None, ge=0, le=3600,
                               description="wait up to this many seconds for the run to finish or pause")


class SessionListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agent: str | None = Field(default=None, description="only this agent's sessions")
    limit: int = Field(default=100, ge=1, le=1000)


class PendingApproval(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str


class RunOut(Out):
    id: str
    object: Literal["run"]
    agent: str
    session_id: str | None
    state: Literal["queued", "running", "input-required", "succeeded", "failed", "cancelled"]
    output: Any = Field(description="the final answer (text, or the structured output)")
    usage: dict[str, Any] | None
    error: str | None
    pending_approvals: list[PendingApproval]
    attempts: int
    created_at: str
    updated_at: str


class RunEvent(Out):
    """One `event: <type>` + `data:` of a run's event stream: `run.created`, `text.delta`,
    `tool.call`, `tool.result`, `run.finished`, `run.state`..."""

    model_config = ConfigDict(extra="allow")

    type: str


class SessionOut(Out):
    id: str
    object: Literal["session"]
    agent: str
    owner: str | None
    title: str | None
    metadata: dict[str, Any]
    created_at: str
    updated_at: str


class SessionList(Out):
    object: Literal["list"]
    data: list[SessionOut]


class SessionMessage(Out):
    seq: int
    role: str
    run_id: str | None
    created_at: str
    content: str | dict[str, Any]
    tool_calls: list[dict[str, Any]] | None = None
    tool_call_id: str | None = None


class SessionDetail(SessionOut):
    messages: list[SessionMessage]


class SessionDeleted(Out):
    id: str
    object: Literal["session.deleted"]
    deleted: Literal[True]


# ---- admin ----------------------------------------------------------------------------


class KeyOut(Out):
    id: str
    key_prefix: str = Field(description="the non-secret start of the key, for listings")
    name: str | None
    team_id: str | None
    models: list[str]
    max_budget: float | None
    budget_duration: str | None
    spend: float | None = Field(description="spend in the current budget period (keys with a budget)")
    rpm: int | None
    tpm: int | None
    model_limits: dict[str, dict[str, int]]
    expires_at: str | None
    metadata: dict[str, Any]
    created_at: str | None
    revoked_at: str | None
    rotated_at: str | None
    disabled: bool
    disabled_at: str | None


class KeyWithSecret(KeyOut):
    key: str = Field(description="the key itself: shown only in this answer")


class KeyList(Out):
    data: list[KeyOut]


class KeyListQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    include_revoked: bool = False
    team_id: str | None = None


class TeamOut(Out):
    id: str
    name: str
    max_budget: float | None
    budget_duration: str | None
    spend: float | None
    metadata: dict[str, Any]
    created_at: str | None


class TeamList(Out):
    data: list[TeamOut]


class SpendQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")

    group_by: Literal["key", "model", "day", "subject", "team"] = "key"
    since: str | None = Field(default=None, description="ISO 8601 date or time (UTC if no zone)")
    until: str | None = Field(default=None, description="ISO 8601 date or time (UTC if no zone)")
    key_id: str | None = None


class SpendRow(Out):
    """One group; the group's value is under the name of ``group_by``."""

    key: str | None = None
    model: str | None = None
    day: str | None = None
    subject: str | None = None
    team: str | None = None
    requests: int
    input_tokens: int
    output_tokens: int
    cost_usd: float


class SpendReport(Out):
    group_by: Literal["key", "model", "day", "subject", "team"]
    data: list[SpendRow]
    total_cost_usd: float


# ---- JSON-RPC entry points (A2A, MCP) --------------------------------------------------


class JsonRpcRequest(BaseModel):
    """A JSON-RPC 2.0 request; the methods and their params are the protocol's own
    (A2A: `SendMessage`, `SendStreamingMessage`, `GetTask`, `CancelTask`, `ListTasks` and
    the v0.3 `message/send`, `message/stream`, `tasks/get`, `tasks/cancel`; MCP:
    `initialize`, `tools/list`, `tools/call`...)."""

    model_config = ConfigDict(extra="forbid")

    jsonrpc: Literal["2.0"]
    id: str | int | None = None
    method: str
    params: dict[str, Any] | None = None


class JsonRpcError(BaseModel):
    model_config = ConfigDict(extra="allow")

    code: int
    message: str
    data: Any = None


class JsonRpcResponse(BaseModel):
    """A result or an error (protocol errors are JSON-RPC errors, most with HTTP 200)."""

    model_config = ConfigDict(extra="allow")

    jsonrpc: Literal["2.0"]
    id: str | int | None = None
    result: Any = None
    error: JsonRpcError | None = None


class AgentCard(BaseModel):
    """An A2A agent card (the A2A specification's `AgentCard`)."""

    model_config = ConfigDict(extra="allow")

    name: str
    description: str
    version: str
    capabilities: dict[str, Any]
    skills: list[dict[str, Any]]


# ---- knowledge -----------------------------------------------------------------


class KnowledgeBaseOut(Out):
    name: str
    documents: int
    chunks: int
    pending: int
    vectors: int | None
    search: str
    embedder: str | None
    store: str | None
    bytes: int


class KnowledgeBaseList(Out):
    object: Literal["list"]
    data: list[KnowledgeBaseOut]


class PassageOut(Out):
    text: str
    source: str
    score: float
    metadata: dict[str, Any]


class KnowledgeResults(Out):
    object: Literal["list"]
    results: list[PassageOut]


class DocumentsAdded(Out):
    added: int
    changed: int
    chunks: int
    embedded: int
    pending: int
    error: dict[str, Any] | None = None


class DocumentsRemoved(Out):
    removed: int
