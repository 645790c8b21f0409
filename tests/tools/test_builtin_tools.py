"""Built-in tools and their safety limits."""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from corral.config.agents import FilesToolConfig, HttpFetchToolConfig, ShellToolConfig
from corral.tools.base import ToolContext, ToolError
from corral.tools.build import build_toolset
from corral.tools.builtin import http_fetch_toolset, time_toolset
from corral.tools.files import files_toolset
from corral.tools.shell import shell_toolset

CTX = ToolContext()


async def test_time_gives_the_time_in_a_named_zone_and_rejects_unknown_zones() -> None:
    tools = time_toolset()
    result = json.loads((await tools.call("current_time", {"timezone": "Asia/Tokyo"}, CTX)).content)
    assert result["timezone"] == "Asia/Tokyo" and result["iso"].endswith("+09:00")
    with pytest.raises(ToolError, match="unknown time zone 'Mars/Base'"):
        await tools.call("current_time", {"timezone": "Mars/Base"}, CTX)


def fetcher(config: HttpFetchToolConfig, body: bytes = b"hello world"):
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=body, headers={"content-type": "text/plain"})

    return http_fetch_toolset("web", config, transport=httpx.MockTransport(handler)), seen


async def test_http_fetch_honours_allow_and_deny_hosts() -> None:
    config = HttpFetchToolConfig(type="http_fetch", allow_hosts=["*.example.com", "10.0.0.0/8"],
                                 deny_hosts=["secret.example.com"])
    tools, seen = fetcher(config)
    ok = json.loads((await tools.call("http_fetch", {"url": "https://api.example.com/x"}, CTX)).content)
    assert ok["status"] == 200 and ok["body"] == "hello world" and ok["truncated"] is False
    assert json.loads((await tools.call("http_fetch", {"url": "http://10.1.2.3/"}, CTX)).content)["status"] == 200
    for url in ("https://secret.example.com/", "https://evil.org/", "file:///etc/passwd"):
        with pytest.raises(ToolError):
            await tools.call("http_fetch", {"url": url}, CTX)
    with pytest.raises(ToolError, match="method POST is not allowed"):
        await tools.call("http_fetch", {"url": "https://api.example.com/", "method": "POST"}, CTX)
    assert [str(r.url) for r in seen] == ["https://api.example.com/x", "http://10.1.2.3/"]


async def test_http_fetch_refuses_cloud_metadata_by_default() -> None:
    tools, seen = fetcher(HttpFetchToolConfig(type="http_fetch"))
    with pytest.raises(ToolError, match=r"host '169\.254\.169\.254' is not allowed"):
        await tools.call("http_fetch", {"url": "http://169.254.169.254/latest/meta-data/"}, CTX)
    assert json.loads((await tools.call("http_fetch", {"url": "http://127.0.0.1:9/x"}, CTX)).content)["status"] == 200
    assert len(seen) == 1


async def test_http_fetch_truncates_at_the_size_limit() -> None:
    tools, _ = fetcher(HttpFetchToolConfig(type="http_fetch", max_bytes=5), body=b"0123456789")
    result = json.loads((await tools.call("http_fetch", {"url": "http://h/"}, CTX)).content)
    assert result["body"] == "01234" and result["truncated"] is True


async def test_shell_is_denied_unless_the_command_is_allowlisted(tmp_path: Path) -> None:
    closed = shell_toolset("sh", ShellToolConfig(type="shell"))
    with pytest.raises(ToolError, match="no commands are allowed"):
        await closed.call("shell", {"command": "echo hi"}, CTX)
    tools = shell_toolset("sh", ShellToolConfig(type="shell", allow_commands=["echo", "pwd"],
                                                working_dir=str(tmp_path)))
    echoed = json.loads((await tools.call("shell", {"command": "echo 'a b' c"}, CTX)).content)
    assert echoed == {"exit_code": 0, "output": "a b c\n", "truncated": False}
    assert json.loads((await tools.call("shell", {"command": "pwd"}, CTX)).content)["output"].strip() == str(
        tmp_path.resolve())
    for command in ("rm -rf /", "/bin/echo hi", "./echo"):
        with pytest.raises(ToolError, match="is not allowed"):
            await tools.call("shell", {"command": command}, CTX)


async def test_shell_enforces_timeout_and_output_cap() -> None:
    tools = shell_toolset("sh", ShellToolConfig(type="shell", allow_commands=["sleep", "yes"], timeout=0.3,
                                                max_output_bytes=100))
    with pytest.raises(ToolError, match=r"timed out after 0\.3s"):
        await tools.call("shell", {"command": "sleep 5"}, CTX)
    capped = json.loads((await tools.call("shell", {"command": "yes"}, CTX)).content)
    assert capped["truncated"] is True and len(capped["output"]) == 100


async def test_files_stay_inside_the_workspace(tmp_path: Path) -> None:
    root = tmp_path / "ws"
    root.mkdir()
    (tmp_path / "outside.txt").write_text("secret")
    os.symlink(tmp_path / "outside.txt", root / "link.txt")
    tools = files_toolset("ws", FilesToolConfig(type="files", root=str(root)))
    await tools.call("write_file", {"path": "notes/a.txt", "content": "hello"}, CTX)
    read = json.loads((await tools.call("read_file", {"path": "notes/a.txt"}, CTX)).content)
    assert read["content"] == "hello"
    listing = json.loads((await tools.call("list_files", {}, CTX)).content)
    assert {e["name"] for e in listing["entries"]} == {"notes", "link.txt"}
    for path in ("../outside.txt", "link.txt", "/etc/passwd", "notes/../../outside.txt"):
        with pytest.raises(ToolError):
            await tools.call("read_file", {"path": path}, CTX)
    with pytest.raises(ToolError, match="outside the workspace"):
        await tools.call("write_file", {"path": "../x.txt", "content": "no"}, CTX)
    assert not (tmp_path / "x.txt").exists()


async def test_read_only_workspace_has_no_write_tool(tmp_path: Path) -> None:
    tools = build_toolset("ws", FilesToolConfig(type="files", root=str(tmp_path), read_only=True))
    assert sorted(t.name for t in await tools.list_tools()) == ["list_files", "read_file"]
