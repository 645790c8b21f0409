"""The tool contract: a `Toolset` lists tools and calls them by name.

Built-ins, MCP servers and other agents are all toolsets; wrappers (`wrappers.py`)
filter, prefix or mark tools as needing approval without the toolset knowing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from corral.llm.types import ToolSpec


@dataclass(slots=True)
class Tool:
    spec: ToolSpec
    requires_approval: bool = False
    timeout: float | None = None  # seconds; None: the caller's default

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(slots=True)
class ToolContext:
    """What a tool may know about the call it serves."""

    run_id: str = ""
    agent: str = ""
    session_id: str | None = None
    tool_call_id: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    trace: dict[str, str] = field(default_factory=dict)  # W3C trace headers of the call (tracing on)


@dataclass(slots=True)
class ToolResult:
    """A tool's answer as text for the model. ``is_error`` results are still shown to the
    model (so it can recover); they are never raised through the run."""

    content: str
    is_error: bool = False
    data: Any = None  # structured output, if the tool has any

    @classmethod
    def json(cls, value: Any) -> ToolResult:
        return cls(json.dumps(value, ensure_ascii=False, default=str), data=value)

    @classmethod
    def error(cls, message: str) -> ToolResult:
        return cls(message, is_error=True)


class ToolError(Exception):
    """Raised by a tool for a failure the model should see (bad arguments, denied path...)."""


@runtime_checkable
class Toolset(Protocol):
    name: str

    async def list_tools(self) -> list[Tool]: ...

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult: ...

    async def aclose(self) -> None: ...


class FunctionToolset:
    """Tools from plain async functions: ``{name: (spec, fn)}``; fn(arguments, ctx) -> ToolResult."""

    def __init__(self, name: str, tools: dict[str, tuple[ToolSpec, Any]]) -> None:
        self.name = name
        self._tools = tools

    async def list_tools(self) -> list[Tool]:
        return [Tool(spec) for spec in self.specs()]

    def specs(self) -> list[ToolSpec]:
        return [spec for spec, _ in self._tools.values()]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        entry = self._tools.get(name)
        if entry is None:
            raise ToolError(f"unknown tool {name!r} in toolset {self.name!r}")
        result: ToolResult = await entry[1](arguments, ctx)
        return result

    async def aclose(self) -> None:
        return None
