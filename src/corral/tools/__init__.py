"""Tools: the `Toolset` protocol, wrappers, built-ins and MCP client toolsets."""

from corral.tools.base import FunctionToolset, Tool, ToolContext, ToolError, ToolResult, Toolset
from corral.tools.build import build_toolset, build_toolsets
from corral.tools.mcp import McpToolset
from corral.tools.wrappers import ApprovalToolset, FilteredToolset, PrefixedToolset, TimeoutToolset

__all__ = [
    "ApprovalToolset",
    "FilteredToolset",
    "FunctionToolset",
    "McpToolset",
    "PrefixedToolset",
    "TimeoutToolset",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolResult",
    "Toolset",
    "build_toolset",
    "build_toolsets",
]
