"""The official MCP servers from the npm registry, installed once per test session."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import pytest

EVERYTHING = "@modelcontextprotocol/server-everything"
FILESYSTEM = "@modelcontextprotocol/server-filesystem"


BINS = {EVERYTHING: "mcp-server-everything", FILESYSTEM: "mcp-server-filesystem"}


@pytest.fixture(scope="session")
def npx() -> str:
    """``npx`` with both servers in its cache (the first install can take a minute)."""
    path = shutil.which("npx")
    if path is None:
        if os.environ.get("CORRAL_REQUIRE_SERVICES") == "1":
            pytest.fail("CORRAL_REQUIRE_SERVICES=1 but npx (Node.js) is not installed")
        pytest.skip("npx (Node.js) is not installed: the MCP client tests need the official npm MCP servers")
    for package in (EVERYTHING, FILESYSTEM):
        done = subprocess.run([path, "-y", "-p", package, "true"], capture_output=True, timeout=600, check=False)
        if done.returncode != 0:
            pytest.fail(f"could not install {package} with npx: {done.stderr.decode()[-500:]}")
    return path


@pytest.fixture(scope="session")
def mcp_bin(npx: str) -> dict[str, str]:
    """The installed servers' executables: starting them through ``npx -y`` costs seconds
    each time (it asks the registry for the latest version), so most tests run them directly."""
    found: dict[str, str] = {}
    for package, name in BINS.items():
        done = subprocess.run([npx, "-y", "-p", package, "-c", f"command -v {name}"], capture_output=True,
                              timeout=600, check=True)
        found[package] = done.stdout.decode().strip().splitlines()[-1]
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def everything_http(mcp_bin: dict[str, str]) -> Callable[..., AbstractAsyncContextManager[tuple[int, asyncio.subprocess.Process]]]:
    """Start server-everything over HTTP (``streamableHttp`` or ``sse``) on a free port."""

    @contextlib.asynccontextmanager
    async def start(transport: str, port: int | None = None) -> AsyncIterator[tuple[int, asyncio.subprocess.Process]]:
        port = port or free_port()
        process = await asyncio.create_subprocess_exec(
            mcp_bin[EVERYTHING], transport, env={**os.environ, "PORT": str(port)},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL, start_new_session=True)
        try:
            await wait_for_port(port, process)
            yield port, process
        finally:
            stop(process)
            await process.wait()

    return start


async def wait_for_port(port: int, process: asyncio.subprocess.Process, seconds: float = 60) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while loop.time() < deadline:
        if process.returncode is not None:
            raise RuntimeError(f"MCP server exited with {process.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        await writer.wait_closed()
        return
    raise TimeoutError(f"MCP server did not listen on {port} within {seconds}s")


def stop(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
