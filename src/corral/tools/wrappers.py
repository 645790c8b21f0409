"""Wrappers that change what a toolset shows without the toolset knowing."""

from __future__ import annotations

import fnmatch
from collections.abc import Collection
from dataclasses import replace
from typing import Any

from corral.tools.base import Tool, ToolContext, ToolError, ToolResult, Toolset


class _Wrapper:
    def __init__(self, inner: Toolset) -> None:
        self.inner = inner
        self.name = inner.name

    async def list_tools(self) -> list[Tool]:
        return await self.inner.list_tools()

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.inner.call(name, arguments, ctx)

    async def aclose(self) -> None:
        await self.inner.aclose()


class FilteredToolset(_Wrapper):
    """Only tools matching ``include`` (glob patterns; None: all) and not ``exclude``."""

    def __init__(self, inner: Toolset, *, include: Collection[str] | None = None,
                 exclude: Collection[str] = ()) -> None:
        super().__init__(inner)
        self.include = list(include) if include is not None else None
        self.exclude = list(exclude)

    def allowed(self, name: str) -> bool:
        if self.include is not None and not any(fnmatch.fnmatchcase(name, p) for p in self.include):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in self.exclude)

    async def list_tools(self) -> list[Tool]:
        return [t for t in await self.inner.list_tools() if self.allowed(t.name)]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not self.allowed(name):
            raise ToolError(f"tool {name!r} is not available")
        return await self.inner.call(name, arguments, ctx)


class PrefixedToolset(_Wrapper):
    """Tool names become ``<prefix>_<name>`` (two MCP servers may both have a ``search``)."""

    def __init__(self, inner: Toolset, prefix: str) -> None:
        super().__init__(inner)
        self.prefix = f"{prefix}_"

    async def list_tools(self) -> list[Tool]:
        tools = await self.inner.list_tools()
        return [replace(t, spec=replace(t.spec, name=self.prefix + t.name)) for t in tools]

    async def call(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not name.startswith(self.prefix):
            raise ToolError(f"tool {name!r} is not available")
        return await self.inner.call(name.removeprefix(self.prefix), arguments, ctx)


class ApprovalToolset(_Wrapper):
    """Marks tools (all, or the named ones) as needing a human's approval before they run.
    The runner pauses the run in ``input-required`` when the model calls one."""

    def __init__(self, inner: Toolset, names: Collection[str] | None = None) -> None:
        super().__init__(inner)
        self.names = set(names) if names is not None else None

    async def list_tools(self) -> list[Tool]:
        return [replace(t, requires_approval=True) if self.names is None or t.name in self.names else t
                for t in await self.inner.list_tools()]


class TimeoutToolset(_Wrapper):
    """Gives each tool a per-call timeout unless it has one."""

    def __init__(self, inner: Toolset, timeout: float) -> None:
        super().__init__(inner)
        self.timeout = timeout

    async def list_tools(self) -> list[Tool]:
        return [t if t.timeout is not None else replace(t, timeout=self.timeout)
                for t in await self.inner.list_tools()]
