"""MCP client toolsets against the official npm MCP servers, over stdio, streamable
HTTP and SSE."""

from __future__ import annotations

from pathlib import Path

import pytest

from corral.config.agents import McpToolConfig
from corral.tools.base import ToolContext, ToolError
from corral.tools.build import build_toolset
from corral.tools.mcp import McpToolset

from .conftest import EVERYTHING, FILESYSTEM

pytestmark = pytest.mark.npx
CTX = ToolContext()


def mcp(**config: object) -> McpToolConfig:
    return McpToolConfig.model_validate({"type": "mcp", **config})


async def test_stdio_server_everything_lists_and_calls_tools(npx: str) -> None:
    toolset = McpToolset("everything", mcp(command=npx, args=["-y", EVERYTHING]))
    try:
        tools = {t.name: t for t in await toolset.list_tools()}
        echo = await toolset.call("echo", {"message": "hello corral"}, CTX)
        total = await toolset.call("get-sum", {"a": 2, "b": 40}, CTX)
    finally:
        await toolset.aclose()
    assert {"echo", "get-sum"} <= set(tools)
    assert tools["echo"].spec.parameters["properties"]["message"]["type"] == "string"
    assert echo.content == "Echo: hello corral" and not echo.is_error
    assert "42" in total.content


async def test_stdio_filesystem_server_reads_writes_and_refuses_outside_paths(mcp_bin, tmp_path: Path) -> None:
    root = (tmp_path / "ws").resolve()
    root.mkdir()
    (root / "hello.txt").write_text("hi from disk")
    toolset = build_toolset("fs", mcp(command=mcp_bin[FILESYSTEM], args=[str(root)],
                                      include=["read_text_file", "write_file", "list_directory"]))
    try:
        names = sorted(t.name for t in await toolset.list_tools())
        read = await toolset.call("read_text_file", {"path": str(root / "hello.txt")}, CTX)
        await toolset.call("write_file", {"path": str(root / "new.txt"), "content": "written"}, CTX)
        outside = await toolset.call("read_text_file", {"path": str(tmp_path / "nope.txt")}, CTX)
        with pytest.raises(ToolError, match="not available"):
            await toolset.call("move_file", {"source": "a", "destination": "b"}, CTX)
    finally:
        await toolset.aclose()
    assert names == ["list_directory", "read_text_file", "write_file"]
    assert read.content == "hi from disk"
    assert (root / "new.txt").read_text() == "written"
    assert outside.is_error and "denied" in outside.content.lower()


async def test_streamable_http_server_with_reconnect_after_a_restart(everything_http) -> None:
    async with everything_http("streamableHttp") as (port, _):
        toolset = McpToolset("remote", mcp(url=f"http://127.0.0.1:{port}/mcp", timeout=20))
        first = await toolset.call("echo", {"message": "one"}, CTX)
    try:
        async with everything_http("streamableHttp", port):
            second = await toolset.call("echo", {"message": "two"}, CTX)
    finally:
        await toolset.aclose()
    assert first.content == "Echo: one" and second.content == "Echo: two"
    assert toolset.connects == 2


async def test_sse_server(everything_http) -> None:
    async with everything_http("sse") as (port, _):
        toolset = McpToolset("sse", mcp(transport="sse", url=f"http://127.0.0.1:{port}/sse"))
        try:
            result = await toolset.call("echo", {"message": "over sse"}, CTX)
        finally:
            await toolset.aclose()
    assert result.content == "Echo: over sse"


async def test_unreachable_server_is_a_tool_error_within_the_connect_timeout() -> None:
    toolset = McpToolset("down", mcp(url="http://127.0.0.1:9/mcp", connect_timeout=5, reconnect_attempts=0))
    with pytest.raises(ToolError, match="MCP server 'down'"):
        await toolset.list_tools()
    await toolset.aclose()
