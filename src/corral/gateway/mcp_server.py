"""``/mcp``: public agents (with ``mcp: true``, the default) served as MCP tools over
streamable HTTP, with the official `mcp` SDK's server.

A tool call is an agent run (``input``, and optionally ``session_id`` to continue a
session); its final answer is the tool's text result, a failed run an error result.
The endpoint is stateless (no MCP session to pin a replica). Every request needs the
same auth as any other route; a tool call is then admitted like a chat request naming
the agent (allowed models, rate limits, budget: a refusal is an error result with the
reason), and its run is charged to the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

import mcp_types as types
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope, Send

from corral.agents.service import FINAL_STATES
from corral.config.agents import KnowledgeToolConfig
from corral.gateway.agent_runtime import AgentRuntime
from corral.gateway.errors import ApiError, error_response
from corral.gateway.pipeline import CallPipeline
from corral.knowledge.service import KnowledgeService
from corral.llm.types import Message, ToolSpec
from corral.tools.base import FunctionToolset, ToolContext
from corral.tools.knowledge import knowledge_toolset

INPUT_SCHEMA = {
    "type": "object", "required": ["input"],
    "properties": {"input": {"type": "string", "description": "the message for the agent"},
                   "session_id": {"type": "string", "description": "continue this session (optional)"}},
}


NO_SERVER_STREAM = JSONResponse(
    {"jsonrpc": "2.0", "id": None, "error": {"code": -32600, "message": "Method Not Allowed: this endpoint is "
                                             "stateless and offers no server-initiated stream; POST requests"}},
    status_code=405, headers={"allow": "POST, DELETE"})


def knowledge_searches(knowledge: KnowledgeService | None) -> dict[str, tuple[ToolSpec, FunctionToolset]]:
    """Each knowledge base's `search_<base>` tool, as agents get it (`corral.tools.knowledge`)."""
    searches: dict[str, tuple[ToolSpec, FunctionToolset]] = {}
    if knowledge is None:
        return searches
    for base in knowledge.names():
        toolset = knowledge_toolset(f"knowledge.{base}", KnowledgeToolConfig(type="knowledge", base=base), knowledge)
        spec = next(iter(toolset.specs()))
        searches[spec.name] = (spec, toolset)
    return searches


def build_server(runtime: AgentRuntime, pipeline: CallPipeline,
                 knowledge: KnowledgeService | None = None) -> Server[Any]:
    exposed = {a.name: a for a in runtime.registry.public() if a.config.mcp}
    searches = knowledge_searches(knowledge)

    async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
        agents = [types.Tool(name=a.name, description=a.config.description or f"Ask the agent {a.name}.",
                             input_schema=INPUT_SCHEMA) for a in exposed.values()]
        bases = [types.Tool(name=spec.name, description=spec.description, input_schema=spec.parameters)
                 for spec, _ in searches.values()]
        return types.ListToolsResult(tools=agents + bases)

    async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
        if params.name in searches:  # the endpoint authenticated the caller
            _, toolset = searches[params.name]
            result = await toolset.call(params.name, params.arguments or {}, ToolContext())
            return types.CallToolResult(content=[types.TextContent(type="text", text=result.content)],
                                        is_error=result.is_error)
        agent = exposed.get(params.name)
        if agent is None:
            return _error(f"unknown tool {params.name!r}")
        arguments = params.arguments or {}
        text = arguments.get("input")
        if not isinstance(text, str) or not text:
            return _error("`input` (a non-empty string) is required")
        request: Request | None = ctx.request
        caller, request_id, trace = None, "", None
        if request is not None:
            call = pipeline.begin(request, agent.name, "mcp")
            call.metered = True
            try:
                await pipeline.admit(request, call)
            except ApiError as exc:
                return _error(exc.message)
            caller, request_id, trace = call.caller(), call.request_id, call.trace_headers
        service = runtime.service
        session_id = arguments.get("session_id")
        record, _ = await service.start_run(agent.name, [Message.text("user", text)],
                                            session_id=str(session_id) if session_id else None,
                                            caller=caller, request_id=request_id, trace=trace)
        record = await service.wait(record.id, agent.config.timeout + 10)
        output = record.output.get("output") if isinstance(record.output, dict) else None
        if record.state != "succeeded":
            reason = record.error or ("waiting for approval" if record.state not in FINAL_STATES else record.state)
            return _error(f"run {record.id} {record.state}: {reason}")
        structured = output if isinstance(output, dict) else None
        body = output if isinstance(output, str) else json.dumps(output)
        return types.CallToolResult(content=[types.TextContent(type="text", text=body)],
                                    structured_content=structured)

    return Server("corral", version="1", instructions="Corral agents as tools.", on_list_tools=list_tools,
                  on_call_tool=call_tool)


def _error(message: str) -> types.CallToolResult:
    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


class McpEndpoint:
    """ASGI: the gateway's auth, then the SDK's transport (tool calls are admitted one by
    one). Its session manager runs between `start` and `stop`, in a task of its own: the
    SDK's task group must be left by the task that entered it, and a config reload starts
    and stops endpoints from different tasks."""

    def __init__(self, runtime: AgentRuntime, pipeline: CallPipeline,
                 knowledge: KnowledgeService | None = None) -> None:
        self.pipeline = pipeline
        self.manager = StreamableHTTPSessionManager(app=build_server(runtime, pipeline, knowledge), stateless=True)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        running = asyncio.Event()

        async def run() -> None:
            async with self.manager.run():
                running.set()
                await self._stopping.wait()

        self._task = asyncio.create_task(run(), name="mcp-sessions")
        started = asyncio.create_task(running.wait())
        await asyncio.wait({self._task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if self._task.done():
            self._task.result()  # the session manager failed to start: raise its error

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await self.pipeline.authenticate(Request(scope, receive))
        except ApiError as exc:
            await error_response(exc, "openai")(scope, receive, send)
            return
        if scope["method"] == "GET":
            # A stateless server never sends a message of its own: the SDK's GET stream would
            # only ping, forever. The MCP spec's answer for "no server stream here" is 405.
            await NO_SERVER_STREAM(scope, receive, send)
            return
        await self.manager.handle_request(scope, receive, send)
