"""The ``shell`` tool: runs one allowlisted program (no shell syntax) in a working
directory with a timeout and an output cap. Denied entirely unless configured."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
from pathlib import Path
from typing import Any

from corral.config.agents import ShellToolConfig
from corral.llm.types import ToolSpec
from corral.tools.base import FunctionToolset, ToolContext, ToolError, ToolResult

SHELL_SPEC = ToolSpec(
    name="shell",
    description="Run one allowed command (no pipes or redirection) and return its exit code and output.",
    parameters={"type": "object", "required": ["command"], "properties": {
        "command": {"type": "string", "description": "the command line, split like a POSIX shell would"}}},
)


def shell_toolset(name: str, config: ShellToolConfig) -> FunctionToolset:
    allowed = set(config.allow_commands)
    cwd = Path(config.working_dir or ".").expanduser().resolve()

    async def run(arguments: dict[str, Any], _: ToolContext) -> ToolResult:
        try:
            argv = shlex.split(str(arguments.get("command") or ""))
        except ValueError as exc:
            raise ToolError(f"cannot parse the command: {exc}") from None
        if not argv:
            raise ToolError("empty command")
        program = argv[0]
        # A path ("/bin/rm", "./x") would bypass the allowlist by name.
        if "/" in program or program not in allowed:
            raise ToolError(f"command {program!r} is not allowed" +
                            (f"; allowed: {', '.join(sorted(allowed))}" if allowed else "; no commands are allowed"))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **config.env}
        process = await asyncio.create_subprocess_exec(
            *argv, cwd=cwd, env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
        )
        try:
            output, truncated, code = await asyncio.wait_for(_capped(process, config.max_output_bytes),
                                                             config.timeout)
        except TimeoutError:
            _kill(process)
            await process.wait()
            raise ToolError(f"command timed out after {config.timeout:g}s") from None
        except asyncio.CancelledError:
            _kill(process)
            raise
        text = output.decode("utf-8", errors="replace")
        return ToolResult.json({"exit_code": code, "output": text, "truncated": truncated})

    return FunctionToolset(name, {"shell": (SHELL_SPEC, run)})


async def _capped(process: asyncio.subprocess.Process, limit: int) -> tuple[bytes, bool, int]:
    """Output up to ``limit`` bytes and the exit code; a command that writes more is killed
    (its output would be thrown away, and a full pipe would block it forever)."""
    assert process.stdout is not None
    chunks: list[bytes] = []
    size = 0
    while size <= limit:
        chunk = await process.stdout.read(65536)
        if not chunk:
            return b"".join(chunks), False, await process.wait()
        chunks.append(chunk)
        size += len(chunk)
    _kill(process)
    return b"".join(chunks)[:limit], True, await process.wait()


def _kill(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)
