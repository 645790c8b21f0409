"""Toolsets from the `tools:` section, each wrapped per its config."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from corral.config.agents import (
    BARE_BUILTINS,
    FilesToolConfig,
    HttpFetchToolConfig,
    KnowledgeToolConfig,
    McpToolConfig,
    ShellToolConfig,
    TimeToolConfig,
    ToolsetConfig,
)
from corral.tools.base import Toolset
from corral.tools.builtin import http_fetch_toolset, time_toolset
from corral.tools.files import files_toolset
from corral.tools.mcp import McpToolset
from corral.tools.shell import shell_toolset
from corral.tools.wrappers import ApprovalToolset, FilteredToolset, PrefixedToolset, TimeoutToolset

if TYPE_CHECKING:
    from corral.knowledge.service import KnowledgeService


def build_toolset(name: str, config: ToolsetConfig, *, knowledge: KnowledgeService | None = None) -> Toolset:
    """``knowledge``: serves `knowledge` tools (required when the config declares one)."""
    toolset: Toolset
    if isinstance(config, TimeToolConfig):
        toolset = time_toolset(name)
    elif isinstance(config, HttpFetchToolConfig):
        toolset = http_fetch_toolset(name, config)
    elif isinstance(config, ShellToolConfig):
        toolset = shell_toolset(name, config)
    elif isinstance(config, FilesToolConfig):
        toolset = files_toolset(name, config)
    elif isinstance(config, McpToolConfig):
        toolset = McpToolset(name, config)
    elif isinstance(config, KnowledgeToolConfig):
        if knowledge is None:
            raise ValueError(f"toolset {name!r}: a knowledge tool needs the knowledge service")
        from corral.tools.knowledge import knowledge_toolset

        toolset = knowledge_toolset(name, config, knowledge)
    else:  # pragma: no cover - the config union is exhaustive
        raise TypeError(f"unknown toolset config {type(config).__name__}")
    return wrap(toolset, config)


def wrap(toolset: Toolset, config: ToolsetConfig) -> Toolset:
    if config.include is not None or config.exclude:
        toolset = FilteredToolset(toolset, include=config.include, exclude=config.exclude)
    if config.require_approval:
        names = None if config.require_approval is True else list(config.require_approval)
        toolset = ApprovalToolset(toolset, names)
    if config.prefix:
        toolset = PrefixedToolset(toolset, config.prefix)
    return TimeoutToolset(toolset, config.timeout)


def build_toolsets(configs: Mapping[str, ToolsetConfig], used: set[str], *,
                   knowledge: KnowledgeService | None = None) -> dict[str, Toolset]:
    """The declared toolsets plus the bare built-ins that agents use without declaring."""
    built = {name: build_toolset(name, config, knowledge=knowledge) for name, config in configs.items()}
    for name in used - set(built):
        if name == "time":
            built[name] = build_toolset(name, TimeToolConfig(type="time"))
        elif name == "http_fetch":
            built[name] = build_toolset(name, HttpFetchToolConfig(type="http_fetch"))
    return built


__all__ = ["BARE_BUILTINS", "build_toolset", "build_toolsets", "wrap"]
