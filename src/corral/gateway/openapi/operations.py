"""Every route the gateway serves, as one typed table: path, method, who may call it,
the models of its bodies and the statuses it answers. The document is built from this
table (`corral.gateway.openapi.document`), and a test holds it equal to the app's routes.

Request bodies are the models that validate them (``ChatCompletionIn``, ``KeyCreate``...)
so the document cannot drift from what the handlers accept."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel

from corral.gateway.admin import KeyCreate, KeyUpdate, TeamCreate
from corral.gateway.anthropic_format import CountTokensIn, MessagesIn
from corral.gateway.embeddings import EmbeddingsIn
from corral.gateway.knowledge import DocumentsIn, QueryIn, RemoveIn
from corral.gateway.openai_format import ChatCompletionIn
from corral.gateway.openapi import control as c
from corral.gateway.openapi import llm
from corral.gateway.responses_format import ResponsesIn

Tag = Literal["OpenAI", "Anthropic", "Agents", "Sessions", "Knowledge", "A2A", "MCP", "Admin", "Operations",
              "Reference"]
Auth = Literal["none", "key", "master"]
Method = Literal["GET", "POST", "PATCH", "DELETE"]

JSON = "application/json"
SSE = "text/event-stream"


@dataclass(frozen=True, slots=True)
class Answer:
    """One success (or protocol-level) answer: a status, its media type and body model."""

    status: int
    body: type[BaseModel] | None
    media_type: str = JSON
    description: str = ""
    stream_end: str | None = None  # an event stream's last `data:` that is not JSON (`[DONE]`)


@dataclass(frozen=True, slots=True)
class Header:
    name: str
    description: str


@dataclass(frozen=True, slots=True)
class Operation:
    path: str  # as the app routes it (Starlette syntax: ``{model:path}``)
    method: Method
    operation_id: str
    summary: str
    tag: Tag
    auth: Auth
    answers: tuple[Answer, ...]
    errors: tuple[int, ...] = ()  # statuses answered with the surface's error object
    request: type[BaseModel] | None = None
    request_required: bool = True
    request_media_type: str = JSON
    query: type[BaseModel] | None = None
    headers: tuple[Header, ...] = ()
    description: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return self.path, self.method


SESSION_HEADER = Header("x-corral-session-id", "continue this agent session (when `model` names an agent)")

# The statuses every model call may answer (docs/api.md, "Errors").
MODEL_CALL = (400, 401, 403, 404, 413, 429, 500, 502, 503, 504)
READ = (401, 503)
AGENT_CALL = (400, 401, 403, 404, 409, 413, 429, 503)
ADMIN = (400, 401, 403, 404, 409, 413, 503)


def _chat(op_id: str, path: str, summary: str, tag: Tag, request: type[BaseModel], body: type[BaseModel],
          events: type[BaseModel], errors: tuple[int, ...], description: str, stream_end: str | None = None
          ) -> Operation:
    return Operation(path, "POST", op_id, summary, tag, "key", request=request, headers=(SESSION_HEADER,),
                     answers=(Answer(200, body, description="`stream: false`"),
                              Answer(200, events, SSE, "`stream: true`", stream_end)),
                     errors=errors, description=description)


_MCP_NO_SESSION: tuple[tuple[Method, str], ...] = (("GET", "get"), ("DELETE", "delete"))

OPERATIONS: tuple[Operation, ...] = (
    # ---- operations ------------------------------------------------------------
    Operation("/health", "GET", "health", "Liveness with the version", "Operations", "none",
              answers=(Answer(200, c.Health),)),
    Operation("/healthz", "GET", "healthz", "Liveness", "Operations", "none", answers=(Answer(200, c.Liveness),)),
    Operation("/readyz", "GET", "readyz", "Readiness: 503 until startup is over", "Operations", "none",
              answers=(Answer(200, c.Readiness), Answer(503, c.Readiness, description="starting"))),
    Operation("/metrics", "GET", "metrics", "Prometheus metrics", "Operations", "key", errors=READ,
              answers=(Answer(200, None, "text/plain", "Prometheus text format 0.0.4"),)),
    Operation("/v1/startup/verification", "GET", "getVerificationReport", "Provider verification report",
              "Operations", "key", errors=READ, answers=(Answer(200, c.VerificationReport),)),
    # ---- OpenAI-compatible --------------------------------------------------------
    _chat("createChatCompletion", "/v1/chat/completions", "OpenAI Chat Completions", "OpenAI", ChatCompletionIn,
          llm.ChatCompletion, llm.ChatCompletionChunk, MODEL_CALL,
          "`model` names a model alias or an agent. The stream ends with `data: [DONE]`.", "[DONE]"),
    _chat("createResponse", "/v1/responses", "OpenAI Responses (stateless)", "OpenAI", ResponsesIn,
          llm.ResponseObject, llm.ResponseStreamEvent, MODEL_CALL,
          "Responses are not stored: send the conversation as `input`; `previous_response_id` is refused."),
    Operation("/v1/embeddings", "POST", "createEmbeddings", "OpenAI embeddings", "OpenAI", "key",
              request=EmbeddingsIn, answers=(Answer(200, llm.EmbeddingList),), errors=MODEL_CALL),
    Operation("/v1/models", "GET", "listModels", "Models and public agents", "OpenAI", "key", errors=READ,
              answers=(Answer(200, llm.ModelList),)),
    Operation("/v1/models/{model:path}", "GET", "getModel", "One model or agent", "OpenAI", "key",
              errors=(401, 404, 503), answers=(Answer(200, llm.ModelOut),)),
    # ---- Anthropic-compatible -----------------------------------------------------
    _chat("createMessage", "/v1/messages", "Anthropic Messages", "Anthropic", MessagesIn, llm.AnthropicMessage,
          llm.AnthropicStreamEvent, (*MODEL_CALL, 529),
          "An upstream unavailable after retries and fallbacks is 529 `overloaded_error`."),
    Operation("/v1/messages/count_tokens", "POST", "countMessageTokens", "Anthropic token count (an estimate)",
              "Anthropic", "key", request=CountTokensIn, answers=(Answer(200, llm.TokenCount),),
              errors=(400, 401, 403, 404, 413, 503)),
    # ---- agents, runs, sessions -------------------------------------------------------
    Operation("/v1/agents", "GET", "listAgents", "Public agents", "Agents", "key", errors=READ,
              answers=(Answer(200, c.AgentList),)),
    Operation("/v1/agents/{name}/runs", "POST", "createRun", "Run an agent", "Agents", "key",
              request=c.RunCreateBody, request_required=False, headers=(SESSION_HEADER,), errors=AGENT_CALL,
              answers=(Answer(200, c.RunOut, description="`mode: wait`: the run once finished (or paused)"),
                       Answer(200, c.RunEvent, SSE, "`mode: stream`: the run's events"),
                       Answer(202, c.RunOut, description="`mode: background`: the queued run"))),
    Operation("/v1/runs/{run_id}", "GET", "getRun", "A run", "Agents", "key", query=c.RunGetQuery,
              errors=(400, 401, 403, 404, 429, 503), answers=(Answer(200, c.RunOut),)),
    Operation("/v1/runs/{run_id}/events", "GET", "getRunEvents", "A run's events so far, then live ones",
              "Agents", "key", errors=(401, 403, 404, 429, 503), answers=(Answer(200, c.RunEvent, SSE),)),
    Operation("/v1/runs/{run_id}/cancel", "POST", "cancelRun", "Cancel a run", "Agents", "key",
              errors=(401, 403, 404, 409, 429, 503), answers=(Answer(200, c.RunOut),)),
    Operation("/v1/runs/{run_id}/approve", "POST", "approveRun", "Approve or refuse a paused run's tool calls",
              "Agents", "key", request=c.RunApproveBody, request_required=False, errors=AGENT_CALL,
              answers=(Answer(200, c.RunOut),)),
    Operation("/v1/knowledge", "GET", "listKnowledgeBases", "Knowledge bases with their counts", "Knowledge",
              "key", errors=READ, answers=(Answer(200, c.KnowledgeBaseList),)),
    Operation("/v1/knowledge/{name}/query", "POST", "queryKnowledge", "Passages that answer a query, with their "
              "sources (hybrid keyword + vector search)", "Knowledge", "key", request=QueryIn,
              errors=(400, 401, 404, 503), answers=(Answer(200, c.KnowledgeResults),)),
    Operation("/v1/knowledge/{name}/documents", "POST", "addKnowledgeDocuments", "Add or replace documents",
              "Knowledge", "master", request=DocumentsIn, errors=(400, 401, 403, 404, 503),
              answers=(Answer(200, c.DocumentsAdded),)),
    Operation("/v1/knowledge/{name}/documents", "DELETE", "removeKnowledgeDocuments", "Remove documents by source",
              "Knowledge", "master", request=RemoveIn, errors=(400, 401, 403, 404, 503),
              answers=(Answer(200, c.DocumentsRemoved),)),
    Operation("/v1/sessions", "GET", "listSessions", "Sessions (a key sees its own)", "Sessions", "key",
              query=c.SessionListQuery, errors=(400, 401, 503), answers=(Answer(200, c.SessionList),)),
    Operation("/v1/sessions/{session_id}", "GET", "getSession", "A session with its messages", "Sessions", "key",
              errors=(401, 403, 404, 429, 503), answers=(Answer(200, c.SessionDetail),)),
    Operation("/v1/sessions/{session_id}", "DELETE", "deleteSession", "Delete a session", "Sessions", "key",
              errors=(401, 403, 404, 429, 503), answers=(Answer(200, c.SessionDeleted),)),
    # ---- A2A and MCP ----------------------------------------------------------------
    Operation("/.well-known/agent-card.json", "GET", "getAgentCard", "The first public agent's A2A card", "A2A",
              "none", errors=(404,), answers=(Answer(200, c.AgentCard),)),
    Operation("/.well-known/agent.json", "GET", "getAgentCardLegacy", "The same card at the pre-0.3 path", "A2A",
              "none", errors=(404,), answers=(Answer(200, c.AgentCard),)),
    Operation("/a2a/{name}/.well-known/agent-card.json", "GET", "getNamedAgentCard", "An agent's A2A card", "A2A",
              "none", errors=(404,), answers=(Answer(200, c.AgentCard),)),
    Operation("/a2a/{name}", "POST", "callA2A", "A2A JSON-RPC endpoint of an agent", "A2A", "key",
              request=c.JsonRpcRequest, errors=(401, 403, 413, 429, 503),
              answers=(Answer(200, c.JsonRpcResponse, description="a result, or a JSON-RPC error"),
                       Answer(200, c.JsonRpcResponse, SSE, "streaming methods: one JSON-RPC response per event"),
                       Answer(404, c.JsonRpcResponse, description="no such agent")),
              description="A task is an agent run, its `contextId` the session."),
    *(Operation(path, "POST", f"callMcp{suffix}", "MCP streamable HTTP (stateless)", "MCP", "key",
                request=c.JsonRpcRequest, errors=(401, 413),
                headers=(Header("accept", "must accept both application/json and text/event-stream"),),
                answers=(Answer(200, c.JsonRpcResponse), Answer(200, c.JsonRpcResponse, SSE),
                         Answer(202, None, description="a notification or response was accepted"),
                         Answer(400, c.JsonRpcResponse, description="not a valid JSON-RPC message"),
                         Answer(406, c.JsonRpcResponse, description="the accept header is missing a type"),
                         Answer(415, c.JsonRpcResponse, description="the body is not application/json")),
                description="Public agents (with `mcp: true`) as tools: `tools/list`, `tools/call` with "
                            "`{input, session_id?}`.")
      for path, suffix in (("/mcp", ""), ("/mcp/", "Slash"))),
    *(Operation(path, method, f"{verb}Mcp{suffix}", f"MCP {method} (no sessions on a stateless server)", "MCP",
                "key", errors=(401,), answers=(Answer(405, c.JsonRpcResponse),))
      for path, suffix in (("/mcp", ""), ("/mcp/", "Slash")) for method, verb in _MCP_NO_SESSION),
    # ---- admin ------------------------------------------------------------------------
    Operation("/admin/keys", "POST", "createKey", "Create a virtual key", "Admin", "master", request=KeyCreate,
              request_required=False, errors=ADMIN, answers=(Answer(201, c.KeyWithSecret),)),
    Operation("/admin/keys", "GET", "listKeys", "Virtual keys", "Admin", "master", query=c.KeyListQuery,
              errors=ADMIN, answers=(Answer(200, c.KeyList),)),
    Operation("/admin/keys/{key_id}", "GET", "getKey", "A virtual key", "Admin", "master", errors=ADMIN,
              answers=(Answer(200, c.KeyOut),)),
    Operation("/admin/keys/{key_id}", "PATCH", "updateKey", "Change a key (`null` clears a setting)", "Admin",
              "master", request=KeyUpdate, errors=ADMIN, answers=(Answer(200, c.KeyOut),)),
    Operation("/admin/keys/{key_id}", "DELETE", "deleteKey", "Revoke a key", "Admin", "master", errors=ADMIN,
              answers=(Answer(200, c.KeyOut),)),
    Operation("/admin/keys/{key_id}/revoke", "POST", "revokeKey", "Revoke a key", "Admin", "master",
              errors=ADMIN, answers=(Answer(200, c.KeyOut),)),
    Operation("/admin/keys/{key_id}/rotate", "POST", "rotateKey", "Replace a key's secret", "Admin", "master",
              errors=ADMIN, answers=(Answer(200, c.KeyWithSecret),)),
    Operation("/admin/teams", "POST", "createTeam", "Create a team", "Admin", "master", request=TeamCreate,
              errors=ADMIN, answers=(Answer(201, c.TeamOut),)),
    Operation("/admin/teams", "GET", "listTeams", "Teams", "Admin", "master", errors=ADMIN,
              answers=(Answer(200, c.TeamList),)),
    Operation("/admin/spend", "GET", "getSpend", "Spend, grouped", "Admin", "master", query=c.SpendQuery,
              errors=ADMIN, answers=(Answer(200, c.SpendReport),)),
)

# The reference itself (`corral.gateway.openapi.reference`).
REFERENCE: tuple[Operation, ...] = (
    Operation("/openapi.json", "GET", "getOpenApiDocument", "This document", "Reference", "none",
              answers=(Answer(200, None, description="OpenAPI 3.1"),)),
    Operation("/docs", "GET", "getReferencePage", "The API reference page", "Reference", "none",
              answers=(Answer(200, None, "text/html"),)),
    Operation("/docs/assets/{name}", "GET", "getReferenceAsset", "Files of the reference page", "Reference",
              "none", errors=(404,), answers=(Answer(200, None, "application/octet-stream"),)),
)
