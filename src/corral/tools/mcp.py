"""MCP servers as toolsets, over stdio, streamable HTTP or SSE (the official `mcp` SDK).

The SDK's client is an async context manager whose task group must be entered and
left by one task, so each toolset owns a connection task that holds the client open
until `aclose`. A call that fails because the connection dropped reconnects (up to
``reconnect_attempts``) and is tried once more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from typing import Any

import httpx

from corral.config.agents import McpToolConfig
from corral.llm.types import ToolSpec
from corral.tools.base import Tool, ToolContext, ToolError, ToolResult

log = logging.getLogger("corral.tools.mcp")


class McpToolset:
    def __init__(self, name: str, config: McpToolConfig) -> None:
        self.name = name
        self.config = config
        self._client: Any = None
        self._tools: list[Tool] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._lock = asyncio.Lock()
        self.connects = 0  # how many times a connection was made (reconnects show here)

    def _server(self, stack: contextlib.AsyncExitStack) -> Any:
        from mcp.client.sse import sse_client
        from mcp.client.stdio import StdioServerParameters
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        c = self.config
        transport = c.resolved_transport
        if transport == "stdio":
            assert c.command
            env = {**os.environ, **c.env} if c.env else None
            return StdioServerParameters(command=c.command, args=c.args, env=env, cwd=c.cwd)
        assert c.url
        if transport == "sse":
            return sse_client(c.url, headers=c.headers or None, timeout=c.connect_timeout)
        # The SDK leaves a client it was given open: the exit stack closes it with the connection.
        http = create_mcp_http_client(headers=c.headers or None)
        http.event_hooks["request"].append(_trace_headers)
        stack.push_async_callback(http.aclose)
        return streamable_http_client(c.url, http_client=http)

    async def _hold(self, ready: asyncio.Future[None]) -> None:
        from mcp import Client

        try:
            async with contextlib.AsyncExitStack() as stack:
                client = await stack.enter_async_context(
                    Client(self._server(stack), read_timeout_seconds=self.config.timeout, cache=None))
                self._client = client
                self.connects += 1
                ready.set_result(None)
                await self._stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else ConnectionError(str(exc)))
            elif not isinstance(exc, asyncio.CancelledError):
                log.warning("MCP server %r disconnected: %s", self.name, exc)
        finally:
            self._client = None

    async def connect(self) -> None:
        async with self._lock:
            if self._client is not None and self._task is not None and not self._task.done():
                return
            await self._drop()
            self._stop = asyncio.Event()
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._task = asyncio.create_task(self._hold(ready), name=f"mcp:{self.name}")
            try:
                await asyncio.wait_for(asyncio.shield(ready), self.config.connect_timeout)
            except TimeoutError:
                await self._drop()
                raise ToolError(f"MCP server {self.name!r} did not connect within "
                                f"{self.config.connect_timeout:g}s") from None
            except Exception as exc:
                await self._drop()
                raise ToolError(f"MCP server {self.name!r} failed to connect: {exc}") from None

    async def _drop(self) -> None:
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(task, 10)
        except (TimeoutError, asyncio.CancelledError, Exception):
            task.cancel()
            with contextlib.suppress(BaseException):
                await task

    async def list_tools(self) -> list[Tool]:
        if self._tools is None:
            await self._with_reconnect(self._fetch_tools)
        assert self._tools is not None
        return list(self._tools)

    async def _fetch_tools(self) -> None:
        tools: list[Tool] = []
        cursor: str | None = None
        for _ in range(100):  # a server whose cursor never ends cannot hang us
            result = await self._client.list_tools(cursor=cursor)
            for t in result.tools:
                schema = dict(t.input_schema or {"type": "object", "properties": {}})
                tools.append(Tool(ToolSpec(t.name, t.description or "", schema)))
            cursor = result.next_cursor
            if not cursor:
                break
        self._tools = tools

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if self._tools is not None and name not in {t.name for t in self._tools}:
            raise ToolError(f"unknown tool {name!r} on MCP server {self.name!r}")
        box: list[ToolResult] = []

        # The trace context goes in the request's ``_meta`` (where MCP servers look for it)
        # and, over HTTP, in the request's headers too (`_trace_headers`).
        meta = dict(ctx.trace) if ctx.trace else None

        async def once() -> None:
            box.append(_to_result(await self._client.call_tool(name, arguments, meta=meta)))

        await self._with_reconnect(once)
        return box[0]

    async def _with_reconnect(self, action: Any) -> None:
        attempts = self.config.reconnect_attempts + 1
        for attempt in range(attempts):
            await self.connect()
            try:
                await action()
                return
            except ToolError:
                raise
            except Exception as exc:
                # A dropped connection, or an HTTP server that restarted and forgot our session:
                # either way a fresh connection is the cure. Tool failures are results, not exceptions.
                if attempt == attempts - 1:
                    raise ToolError(f"MCP server {self.name!r}: {_describe(exc)}") from None
                log.info("MCP server %r: %s; reconnecting", self.name, exc)
                async with self._lock:
                    await self._drop()

    async def aclose(self) -> None:
        async with self._lock:
            await self._drop()


async def _trace_headers(request: httpx.Request) -> None:
    """A tool call's ``_meta.traceparent`` (and ``tracestate``) as HTTP headers as well, for
    proxies and servers that read the trace context from headers. The SDK sends requests
    from its own task, so the call's context reaches the request only through its body."""
    if request.method != "POST" or b'"_meta"' not in request.content:
        return
    try:
        body = json.loads(request.content)
    except ValueError:
        return
    meta = body.get("params", {}).get("_meta") if isinstance(body, dict) else None
    if isinstance(meta, dict):
        for name in ("traceparent", "tracestate"):
            value = meta.get(name)
            if isinstance(value, str):
                request.headers[name] = value


def _describe(exc: BaseException) -> str:
    """The innermost useful message (task groups wrap the real error)."""
    for inner in reversed(_chain(exc)):
        if not isinstance(inner, BaseExceptionGroup) and str(inner):
            return f"{type(inner).__name__}: {inner}"
    return type(exc).__name__


def _chain(exc: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen:
        seen.append(current)
        if isinstance(current, BaseExceptionGroup):
            for inner in current.exceptions:
                seen.extend(_chain(inner))
        current = current.__cause__ or current.__context__
    return seen


def _to_result(result: Any) -> ToolResult:
    parts: list[str] = []
    for item in result.content:
        kind = getattr(item, "type", "")
        if kind == "text":
            parts.append(item.text)
        elif kind == "resource" and hasattr(item.resource, "text"):
            parts.append(item.resource.text)
        else:
            parts.append(f"[{kind} content]")
    text = "\n".join(parts)
    if not text and result.structured_content is not None:
        import json

        text = json.dumps(result.structured_content)
    return ToolResult(text, is_error=bool(result.is_error), data=result.structured_content)
